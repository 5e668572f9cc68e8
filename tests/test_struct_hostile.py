"""fastwire.struct under hostile input: formats, buffers and values an attacker
or a fuzzer picks, always compared with the standard library.

Each ``test_regression_*`` is a bug that fuzz/fuzz_struct.py found; the fuzz
target itself also runs here as a hypothesis property and over its committed
corpus, so the suite keeps what the fuzzer learned.
"""

import os
import struct as std
import sys
import tracemalloc

import pytest
from hypothesis import given, strategies as st

from fastwire import struct as fw

FUZZ_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "fuzz")


def outcome(fn, *args):
    try:
        return "ok", fn(*args)
    except Exception as exc:  # noqa: BLE001
        return "error", type(exc)


class BigIndex:
    def __index__(self):
        return 2**100


# --- regressions found by fuzzing -------------------------------------------------

@pytest.mark.parametrize("fmt,value", [
    ("e", 70000), ("<e", 2**31), (">e", 2**200),
    ("<f", 2**200), (">f", 2**200), ("=f", 2**200),
])
def test_regression_int_overflow_packing_float_codes_is_struct_error(fmt, value):
    # _struct.c reports every OverflowError raised for an int argument as
    # struct.error("int too large to convert"); fastwire raised OverflowError.
    with pytest.raises(std.error, match="int too large to convert"):
        std.pack(fmt, value)
    with pytest.raises(std.error, match="int too large to convert"):
        fw.pack(fmt, value)
    with pytest.raises(std.error, match="int too large to convert"):
        fw.Struct(fmt).pack_into(bytearray(8), 0, value)


def test_regression_float_overflow_packing_half_stays_overflowerror():
    # The other side of the rule above: a float argument keeps OverflowError.
    for module in (std, fw):
        with pytest.raises(OverflowError):
            module.pack("<e", 1e10)


def test_regression_index_object_overflow_packing_pointer_stays_overflowerror():
    # Only an int argument's overflow becomes struct.error; an __index__
    # object's OverflowError propagates (fastwire turned it into struct.error).
    with pytest.raises(OverflowError):
        std.pack("P", BigIndex())
    with pytest.raises(OverflowError):
        fw.pack("P", BigIndex())
    with pytest.raises(std.error, match="int too large to convert"):
        fw.pack("P", 2**100)


@pytest.mark.parametrize("fmt,value,bounds", [
    ("<q", 2**63, "-9223372036854775808 <= number <= 9223372036854775807"),
    (">Q", -1, "0 <= number <= 18446744073709551615"),
    ("@N", 2**64, "0 <= number <= 18446744073709551615"),
    ("<i", 2**31, "-2147483648 <= number <= 2147483647"),
    ("<I", -1, "0 <= number <= 4294967295"),
    ("<b", 128, "-128 <= number <= 127"),
])
def test_regression_range_error_bounds_of_wide_codes(fmt, value, bounds):
    # The bounds were computed with C int shifts: undefined behaviour for
    # 8-byte codes (UBSan: "shift exponent 64 is too large for 32-bit type
    # 'int'"), which printed 'Q' as "0 <= number <= 0". This wording is that of
    # CPython 3.12+; 3.11 words some of these cases otherwise (see
    # test_struct_boundaries.py::test_range_error_messages_follow_the_running_python).
    with pytest.raises(std.error) as info:
        fw.pack(fmt, value)
    with pytest.raises(std.error) as expected:
        std.pack(fmt, value)
    assert str(info.value) == str(expected.value)
    if sys.version_info >= (3, 12):
        assert str(info.value) == f"'{fmt[-1]}' format requires {bounds}"


def test_regression_zero_width_pascal_string_gh124248():
    # CPython before 3.12.7/3.13 raises SystemError unpacking '0p' and writes a
    # length byte outside a zero-width field when packing (gh-124248); fastwire
    # treats '0p' like '0s', as fixed CPythons do.
    assert fw.unpack("0p", b"") == (b"",)
    assert fw.unpack("<0pB", b"\x07") == (b"", 7)
    assert fw.pack("0px", b"abc") == b"\x00"
    assert fw.pack("0p", b"abc") == b""
    # 3.13.0 still writes a zero length byte at a zero-width field's offset in
    # pack_into (a byte that belongs to whatever follows); fastwire does not.
    target = bytearray(b"abc")
    fw.pack_into("<0p", target, 0, b"x")
    assert target == b"abc"
    fw.pack_into("<B0pB", target, 0, 5, b"x", 7)
    assert target == b"\x05\x07c"
    assert fw.unpack("0s", b"") == std.unpack("0s", b"")


# --- declared sizes are never allocated ---------------------------------------------

@pytest.mark.parametrize("fmt", [
    "1000000000000s", "<999999999999x", "999999999999p", "=2000000000000Q",
])
def test_huge_repeat_counts_cost_nothing_until_packed(fmt):
    assert fw.calcsize(fmt) == std.calcsize(fmt)
    tracemalloc.start()
    try:
        compiled = fw.Struct(fmt)
        with pytest.raises(std.error):
            compiled.unpack(b"\0" * 16)
        with pytest.raises(std.error):
            compiled.unpack_from(bytearray(16), 0)
        with pytest.raises(std.error):
            compiled.iter_unpack(b"\0" * 16)
        with pytest.raises(std.error):
            compiled.pack_into(bytearray(16), 0, *([b""] if fmt[-1] in "sp" else []))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 64 * 1024, f"{fmt}: {peak} bytes traced for a {len(fmt)}-byte format"


@pytest.mark.parametrize("fmt", [
    "99999999999999999999x", f"{sys.maxsize}q", f"{sys.maxsize // 2}q{sys.maxsize // 2}q", "@b" + "9" * 40 + "i",
])
def test_size_overflow_is_struct_error(fmt):
    assert outcome(fw.calcsize, fmt) == outcome(std.calcsize, fmt) == ("error", std.error)


def test_format_compile_cost_follows_format_length():
    fmt = "b" * 200_000
    assert fw.calcsize(fmt) == std.calcsize(fmt)
    assert fw.Struct(fmt).unpack(bytes(200_000)) == (0,) * 200_000


# --- hostile values and buffers -----------------------------------------------------

def test_pack_many_survives_rows_mutated_by_index():
    rows = [[1, 2], [3, 4]]

    class Clearing:
        def __index__(self):
            rows.clear()
            rows.append("not a row")
            return 5

    rows.append([Clearing(), 6])
    packed = fw.Struct("<hh").pack_many(rows)
    assert packed == std.pack("<hhhhhh", 1, 2, 3, 4, 5, 6)


def test_iter_unpack_keeps_its_buffer_exported():
    data = bytearray(b"\1\0\2\0")
    for module in (std, fw):
        it = module.iter_unpack("<h", data)
        with pytest.raises(BufferError):
            data.extend(b"\0\0")
        assert next(it) == (1,)
        del it
    data.extend(b"\3\0")


def test_user_exception_from_index_propagates_and_buffer_is_untouched():
    class Boom(Exception):
        pass

    class Bad:
        def __index__(self):
            raise Boom

    target = bytearray(b"\xaa" * 8)
    with pytest.raises(Boom):
        fw.pack_into("<ii", target, 0, 1, Bad())
    assert target == b"\xaa" * 8


@pytest.mark.parametrize("buffer", [memoryview(b"abcdefgh")[::2], "text", 12, None])
def test_non_buffers_and_strided_views_rejected_like_stdlib(buffer):
    assert outcome(fw.unpack, "<i", buffer) == outcome(std.unpack, "<i", buffer)
    assert outcome(fw.unpack_from, "<h", buffer) == outcome(std.unpack_from, "<h", buffer)


# --- the fuzz target, as a property and over its corpus ---------------------------

def load_fuzz_target(name):
    sys.path.insert(0, FUZZ_DIR)
    try:
        import importlib
        return importlib.import_module(name)
    finally:
        sys.path.remove(FUZZ_DIR)


@given(st.binary(max_size=96))
def test_fuzz_target_struct_as_property(data):
    load_fuzz_target("fuzz_struct").test_one_input(data)


def test_fuzz_corpus_and_crash_reproducers_replay():
    target = load_fuzz_target("fuzz_struct")
    dirs = [os.path.join(FUZZ_DIR, "corpus", "struct"), os.path.join(FUZZ_DIR, "crashes", "struct")]
    files = [os.path.join(d, n) for d in dirs if os.path.isdir(d) for n in sorted(os.listdir(d))
             if not n.endswith(".md")]
    assert len(files) >= 20, "the struct seed corpus is missing (python fuzz/make_corpus.py)"
    for path in files:
        with open(path, "rb") as f:
            target.test_one_input(f.read())
