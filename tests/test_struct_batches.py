"""Struct.pack_many / Struct.unpack_many against the stdlib compositions.

pack_many(rows) must equal b"".join(S.pack(*row) for row in rows) and
unpack_many(buffer) must equal list(S.iter_unpack(buffer)), result or
exception type, for every format, row and buffer, with the stdlib as oracle
(corrected where it is known to be wrong, see struct_oracle).
"""

import struct as std

import pytest
from hypothesis import given, note, strategies as st
from struct_oracle import (
    READABLE_KINDS,
    UNUSABLE_KINDS,
    Index,
    buffer_makers,
    expected_pack_outcome,
    format_specs,
    oracle_format,
    outcome,
    pack_cases,
)

from fastwire import struct as fw


def expected_pack_many(spec, rows):
    """The stdlib composition b"".join(S.pack(*row) ...), row by row through
    the corrected oracle: the first bad row decides the exception."""
    packed = []
    for row in rows:
        try:
            args = tuple(row)
        except Exception as exc:  # noqa: BLE001 - S.pack(*row) fails the same way
            return ("raise", type(exc))
        result = expected_pack_outcome(lambda m, f, a: m.Struct(f).pack(*a), spec, args)
        if result[0] == "raise":
            return result
        packed.append(result[1][1])
    return ("ok", ("bytes", b"".join(packed)))


@st.composite
def batches(draw):
    """A format and 0-6 rows for it; most rows valid, some bad in any way
    pack_cases knows (value, type, count), some not even iterable."""
    spec = draw(format_specs(max_values=10))
    rows = []
    for _ in range(draw(st.integers(0, 6))):
        _, args = draw(pack_cases(st.just(spec)))
        shape = draw(st.sampled_from(["tuple"] * 6 + ["list", "generator", "not-iterable"]))
        if shape == "list":
            rows.append(list(args))
        elif shape == "generator":
            rows.append(RowGenerator(args))
        elif shape == "not-iterable":
            rows.append(draw(st.sampled_from([None, 5, 1.5])))
        else:
            rows.append(args)
    return spec, rows


class RowGenerator:
    """A row that can be iterated more than once (for the oracle and for
    fastwire), each time through a fresh generator."""

    def __init__(self, values):
        self.values = values

    def __iter__(self):
        return (v for v in self.values)

    def __repr__(self):
        return f"RowGenerator({self.values!r})"


@given(batches(), st.sampled_from(["list", "tuple", "generator", "iterator"]))
def test_pack_many(batch, container):
    spec, rows = batch
    fmt = spec.text
    note(f"{fmt!r} {rows!r} as {container}")
    make = {"list": list, "tuple": tuple, "generator": lambda r: (x for x in r), "iterator": iter}[container]
    assert outcome(lambda: fw.Struct(fmt).pack_many(make(rows))) == expected_pack_many(spec, rows)


@st.composite
def unpack_many_cases(draw):
    spec = draw(format_specs(max_values=10))
    size = std.calcsize(spec.text)
    records = draw(st.integers(0, 6))
    extra = draw(st.sampled_from([0] * 6 + [1, size - 1 if size > 1 else 2]))
    length = size * records + extra
    data = draw(st.binary(min_size=length, max_size=length))
    kinds = draw(st.sampled_from([READABLE_KINDS] * 6 + [UNUSABLE_KINDS]))
    return spec, draw(buffer_makers(data, kinds))


@given(unpack_many_cases())
def test_unpack_many(case):
    spec, maker = case
    fmt = spec.text
    note(f"{fmt!r} {maker!r}")
    expected = outcome(lambda: list(std.Struct(spec.oracle_text).iter_unpack(maker.make())))
    assert outcome(lambda: fw.Struct(fmt).unpack_many(maker.make())) == expected


ROWS = [(1, 2, 3.5, -4), (-(2**31), 65535, -0.0, 2**63 - 1), (0, 0, float("inf"), 0)]
FMT = "<iHdq"


def test_round_trip_and_result_types():
    s = fw.Struct(FMT)
    blob = s.pack_many(ROWS)
    assert type(blob) is bytes
    assert blob == b"".join(std.pack(FMT, *r) for r in ROWS)
    records = s.unpack_many(blob)
    assert type(records) is list and all(type(r) is tuple for r in records)
    assert records == list(std.iter_unpack(FMT, blob))


def test_generators_and_iterators_as_input():
    s = fw.Struct(FMT)
    expected = b"".join(std.pack(FMT, *r) for r in ROWS)
    assert s.pack_many(r for r in ROWS) == expected
    assert s.pack_many(iter(ROWS)) == expected
    assert s.pack_many(map(tuple, map(list, ROWS))) == expected
    assert s.pack_many((x for x in r) for r in ROWS) == expected
    assert s.pack_many(list(r) for r in ROWS) == expected


def test_empty_input():
    s = fw.Struct(FMT)
    assert s.pack_many([]) == b""
    assert s.pack_many(iter(())) == b""
    assert s.unpack_many(b"") == [] == list(std.iter_unpack(FMT, b""))
    assert s.unpack_many(bytearray()) == []


@pytest.mark.parametrize("fmt", ["", "0s", "0x", "0i", "   ", "0p"])
def test_zero_size_struct(fmt):
    """Packing works (each row must still have the right number of values);
    unpack_many refuses, like iter_unpack, since a zero-size record count is
    unknowable."""
    s, ref = fw.Struct(fmt), std.Struct(oracle_format(fmt))
    rows = [std.unpack(oracle_format(fmt), b"")] * 3
    assert s.pack_many(rows) == b"".join(ref.pack(*r) for r in rows) == b""
    bad_rows = [rows[0] + (1,)]
    assert outcome(lambda: s.pack_many(bad_rows)) == outcome(lambda: b"".join(ref.pack(*r) for r in bad_rows))
    for data in (b"", b"abc"):
        assert outcome(lambda: s.unpack_many(data)) == outcome(lambda: list(ref.iter_unpack(data)))
        assert outcome(lambda: s.unpack_many(data)) == ("raise", std.error)


BAD_ROWS = {
    "too few values": (1, 2, 3.0),
    "too many values": (1, 2, 3.0, 4, 5),
    "out of range": (1, 65536, 3.0, 4),
    "float for int": (1.0, 2, 3.0, 4),
    "str for double": (1, 2, "3", 4),
    "not iterable": 7,
    "None": None,
    "__index__ raising": (1, 2, 3.0, Index(1.5)),
}


@pytest.mark.parametrize("position", [0, 1, 2])
@pytest.mark.parametrize("bad", BAD_ROWS.values(), ids=BAD_ROWS.keys())
def test_bad_row_raises_like_the_composition(bad, position):
    rows = list(ROWS)
    rows.insert(position, bad)
    expected = outcome(lambda: b"".join(std.Struct(FMT).pack(*r) for r in rows))
    assert expected[0] == "raise"
    assert outcome(lambda: fw.Struct(FMT).pack_many(rows)) == expected
    assert outcome(lambda: fw.Struct(FMT).pack_many(iter(rows))) == expected


def test_rows_iterable_that_raises_propagates():
    def rows():
        yield ROWS[0]
        raise KeyError("source failed")

    with pytest.raises(KeyError):
        fw.Struct(FMT).pack_many(rows())


def test_not_iterable_rows():
    for rows in (None, 5, 1.5):
        assert outcome(lambda: fw.Struct(FMT).pack_many(rows)) == ("raise", TypeError)


@pytest.mark.parametrize("length", [1, 21, 23, 25])
def test_unpack_many_needs_a_multiple_of_size(length):
    data = bytes(length)
    assert outcome(lambda: fw.Struct(FMT).unpack_many(data)) == \
        outcome(lambda: list(std.Struct(FMT).iter_unpack(data))) == ("raise", std.error)


def test_many_records():
    s = fw.Struct("<Hq?")
    rows = [(i & 0xFFFF, i * 7919 - 2**40, bool(i % 3)) for i in range(20_000)]
    blob = s.pack_many(rows)
    assert blob == b"".join(std.pack("<Hq?", *r) for r in rows)
    assert s.unpack_many(blob) == rows
    assert s.unpack_many(memoryview(blob)[s.size:]) == rows[1:]
