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
