"""Instances whose class defines __reduce__ as a plain function.

dumps calls that function with the instance directly when object.__reduce_ex__
would do exactly that (generic attribute lookup, metaclass type, nothing on
the instance shadowing either name). Each test holds the result (bytes, or
the exception type) to the stdlib's, including callbacks that change the
class, the instance or the function while the pickle is being written.
"""

import collections
import decimal
import functools
import pickle as std
import pickletools

import pytest
from hypothesis import given, settings, strategies as st

from fastwire import pickle as fw
from tests.support import pickle_catalogue as cat

CORE_PROTOCOLS = range(2, std.HIGHEST_PROTOCOL + 1)


outcome = cat.dumps_outcome


def same_as_stdlib(value):
    """Equal pickles once pickletools.optimize drops the memo entries nothing
    refers to (the encoder leaves out entries for objects nothing else can
    reach); any other difference fails."""
    for proto in CORE_PROTOCOLS:
        got = outcome(fw.dumps, value, proto)
        expected = outcome(std.dumps, value, proto)
        if isinstance(expected, bytes) and isinstance(got, bytes):
            got, expected = pickletools.optimize(got), pickletools.optimize(expected)
        assert got == expected, proto


class Point:
    def __init__(self, x, y):
        self.x, self.y = x, y

    def __reduce__(self):
        return (Point, (self.x, self.y))


class SlottedPoint:
    __slots__ = ("x",)

    def __init__(self, x):
        self.x = x

    def __reduce__(self):
        return (SlottedPoint, (self.x,))


class Child(Point):
    pass


def test_class_reduce_is_called_with_the_instance():
    same_as_stdlib([Point(i, -i) for i in range(50)])
    same_as_stdlib([SlottedPoint(i) for i in range(50)])
    same_as_stdlib([Child(1, 2), Point(3, 4), Child(5, 6)])


def test_instance_attribute_shadowing_reduce_is_called_instead():
    p = Point(1, 2)
    p.__reduce__ = lambda: (Point, (7, 8))
    same_as_stdlib(p)
    assert std.loads(fw.dumps(p, 5)).x == 7
    q = Point(1, 2)
    q.__reduce_ex__ = lambda proto: (Point, (proto, 0))
    same_as_stdlib(q)
    assert std.loads(fw.dumps(q, 5)).x == 5


@pytest.mark.parametrize("bad", [None, 42, [Point, ()], (Point,), (Point, [1, 2]), "no_such_global"])
def test_reduce_returning_a_bad_value_raises_as_the_stdlib(bad):
    class Bad:
        def __reduce__(self):
            return bad

    Bad.__qualname__ = "Bad"
    same_as_stdlib(Bad())


class Vanishing:
    """Its __reduce__ deletes itself from the class while it runs; the
    second instance then takes object's default reduce."""


def _vanishing_reduce(self):
    del Vanishing.__reduce__
    return (Point, (1, 2))


def test_reduce_that_deletes_itself_from_its_class():
    for proto in CORE_PROTOCOLS:
        Vanishing.__reduce__ = _vanishing_reduce
        got = outcome(fw.dumps, [Vanishing(), Vanishing()], proto)
        Vanishing.__reduce__ = _vanishing_reduce
        expected = outcome(std.dumps, [Vanishing(), Vanishing()], proto)
        assert isinstance(got, bytes)
        assert pickletools.optimize(got) == pickletools.optimize(expected)


def test_reduce_that_changes_the_class_of_later_items():
    """The first item's __reduce__ gives the class a __reduce_ex__ and the
    second item an instance __reduce__: each later item must be asked the way
    the stdlib asks it."""
    def run(dumps, proto):
        class Shifty:
            def __reduce__(self):
                Shifty.__reduce_ex__ = lambda self, proto: (Point, (proto, 1))
                items[1].__dict__["__reduce__"] = lambda: (Point, (2, 2))
                return (Point, (0, 0))

        items = [Shifty(), Shifty(), Shifty()]
        data = outcome(dumps, items, proto)
        return data if isinstance(data, type) else pickletools.optimize(data)

    for proto in CORE_PROTOCOLS:
        assert run(fw.dumps, proto) == run(std.dumps, proto)


def test_metaclass_and_getattribute_classes_keep_the_slow_path():
    class Meta(type):
        pass

    class WithMeta(metaclass=Meta):
        def __reduce__(self):
            return (Point, (1, 1))

    class WithGetattribute:
        def __getattribute__(self, name):
            if name == "__reduce__":
                return lambda: (Point, (9, 9))
            return object.__getattribute__(self, name)

        def __reduce__(self):
            return (Point, (1, 1))

    for obj in (WithMeta(), WithGetattribute()):
        same_as_stdlib(obj)
    assert std.loads(fw.dumps(WithGetattribute(), 5)).x == 9


def test_reduce_raising_propagates_the_same_exception():
    class Raising:
        def __reduce__(self):
            raise KeyError("nope")

    with pytest.raises(KeyError):
        fw.dumps(Raising(), 5)
    same_as_stdlib(Raising())


# --- a __reduce__ written in C (a method descriptor) ---------------------------
# Called with the instance directly, as object.__reduce_ex__ calls its bound
# form; its result is whatever the C code builds, so these compare whole
# pickles with the stdlib's, including values whose C reducer reads the
# instance dict (functools.partial writes None when there is none).

def _plain_function(*args, **kwargs):
    return args, kwargs


class DefaultDictChild(collections.defaultdict):
    pass


class PartialChild(functools.partial):
    pass


def test_c_method_reduce_values_match_stdlib():
    with_dict = functools.partial(_plain_function, 1)
    with_dict.note = "n"
    emptied = functools.partial(_plain_function, 2)
    emptied.note = "n"
    del emptied.note                     # a dict that exists and is empty
    child = DefaultDictChild(list, {1: [2]})
    child.tag = child
    values = [
        [decimal.Decimal("1.5"), decimal.Decimal("-0"), decimal.Decimal("NaN")],
        [collections.defaultdict(list, {1: [1], 2: []}), collections.defaultdict(None, {"a": 1})],
        [functools.partial(_plain_function), functools.partial(_plain_function, 1, k=2)],
        [with_dict, emptied, with_dict],
        [child, DefaultDictChild(int), PartialChild(_plain_function, 3)],
    ]
    for value in values:
        same_as_stdlib(value)
        same_as_stdlib(value)      # a second dump meets what the first left behind


def test_c_method_reduce_shadowed_on_the_instance():
    p = functools.partial(_plain_function, 1)
    p.__reduce__ = lambda: (Point, (7, 8))
    same_as_stdlib(p)
    assert std.loads(fw.dumps(p, 5)).x == 7
    q = functools.partial(_plain_function, 2)
    q.__reduce_ex__ = lambda proto: (Point, (proto, 0))
    same_as_stdlib(q)


class MutatingItems(collections.defaultdict):
    """items() adds a key and empties the list holding the instances."""

    holder: list = []

    def items(self):
        self[len(self)] = "added"
        MutatingItems.holder.clear()
        return super().items()


def test_c_method_reduce_whose_items_mutate_the_instance():
    """defaultdict.__reduce__ calls items() on the instance: a subclass's
    items() that mutates the mapping and its container runs as it would
    under the stdlib."""
    def run(dumps, proto):
        MutatingItems.holder = [MutatingItems(list, {0: [0]}), MutatingItems(int)]
        data = outcome(dumps, MutatingItems.holder, proto)
        return data if isinstance(data, type) else pickletools.optimize(data)

    for proto in CORE_PROTOCOLS:
        got, expected = run(fw.dumps, proto), run(std.dumps, proto)
        assert got == expected
        assert isinstance(got, bytes)


# --- (cls, args[, state]) values, written without the general checks ----------

class Rebuilt:
    """Reduces to whatever value it was given."""

    def __init__(self, value=None, *rest):
        self.value = value

    def __reduce__(self):
        return self.value

    def __setstate__(self, state):
        self.state = state


def _named(name, meta=type):
    cls = meta(name, (Rebuilt,), {"__module__": __name__, "__qualname__": name})
    globals()[name] = cls
    return cls


class NamedMeta(type):
    """A metaclass whose __name__ is not the class's: the stdlib asks it."""

    @property
    def __name__(cls):
        return "__newobj__"


SHARED_REDUCE_ARGS = (1, [2])
SHARED_REDUCE_STATE = {"shared": [3]}


def _reduce_values():
    newobj_named = _named("__newobj__")
    newobj_ex_named = _named("__newobj_ex__")
    with_meta = _named("WithNamedMeta", NamedMeta)
    shared_rv = (Rebuilt, SHARED_REDUCE_ARGS, SHARED_REDUCE_STATE)
    cached = [Rebuilt(shared_rv), Rebuilt(shared_rv)]
    return {
        "(cls, args)": [Rebuilt((Rebuilt, (i, str(i)))) for i in range(3)],
        "(cls, args, state)": [Rebuilt((Rebuilt, (i,), {"s": i})) for i in range(3)],
        "state None": [Rebuilt((Rebuilt, (1,), None))],
        "one reduce value for several objects": cached + [SHARED_REDUCE_ARGS, SHARED_REDUCE_STATE, shared_rv],
        "shared args and state": [Rebuilt((Rebuilt, SHARED_REDUCE_ARGS, SHARED_REDUCE_STATE)),
                                  Rebuilt((Rebuilt, SHARED_REDUCE_ARGS, SHARED_REDUCE_STATE)),
                                  SHARED_REDUCE_ARGS],
        "args holding the object": [_self_in_args()],
        "class named __newobj__": [Rebuilt((newobj_named, (newobj_named,)))],
        "class named __newobj_ex__": [Rebuilt((newobj_ex_named, (newobj_ex_named, (), {})))],
        "static type": [Rebuilt((range, (1, 5))), Rebuilt((complex, (1.0, 2.0)))],
        "metaclass naming it __newobj__": [Rebuilt((with_meta, (with_meta, 1)))],
        "args a tuple subclass": [Rebuilt((Rebuilt, ArgsTuple((1, 2))))],
    }


class ArgsTuple(tuple):
    pass


def _self_in_args():
    obj = Rebuilt()
    obj.value = (Rebuilt, ([obj],), {"me": obj})
    return obj


@pytest.mark.parametrize("name", sorted(_reduce_values()))
def test_class_call_reduce_values_match_stdlib(name):
    same_as_stdlib(_reduce_values()[name])
    same_as_stdlib(_reduce_values()[name])


atoms = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False),
                  st.text(max_size=4), st.binary(max_size=4))


@settings(max_examples=100, deadline=None)
@given(rows=st.lists(st.tuples(st.lists(atoms, max_size=3), st.one_of(st.none(), atoms, st.lists(atoms, max_size=2))),
                     max_size=6),
       share=st.booleans(), items=st.dictionaries(st.text(max_size=3), atoms, max_size=5))
def test_hypothesis_class_call_and_c_reduce_values_match_stdlib(rows, share, items):
    objects = [Rebuilt((Rebuilt, tuple(args)) if state is None else (Rebuilt, tuple(args), state))
               for args, state in rows]
    if share and objects:
        shared_rv = objects[0].value
        objects += [Rebuilt(shared_rv), shared_rv[1], Rebuilt((Rebuilt, (objects,)))]
    mapping = collections.defaultdict(list, items)
    objects += [mapping, collections.defaultdict(None, items), mapping]
    same_as_stdlib(objects)
