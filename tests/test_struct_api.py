"""The API surface of fastwire.struct, and each named edge case, against the stdlib.

Where a test can compare with the stdlib it does (outcome() = result or
exception type); where the stdlib itself is wrong on the Python versions we
support, the test expects the correct behaviour and names the upstream issue.
"""

import array
import copy
import enum
import gc
import math
import mmap
import os
import pickle
import struct as std
import subprocess
import sys
import tracemalloc
import weakref

import pytest
from struct_oracle import (
    FLOAT32_LARGEST_ROUNDING_DOWN,
    FLOAT32_MAX,
    FLOAT32_OVERFLOW,
    NATIVE_ONLY_CODES,
    PREFIXES,
    FloatOnly,
    Index,
    IntOnly,
    MyBytes,
    MyFloat,
    MyInt,
    Raises,
    corrected_value_error,
    int_range,
    native_f_overflows,
    oracle_format,
    outcome,
)

import fastwire
from fastwire import struct as fw

# --------------------------------------------------------------------------
# Names, identity, signatures


def test_error_is_the_stdlib_error_class():
    assert fw.error is std.error
    assert fastwire.error is std.error
    with pytest.raises(std.error):
        fw.pack("<B", 256)
    with pytest.raises(std.error):
        fw.Struct("z")


@pytest.mark.parametrize("name", sorted(std.__all__))
def test_every_stdlib_name_is_provided(name):
    assert name in fw.__all__
    assert callable(getattr(fw, name))
    # The top-level names are the same objects as fastwire.struct's.
    assert getattr(fastwire, name) is getattr(fw, name)


def test_clearcache_is_provided():
    assert fw._clearcache() is None


def test_struct_methods_match_stdlib():
    public = {n for n in dir(std.Struct) if not n.startswith("_")}
    assert public <= set(dir(fw.Struct))
    assert {"pack_many", "unpack_many"} <= set(dir(fw.Struct))


@pytest.mark.parametrize("fmt", ["<i", b"<i", " i", b"\t2h ", "", "@", "0s"])
def test_format_is_str_and_size_is_calcsize(fmt):
    s = fw.Struct(fmt)
    assert type(s.format) is str
    assert s.format == std.Struct(fmt).format
    assert s.size == std.calcsize(fmt)
    assert type(s.size) is int


def test_size_and_format_are_read_only():
    s = fw.Struct("<i")
    for attribute, value in (("size", 3), ("format", "h")):
        assert outcome(lambda: setattr(s, attribute, value)) == \
            outcome(lambda: setattr(std.Struct("<i"), attribute, value))
    assert (s.size, s.format) == (4, "<i")


buf4 = b"\x01\x02\x03\x04"

# Calls whose argument handling (positional/keyword, missing, extra) must match.
SIGNATURE_CASES = {
    "unpack_from buffer= offset=": lambda m: m.unpack_from("<h", buffer=buf4, offset=2),
    "unpack_from offset=": lambda m: m.unpack_from("<h", buf4, offset=2),
    "unpack_from buffer=": lambda m: m.unpack_from("<h", buffer=buf4),
    "unpack_from format=": lambda m: m.unpack_from(format="<h", buffer=buf4),
    "unpack_from bad keyword": lambda m: m.unpack_from("<h", buf4, start=2),
    "unpack_from no buffer": lambda m: m.unpack_from("<h"),
    "unpack_from offset twice": lambda m: m.unpack_from("<h", buf4, 0, offset=2),
    "unpack_from bool offset": lambda m: m.unpack_from("<h", buf4, True),
    "unpack_from Index offset": lambda m: m.unpack_from("<h", buf4, Index(2)),
    "unpack_from float offset": lambda m: m.unpack_from("<h", buf4, 1.0),
    "unpack_from None offset": lambda m: m.unpack_from("<h", buf4, None),
    "Struct.unpack_from buffer= offset=": lambda m: m.Struct("<h").unpack_from(buffer=buf4, offset=2),
    "Struct.unpack_from offset=": lambda m: m.Struct("<h").unpack_from(buf4, offset=1),
    "Struct.unpack_from no buffer": lambda m: m.Struct("<h").unpack_from(),
    "Struct(format=)": lambda m: m.Struct(format="<h").size,
    "Struct()": lambda m: m.Struct(),
    "Struct two arguments": lambda m: m.Struct("<h", "<i"),
    "pack format=": lambda m: m.pack(format="<h"),
    "pack no format": lambda m: m.pack(),
    "pack too few": lambda m: m.pack("<hh", 1),
    "pack too many": lambda m: m.pack("<h", 1, 2),
    "pack none for x": lambda m: m.pack("<x", 1),
    "Struct.pack too few": lambda m: m.Struct("<hh").pack(1),
    "Struct.pack keyword": lambda m: m.Struct("<h").pack(v=1),
    "unpack keyword": lambda m: m.unpack("<h", buffer=b"ab"),
    "unpack no buffer": lambda m: m.unpack("<h"),
    "unpack extra": lambda m: m.unpack("<h", b"ab", b"cd"),
    "Struct.unpack keyword": lambda m: m.Struct("<h").unpack(buffer=b"ab"),
    "Struct.unpack nothing": lambda m: m.Struct("<h").unpack(),
    "calcsize keyword": lambda m: m.calcsize(format="<h"),
    "calcsize nothing": lambda m: m.calcsize(),
    "iter_unpack keyword": lambda m: m.iter_unpack("<h", buffer=b"ab"),
    "iter_unpack no buffer": lambda m: m.iter_unpack("<h"),
    "Struct.iter_unpack nothing": lambda m: m.Struct("<h").iter_unpack(),
    "pack_into keywords": lambda m: m.pack_into("<h", buffer=bytearray(2), offset=0),
    "pack_into no offset": lambda m: m.pack_into("<h", bytearray(2)),
    "pack_into no buffer": lambda m: m.pack_into("<h"),
    "pack_into too few": lambda m: m.pack_into("<hh", bytearray(4), 0, 1),
    "pack_into too many": lambda m: m.pack_into("<h", bytearray(4), 0, 1, 2),
    "pack_into float offset": lambda m: m.pack_into("<h", bytearray(4), 1.0, 1),
    "pack_into None offset": lambda m: m.pack_into("<h", bytearray(4), None, 1),
    "pack_into Index offset": lambda m: m.pack_into("<h", bytearray(4), Index(2), 1),
    "pack_into huge offset": lambda m: m.pack_into("<h", bytearray(4), 1 << 70, 1),
    "pack_into huge negative offset": lambda m: m.pack_into("<h", bytearray(4), -(1 << 70), 1),
    "unpack_from huge offset": lambda m: m.unpack_from("<h", buf4, 1 << 70),
    "unpack_from huge negative offset": lambda m: m.unpack_from("<h", buf4, -(1 << 70)),
    "Struct.pack_into no buffer": lambda m: m.Struct("<h").pack_into(),
    "Struct.pack_into no offset": lambda m: m.Struct("<h").pack_into(bytearray(2)),
    "Struct.pack_into keyword": lambda m: m.Struct("<h").pack_into(buffer=bytearray(2), offset=0, v=1),
}


@pytest.mark.parametrize("call", SIGNATURE_CASES.values(), ids=SIGNATURE_CASES.keys())
def test_signature_like_stdlib(call):
    assert outcome(lambda: call(fw)) == outcome(lambda: call(std))


# --------------------------------------------------------------------------
# Struct objects: subclassing, repr, re-initialisation, __sizeof__


class Header(fw.Struct):
    """A subclass fixing its format in __init__, as protocol code does."""

    def __init__(self, count):
        super().__init__(f"<{count}I")
        self.count = count


class Tagged(fw.Struct):
    pass


def test_subclass_with_own_init():
    h = Header(3)
    assert isinstance(h, fw.Struct)
    assert (h.format, h.size, h.count) == ("<3I", 12, 3)
    assert h.pack(1, 2, 3) == std.pack("<3I", 1, 2, 3)
    assert h.unpack(h.pack(1, 2, 3)) == (1, 2, 3)
    assert h.pack_many([(1, 2, 3), (4, 5, 6)]) == std.pack("<6I", 1, 2, 3, 4, 5, 6)


def test_subclass_inherits_constructor_and_gets_a_dict():
    t = Tagged(b">hq")
    assert type(t) is Tagged
    t.note = "subclass instances take attributes"
    assert (t.format, t.size, t.note) == (">hq", 10, "subclass instances take attributes")
    assert t.unpack_from(b"\0" + std.pack(">hq", -2, 7), offset=1) == (-2, 7)
    assert Tagged(format="<i").size == 4


def test_struct_instances_take_no_new_attributes():
    # Same as the stdlib: only subclasses get a __dict__.
    assert outcome(lambda: setattr(fw.Struct("i"), "note", 1)) == \
        outcome(lambda: setattr(std.Struct("i"), "note", 1))


def test_repr_names_the_format():
    r = repr(fw.Struct("<i"))
    if sys.version_info >= (3, 13):
        assert r == repr(std.Struct("<i")) == "Struct('<i')"
        assert repr(Tagged(b">h")) == "Tagged('>h')"
    else:
        # 3.11 and 3.12 print the default object repr; either form is fine
        # there as long as it is a repr of this object.
        assert r == "Struct('<i')" or (r.startswith("<") and "Struct object at 0x" in r)


OBJECT_PROTOCOL_CASES = {
    "pickle": lambda m: pickle.dumps(m.Struct("<i")),
    "copy": lambda m: copy.copy(m.Struct("<i")).size,
    "deepcopy": lambda m: copy.deepcopy(m.Struct("<i")).size,
    "weakref": lambda m: (lambda s: weakref.ref(s)() is s)(m.Struct("<i")),
    "equality is identity": lambda m: (m.Struct("<i") == m.Struct("<i"), (lambda s: s == s)(m.Struct("<i"))),
    "hashable": lambda m: type(hash(m.Struct("<i"))),
    "pickle an iterator": lambda m: pickle.dumps(m.iter_unpack("<i", b"abcd")),
    "len of an iterator": lambda m: len(m.iter_unpack("<i", b"abcd")),
}


@pytest.mark.parametrize("call", OBJECT_PROTOCOL_CASES.values(), ids=OBJECT_PROTOCOL_CASES.keys())
def test_object_protocols_like_stdlib(call):
    assert outcome(lambda: call(fw)) == outcome(lambda: call(std))


def test_reinitialising_a_struct_like_stdlib():
    def reinit(module):
        s = module.Struct("<i")
        s.__init__(">q")
        return s.format, s.size, s.pack(-2), s.unpack(s.pack(-2))

    assert outcome(lambda: reinit(fw)) == outcome(lambda: reinit(std))


def test_uninitialised_struct_never_crashes():
    """Struct.__new__ without __init__: any exception is fine, a crash is not."""
    try:
        s = fw.Struct.__new__(fw.Struct)
    except TypeError:
        return
    for attempt in (lambda: s.size, lambda: s.format, lambda: s.pack(), lambda: s.unpack(b""),
                    lambda: s.pack_into(bytearray(4), 0), lambda: list(s.iter_unpack(b"ab")),
                    lambda: s.pack_many([()]), lambda: s.unpack_many(b""), lambda: repr(s)):
        outcome(attempt)


def test_sizeof_counts_the_compiled_format():
    small, large = fw.Struct("i"), fw.Struct("".join("bhiq"[i % 4] for i in range(100)))
    assert isinstance(small.__sizeof__(), int)
    assert small.__sizeof__() >= object().__sizeof__()
    assert large.__sizeof__() > small.__sizeof__()
    assert sys.getsizeof(large) >= large.__sizeof__()


# --------------------------------------------------------------------------
# iter_unpack


def test_iter_unpack_is_an_iterator_with_a_length_hint():
    data = std.pack("<6h", *range(6))
    for it in (fw.iter_unpack("<2h", data), fw.Struct("<2h").iter_unpack(bytearray(data))):
        assert iter(it) is it
        assert it.__length_hint__() == 3
        assert next(it) == (0, 1)
        assert it.__length_hint__() == 2
        assert list(it) == [(2, 3), (4, 5)]
        assert it.__length_hint__() == 0
        with pytest.raises(StopIteration):
            next(it)
        with pytest.raises(StopIteration):
            next(it)


def test_iter_unpack_holds_the_buffer_like_stdlib():
    def grow_while_iterating(module):
        buf = bytearray(8)
        it = module.iter_unpack("<h", buf)
        next(it)
        buf.extend(b"xx")  # the iterator's export must forbid this
        return list(it)

    assert outcome(lambda: grow_while_iterating(fw)) == outcome(lambda: grow_while_iterating(std))
    assert outcome(lambda: grow_while_iterating(fw))[0] == "raise"


@pytest.mark.parametrize("fmt,data", [("", b""), ("0s", b""), ("x", b"abc"), ("<h", b"abc"),
                                      ("9223372036854775807x", b"")])
def test_iter_unpack_bad_sizes_like_stdlib(fmt, data):
    assert outcome(lambda: list(fw.iter_unpack(fmt, data))) == outcome(lambda: list(std.iter_unpack(fmt, data)))


# --------------------------------------------------------------------------
# The compiled-format cache of the module-level functions


def retained_by_formats(count, pad):
    """Bytes still allocated after using count distinct, pad-byte formats."""
    fw._clearcache()
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i in range(count):
            fw.calcsize(" " * pad + f"{i}x")
        gc.collect()
        return tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
        fw._clearcache()


def test_format_cache_is_bounded_at_100_entries():
    pad = 20_000
    per_entry = retained_by_formats(10, pad) / 10
    # Every cached format keeps at least its (pad-byte) key alive.
    assert per_entry >= pad
    entries = retained_by_formats(2_000, pad) / per_entry
    assert entries <= 100.5, f"cache holds ~{entries:.0f} formats"


def test_clearcache_releases_cached_formats():
    pad = 20_000
    fw._clearcache()
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i in range(50):
            fw.calcsize(" " * pad + f"{i}x")
        fw._clearcache()
        gc.collect()
        assert tracemalloc.get_traced_memory()[0] - before < pad * 5
    finally:
        tracemalloc.stop()


def test_results_stay_right_across_cache_evictions():
    fw._clearcache()
    for i in range(350):
        fmt = f"<{i % 7}x{i}s" if i % 2 else f">{i}x".encode()
        expected = std.pack(fmt, b"ab") if i % 2 else std.pack(fmt)
        assert (fw.pack(fmt, b"ab") if i % 2 else fw.pack(fmt)) == expected
        assert fw.calcsize(fmt) == std.calcsize(fmt)
    # str and bytes spellings of one format, and equal strings, share nothing wrong.
    assert fw.pack("<i", 1) == fw.pack(b"<i", 1) == std.pack("<i", 1)
    assert fw.unpack(b">i", b"\0\0\0\1") == fw.unpack(">i", b"\0\0\0\1") == (1,)


# --------------------------------------------------------------------------
# Buffers of every kind


def buffers_holding(data):
    """Every readable buffer kind a user passes, each holding data."""
    anonymous = mmap.mmap(-1, len(data))
    anonymous[:] = data
    return {
        "bytes": data,
        "bytes subclass": MyBytes(data),
        "bytearray": bytearray(data),
        "memoryview": memoryview(data),
        "memoryview of bytearray": memoryview(bytearray(data)),
        "read-only memoryview": memoryview(bytearray(data)).toreadonly(),
        "memoryview slice": memoryview(b"??" + data + b"??")[2:-2],
        "memoryview cast to I": memoryview(data).cast("I"),
        "2-d memoryview": memoryview(data).cast("B", (2, len(data) // 2)),
        "array B": array.array("B", data),
        "array i": array.array("i", data),
        "array d": array.array("d", data),
        "mmap": anonymous,
    }


DATA16 = bytes(range(1, 17))


@pytest.mark.parametrize("kind", sorted(buffers_holding(DATA16)))
def test_every_readable_buffer_kind(kind):
    def read(module):
        buf = buffers_holding(DATA16)[kind]
        return (module.unpack("<4I", buf), module.unpack_from("<h", buf, 3),
                module.unpack_from("<h", buf, offset=-2), list(module.iter_unpack(">Q", buf)),
                module.Struct("<2q").unpack(buf))

    assert outcome(lambda: read(fw)) == outcome(lambda: read(std))
    assert outcome(lambda: read(fw))[0] == "ok"
    assert fw.Struct(">4I").unpack_many(buffers_holding(DATA16)[kind]) == [std.unpack(">4I", DATA16)]


def writable_buffers(length):
    return {
        "bytearray": bytearray(length),
        "memoryview of bytearray": memoryview(bytearray(length)),
        "memoryview slice": memoryview(bytearray(length + 4))[2:-2],
        "memoryview cast to I": memoryview(bytearray(length)).cast("I"),
        "array B": array.array("B", bytes(length)),
        "array i": array.array("i", bytes(length)),
        "mmap": mmap.mmap(-1, length),
    }


@pytest.mark.parametrize("kind", sorted(writable_buffers(16)))
def test_every_writable_buffer_kind(kind):
    def write(module):
        buf = writable_buffers(16)[kind]
        module.pack_into("<I", buf, 0, 0xDEADBEEF)
        module.pack_into(">h", buf, -2, -2)
        module.Struct("<d").pack_into(buf, 4, 1.5)
        return bytes(memoryview(buf).cast("B"))

    assert outcome(lambda: write(fw)) == outcome(lambda: write(std))
    assert outcome(lambda: write(fw))[0] == "ok"


def noncontiguous(data):
    spread = bytearray(2 * len(data))
    spread[::2] = data
    return memoryview(spread)[::2]


UNUSABLE_BUFFER_CASES = {
    "unpack non-contiguous": lambda m: m.unpack("<2h", noncontiguous(b"abcd")),
    "unpack_from non-contiguous": lambda m: m.unpack_from("<h", noncontiguous(b"abcd"), 2),
    "iter_unpack non-contiguous": lambda m: list(m.iter_unpack("<h", noncontiguous(b"abcd"))),
    "Struct.unpack non-contiguous": lambda m: m.Struct("<2h").unpack(noncontiguous(b"abcd")),
    "pack_into non-contiguous": lambda m: m.pack_into("<h", noncontiguous(bytearray(4)), 0, 1),
    "pack_into bytes": lambda m: m.pack_into("<h", b"ab", 0, 1),
    "pack_into read-only memoryview": lambda m: m.pack_into("<h", memoryview(bytearray(2)).toreadonly(), 0, 1),
    "pack_into str": lambda m: m.pack_into("<h", "ab", 0, 1),
    "pack_into list": lambda m: m.pack_into("<h", [0, 0], 0, 1),
    "unpack str": lambda m: m.unpack("<h", "ab"),
    "unpack int": lambda m: m.unpack("<h", 2),
    "unpack None": lambda m: m.unpack("<h", None),
    "unpack list": lambda m: m.unpack("<h", [1, 2]),
    "unpack released memoryview": lambda m: m.unpack("<h", released_view()),
    "pack_into released memoryview": lambda m: m.pack_into("<h", released_view(bytearray(2)), 0, 1),
    "unpack closed mmap": lambda m: m.unpack("<h", closed_mmap()),
    "pack_into closed mmap": lambda m: m.pack_into("<h", closed_mmap(), 0, 1),
}


def released_view(data=b"ab"):
    view = memoryview(data)
    view.release()
    return view


def closed_mmap():
    m = mmap.mmap(-1, 2)
    m.close()
    return m


@pytest.mark.parametrize("call", UNUSABLE_BUFFER_CASES.values(), ids=UNUSABLE_BUFFER_CASES.keys())
def test_unusable_buffers_fail_like_stdlib(call):
    expected = outcome(lambda: call(std))
    assert expected[0] == "raise"
    assert outcome(lambda: call(fw)) == expected


def test_file_backed_mmap(tmp_path):
    path = tmp_path / "records.bin"
    path.write_bytes(bytes(32))
    record = fw.Struct("<iHd")
    with open(path, "r+b") as f, mmap.mmap(f.fileno(), 0) as m:
        record.pack_into(m, 0, -1, 2, 3.5)
        fw.pack_into("<iHd", m, record.size, 4, 5, -6.25)
        m.flush()
        assert record.unpack_from(m) == (-1, 2, 3.5)
        assert list(record.iter_unpack(m[: 2 * record.size])) == [(-1, 2, 3.5), (4, 5, -6.25)]
    assert path.read_bytes()[: 2 * record.size] == std.pack("<iHd", -1, 2, 3.5) + std.pack("<iHd", 4, 5, -6.25)
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
        assert fw.unpack_from("<iHd", m, record.size) == (4, 5, -6.25)
        assert outcome(lambda: fw.pack_into("<i", m, 0, 1)) == outcome(lambda: std.pack_into("<i", m, 0, 1))
        assert outcome(lambda: fw.pack_into("<i", m, 0, 1)) == ("raise", TypeError)


# --------------------------------------------------------------------------
# Offsets and sizes


@pytest.mark.parametrize("offset", [-7, -6, -5, -2, -1, 0, 1, 4, 5, 6, 7, 50])
@pytest.mark.parametrize("fmt", ["<h", "", "4x", "<3s"])
def test_offsets_at_both_ends(fmt, offset):
    data = b"abcdef"
    assert outcome(lambda: fw.unpack_from(fmt, data, offset)) == outcome(lambda: std.unpack_from(fmt, data, offset))
    values = {"<h": (1,), "": (), "4x": (), "<3s": (b"xyz",)}[fmt]

    def pack_into(module):
        buf = bytearray(data)
        module.pack_into(fmt, buf, offset, *values)
        return bytes(buf)

    assert outcome(lambda: pack_into(fw)) == outcome(lambda: pack_into(std))


@pytest.mark.parametrize("size", [0, 1, 3, 4, 5])
def test_buffers_of_the_wrong_size(size):
    data = bytes(range(size))
    for call in (lambda m: m.unpack("<i", data), lambda m: m.unpack_from("<i", data, 1),
                 lambda m: m.Struct("<i").unpack(bytearray(data)), lambda m: list(m.iter_unpack("<2h", data)),
                 lambda m: m.pack_into("<i", bytearray(data), 0, 7)):
        assert outcome(lambda: call(fw)) == outcome(lambda: call(std))


# --------------------------------------------------------------------------
# Formats


BAD_FORMATS = [
    "z", "i z", "<<i", " <i", "i<", "5", "i5", "5 i", "-1i", "i\0", "\0", "iä", "\udc80", b"\xff", b"i\0",
    "<n", ">N", "!P", "=n",
    "99999999999999999999i", "9223372036854775807i", "4611686018427387904i", "2305843009213693952q",
    "9223372036854775808x", "4611686018427387904s4611686018427387904s", "9223372036854775807x1x",
    None, 5, 1.5, ["i"], bytearray(b"i"), memoryview(b"i"),
]


@pytest.mark.parametrize("fmt", BAD_FORMATS, ids=repr)
def test_bad_formats(fmt):
    expected = outcome(lambda: std.calcsize(fmt))
    assert expected[0] == "raise"
    assert outcome(lambda: fw.calcsize(fmt)) == expected
    assert outcome(lambda: fw.Struct(fmt)) == expected
    assert outcome(lambda: fw.pack(fmt, 1)) == outcome(lambda: std.pack(fmt, 1))
    assert outcome(lambda: fw.unpack(fmt, b"abcd")) == outcome(lambda: std.unpack(fmt, b"abcd"))


HUGE_FORMATS = ["9223372036854775807x", "9223372036854775807s", "4611686018427387904x",
                "4611686018427387903s4611686018427387903s", "1152921504606846975q", "2147483648s"]


@pytest.mark.parametrize("fmt", HUGE_FORMATS)
def test_huge_but_valid_formats_never_allocate_their_size(fmt):
    """calcsize works; using them on small buffers fails cleanly, without
    allocating the claimed size; packing fails like the stdlib."""
    assert fw.calcsize(fmt) == std.calcsize(fmt)
    assert fw.Struct(fmt).size == std.Struct(fmt).size
    values = [b""] * fmt.count("s")
    for call in (lambda m: m.unpack(fmt, b"abc"), lambda m: m.unpack_from(fmt, b"abc", 1),
                 lambda m: m.pack_into(fmt, bytearray(3), 0, *values),
                 lambda m: list(m.iter_unpack(fmt, b"abc"))):
        assert outcome(lambda: call(fw)) == outcome(lambda: call(std))
    if fmt.endswith("x") and fmt.count("x") == 1:
        # No values to convert: the stdlib fails allocating the result.
        assert outcome(lambda: fw.pack(fmt)) == outcome(lambda: std.pack(fmt))


@pytest.mark.parametrize("fmt", ["0s", "0x", "0i", "c0i", "b0q", "<b0q", "0s0x", "1000x", "70000s", "1p", "255p",
                                 "257p", "i 2h\t\n\r\v\fq ", b" b  h ", "!  I", "@ ?e", "x" * 500])
def test_counts_and_whitespace(fmt):
    size = std.calcsize(fmt)
    assert fw.calcsize(fmt) == size
    args = std.unpack(fmt, bytes(size))
    assert fw.unpack(fmt, bytes(size)) == args
    assert fw.Struct(fmt).unpack(bytes(size)) == args
    assert fw.pack(fmt, *args) == std.pack(fmt, *args)


ZERO_P_FORMATS = ["0p", "<0p", "c0p", "0pc", "?0ph", "0px", "x0p", "0s0p0x", "h0p0p", b"0p"]


@pytest.mark.parametrize("fmt", ZERO_P_FORMATS, ids=repr)
def test_unpack_zero_length_pascal_string_gh_124248(fmt):
    """gh-124248: unpacking '0p' raised SystemError (3.11, 3.12; fixed in
    3.13). A zero-length Pascal string is empty, exactly like '0s'."""
    like = oracle_format(fmt)
    data = bytes(range(1, std.calcsize(fmt) + 1))
    assert fw.unpack(fmt, data) == std.unpack(like, data)
    assert fw.Struct(fmt).unpack_from(b"?" + data, 1) == std.unpack(like, data)
    if data:
        assert fw.Struct(fmt).unpack_many(data * 2) == [std.unpack(like, data)] * 2


@pytest.mark.parametrize("fmt", ZERO_P_FORMATS, ids=repr)
def test_pack_zero_length_pascal_string_writes_nothing_gh_156939(fmt):
    """gh-156939: packing '0p' wrote a length byte at the item's position
    although the item has no room (0xff on 3.11/3.12, 0 on 3.13): into the
    next padding byte ('0px' packs b'\\xff' on 3.11), or past the end of the
    buffer. fastwire writes nothing for it, exactly like '0s'."""
    like = oracle_format(fmt)
    values = std.unpack(like, bytes(std.calcsize(fmt)))
    values = tuple(b"abc" if v == b"" else v for v in values)
    assert fw.pack(fmt, *values) == std.pack(like, *values)
    buf = bytearray(b"\xee" * (std.calcsize(fmt) + 4))
    expected = bytearray(buf)
    std.pack_into(like, expected, 2, *values)
    fw.pack_into(fmt, buf, 2, *values)
    assert buf == expected


def run_in_child(code):
    """Run code in a fresh interpreter with this one's import path, so a
    crash fails the test instead of ending the session. Returns stdout."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    child = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert child.returncode == 0, f"child exited with {child.returncode}: {child.stderr}"
    return child.stdout


def test_pack_into_zero_length_pascal_string_at_the_end_of_a_mapping_gh_156939():
    """The stdlib (3.11-3.13) writes one byte past the buffer here and
    segfaults."""
    run_in_child(
        "import mmap; from fastwire import struct\n"
        "m = mmap.mmap(-1, mmap.PAGESIZE)\n"
        "struct.pack_into('c0p', m, mmap.PAGESIZE - 1, b'a', b'xyz')\n"
        "struct.Struct('0p').pack_into(m, mmap.PAGESIZE, b'xyz')\n"
        "assert m[-1:] == b'a' and m[:-1] == bytes(mmap.PAGESIZE - 1)\n"
    )


# --------------------------------------------------------------------------
# Values


def _all_int_formats():
    for prefix in PREFIXES:
        for code in "bBhHiIlLqQnNP":
            if prefix in ("", "@") or code not in NATIVE_ONLY_CODES:
                yield prefix + code


@pytest.mark.parametrize("fmt", list(_all_int_formats()))
def test_integer_limits(fmt):
    lo, hi = int_range(fmt[-1], fmt[:-1])
    for value in (lo, hi, lo - 1, hi + 1, 0, -1, 1 << 64, -(1 << 64), (1 << 64) - 1, 1 << 1000,
                  True, MyInt(hi), Index(lo), Index(hi + 1), Index(1.5), IntOnly(1), FloatOnly(1.0),
                  1.0, "1", None, Raises()):
        corrected = corrected_value_error(fmt[:-1], fmt[-1], value)
        expected = ("raise", corrected) if corrected else outcome(lambda: std.pack(fmt, value))
        assert outcome(lambda: fw.pack(fmt, value)) == expected, value
    data = bytes(range(0x80, 0x88))[: std.calcsize(fmt)]
    assert outcome(lambda: fw.unpack(fmt, data)) == outcome(lambda: std.unpack(fmt, data))


class Colour(enum.IntEnum):
    RED = 1


class Flag(enum.IntFlag):
    A = 4


class IndexReturnsFloat:
    def __index__(self):
        return 1.0


VALUE_CASES = {
    "IntEnum": ("<i", Colour.RED),
    "IntFlag": ("<B", Flag.A),
    "bool for B": ("<B", True),
    "int subclass": ("<q", MyInt(-5)),
    "__index__ returning float": ("<i", IndexReturnsFloat()),
    "__index__ raising": ("<i", Raises()),
    "__bool__ raising": ("?", Raises()),
    "__float__ raising for d": ("d", Raises()),
    "__float__ raising for e": ("<e", Raises()),
    "__float__ only for i": ("i", FloatOnly(1.0)),
    "__int__ only for i": ("i", IntOnly(1)),
    "__int__ only for d": ("d", IntOnly(1)),
    "__index__ only for f": ("<f", Index(5)),
    "huge __index__ for d": ("d", Index(1 << 2000)),
    "huge int for d": ("d", 1 << 2000),
    "huge int for native f": ("f", 1 << 200),
    "float subclass for e": (">e", MyFloat(1.5)),
    "complex for d": ("d", 1j),
    "str for c": ("c", "a"),
    "int for c": ("c", 97),
    "bytearray for c": ("c", bytearray(b"a")),
    "bytes subclass for c": ("c", MyBytes(b"a")),
    "two bytes for c": ("c", b"ab"),
    "str for s": ("3s", "abc"),
    "memoryview for s": ("3s", memoryview(b"abc")),
    "bytearray for p": ("3p", bytearray(b"abcdef")),
    "long for 300p": ("300p", b"a" * 400),
    "list for ?": ("?", []),
    "None for ?": ("?", None),
    "negative for P": ("P", -1),
    "2**64 for P": ("P", 1 << 64),
}


@pytest.mark.parametrize("fmt,value", VALUE_CASES.values(), ids=VALUE_CASES.keys())
def test_value_conversions(fmt, value):
    corrected = corrected_value_error(fmt[:-1], fmt[-1], value)
    expected = ("raise", corrected) if corrected else outcome(lambda: std.pack(fmt, value))
    assert outcome(lambda: fw.pack(fmt, value)) == expected
    assert outcome(lambda: fw.Struct(fmt).pack(value)) == expected


# --------------------------------------------------------------------------
# Regressions: bugs found in fastwire by this suite


@pytest.mark.parametrize("fmt,value", [
    ("<e", 70000), (">e", -70000), ("e", 65520), ("!e", MyInt(10**6)),
    ("<f", 10**39), (">f", -(10**39)), ("=f", MyInt(10**39)), ("f", 10**39),
])
def test_regression_overflowing_int_for_e_or_f_is_struct_error(fmt, value):
    """An int too large for 'e'/'f' is struct.error ("int too large to
    convert"), like every other out-of-range int; fastwire raised the
    OverflowError that floats (and __index__ objects) get."""
    assert outcome(lambda: fw.pack(fmt, value)) == ("raise", std.error)
    assert outcome(lambda: fw.pack(fmt, float(value))) == ("raise", OverflowError)
    assert outcome(lambda: fw.pack(fmt, Index(int(value)))) == ("raise", OverflowError)
    if fmt not in ("f", "@f"):  # native 'f': gh-145633
        assert outcome(lambda: std.pack(fmt, value)) == ("raise", std.error)
        assert outcome(lambda: std.pack(fmt, float(value))) == ("raise", OverflowError)
        assert outcome(lambda: std.pack(fmt, Index(int(value)))) == ("raise", OverflowError)


@pytest.mark.parametrize("value", [Index(1 << 64), Index(-(1 << 64)), Index(1 << 100)], ids=repr)
def test_regression_out_of_range_index_object_for_P_is_overflow_error(value):
    """'P' reports an out-of-range int as struct.error but lets the
    OverflowError of an __index__ object through; fastwire converted both."""
    assert outcome(lambda: fw.pack("P", value)) == outcome(lambda: std.pack("P", value)) == ("raise", OverflowError)
    assert outcome(lambda: fw.pack("P", value.v)) == outcome(lambda: std.pack("P", value.v)) == ("raise", std.error)


# Each snippet re-initialises a Struct from user code that runs while the
# Struct is in use. On CPython 3.11-3.13 the first one is gh-143379 (a
# use-after-free: the stdlib segfaults on it). Correct is either a
# RuntimeError from the re-initialisation or a result for the format the
# operation started with; never a crash or bytes of a mixed format.
REINIT_WHILE_IN_USE = {
    "pack, from __index__": """
s = struct.Struct('<50i')
class Evil:
    def __index__(self):
        try:
            s.__init__('<300s')
        except RuntimeError:
            print('refused')
        junk = [bytearray(64) for _ in range(10000)]
        return 1
result = s.pack(Evil(), *range(49))
assert result == std.pack('<50i', 1, *range(49)), result[:16]
""",
    "pack_into, from __index__": """
s = struct.Struct('<50i')
class Evil:
    def __index__(self):
        try:
            s.__init__('<9000s')
        except RuntimeError:
            print('refused')
        return 1
buf = bytearray(220)
s.pack_into(buf, 0, Evil(), *range(49))
assert bytes(buf[:200]) == std.pack('<50i', 1, *range(49)) and bytes(buf[200:]) == bytes(20)
""",
    "pack_many, from a row's __iter__": """
s = struct.Struct('<2q')
class Row:
    def __iter__(self):
        try:
            s.__init__('<5000s')
        except RuntimeError:
            print('refused')
        return iter((1, 2))
result = s.pack_many([(0, 0), Row(), (3, 4)])
assert result == std.pack('<6q', 0, 0, 1, 2, 3, 4), len(result)
""",
    "iter_unpack, between items": """
s = struct.Struct('<h')
it = s.iter_unpack(b'\\x01\\x00' * 4)
assert next(it) == (1,)
try:
    s.__init__('<4000s')
except RuntimeError:
    print('refused')
print(it.__length_hint__())
try:
    rest = list(it)
except RuntimeError:
    rest = "refused"
assert rest in ([(1,)] * 3, [], "refused"), rest
""",
    "unpack, from a finalizer run by the collector": """
import gc
s = struct.Struct('<' + 'd' * 40)
class Finalizer:
    def __del__(self):
        try:
            s.__init__('<' + 'd' * 4000)
        except RuntimeError:
            print('refused')
def garbage():
    f = Finalizer()
    f.cycle = f
gc.collect()
gc.set_threshold(1)
data = std.pack('<' + 'd' * 40, *range(40))
for _ in range(50):
    garbage()
    r = s.unpack(data) if s.size == len(data) else None
    assert r is None or r == tuple(map(float, range(40))), r
""",
}


REINIT_WHILE_IN_USE["iter_unpack, exhausted and its mapping closed from inside next()"] = """
import gc, mmap
record = std.Struct('<24H')  # 24 items: tuples too long for the free list, so each one counts for the collector
m = mmap.mmap(-1, record.size * 4_000)
m[:] = record.pack(*range(24)) * 4_000
it = struct.Struct('<24H').iter_unpack(m)
class Exhaust:
    def __del__(self):
        rest = list(it)
        try:
            m.close()  # possible only once the iterator let go of the mapping
            print('closed after', len(rest))
        except BufferError:
            print('still held after', len(rest))
def garbage():
    e = Exhaust()
    e.cycle = e
for _ in range(3_990):
    next(it)
gc.collect()
garbage()
gc.set_threshold(1)
late = next(it)  # decodes near the end of the mapping the finalizer would close
gc.set_threshold(700)
assert late == tuple(range(24)), late
"""


@pytest.mark.parametrize("snippet", REINIT_WHILE_IN_USE.values(), ids=REINIT_WHILE_IN_USE.keys())
def test_regression_reinit_while_in_use_never_crashes_gh_143379(snippet):
    run_in_child("import struct as std\nfrom fastwire import struct\n" + snippet)


class BytesWithOtherBytes(bytes):
    def __bytes__(self):
        return b"<q"


def test_regression_bytes_subclass_format_is_read_not_converted():
    """A bytes-subclass format is its own bytes; fastwire called bytes() on
    it, which runs __bytes__, and compiled another format silently."""
    fmt = BytesWithOtherBytes(b">h")
    for module in (fw, std):
        assert (module.Struct(fmt).format, module.Struct(fmt).size) == (">h", 2)
        assert module.pack(fmt, 1) == b"\x00\x01"


def test_reinit_with_a_bad_format_keeps_the_old_state_gh_145743():
    """gh-145743 (fixed upstream in 2026): after __init__ with an invalid
    format the stdlib reports the invalid format while still packing with
    the old one. fastwire keeps format, size and codes together."""
    s = fw.Struct("<i")
    for bad, error in (("z", std.error), (5, TypeError), ("\0", std.error), ("iä", UnicodeEncodeError)):
        with pytest.raises(error):
            s.__init__(bad)
        assert (s.format, s.size, s.pack(1)) == ("<i", 4, b"\x01\x00\x00\x00")


@pytest.mark.parametrize("buffer", ["ab", None, 5, noncontiguous(b"abcd")], ids=repr)
@pytest.mark.parametrize("offset", [1 << 64, -(1 << 70), 1.5, "0"], ids=repr)
def test_regression_unpack_from_rejects_the_buffer_before_the_offset(buffer, offset):
    """unpack_from converts its buffer before its offset, so a bad buffer
    wins over a bad offset; fastwire converted the offset first."""
    for call in (lambda m: m.unpack_from("<h", buffer, offset), lambda m: m.Struct("<h").unpack_from(buffer, offset),
                 lambda m: m.unpack_from("<h", buffer=buffer, offset=offset)):
        expected = outcome(lambda: call(std))
        assert expected[0] == "raise"
        assert outcome(lambda: call(fw)) == expected


SPECIAL_FLOATS = [0.0, -0.0, math.inf, -math.inf, math.nan, -math.nan, 5e-324, -5e-324,
                  2.2250738585072014e-308, 1.401298464324817e-45, 7.0e-46, 6e-8, 2.9e-8, 3e-8,
                  65504.0, 65519.99, 65520.0, -65520.0, FLOAT32_MAX, -FLOAT32_MAX,
                  FLOAT32_LARGEST_ROUNDING_DOWN, 1e300, 1.7976931348623157e308]
SPECIAL_FLOATS += [std.unpack("<d", bits.to_bytes(8, "little"))[0] for bits in (
    0x7FF0000000000001, 0x7FF4000000000000, 0xFFF0000020000000, 0x7FF8000000000001, 0x7FFFFFFFFFFFFFFF)]


@pytest.mark.parametrize("prefix", PREFIXES)
@pytest.mark.parametrize("code", "efd")
def test_special_floats(prefix, code):
    fmt = prefix + code
    for value in SPECIAL_FLOATS:
        if fmt in ("f", "@f") and native_f_overflows(value):
            continue  # gh-145633: see test_native_f_overflow_raises_gh_145633
        assert outcome(lambda: fw.pack(fmt, value)) == outcome(lambda: std.pack(fmt, value)), value
    # Every NaN/inf/subnormal bit pattern unpacks to the stdlib's exact double.
    size = std.calcsize(fmt)
    patterns = {
        2: [0x7C00, 0xFC00, 0x7C01, 0x7E00, 0xFE01, 0x7FFF, 0x0001, 0x8001, 0x03FF, 0x7BFF],
        4: [0x7F800000, 0xFF800000, 0x7F800001, 0x7FC00000, 0xFFC00001, 0x7FFFFFFF, 0x00000001, 0x807FFFFF],
        8: [0x7FF0000000000000, 0x7FF0000000000001, 0xFFF8000000000000, 0x7FF8000000000001, 0x1, 0x800FFFFFFFFFFFFF],
    }[size]
    for bits in patterns:
        for data in (bits.to_bytes(size, "little"), bits.to_bytes(size, "big")):
            assert outcome(lambda: fw.unpack(fmt, data)) == outcome(lambda: std.unpack(fmt, data)), data


@pytest.mark.parametrize("fmt", ["f", "@f", "2f", "@xf"])
@pytest.mark.parametrize("value,error", [
    (1e300, OverflowError), (-1e300, OverflowError), (FLOAT32_OVERFLOW, OverflowError),
    (-FLOAT32_OVERFLOW, OverflowError), (3.5e38, OverflowError), (FloatOnly(1e39), OverflowError),
    (MyFloat(-1e39), OverflowError), (Index(10**39), OverflowError),
    # An int that overflows is reported as struct.error ("int too large to convert").
    (1 << 200, std.error), (MyInt(10**39), std.error),
], ids=repr)
def test_native_f_overflow_raises_gh_145633(fmt, value, error):
    """gh-145633: CPython 3.11-3.13 pack a finite double too large for
    float32 as inf with native 'f' (a bare C cast), while '<f', '>f', '=f'
    and '!f' refuse it. Fixed upstream by packing native 'f' with
    PyFloat_Pack4; fastwire refuses it in every byte order, with the
    exception standard-size 'f' raises."""
    values = (value,) * (2 if fmt == "2f" else 1)
    for call in (lambda: fw.pack(fmt, *values), lambda: fw.Struct(fmt).pack(*values),
                 lambda: fw.pack_into(fmt, bytearray(16), 0, *values),
                 lambda: fw.Struct(fmt).pack_many([values])):
        assert outcome(call) == ("raise", error)
    # Standard sizes agree with the stdlib, which is right there.
    assert outcome(lambda: std.pack("<f", value)) == ("raise", error)
    assert outcome(lambda: fw.pack("<f", value)) == ("raise", error)


@pytest.mark.parametrize("fmt", [">q", "!q", ">Q", "!Q", "<q", "=Q", "q", "Q"])
@pytest.mark.parametrize("value", [Index(1 << 64), Index(-(1 << 64)), Index(-1), Index(1 << 63)], ids=repr)
def test_out_of_range_index_object_for_q_is_struct_error_gh_98248(fmt, value):
    """gh-98248 (fixed in 3.12): CPython 3.11 raises OverflowError for an
    out-of-range __index__ object packed as big-endian 'q'/'Q' only, and
    struct.error for every other integer code, byte order and int value.
    fastwire raises struct.error throughout, as 3.12+ do."""
    lo, hi = int_range(fmt[-1], fmt[:-1])
    expected = ("ok", ("bytes", std.pack(fmt, value.v))) if lo <= value.v <= hi else ("raise", std.error)
    assert outcome(lambda: fw.pack(fmt, value)) == expected
    assert outcome(lambda: fw.Struct(fmt).pack_many([(value,)])) == expected
    if sys.version_info >= (3, 12):
        assert outcome(lambda: std.pack(fmt, value)) == expected


def test_native_f_still_packs_inf_nan_and_the_largest_values():
    for value in (math.inf, -math.inf, math.nan, FLOAT32_MAX, -FLOAT32_MAX, FLOAT32_LARGEST_ROUNDING_DOWN):
        assert fw.pack("f", value) == std.pack("f", value)
    assert fw.pack("f", FLOAT32_LARGEST_ROUNDING_DOWN) == std.pack("<f", FLOAT32_MAX)


@pytest.mark.parametrize("prefix", ["", "@", "=", "<"])
def test_native_alignment(prefix):
    for fmt in ("ci", "cq", "cd", "ce", "c?", "cP", "cn", "hq", "bhiq", "ci0q", "c0i", "ch3x", "c0s", "iP0l"):
        full = prefix + fmt
        expected = outcome(lambda: std.calcsize(full))
        assert outcome(lambda: fw.calcsize(full)) == expected, full
        if expected[0] == "ok":
            values = std.unpack(full, bytes(range(1, std.calcsize(full) + 1)))
            assert fw.pack(full, *values) == std.pack(full, *values), full
            assert fw.unpack(full, std.pack(full, *values)) == values, full
