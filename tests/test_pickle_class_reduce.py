"""Instances whose class defines __reduce__ as a plain function.

dumps calls that function with the instance directly when object.__reduce_ex__
would do exactly that (generic attribute lookup, metaclass type, nothing on
the instance shadowing either name). Each test holds the result (bytes, or
the exception type) to the stdlib's, including callbacks that change the
class, the instance or the function while the pickle is being written.
"""

import pickle as std

import pytest

from fastwire import pickle as fw
from tests.support import pickle_catalogue as cat

CORE_PROTOCOLS = range(2, std.HIGHEST_PROTOCOL + 1)


outcome = cat.dumps_outcome
same_as_stdlib = cat.assert_dumps_like_stdlib


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
        assert got == expected
        assert isinstance(got, bytes)


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
        return outcome(dumps, items, proto)

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
        for proto in CORE_PROTOCOLS:
            assert fw.dumps(obj, proto) == std.dumps(obj, proto)
    assert std.loads(fw.dumps(WithGetattribute(), 5)).x == 9


def test_reduce_raising_propagates_the_same_exception():
    class Raising:
        def __reduce__(self):
            raise KeyError("nope")

    with pytest.raises(KeyError):
        fw.dumps(Raising(), 5)
    same_as_stdlib(Raising())
