"""The encoder's container loops against the stdlib's bytes.

Dicts are read from their tables in place on CPython 3.11-3.13 (split tables,
the instance dictionaries, take PyDict_Next), and a call's memo grows within
the C stack before it allocates. Every check compares fastwire's bytes with the
stdlib's for objects the stdlib and fastwire both memoize (containers, strings
held elsewhere too), so a skipped, repeated or reordered item, or a memo index
off by one after the table grew, shows as a byte difference.
"""

import pickle as std

import pytest
from hypothesis import given, strategies as st

from fastwire import pickle as fw

CORE_PROTOCOLS = range(2, std.HIGHEST_PROTOCOL + 1)

keys = st.one_of(st.text(max_size=12), st.integers(-2**40, 2**40), st.floats(allow_nan=False),
                 st.tuples(st.integers(0, 9)), st.booleans(), st.none())
values = st.one_of(st.none(), st.integers(), st.text(max_size=8), st.floats(allow_nan=False))


def assert_same_bytes(obj, proto):
    assert fw.dumps(obj, proto) == std.dumps(obj, proto)


def _with_holes(items, deleted):
    """A dict whose table has deleted entries (NULL values) among live ones."""
    d = dict(items)
    for i, key in enumerate(list(d)):
        if i in deleted:
            del d[key]
    return d


@given(st.lists(st.tuples(keys, values), max_size=40), st.sets(st.integers(0, 39)),
       st.sampled_from(list(CORE_PROTOCOLS)))
def test_hypothesis_dict_tables_write_every_live_item_in_order(items, deleted, proto):
    # Mixed keys make a general table, str-only keys a str table; deletions
    # leave holes the loop must step over.
    d = _with_holes(items, deleted)
    assert_same_bytes(d, proto)
    named = [(str(k), v) for k, v in items]      # holds the new strings: memoized by both
    str_keys = _with_holes(named, deleted)
    assert_same_bytes(str_keys, proto)
    assert_same_bytes([d, str_keys, {}], proto)


@given(st.dictionaries(st.from_regex(r"[a-z_][a-z0-9_]{0,8}", fullmatch=True), values, max_size=12),
       st.sampled_from(list(CORE_PROTOCOLS)))
def test_hypothesis_instance_dictionaries_take_the_split_table_path(attrs, proto):
    class Record:
        pass

    records = [Record() for _ in range(3)]
    for r in records:
        r.__dict__.update(attrs)
    # The instances' own dictionaries, written as plain dicts.
    assert_same_bytes([r.__dict__ for r in records], proto)


@pytest.mark.parametrize("proto", CORE_PROTOCOLS)
def test_a_dict_whose_table_is_replaced_mid_dump_is_read_afresh(proto):
    # A value's __reduce__ rebuilds the dict's table (same size: deleting and
    # re-inserting keys, then a resize by growth and shrink). The loop re-reads
    # the table for each item, as PyDict_Next does, so both write the same.
    def build():
        d = {f"k{i}": i for i in range(8)}
        keys = list(d)        # written first, so the dict's keys are memo references

        class Churn:
            def __reduce__(self):
                for i in range(8):
                    d[f"k{i}"] = -i
                for i in range(100):
                    d[i] = i
                for i in range(100):
                    del d[i]
                return (int, ())
        d["k3"] = Churn()
        return [keys, d]

    assert fw.dumps(build(), proto) == std.dumps(build(), proto)


@pytest.mark.parametrize("proto", CORE_PROTOCOLS)
@pytest.mark.parametrize("count", [0, 1, 9, 10, 11, 84, 85, 86, 87, 128, 341, 342, 1000])
def test_memo_growing_past_each_inline_size_keeps_indices(count, proto):
    # Empty lists are always memoized, by both; the second reference to each
    # makes every memo index appear in the output.
    items = [[] for _ in range(count)]
    assert_same_bytes([items, items[::-1]], proto)


@given(st.integers(0, 400), st.lists(st.integers(0, 399), max_size=50), st.sampled_from(list(CORE_PROTOCOLS)))
def test_hypothesis_memo_references_after_growth(count, picks, proto):
    strings = [f"s{i}" for i in range(count)]
    held = tuple(strings)          # a second reference to each: memoized by both
    picked = [strings[i] for i in picks if i < count]
    lists = [[] for _ in range(count // 3)]
    assert_same_bytes([strings, picked, lists, lists[::2]], proto)
    assert len(held) == count


@pytest.mark.parametrize("proto", CORE_PROTOCOLS)
def test_pickler_memo_grows_across_dumps(proto):
    # A Pickler's memo starts in its own small array and outlives each dump.
    import io

    strings = [f"s{i}" for i in range(300)]
    out_fw, out_std = io.BytesIO(), io.BytesIO()
    p_fw, p_std = fw.Pickler(out_fw, proto), std.Pickler(out_std, proto)
    for chunk in range(0, 300, 7):
        p_fw.dump(strings[chunk:chunk + 7] + strings[:chunk:5])
        p_std.dump(strings[chunk:chunk + 7] + strings[:chunk:5])
    assert out_fw.getvalue() == out_std.getvalue()
