"""Loading records of one shape, and the short-string cache, against the stdlib.

A dict filled by SETITEMS whose keys are, in order and by identity, those of
the previous such dict (rows of a table, a dict of dicts) is built from that
dict's table instead of key by key. The stdlib's loads is the oracle: equal
values, the same keys in the same order, the same sharing, the same table size
and the same garbage-collector tracking.
"""

import gc
import io
import pickle as std
import sys

import pytest
from hypothesis import given, strategies as st

from fastwire import pickle as fw
from tests.support.pickle_catalogue import same_object_graph

CORE_PROTOCOLS = range(2, std.HIGHEST_PROTOCOL + 1)

atoms = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=10))
values = st.one_of(atoms, st.lists(atoms, max_size=3), st.tuples(atoms), st.dictionaries(st.text(max_size=3), atoms,
                                                                                        max_size=2))
key_sets = st.one_of(
    st.lists(st.text(max_size=20), min_size=1, max_size=30, unique=True),
    st.lists(st.integers(-300, 300), min_size=1, max_size=30, unique=True),
    st.lists(st.one_of(st.integers(0, 50), st.text(max_size=4)), min_size=1, max_size=30, unique=True),
)


def assert_loads_like_stdlib(data, sharing=True):
    """Equal results; with `sharing`, also the same sharing of objects (the
    short-string cache may share equal strings the stdlib builds apart)."""
    expected = std.loads(data)
    got = fw.loads(data)
    assert got == expected
    if sharing:
        assert same_object_graph(got, expected)
    return got, expected


def dicts_in(obj):
    if isinstance(obj, dict):
        yield obj
        for v in obj.values():
            yield from dicts_in(v)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            yield from dicts_in(v)


def assert_dicts_match(got, expected):
    # Tracking compared after full collections (CPython's own untracking rule
    # applied to both): fastwire untracks tuples of atoms as it builds them,
    # the stdlib's are untracked by the collector later.
    for _ in range(3):
        gc.collect()
    for g, e in zip(dicts_in(got), dicts_in(expected), strict=True):
        assert list(g) == list(e)
        assert sys.getsizeof(g) == sys.getsizeof(e)
        assert gc.is_tracked(g) == gc.is_tracked(e)


@given(key_sets, st.lists(st.lists(values, min_size=30, max_size=30), min_size=1, max_size=5),
       st.booleans(), st.sampled_from(list(CORE_PROTOCOLS)))
def test_hypothesis_rows_of_one_shape_load_like_stdlib(keys, rows, fresh_keys, proto):
    # Keys shared by every row (memo references in the pickle) or equal but
    # distinct objects per row (each row writes its own strings).
    records = []
    for row in rows:
        row_keys = [k if not isinstance(k, str) or not fresh_keys else "".join(list(k)) for k in keys]
        records.append(dict(zip(row_keys, row)))
    data = std.dumps(records, proto)
    got, expected = assert_loads_like_stdlib(data, sharing=not fresh_keys)
    assert_dicts_match(got, expected)
    by_id = {i: r for i, r in enumerate(records)}
    got, expected = assert_loads_like_stdlib(std.dumps(by_id, proto), sharing=not fresh_keys)
    assert_dicts_match(got, expected)


@pytest.mark.parametrize("proto", CORE_PROTOCOLS)
def test_rows_that_differ_from_the_shape_are_built_key_by_key(proto):
    base = {f"k{i}": i for i in range(8)}
    reordered = dict(reversed(list(base.items())))
    extra = dict(base, extra=1)
    missing = {k: v for k, v in base.items() if k != "k7"}
    renamed = {("K0" if k == "k0" else k): v for k, v in base.items()}
    records = [base, reordered, base, extra, base, missing, base, renamed, dict(base)]
    got, expected = assert_loads_like_stdlib(std.dumps(records, proto))
    assert_dicts_match(got, expected)


@pytest.mark.parametrize("proto", CORE_PROTOCOLS)
def test_duplicate_keys_in_the_stream_keep_the_last_value(proto):
    # SETITEMS with a key twice: the stdlib keeps the last value and one entry.
    keys = [f"k{i}" for i in range(7)]
    body = b"".join(b"\x8c" + bytes([len(k)]) + k.encode() + b"K" + bytes([i]) for i, k in enumerate(keys))
    dup = b"".join(b"\x8c" + bytes([len(k)]) + k.encode() + b"K" + bytes([i + 50]) for i, k in enumerate(keys[:6]))
    row = b"}(" + body + b"u"
    data = b"\x80\x04](" + row + b"}(" + body + dup + b"u" + row + b"e."
    got, expected = assert_loads_like_stdlib(data, sharing=False)
    assert_dicts_match(got, expected)


@pytest.mark.parametrize("proto", CORE_PROTOCOLS)
def test_a_row_that_holds_itself_is_built_as_the_stdlib_builds_it(proto):
    rows = [{f"k{i}": i for i in range(8)} for _ in range(3)]
    for r in rows[1:]:
        r["k3"] = r                      # the dict is on the stack twice during SETITEMS
    data = std.dumps(rows, proto)
    got, expected = fw.loads(data), std.loads(data)
    assert all(r["k3"] is r for r in got[1:])
    for g, e in zip(got, expected, strict=True):
        assert list(g) == list(e)
        assert {k: v for k, v in g.items() if v is not g} == {k: v for k, v in e.items() if v is not e}
    assert_dicts_match(got[0], expected[0])


@pytest.mark.parametrize("proto", CORE_PROTOCOLS)
def test_collector_tracking_follows_each_rows_own_values(proto):
    # A row of atoms after a row holding a list (and the other way round):
    # each dict is tracked exactly when insertion would have tracked it.
    keys = [f"k{i}" for i in range(8)]
    rows = [dict.fromkeys(keys, 1), dict(dict.fromkeys(keys, 1), k5=[1]), dict.fromkeys(keys, 2),
            dict(dict.fromkeys(keys, 3), k0=(1, 2)), dict(dict.fromkeys(keys, 3), k0=([],))]
    got, expected = assert_loads_like_stdlib(std.dumps(rows, proto))
    # At once, without a collection: (1, 2) is an untracked tuple of atoms.
    assert [gc.is_tracked(r) for r in got] == [False, True, False, False, True]
    assert_dicts_match(got, expected)


_hash_calls = []


class CountingKey(tuple):
    def __hash__(self):
        _hash_calls.append(1)
        return super().__hash__()


def test_keys_of_other_types_are_built_key_by_key():
    # Keys whose hash could run Python code never take the shape path: the
    # stdlib calls __hash__ once per inserted key, and so does fastwire.
    calls = _hash_calls
    Key = CountingKey
    keys = [Key((i,)) for i in range(8)]
    rows = [dict.fromkeys(keys, i) for i in range(3)]
    data = std.dumps(rows, 4)
    calls.clear()
    std.loads(data)
    stdlib_calls = len(calls)
    calls.clear()
    assert fw.loads(data) == rows
    assert len(calls) == stdlib_calls


def test_each_load_of_an_unpickler_starts_without_a_shape():
    keys = [f"k{i}" for i in range(8)]
    stream = io.BytesIO()
    pickler = std.Pickler(stream, 4)
    for i in range(4):
        pickler.dump([dict.fromkeys(keys, i), dict.fromkeys(keys, -i)])
    stream.seek(0)
    unpickler = fw.Unpickler(stream)
    for i in range(4):
        assert unpickler.load() == [dict.fromkeys(keys, i), dict.fromkeys(keys, -i)]


printable = st.characters(min_codepoint=32, max_codepoint=126)


@given(st.text(printable, min_size=2, max_size=24), st.data())
def test_hypothesis_short_strings_that_differ_in_one_byte_load_exactly(text, data):
    # The cache compares words covering every byte: strings that share all
    # but one byte, at any position, must never be mistaken for each other.
    variants = [text]
    for pos in data.draw(st.lists(st.integers(0, len(text) - 1), max_size=6)):
        ch = data.draw(printable)
        variants.append(text[:pos] + ch + text[pos + 1:])
    for _round in range(2):
        for s in variants:
            got = fw.loads(std.dumps(s, 5))
            assert got == s and type(got) is str


@pytest.mark.parametrize("size", [6, 7, 20, 21, 22, 42, 43, 85, 86, 341, 342, 999, 1000, 1001, 2730, 3000])
@pytest.mark.parametrize("make_key", [int, float, lambda i: (i,), lambda i: ("k", i)],
                         ids=["int", "float", "tuple", "pair"])
def test_a_dict_filled_at_once_has_the_table_insertion_gives_it(size, make_key):
    # A dict of non-str keys filled by SETITEMS gets its table at once
    # (presized) rather than by doubling; it must end as large as the
    # stdlib's, which grows one key at a time (21, 85, 341 keys just fill a
    # table; 1000 is a SETITEMS batch), in the same order and tracking.
    d = {make_key(i): i for i in range(size)}
    for proto in CORE_PROTOCOLS:
        got, expected = assert_loads_like_stdlib(std.dumps([d, {"x": d}], proto), sharing=False)
        assert_dicts_match(got, expected)


def test_a_dict_whose_first_key_is_str_keeps_the_str_table_insertion_gives_it():
    # A str first key starts a str-only table: the stdlib's size differs
    # between the two kinds, so such dicts are not presized.
    d = {"a": 0, **{i: i for i in range(40)}, "b": 1}
    got, expected = assert_loads_like_stdlib(std.dumps(d, 5), sharing=False)
    assert_dicts_match(got, expected)


def test_keys_that_collide_are_compared_as_often_as_the_stdlib_compares_them():
    # A presized table has fewer slots in use, but __eq__ only ever runs
    # for keys of equal hash, whatever the table size: both loads compare
    # colliding keys the same number of times.
    calls = _eq_calls
    keys = [CollidingKey(i) for i in range(30)]
    data = std.dumps(dict.fromkeys(keys), 4)
    calls.clear()
    std.loads(data)
    stdlib_calls = len(calls)
    calls.clear()
    got = fw.loads(data)
    assert len(calls) == stdlib_calls > 0
    assert list(got) == keys


_eq_calls = []


class CollidingKey:
    def __init__(self, n):
        self.n = n

    def __hash__(self):
        return 7

    def __eq__(self, other):
        _eq_calls.append(1)
        return isinstance(other, CollidingKey) and other.n == self.n
