"""Instances written without calling object.__reduce_ex__: the encoder learns
from one slow reduce that a class reduces to (copyreg.__newobj__, (cls,
*args), state, None, None) and writes that shape directly afterwards, calling
the class's __getnewargs__ itself when it has one (namedtuples).

The stdlib is the oracle. Each check runs the same scenario twice from fresh
classes, once through each pickler, and dumps every value twice (the first
dump learns the class, the second takes the direct path). Pickles are compared
after pickletools.optimize, which drops memo entries nothing refers to (the
encoder does not memoize objects that nothing else can reach) and renumbers
the rest; everything else must be the same bytes. Where the stdlib raises,
fastwire raises the same exception type and message.
"""

import collections
import itertools
import pickle as std
import pickletools

import pytest
from hypothesis import given, settings, strategies as st

from fastwire import pickle as fw

PROTOCOLS = range(std.HIGHEST_PROTOCOL + 1)
_names = itertools.count()


def publish(cls):
    """Make a class created inside a test picklable by name (module global)."""
    name = f"_{cls.__name__}_{next(_names)}"
    cls.__name__ = cls.__qualname__ = name
    cls.__module__ = __name__
    globals()[name] = cls
    return cls


def namedtuple(fields="x y", **kw):
    return publish(collections.namedtuple("NT", fields, **kw))


def outcome(dumps, make, proto):
    """What dumps makes of a fresh scenario: (first, second) optimized
    pickles, or the exception raised as (type, message)."""
    global _names
    _names = itertools.count()    # both picklers' scenarios get the same class names
    results = []
    value = make()
    for _ in range(2):
        try:
            results.append(pickletools.optimize(dumps(value, proto)))
        except Exception as exc:  # noqa: BLE001 -- any exception is an outcome to compare
            results.append((type(exc), str(exc)))
    return results


def assert_like_stdlib(make, proto):
    """make() builds a fresh scenario (new classes, new instances); both
    picklers must agree on it."""
    expected = outcome(std.dumps, make, proto)
    got = outcome(fw.dumps, make, proto)
    assert got == expected
    return got


# --- the shapes written directly ----------------------------------------------

class WithNewArgs:
    """A plain class with __getnewargs__ and a __dict__."""

    def __init__(self, a, b):
        self.a = a
        self.b = b

    def __new__(cls, *args):
        return super().__new__(cls)

    def __getnewargs__(self):
        return (self.a, self.b)


class EmptyNewArgs(WithNewArgs):
    def __getnewargs__(self):
        return ()


class SubclassNewArgs(WithNewArgs):
    def __getnewargs__(self):
        return StrangeTuple((self.a,))


class StrangeTuple(tuple):
    """A tuple subclass whose iteration lies: the stdlib copies its items."""

    def __iter__(self):
        return iter(("lie",))

    def __radd__(self, other):
        return ("lie",)


SHARED_ARGS = (1, 2)


class SharedNewArgs(WithNewArgs):
    """__getnewargs__ returns a tuple that the pickle also holds elsewhere:
    the stdlib writes a copy of it, never a memo reference."""

    def __getnewargs__(self):
        return SHARED_ARGS


Point = collections.namedtuple("Point", "x y z")
Empty = collections.namedtuple("Empty", "")


class PointWithDict(Point):
    pass


class PointTupleSlots(tuple):
    __slots__ = ()

    def __getnewargs__(self):
        return (tuple(self),)


def _values():
    p = Point(1, 2.5, "s")
    with_dict = PointWithDict(1, [2], None)
    with_dict.extra = {"k": p}
    empty_dict = PointWithDict(3, 4, 5)
    plain = WithNewArgs(1, [2, 3])
    shared = SharedNewArgs(1, 2)
    cycle = []
    cycle.append(Point(cycle, 1, 2))
    return {
        "namedtuple": [Point(i, i + 0.5, "s" * i) for i in range(5)],
        "empty namedtuple": [Empty(), Empty()],
        "namedtuple sharing its items": [p, p, Point(p, p, [p])],
        "namedtuple in a cycle": cycle,
        "namedtuple subclass with a __dict__": [with_dict, empty_dict, with_dict],
        "tuple subclass with __getnewargs__": [PointTupleSlots((1, 2)), PointTupleSlots(())],
        "plain class with __getnewargs__": [plain, plain, WithNewArgs(plain, plain)],
        "empty __getnewargs__": [EmptyNewArgs(1, 2)],
        "__getnewargs__ returning a tuple subclass": [SubclassNewArgs(7, 8)],
        "__getnewargs__ returning a shared tuple": [SHARED_ARGS, shared, shared, SHARED_ARGS],
    }


@pytest.mark.parametrize("proto", PROTOCOLS)
@pytest.mark.parametrize("name", sorted(_values()))
def test_default_reduce_shapes_match_stdlib(name, proto):
    got = assert_like_stdlib(lambda: _values()[name], proto)
    assert all(isinstance(r, bytes) for r in got)


@pytest.mark.parametrize("proto", range(2, std.HIGHEST_PROTOCOL + 1))
def test_namedtuple_is_byte_identical_when_nothing_is_memoized_twice(proto):
    # Distinct items and no sharing: the only difference the encoder may make
    # is leaving out memo entries, which optimize() also leaves out.
    value = [Point(i, -i, str(i)) for i in range(3)]
    fw.dumps(value, proto)
    assert pickletools.optimize(fw.dumps(value, proto)) == pickletools.optimize(std.dumps(value, proto))
    assert std.loads(fw.dumps(value, proto)) == value


@pytest.mark.parametrize("proto", PROTOCOLS)
def test_getnewargs_returning_a_non_tuple_raises_like_stdlib(proto):
    def make():
        cls = publish(type("BadArgs", (WithNewArgs,), {"__getnewargs__": lambda self: [self.a]}))
        return [cls(1, 2)]
    got = assert_like_stdlib(make, proto)
    if proto >= 2:
        assert got[1] == (TypeError, "__getnewargs__ should return a tuple, not 'list'")


@pytest.mark.parametrize("proto", PROTOCOLS)
def test_getnewargs_raising_raises_like_stdlib(proto):
    def make():
        def getnewargs(self):
            if self.a == "boom":
                raise ValueError("boom")
            return (self.a,)
        cls = publish(type("Raising", (WithNewArgs,), {"__getnewargs__": getnewargs}))
        return [cls(1, 2), cls("boom", 2)]
    got = assert_like_stdlib(make, proto)
    if proto >= 2:                       # protocols 0-1 never call __getnewargs__
        assert got[1] == (ValueError, "boom")


@pytest.mark.parametrize("proto", PROTOCOLS)
def test_hooks_that_disqualify_a_class_are_honoured(proto):
    # An instance attribute shadowing a hook, a __getnewargs_ex__, a
    # __getstate__ or slots added after the class was learned.
    def make():
        nt = namedtuple()
        cls = publish(type("Late", (WithNewArgs,), {}))
        shadowed = cls(1, 2)
        shadowed.__getnewargs__ = "shadow"     # never called: looked up on the class
        return [nt(1, 2), cls(1, 2), shadowed, cls(3, 4)]
    assert_like_stdlib(make, proto)

    def make_changed():
        value = make()
        nt, cls = type(value[0]), type(value[1])
        std.dumps(value, proto)
        fw.dumps(value, proto)
        cls.__getstate__ = lambda self: {"state": 1}
        nt.__getnewargs_ex__ = lambda self: ((1, 2), {})
        return value
    assert_like_stdlib(make_changed, proto)


# --- callouts: __getnewargs__ doing the worst ----------------------------------

def scenario(action, base=None, hook="__getnewargs__", name="Hostile"):
    """A fresh class whose `hook` (returning ``(self.a, self.b)``) runs
    action(self) once armed, and a list of instances: two before the armed
    one, so that the class is learned (a new class has no version tag until
    its first lookup) and the armed instance takes the direct path."""
    base = base or WithNewArgs

    def hooked(self):
        if self.a == "armed":
            action(self)
        return (self.a, self.b)

    cls = publish(type(name, (base,), {hook: hooked}))
    return cls, [cls("learn", 0), cls("learn", 1), cls("armed", 2), cls("after", 3)]


@pytest.mark.parametrize("proto", PROTOCOLS)
def test_getnewargs_that_changes_the_class_of_the_instance(proto):
    def make():
        other = publish(type("Other", (WithNewArgs,), {}))
        _, items = scenario(lambda self: setattr(self, "__class__", other))
        return items
    assert_like_stdlib(make, proto)


@pytest.mark.parametrize("proto", PROTOCOLS)
def test_getnewargs_that_gives_its_class_a_getstate_or_slotnames(proto):
    def add_getstate(self):
        type(self).__getstate__ = lambda self: ("custom", self.b)

    def grow_slotnames(self):
        type(self).__dict__["__slotnames__"].append("b")

    def replace_getnewargs(self):
        type(self).__getnewargs__ = lambda self: ("replaced",)

    for action in (add_getstate, grow_slotnames, replace_getnewargs):
        assert_like_stdlib(lambda action=action: scenario(action)[1], proto)


@pytest.mark.parametrize("proto", PROTOCOLS)
def test_getnewargs_that_mutates_the_instance_and_the_container(proto):
    def make():
        holder = []

        def mutate(self):
            self.added = list(range(3))      # state is read after the call
            holder.clear()                   # the instance loses its container
            del self.b
            self.b = "new"

        _, items = scenario(mutate)
        holder.extend(items)
        return holder
    assert_like_stdlib(make, proto)


@pytest.mark.parametrize("proto", PROTOCOLS)
def test_getnewargs_that_empties_the_instance_dict(proto):
    def make():
        _, items = scenario(lambda self: self.__dict__.clear())
        return items
    assert_like_stdlib(make, proto)


@pytest.mark.parametrize("proto", PROTOCOLS)
def test_getnewargs_that_reenters_dumps(proto):
    # Both picklers' inner dumps must see the same world: each reenters itself.
    def make_for(dumps):
        def make():
            nt = namedtuple()

            def reenter(self):
                if inner_calls:
                    return                           # once: the inner dumps meets self again
                inner_calls.append(1)
                inner.append(pickletools.optimize(dumps([self, nt(self, 1), nt(2, 3)], proto)))
                type(self).relearned = True      # a new version tag, learned again inside
                inner.append(pickletools.optimize(dumps([nt(4, 5), self], proto)))

            _, items = scenario(reenter)
            return [nt(0, 0)] + items
        return make

    inner, inner_calls = [], []
    expected = outcome(std.dumps, make_for(std.dumps), proto)
    expected_inner, inner, inner_calls = inner, [], []
    got = outcome(fw.dumps, make_for(fw.dumps), proto)
    assert got == expected
    assert inner == expected_inner


@pytest.mark.parametrize("proto", PROTOCOLS)
def test_namedtuple_getnewargs_that_changes_class_and_deletes_itself(proto):
    def make():
        nt = namedtuple()
        other = namedtuple()
        real = nt.__getnewargs__

        def getnewargs(self):
            if self[0] == "armed":
                self.__class__ = other
                del nt.__getnewargs__
            return real(self)

        nt.__getnewargs__ = getnewargs
        return [nt("learn", 0), nt("learn", 1), nt("armed", 2), nt("after", 3)]
    assert_like_stdlib(make, proto)


def test_getnewargs_runs_once_per_instance():
    calls = []

    def getnewargs(self):
        calls.append(self.a)
        return (self.a,)

    cls = publish(type("Counted", (WithNewArgs,), {"__getnewargs__": getnewargs}))
    value = [cls(i, 0) for i in range(4)]
    for _ in range(3):
        fw.dumps(value, 5)
    assert calls == list(range(4)) * 3


# --- hypothesis: namedtuples of arbitrary data --------------------------------

atoms = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False),
                  st.text(max_size=5), st.binary(max_size=5))


@settings(max_examples=150, deadline=None)
@given(rows=st.lists(st.tuples(atoms, st.lists(atoms, max_size=3), atoms), max_size=6),
       share=st.booleans(), proto=st.integers(0, std.HIGHEST_PROTOCOL))
def test_hypothesis_namedtuples_match_stdlib(rows, share, proto):
    items = [Point(*row) for row in rows]
    if share and items:
        items.append(items[0])
        items.append(Point(items[0], items, 1))
    value = [items, [PointWithDict(*row) for row in rows]]
    for obj in value[1]:
        obj.tag = len(obj)
    for _ in range(2):
        assert pickletools.optimize(fw.dumps(value, proto)) == pickletools.optimize(std.dumps(value, proto))


def test_point_pickles_load_back():
    value = [Point(1, 2, 3), PointTupleSlots((4,))]
    assert std.loads(fw.dumps(value, 5)) == value


# --- slotted classes: state is (__dict__ or None, {set slot: value}) -----------

class Slotted:
    __slots__ = ("__private", "a", "b")

    def __init__(self, a, b=None):
        self.a = a
        if b is not None:
            self.b = b


class SlottedChild(Slotted):
    __slots__ = ("c",)


class SlottedWithDict(Slotted):
    pass


class SlottedNewArgs(Slotted):
    __slots__ = ()

    def __new__(cls, *args):
        return super().__new__(cls)

    def __getnewargs__(self):
        return (self.a,)


class NoState:
    __slots__ = ()


def _slotted_values():
    child = SlottedChild(1, 2)
    child.c = child
    with_dict = SlottedWithDict([1], "b")
    with_dict.extra = with_dict
    only_dict = SlottedWithDict.__new__(SlottedWithDict)
    only_dict.x = 1
    private = Slotted(3)
    private._Slotted__private = "p"
    return {
        "slots all set": [Slotted(i, str(i)) for i in range(4)],
        "slots some unset": [Slotted(1), Slotted(2, 3), Slotted.__new__(Slotted)],
        "mangled private slot": [private, private],
        "inherited slots in a cycle": [child, SlottedChild(0)],
        "slots and a __dict__": [with_dict, SlottedWithDict(2), only_dict, SlottedWithDict.__new__(SlottedWithDict)],
        "slots with __getnewargs__": [SlottedNewArgs(1, 2), SlottedNewArgs(3)],
        "empty __slots__": [NoState(), NoState()],
    }


@pytest.mark.parametrize("proto", PROTOCOLS)
@pytest.mark.parametrize("name", sorted(_slotted_values()))
def test_slotted_shapes_match_stdlib(name, proto):
    got = assert_like_stdlib(lambda: _slotted_values()[name], proto)
    if proto >= 2:                # copyreg's protocols 0-1 refuse most slotted classes
        assert all(isinstance(r, bytes) for r in got)


def _drop_b(names):
    names.remove("b")                # one fewer: object.__getstate__ refuses the instance


def _grow(names):
    names.append("twin")             # a name that is not a slot: getattr runs the property


def _swap(names):
    _drop_b(names)
    _grow(names)


@pytest.mark.parametrize("proto", PROTOCOLS)
@pytest.mark.parametrize("edit", [_drop_b, _grow, _swap])
def test_slotnames_changed_in_place_between_dumps(edit, proto):
    # copyreg caches __slotnames__ on the class; editing that list changes no
    # version tag, and the stdlib reads it afresh on every reduce.
    def make():
        cls = publish(type("Edited", (Slotted,), {"__slots__": ("d",), "twin": property(lambda self: 7)}))
        value = [cls(1, 2), cls(3, 4)]
        std.dumps(value, max(proto, 2))      # learned at protocol 2 and above
        fw.dumps(value, max(proto, 2))
        edit(cls.__dict__["__slotnames__"])
        value[0].d = "d"
        return value
    assert_like_stdlib(make, proto)


@pytest.mark.parametrize("proto", PROTOCOLS)
def test_slotnames_rebound_between_dumps(proto):
    # The learned entry keeps the class's __slotnames__ list itself; rebinding
    # the name to a list of the same length must not leave it reading the old one.
    def make():
        cls = publish(type("Rebound", (Slotted,), {"__slots__": ("d",)}))
        value = [cls(1, 2), cls(3, 4)]
        std.dumps(value, max(proto, 2))
        fw.dumps(value, max(proto, 2))
        cls.__slotnames__ = list(reversed(cls.__dict__["__slotnames__"]))
        value[0].d = "d"
        return value
    assert_like_stdlib(make, proto)


class EqThatRebindsSlotnames(str):
    """A slot name whose comparison, should any pickler make one, rebinds the
    class's __slotnames__."""

    __slots__ = ()
    victim = None

    def __eq__(self, other):
        cls, EqThatRebindsSlotnames.victim = EqThatRebindsSlotnames.victim, None
        if cls is not None:
            cls.__slotnames__ = ["a"]
        return str.__eq__(self, other)

    __hash__ = str.__hash__


@pytest.mark.parametrize("proto", range(2, std.HIGHEST_PROTOCOL + 1))
def test_str_subclass_slot_name_that_rebinds_slotnames_matches_stdlib(proto):
    def make():
        cls = publish(type("Learnt", (), {"__slots__": ("a", "b")}))
        obj = cls()
        obj.a, obj.b = 1, 2
        std.dumps(obj, proto)                 # copyreg caches __slotnames__
        cls.__slotnames__ = ["a", EqThatRebindsSlotnames("b")]
        EqThatRebindsSlotnames.victim = cls
        return [obj, obj.__class__(), obj]
    got = outcome(fw.dumps, make, proto)
    expected = outcome(std.dumps, make, proto)
    assert got == expected


@pytest.mark.parametrize("proto", PROTOCOLS)
def test_getnewargs_that_edits_slotnames_and_slots(proto):
    def make():
        def getnewargs(self):
            if self.a == "armed":
                names = type(self).__dict__["__slotnames__"]
                names.append(SneakyName("b"))    # a str subclass as a slot name
                del self.b
                names.reverse()
            return (self.a,)

        cls = publish(type("SlotHostile", (SlottedNewArgs,), {"__getnewargs__": getnewargs}))
        return [cls("learn", 0), cls("learn", 1), cls("armed", 2), cls("after", 3)]
    assert_like_stdlib(make, proto)


class SneakyName(str):
    __slots__ = ()


@settings(max_examples=100, deadline=None)
@given(rows=st.lists(st.tuples(st.sampled_from(["a", "b", "c", "x"]), atoms), max_size=12),
       proto=st.integers(2, std.HIGHEST_PROTOCOL))
def test_hypothesis_slotted_instances_match_stdlib(rows, proto):
    objects = [SlottedChild.__new__(SlottedChild), SlottedWithDict.__new__(SlottedWithDict)]
    for i, (name, value) in enumerate(rows):
        obj = objects[i % 2]
        if name == "c" and i % 2:
            name = "a"                   # SlottedWithDict has no slot c
        if name == "x" and not i % 2:
            name = "b"                   # SlottedChild has no __dict__
        setattr(obj, name, value)
    value = objects + objects[:1]
    for _ in range(2):
        assert pickletools.optimize(fw.dumps(value, proto)) == pickletools.optimize(std.dumps(value, proto))


# --- a class's own __getstate__: state is what it returns ----------------------

class TupleState:
    def __init__(self, a, b):
        self.a, self.b = a, b

    def __getstate__(self):
        return (self.a, self.b)

    def __setstate__(self, state):
        self.a, self.b = state


class DictState(TupleState):
    def __getstate__(self):
        return {"a": self.a, "extra": [self.b]}

    def __setstate__(self, state):
        self.__dict__.update(state)


class NoneState(TupleState):
    def __getstate__(self):
        return None                      # no BUILD at all


class SelfState(TupleState):
    def __getstate__(self):
        return [self, self.a]            # the instance inside its own state


SHARED_STATE = ("shared", 1)


class SharedState(TupleState):
    def __getstate__(self):
        return SHARED_STATE              # one tuple, written once, then a memo reference


class SlottedState:
    __slots__ = ("v", "__weakref__")     # uuid.UUID's shape

    def __init__(self, v):
        self.v = v

    def __getstate__(self):
        return {"v": self.v}

    def __setstate__(self, state):
        self.v = state["v"]


class StateNewArgs(WithNewArgs):
    def __getstate__(self):
        return ("state", self.b)

    def __setstate__(self, state):
        self.b = state[1]


class StatePoint(Point):
    def __getstate__(self):
        return {"tag": self[0]}


def _getstate_values():
    import uuid
    shared = TupleState([1], "s")
    return {
        "tuple state": [TupleState(i, str(i)) for i in range(4)],
        "dict state": [DictState(1, 2), DictState([3], None)],
        "None state": [NoneState(1, 2), NoneState(3, 4)],
        "instance inside its own state": [SelfState(1, 2), SelfState("x", None)],
        "shared state object": [SharedState(1, 2), SHARED_STATE, SharedState(3, 4)],
        "shared instance": [shared, shared, TupleState(shared, shared)],
        "slotted with __getstate__": [SlottedState(i) for i in range(3)],
        "uuid": [uuid.UUID(int=i * 0x9E3779B97F4A7C15) for i in range(3)],
        "__getstate__ and __getnewargs__": [StateNewArgs(1, 2), StateNewArgs("a", [3])],
        "namedtuple with __getstate__": [StatePoint(1, 2, 3), StatePoint("a", "b", "c")],
    }


@pytest.mark.parametrize("proto", PROTOCOLS)
@pytest.mark.parametrize("name", sorted(_getstate_values()))
def test_getstate_shapes_match_stdlib(name, proto):
    got = assert_like_stdlib(lambda: _getstate_values()[name], proto)
    assert all(isinstance(r, bytes) for r in got)


def test_getstate_classes_load_back():
    value = [TupleState(1, "a"), SlottedState(2), StateNewArgs(3, 4)]
    loaded = std.loads(fw.dumps(value + value, 5))
    assert [(o.a, o.b) for o in loaded[:1]] == [(1, "a")] and loaded[1].v == 2 and loaded[2].b == 4
    assert loaded[3] is loaded[0]


def test_getstate_runs_once_per_instance():
    calls = []

    def getstate(self):
        calls.append(self.a)
        return (self.a,)

    cls = publish(type("CountedState", (TupleState,), {"__getstate__": getstate}))
    value = [cls(i, 0) for i in range(4)]
    for _ in range(3):
        fw.dumps(value, 5)
    assert calls == list(range(4)) * 3


@pytest.mark.parametrize("proto", PROTOCOLS)
def test_getstate_replaced_or_shadowed_between_dumps(proto):
    # The learned verdict is the class's: replacing the method renews it, an
    # instance attribute of the same name takes the instance off the path.
    def make():
        cls = publish(type("Learned", (TupleState,), {}))
        value = [cls(1, 2), cls(3, 4)]
        std.dumps(value, proto)
        fw.dumps(value, proto)
        cls.__getstate__ = lambda self: {"replaced": self.a}
        value[1].__getstate__ = lambda: ("instance", 0)
        return value
    assert_like_stdlib(make, proto)

    def make_builtin():
        cls = publish(type("Builtin", (TupleState,), {}))
        value = [cls(1, 2), cls(3, 4)]
        std.dumps(value, proto)
        fw.dumps(value, proto)
        cls.__getstate__ = object.__getstate__       # back to the default
        return value
    assert_like_stdlib(make_builtin, proto)


# --- callouts: __getstate__ doing the worst ------------------------------------

def state_scenario(action, base=TupleState):
    """As scenario(), for a class whose __getstate__ runs action(self) once armed."""
    return scenario(action, base, hook="__getstate__", name="HostileState")


@pytest.mark.parametrize("proto", PROTOCOLS)
def test_getstate_that_changes_the_class_of_the_instance(proto):
    # The stdlib checks obj.__class__ against the class in its reduce value.
    def make():
        other = publish(type("OtherState", (TupleState,), {}))
        _, items = state_scenario(lambda self: setattr(self, "__class__", other))
        return items
    got = assert_like_stdlib(make, proto)
    if proto >= 2:
        assert got[0][0] is std.PicklingError


@pytest.mark.parametrize("proto", PROTOCOLS)
def test_getstate_that_changes_its_class(proto):
    def delete_itself(self):
        del type(self).__getstate__

    def add_reduce_ex(self):
        type(self).__reduce_ex__ = lambda self, proto: (TupleState, (9, 9))

    def add_class_property(self):
        type(self).__class__ = property(lambda self: TupleState)

    for action in (delete_itself, add_reduce_ex, add_class_property):
        assert_like_stdlib(lambda action=action: state_scenario(action)[1], proto)


@pytest.mark.parametrize("proto", PROTOCOLS)
def test_getstate_that_mutates_the_instance_and_the_container(proto):
    def make():
        holder = []

        def mutate(self):
            self.added = list(range(3))
            holder.clear()                   # the instance loses its container
            del self.b
            self.b = "new"

        _, items = state_scenario(mutate)
        holder.extend(items)
        return holder
    assert_like_stdlib(make, proto)


@pytest.mark.parametrize("proto", PROTOCOLS)
def test_getstate_raising_raises_like_stdlib(proto):
    def boom(self):
        raise ValueError("boom")
    got = assert_like_stdlib(lambda: state_scenario(boom)[1], proto)
    if proto >= 2:
        assert got[0] == (ValueError, "boom")


@pytest.mark.parametrize("proto", PROTOCOLS)
def test_getstate_that_reenters_dumps(proto):
    def make_for(dumps):
        def make():
            def reenter(self):
                if inner_calls:
                    return
                inner_calls.append(1)
                inner.append(pickletools.optimize(dumps([self, TupleState(self, 1)], proto)))
                type(self).relearned = True      # a new version tag, learned again inside
                inner.append(pickletools.optimize(dumps([self, self], proto)))

            _, items = state_scenario(reenter)
            return items
        return make

    inner, inner_calls = [], []
    expected = outcome(std.dumps, make_for(std.dumps), proto)
    expected_inner, inner, inner_calls = inner, [], []
    got = outcome(fw.dumps, make_for(fw.dumps), proto)
    assert got == expected
    assert inner == expected_inner


@pytest.mark.parametrize("proto", PROTOCOLS)
def test_getstate_with_getnewargs_that_changes_the_class_between_them(proto):
    # __getnewargs__ runs first and swaps the class's __getstate__; the
    # stdlib then calls the new one.
    def make():
        def getnewargs(self):
            if self.a == "armed":
                type(self).__getstate__ = lambda self: ("swapped", self.a)
            return (self.a, self.b)

        cls = publish(type("SwapState", (StateNewArgs,), {"__getnewargs__": getnewargs}))
        return [cls("learn", 0), cls("learn", 1), cls("armed", 2), cls("after", 3)]
    assert_like_stdlib(make, proto)


@settings(max_examples=100, deadline=None)
@given(states=st.lists(st.one_of(atoms, st.lists(atoms, max_size=3), st.tuples(atoms, atoms),
                                 st.dictionaries(st.text(max_size=3), atoms, max_size=3)),
                       max_size=8),
       share=st.booleans(), proto=st.integers(0, std.HIGHEST_PROTOCOL))
def test_hypothesis_getstate_instances_match_stdlib(states, share, proto):
    class_ = GivenState
    items = [class_(state) for state in states]
    if share and items:
        items += [items[0], class_(items), class_(items[0].state)]
    for _ in range(2):
        assert pickletools.optimize(fw.dumps(items, proto)) == pickletools.optimize(std.dumps(items, proto))


class GivenState:
    def __init__(self, state):
        self.state = state

    def __getstate__(self):
        return self.state

    def __setstate__(self, state):
        self.state = state
