"""Differential tests: fastwire.struct against the stdlib struct, the oracle.

For generated formats (every code, every prefix, counts, whitespace, str and
bytes), values (mostly valid, sometimes out of range, of a wrong type or of a
wrong count) and buffers (every kind a user passes), fastwire must give the
stdlib's result or raise the stdlib's exception type. Where the stdlib is
known to be wrong the oracle asks it a corrected question (FormatSpec.oracle_text:
gh-124248, gh-156939) or corrects its answer (expected_pack_outcome: gh-145633);
each departure is also pinned by a named test in test_struct_api.py.
"""

import struct as std

from hypothesis import example, given, note, strategies as st
from struct_oracle import (
    READABLE_KINDS,
    READONLY_KINDS,
    UNUSABLE_KINDS,
    WRITABLE_KINDS,
    BufferMaker,
    buffer_makers,
    expected_pack_outcome,
    format_specs,
    junk_formats,
    oracle_format,
    outcome,
    pack_cases,
)

from fastwire import struct as fw

# Formats whose size is tiny enough to also pack and unpack in the junk test.
SMALL = 1 << 16


def struct_attributes(module, fmt):
    s = module.Struct(fmt)
    return s.format, s.size


@given(format_specs())
def test_calcsize_and_struct_attributes(spec):
    fmt = spec.text
    note(repr(fmt))
    assert outcome(lambda: fw.calcsize(fmt)) == outcome(lambda: std.calcsize(fmt))
    assert outcome(lambda: struct_attributes(fw, fmt)) == outcome(lambda: struct_attributes(std, fmt))


@given(junk_formats)
@example("99999999999999999999i")
@example("i\0")
@example("iä")
@example(b"\xff")
def test_bad_formats_fail_like_stdlib(fmt):
    if not isinstance(fmt, (str, bytes)):
        # The stdlib looks any hashable format up in its cache first, so
        # memoryview(b"i") passes as b"i" if and only if b"i" happens to be
        # cached. fastwire caches exact str and bytes only and always raises
        # the TypeError the stdlib raises with an empty cache.
        std._clearcache()
    expected = outcome(lambda: std.calcsize(fmt))
    assert outcome(lambda: fw.calcsize(fmt)) == expected
    assert outcome(lambda: struct_attributes(fw, fmt)) == outcome(lambda: struct_attributes(std, fmt))
    oracle_fmt = oracle_format(fmt)
    if expected[0] == "ok" and expected[1][1] <= SMALL:
        zeros = bytes(expected[1][1])
        assert outcome(lambda: fw.unpack(fmt, zeros)) == outcome(lambda: std.unpack(oracle_fmt, zeros))
        assert outcome(lambda: fw.pack(fmt)) == outcome(lambda: std.pack(oracle_fmt))
    else:
        # Formats too large to pack: unpack must refuse a small buffer
        # without allocating for the claimed size.
        assert outcome(lambda: fw.unpack(fmt, b"abc")) == outcome(lambda: std.unpack(oracle_fmt, b"abc"))


@given(pack_cases())
def test_pack(case):
    spec, args = case
    fmt = spec.text
    note(f"{fmt!r} {args!r}")
    for call in (lambda m, f, a: m.pack(f, *a), lambda m, f, a: m.Struct(f).pack(*a)):
        assert outcome(lambda: call(fw, fmt, args)) == expected_pack_outcome(call, spec, args)


# Offsets around both ends of the buffer, plus values that do not fit a C ssize_t.
def offsets(length):
    return st.one_of(
        st.integers(-length - 3, length + 3),
        st.sampled_from([(1 << 63) - 1, -(1 << 63), 1 << 64, -(1 << 70), True]),
    )


@st.composite
def pack_into_cases(draw):
    spec, args = draw(pack_cases())
    size = std.calcsize(spec.text)
    length = draw(st.sampled_from([size, size + 3, size * 2 + 1, max(size - 1, 0), 0]))
    data = draw(st.binary(min_size=length, max_size=length))
    kinds = draw(st.sampled_from([WRITABLE_KINDS] * 6 + [READONLY_KINDS, UNUSABLE_KINDS]))
    maker = draw(buffer_makers(data, kinds))
    offset = draw(offsets(len(maker.data)))
    return spec, args, maker, offset


@given(pack_into_cases())
def test_pack_into(case):
    spec, args, maker, offset = case
    fmt = spec.text
    note(f"{fmt!r} {args!r} {maker!r} offset={offset!r}")

    # On success the outcome is the buffer's new contents, so the bytes
    # written (and those left alone) are compared too.
    def pack_into(module, fmt, values):
        buf = maker.make()
        module.pack_into(fmt, buf, offset, *values)
        return BufferMaker.contents(buf)

    def struct_pack_into(module, fmt, values):
        buf = maker.make()
        module.Struct(fmt).pack_into(buf, offset, *values)
        return BufferMaker.contents(buf)

    for call in (pack_into, struct_pack_into):
        assert outcome(lambda: call(fw, fmt, args)) == expected_pack_outcome(call, spec, args)


@st.composite
def unpack_cases(draw, kinds=READABLE_KINDS):
    spec = draw(format_specs())
    size = std.calcsize(spec.text)
    length = draw(st.sampled_from([size] * 6 + [size + 1, max(size - 1, 0), 0]))
    data = draw(st.binary(min_size=length, max_size=length))
    maker = draw(buffer_makers(data, draw(st.sampled_from([kinds] * 6 + [UNUSABLE_KINDS]))))
    return spec, maker


@given(unpack_cases())
def test_unpack(case):
    spec, maker = case
    fmt = spec.text
    note(f"{fmt!r} {maker!r}")
    expected = outcome(lambda: std.unpack(spec.oracle_text, maker.make()))
    assert outcome(lambda: fw.unpack(fmt, maker.make())) == expected
    assert outcome(lambda: fw.Struct(fmt).unpack(maker.make())) == expected


@st.composite
def unpack_from_cases(draw):
    spec = draw(format_specs())
    size = std.calcsize(spec.text)
    length = draw(st.integers(0, size + 8))
    data = draw(st.binary(min_size=length, max_size=length))
    maker = draw(buffer_makers(data, draw(st.sampled_from([READABLE_KINDS] * 6 + [UNUSABLE_KINDS]))))
    # None: offset left out (default 0); otherwise passed positionally or by keyword.
    offset = draw(st.one_of(st.none(), offsets(length)))
    style = draw(st.sampled_from(["positional", "offset-keyword", "all-keywords"]))
    return spec, maker, offset, style


@given(unpack_from_cases())
def test_unpack_from(case):
    spec, maker, offset, style = case
    fmt = spec.text
    note(f"{fmt!r} {maker!r} offset={offset!r} {style}")

    def call(function, *leading):
        buf = maker.make()
        if offset is None:
            return function(*leading, buf) if style == "positional" else function(*leading, buffer=buf)
        if style == "positional":
            return function(*leading, buf, offset)
        if style == "offset-keyword":
            return function(*leading, buf, offset=offset)
        return function(*leading, buffer=buf, offset=offset)

    expected = outcome(lambda: call(std.unpack_from, spec.oracle_text))
    assert outcome(lambda: call(fw.unpack_from, fmt)) == expected
    assert outcome(lambda: call(fw.Struct(fmt).unpack_from)) == expected


def drain_with_length_hints(iterator):
    """Every item, each preceded by the iterator's __length_hint__()."""
    seen = [iterator.__length_hint__()]
    for item in iterator:
        seen += [item, iterator.__length_hint__()]
    return seen


@st.composite
def iter_unpack_cases(draw):
    spec = draw(format_specs(max_values=8))
    size = std.calcsize(spec.text)
    records = draw(st.integers(0, 5))
    extra = draw(st.sampled_from([0] * 6 + [1, size - 1 if size > 1 else 2]))
    length = size * records + extra
    data = draw(st.binary(min_size=length, max_size=length))
    maker = draw(buffer_makers(data, draw(st.sampled_from([READABLE_KINDS] * 6 + [UNUSABLE_KINDS]))))
    return spec, maker


@given(iter_unpack_cases())
def test_iter_unpack(case):
    spec, maker = case
    fmt = spec.text
    note(f"{fmt!r} {maker!r}")
    expected = outcome(lambda: drain_with_length_hints(std.iter_unpack(spec.oracle_text, maker.make())))
    assert outcome(lambda: drain_with_length_hints(fw.iter_unpack(fmt, maker.make()))) == expected
    assert outcome(lambda: drain_with_length_hints(fw.Struct(fmt).iter_unpack(maker.make()))) == expected


@given(pack_cases(format_specs(prefixes=("", "@"))))
def test_native_pack_roundtrip(case):
    """Native size and alignment: what fastwire packs, the stdlib unpacks identically."""
    spec, args = case
    fmt = spec.text
    packed = outcome(lambda: fw.pack(fmt, *args))
    if packed[0] == "ok":
        data = packed[1][1]
        assert outcome(lambda: fw.unpack(fmt, data)) == outcome(lambda: std.unpack(spec.oracle_text, data))


def test_calcsize_of_every_single_code_under_every_prefix():
    checked = 0
    for prefix in ("", "@", "=", "<", ">", "!"):
        for code in "xcbB?hHiIlLqQnNefdspP":
            fmt = prefix + code
            assert outcome(lambda: fw.calcsize(fmt)) == outcome(lambda: std.calcsize(fmt))
            checked += outcome(lambda: std.calcsize(fmt))[0] == "ok"
    # 21 codes under 2 native prefixes, 18 (no n, N, P) under 4 standard ones.
    assert checked == 21 * 2 + 18 * 4
