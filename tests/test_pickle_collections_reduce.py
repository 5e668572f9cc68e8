"""deque and OrderedDict written without calling their C __reduce__.

Their __reduce__ asks object.__getstate__ for the instance state, and that
asks copyreg._slotnames for the class's slot names on every call. dumps
builds the same reduce value itself for an exact instance whose lookups are
all the defaults, and calls the real __reduce__ otherwise: a subclass, an
instance attribute shadowing a hook, a __slotnames__ or a copyreg._slotnames
that is not the stdlib's. The stdlib is the oracle: pickles are compared
after pickletools.optimize (which drops memo entries nothing refers to), or
the exception type and message when the stdlib raises.
"""

import collections
import copyreg
import pickle as std
import pickletools
import sys

import pytest
from hypothesis import given, settings, strategies as st

from fastwire import pickle as fw

PROTOCOLS = range(std.HIGHEST_PROTOCOL + 1)


def outcome(dumps, value, proto):
    try:
        return pickletools.optimize(dumps(value, proto))
    except Exception as exc:  # noqa: BLE001 -- any exception is an outcome to compare
        return (type(exc), str(exc))


def assert_like_stdlib(make, proto):
    """make() builds a fresh scenario; each pickler dumps it twice."""
    results = []
    for dumps in (std.dumps, fw.dumps):
        value = make()
        results.append([outcome(dumps, value, proto) for _ in range(2)])
    assert results[1] == results[0]
    return results[1]


class DequeChild(collections.deque):
    pass


class OrderedChild(collections.OrderedDict):
    pass


def _values():
    od_attrs = collections.OrderedDict(a=1, b=[2])
    od_attrs.tag = "t"
    od_attrs.me = od_attrs
    od_emptied = collections.OrderedDict(x=1)
    od_emptied.tag = 1
    del od_emptied.tag                   # an instance dict that exists, empty
    in_itself = collections.deque([1])
    in_itself.append(in_itself)
    od_in_itself = collections.OrderedDict()
    od_in_itself["self"] = od_in_itself
    shared = collections.deque("ab")
    child = DequeChild([1, 2], 4)
    return {
        "deque": [collections.deque(range(i)) for i in range(4)],
        "deque with maxlen": [collections.deque(range(5), 3), collections.deque(maxlen=0)],
        "deque in itself": [in_itself],
        "shared deque": [shared, shared, collections.deque([shared])],
        "long deque": [collections.deque(range(2500))],
        "OrderedDict": [collections.OrderedDict((str(i), i) for i in range(j)) for j in range(4)],
        "OrderedDict moved to end": [_moved()],
        "OrderedDict with attributes": [od_attrs, od_emptied],
        "OrderedDict in itself": [od_in_itself],
        "long OrderedDict": [collections.OrderedDict((i, i) for i in range(2500))],
        "subclasses": [child, OrderedChild(a=1), child],
    }


def _moved():
    od = collections.OrderedDict.fromkeys("abc")
    od.move_to_end("a")
    return od


@pytest.mark.parametrize("proto", PROTOCOLS)
@pytest.mark.parametrize("name", sorted(_values()))
def test_collections_values_match_stdlib(name, proto):
    got = assert_like_stdlib(lambda: _values()[name], proto)
    assert all(isinstance(r, bytes) for r in got)


def test_collections_load_back():
    value = [collections.deque([1, 2], 5), collections.OrderedDict(b=1, a=2)]
    loaded = std.loads(fw.dumps(value, 5))
    assert loaded == value and loaded[0].maxlen == 5 and list(loaded[1]) == ["b", "a"]


# Instance attributes that shadow the hooks; module functions, so that the
# instance dict holding them (the state) can itself be pickled.
def _shadow_reduce():
    return (collections.deque, ((1,),))


def _shadow_reduce_ex(proto):
    return (collections.deque, ((proto,),))


def _shadow_getstate():
    return {"from": "getstate"}


def _shadow_items():
    return [("shadowed", 1)]


@pytest.mark.parametrize("proto", PROTOCOLS)
def test_instance_attributes_shadowing_the_hooks_are_honoured(proto):
    def make():
        values = []
        for name, hook in [("__reduce__", _shadow_reduce), ("__reduce_ex__", _shadow_reduce_ex),
                           ("__getstate__", _shadow_getstate), ("items", _shadow_items)]:
            od = collections.OrderedDict(k=1)
            setattr(od, name, hook)
            values.append(od)
        return values
    got = assert_like_stdlib(make, proto)
    assert all(isinstance(r, bytes) for r in got)


@pytest.mark.parametrize("proto", PROTOCOLS)
def test_replaced_copyreg_slotnames_is_called(proto, monkeypatch):
    calls = []

    def slotnames(cls):
        calls.append(cls)
        return []

    monkeypatch.setattr(copyreg, "_slotnames", slotnames)
    assert_like_stdlib(lambda: [collections.deque([1]), collections.OrderedDict(a=1)], proto)
    if proto >= 2:
        assert collections.deque in calls and collections.OrderedDict in calls


@pytest.mark.parametrize("proto", range(2, std.HIGHEST_PROTOCOL + 1))
def test_copyreg_replaced_in_sys_modules_is_used(proto, monkeypatch):
    import types
    fake = types.ModuleType("copyreg")
    calls = []

    def slotnames(cls):
        calls.append(cls)
        return []

    fake._slotnames = slotnames
    fake.__newobj__ = copyreg.__newobj__
    monkeypatch.setitem(sys.modules, "copyreg", fake)
    expected = std.dumps(collections.deque([1]), proto)
    std_calls, calls[:] = list(calls), []
    assert fw.dumps(collections.deque([1]), proto) == expected
    assert calls == std_calls == [collections.deque]


# --- callouts: the items' own reduce doing the worst -------------------------

class Mutator:
    """Reduces to a plain int, after doing `action` to `target` once."""

    action = None

    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        action, Mutator.action = Mutator.action, None
        if action is not None:
            action(self.target)
        return (int, (7,))


@pytest.mark.parametrize("proto", PROTOCOLS)
@pytest.mark.parametrize("edit", ["append", "clear", "extend"])
def test_deque_item_that_mutates_the_deque(edit, proto):
    # The iterator was made before the items were written: the stdlib raises
    # RuntimeError for a deque changed while it is iterated.
    actions = {"append": lambda d: d.append(1), "clear": lambda d: d.clear(),
               "extend": lambda d: d.extend(range(3))}

    def make():
        d = collections.deque()
        d.extend([Mutator(d), 2, 3])
        Mutator.action = actions[edit]
        return [d]
    assert_like_stdlib(make, proto)


@pytest.mark.parametrize("proto", PROTOCOLS)
@pytest.mark.parametrize("edit", ["insert", "delete", "attribute", "move"])
def test_ordereddict_item_that_mutates_the_ordereddict(edit, proto):
    # The state (the instance dict, or None) was taken before the items were
    # written; an attribute added while they are written is in the dict the
    # stdlib writes after them.
    actions = {"insert": lambda od: od.__setitem__("new", 1), "delete": lambda od: od.pop("b"),
               "attribute": lambda od: setattr(od, "late", [1]), "move": lambda od: od.move_to_end("a")}

    def make():
        od = collections.OrderedDict()
        od["a"] = Mutator(od)
        od["b"] = 2
        od["c"] = 3
        with_dict = collections.OrderedDict(a=Mutator(None))
        with_dict.tag = 1
        Mutator.action = actions[edit]
        return [od, with_dict]

    def make_with_dict():
        od = collections.OrderedDict()
        od.tag = 0
        od["a"] = Mutator(od)
        od["b"] = 2
        Mutator.action = actions[edit]
        return [od]
    assert_like_stdlib(make, proto)
    assert_like_stdlib(make_with_dict, proto)


@settings(max_examples=100, deadline=None)
@given(items=st.lists(st.tuples(st.text(max_size=3), st.one_of(st.none(), st.integers(), st.text(max_size=3))),
                      max_size=12),
       maxlen=st.one_of(st.none(), st.integers(0, 6)), share=st.booleans(),
       proto=st.integers(0, std.HIGHEST_PROTOCOL))
def test_hypothesis_collections_match_stdlib(items, maxlen, share, proto):
    od = collections.OrderedDict(items)
    d = collections.deque((v for _, v in items), maxlen)
    value = [od, d]
    if share:
        value += [od, collections.deque([d, od]), collections.OrderedDict(x=d)]
    for _ in range(2):
        assert pickletools.optimize(fw.dumps(value, proto)) == pickletools.optimize(std.dumps(value, proto))
