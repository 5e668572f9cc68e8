"""The encoder's direct paths for value types: ints beyond 64 bits, complex, and
the datetime family are written without calling their reducers; the stdlib's
pickle.loads is the reader and the stdlib's own pickle the oracle.

Each check compares the graph the stdlib loads (its own protocol-4 pickle of
what it loaded, which records fold bits, tzinfo identity and sharing) and, where
no memo entry is involved, the exact bytes.
"""

import copyreg
import datetime
import io
import pickle as std
import pickletools

import pytest

from fastwire import pickle as fw

CORE_PROTOCOLS = range(2, std.HIGHEST_PROTOCOL + 1)


def signature(obj):
    return std.dumps(obj, 4)


def assert_same_graph(obj, proto):
    loaded = std.loads(fw.dumps(obj, proto))
    assert signature(loaded) == signature(std.loads(std.dumps(obj, proto)))
    return loaded


# Every length boundary of encode_long: 8-byte words, LONG1's 255-byte limit
# (a negative number whose 256th byte is pure sign extension is trimmed back
# into LONG1), LONG4 beyond it.
BIG_INTS = [
    1 << 63, -(1 << 63) - 1, (1 << 64) - 1, 1 << 64, -(1 << 64), -(1 << 64) + 1,
    (1 << 127) - 1, -(1 << 127), (1 << 2039) - 1, -(1 << 2039), -(1 << 2040), 1 << 2040,
    -(1 << 2040) - 1, (1 << 2047), -(1 << 2047), 1 << 5000, -(1 << 5000) + 12345,
]


@pytest.mark.parametrize("proto", CORE_PROTOCOLS)
@pytest.mark.parametrize("value", BIG_INTS)
def test_ints_beyond_64_bits_are_byte_identical(value, proto):
    assert fw.dumps(value, proto) == std.dumps(value, proto)
    assert fw.dumps([value, -value], proto) == std.dumps([value, -value], proto)


@pytest.mark.parametrize("proto", CORE_PROTOCOLS)
def test_ints_of_every_width_in_a_list_are_byte_identical(proto):
    values = [sign * ((1 << bits) + delta) for bits in range(0, 70) for delta in (-1, 0, 1) for sign in (1, -1)]
    assert fw.dumps(values, proto) == std.dumps(values, proto)


class BigInt(int):
    pass


@pytest.mark.parametrize("proto", CORE_PROTOCOLS)
def test_int_subclass_still_takes_the_reduce_path(proto):
    loaded = assert_same_graph([BigInt(1 << 100), BigInt(-5)], proto)
    assert [type(v) for v in loaded] == [BigInt, BigInt]


UTC = datetime.UTC
PLUS2 = datetime.timezone(datetime.timedelta(hours=2), "CEST")
DATETIMES = [
    datetime.datetime(2024, 2, 29, 23, 59, 59, 999999),
    datetime.datetime(2021, 11, 7, 1, 30, fold=1),
    datetime.datetime(2021, 11, 7, 1, 30, fold=1, tzinfo=PLUS2),
    datetime.datetime.min, datetime.datetime.max,
    datetime.datetime(2000, 1, 1, tzinfo=UTC),
    datetime.date(1, 1, 1), datetime.date(9999, 12, 31), datetime.date(2024, 7, 4),
    datetime.time(0, 0), datetime.time(23, 59, 59, 999999, tzinfo=UTC),
    datetime.time(1, 30, fold=1), datetime.time(1, 30, fold=1, tzinfo=PLUS2),
    datetime.timedelta.min, datetime.timedelta.max, datetime.timedelta(0),
    datetime.timedelta(days=-1, microseconds=1), datetime.timedelta(seconds=86399),
]


@pytest.mark.parametrize("proto", CORE_PROTOCOLS)
@pytest.mark.parametrize("value", DATETIMES, ids=repr)
def test_datetime_family_loads_identical_including_fold(value, proto):
    for obj in (value, [value, value], {"k": value, "n": [value]}):
        loaded = assert_same_graph(obj, proto)
    assert loaded["k"] is loaded["n"][0]
    assert getattr(loaded["k"], "fold", 0) == (getattr(value, "fold", 0) if proto > 3 else 0)


@pytest.mark.parametrize("proto", CORE_PROTOCOLS)
def test_shared_tzinfo_stays_shared(proto):
    tz = datetime.timezone(datetime.timedelta(hours=-5))
    values = [datetime.datetime(2020, 1, d, tzinfo=tz) for d in range(1, 5)]
    loaded = assert_same_graph(values, proto)
    assert all(v.tzinfo is loaded[0].tzinfo for v in loaded)


@pytest.mark.parametrize("proto", CORE_PROTOCOLS)
def test_complex_loads_identical(proto):
    values = [1j, complex(-0.0, float("inf")), complex(1e300, -1e-300), complex(3, 4)]
    assert_same_graph(values + values, proto)
    nan = std.loads(fw.dumps(complex(float("nan"), 1), proto))
    assert nan.real != nan.real and nan.imag == 1


class MyDate(datetime.date):
    pass


@pytest.mark.parametrize("proto", CORE_PROTOCOLS)
def test_datetime_subclass_takes_its_own_reduce(proto):
    loaded = std.loads(fw.dumps([MyDate(2020, 1, 2)], proto))
    assert type(loaded[0]) is MyDate and loaded[0] == datetime.date(2020, 1, 2)


def _as_string(value):
    return (str, (value.isoformat(),))


@pytest.mark.parametrize("proto", CORE_PROTOCOLS)
def test_copyreg_registration_wins_over_the_direct_path(proto):
    copyreg.pickle(datetime.date, _as_string)
    try:
        assert std.loads(fw.dumps(datetime.date(2020, 1, 2), proto)) == "2020-01-02"
    finally:
        del copyreg.dispatch_table[datetime.date]
    copyreg.pickle(complex, _as_string_complex)
    try:
        assert std.loads(fw.dumps(3j, proto)) == "3j"
    finally:
        copyreg.pickle(complex, copyreg.pickle_complex)


def _as_string_complex(value):
    return (str, (repr(value),))


@pytest.mark.parametrize("proto", CORE_PROTOCOLS)
def test_regression_complex_without_its_copyreg_entry_reduces_like_stdlib(proto, monkeypatch):
    # Without copyreg's pickle_complex, complex goes through
    # object.__reduce_ex__ (NEWOBJ with __getnewargs__); the encoder once
    # wrote its copyreg shape (REDUCE) regardless.
    monkeypatch.delitem(copyreg.dispatch_table, complex)
    value = [1 + 2j, -0.5j]
    assert pickletools.optimize(fw.dumps(value, proto)) == pickletools.optimize(std.dumps(value, proto))


@pytest.mark.parametrize("proto", CORE_PROTOCOLS)
def test_pickler_dispatch_table_and_reducer_override_win(proto):
    class Table(fw.Pickler):
        dispatch_table = {datetime.timedelta: lambda v: (str, ("td",)), complex: lambda v: (str, ("c",))}

    class Override(fw.Pickler):
        def reducer_override(self, obj):
            return (str, ("over",)) if isinstance(obj, (datetime.time, complex)) else NotImplemented

    for cls, value, expected in ((Table, datetime.timedelta(1), "td"), (Table, 1j, "c"),
                                 (Override, datetime.time(1), "over"), (Override, 2j, "over")):
        out = io.BytesIO()
        cls(out, proto).dump(value)
        assert std.loads(out.getvalue()) == expected


class Recursing(datetime.tzinfo):
    """A tzinfo whose reduce pickles the value it belongs to again (and drops its reference)."""

    holder = []

    def utcoffset(self, dt):
        return datetime.timedelta(hours=1)

    def __reduce__(self):
        if self.holder:
            fw.dumps(self.holder.pop(), 5)       # re-enters the encoder with the datetime
        return (Recursing, ())


@pytest.mark.parametrize("proto", CORE_PROTOCOLS)
def test_tzinfo_reduce_that_pickles_the_datetime_again(proto):
    value = datetime.datetime(2020, 5, 17, 12, tzinfo=Recursing())
    Recursing.holder.append(value)
    data = fw.dumps([value, value], proto)
    loaded = std.loads(data)
    assert loaded[0] is loaded[1] and loaded[0].replace(tzinfo=None) == datetime.datetime(2020, 5, 17, 12)
    assert type(loaded[0].tzinfo) is Recursing
    del value
    assert Recursing.holder == []
