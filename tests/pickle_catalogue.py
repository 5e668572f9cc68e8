"""Objects that are tricky to pickle, shared by the pickle encoder tests.

Module-level (not in a test file) so that every class here can be found by
its qualified name when the stdlib unpickles it. Each class defines __eq__ so
that a round trip can be compared by value.
"""

from __future__ import annotations

import array
import collections
import copyreg
import dataclasses
import datetime
import decimal
import enum
import fractions
import functools
import pathlib
import re
import uuid


class Plain:
    def __init__(self, a=1, b="two"):
        self.a = a
        self.b = b

    def __eq__(self, other):
        return type(other) is type(self) and self.__dict__ == other.__dict__

    __hash__ = object.__hash__

    def method(self):
        return self.a


class Empty:
    def __eq__(self, other):
        return type(other) is type(self) and self.__dict__ == other.__dict__


class WithSlots:
    __slots__ = ("x", "y")

    def __init__(self, x=1, y=2):
        self.x = x
        self.y = y

    def __eq__(self, other):
        return type(other) is type(self) and all(
            getattr(self, n, None) == getattr(other, n, None) for n in self.__slots__)


class PartlySlotted(WithSlots):
    """Slots, a __dict__, and one slot left unset on some instances."""

    def __init__(self, x=1):
        self.x = x
        self.extra = "dict"

    def __eq__(self, other):
        return WithSlots.__eq__(self, other) and self.__dict__ == other.__dict__


class WithState:
    def __init__(self, value=3):
        self.value = value
        self.cache = object()      # not picklable, dropped by __getstate__

    def __getstate__(self):
        return {"value": self.value}

    def __setstate__(self, state):
        self.value = state["value"]
        self.cache = None

    def __eq__(self, other):
        return type(other) is type(self) and self.value == other.value


class FalseState(Plain):
    """__getstate__ returning a false value: BUILD must be skipped only for None."""

    def __init__(self):
        super().__init__(0, "restored")

    def __getstate__(self):
        return 0

    def __setstate__(self, state):
        self.__dict__.update(a=state, b="restored")


class NewArgs:
    def __new__(cls, x, y):
        self = super().__new__(cls)
        self.x, self.y = x, y
        return self

    def __getnewargs__(self):
        return (self.x, self.y)

    def __eq__(self, other):
        return type(other) is type(self) and (self.x, self.y) == (other.x, other.y)


class NewArgsEx:
    def __new__(cls, x, *, y):
        self = super().__new__(cls)
        self.x, self.y = x, y
        return self

    def __getnewargs_ex__(self):
        return (self.x,), {"y": self.y}

    def __eq__(self, other):
        return type(other) is type(self) and (self.x, self.y) == (other.x, other.y)


class ReduceToName:
    """__reduce__ returning a string: pickled as the global of that name."""

    def __reduce__(self):
        return "REDUCE_TO_NAME"


REDUCE_TO_NAME = ReduceToName()


def _rebuild(kind, value):
    return kind(value)


class ReduceTuple:
    def __init__(self, value):
        self.value = value

    def __reduce__(self):
        return (_rebuild, (ReduceTuple, self.value))

    def __eq__(self, other):
        return type(other) is type(self) and self.value == other.value


class ReduceEx:
    """__reduce_ex__ sees the protocol."""

    def __init__(self, proto=None):
        self.proto = proto

    def __reduce_ex__(self, proto):
        return (ReduceEx, (proto,))

    def __eq__(self, other):
        return type(other) is ReduceEx


def _set_state(obj, state):
    obj.value = state * 2


class StateSetter:
    def __init__(self, value=0):
        self.value = value

    def __reduce__(self):
        return (StateSetter, (), self.value // 2, None, None, _set_state)

    def __eq__(self, other):
        return type(other) is StateSetter and self.value == other.value


class ListSub(list):
    def __init__(self, *args):
        super().__init__(*args)
        self.tag = "L"

    def __eq__(self, other):
        return type(other) is ListSub and list(self) == list(other) and self.tag == other.tag


class DictSub(dict):
    def __eq__(self, other):
        return type(other) is DictSub and dict(self) == dict(other) and self.__dict__ == other.__dict__


class IntSub(int):
    pass


class StrSub(str):
    pass


class TupleSub(tuple):
    pass


class Registered:
    """Pickled through copyreg.dispatch_table."""

    def __init__(self, v):
        self.v = v

    def __eq__(self, other):
        return type(other) is Registered and self.v == other.v


copyreg.pickle(Registered, lambda r: (Registered, (r.v,)))


class Outer:
    class Inner:
        class Deepest:
            def __eq__(self, other):
                return type(other) is type(self)

        def __eq__(self, other):
            return type(other) is type(self)

    @staticmethod
    def static():
        return 1


def module_function(x):
    return x


class Color(enum.Enum):
    RED = 1
    GREEN = "green"


class Level(enum.IntEnum):
    LOW = 1
    HIGH = 10


class Perm(enum.Flag):
    R = 4
    W = 2
    X = 1


@dataclasses.dataclass
class Record:
    id: int
    name: str
    tags: list = dataclasses.field(default_factory=list)


@dataclasses.dataclass(frozen=True, slots=True)
class FrozenPoint:
    x: float
    y: float


class CustomError(Exception):
    def __init__(self, code, message):
        super().__init__(code, message)
        self.code = code

    def __eq__(self, other):
        return type(other) is CustomError and self.args == other.args


Pair = collections.namedtuple("Pair", "left right")


def catalogue() -> dict[str, object]:
    """name -> object; every object here must survive a round trip equal."""
    shared = [1, 2]
    big = 2 ** 10000
    return {
        "none": None,
        "true": True,
        "false": False,
        "ints": [0, 1, 255, 256, 65535, 65536, -1, -128, -129, -255, -256, -257,
                 2**31 - 1, 2**31, -2**31, -2**31 - 1, 2**32, 2**63 - 1, 2**63, -2**63,
                 -2**63 - 1, 2**64, -2**64, 2**64 - 1, 0x7f, 0x80, -0x80, -0x81,
                 2**255, -2**255, 2**2040, -2**2040 - 1, big, -big, big + 1],
        "floats": [0.0, -0.0, 1.5, -2.25, 1e308, -1e-308, 5e-324, float("inf"), float("-inf")],
        "strings": ["", "a", "ascii text", "é", "naïve café", "日本語", "\U0001f600", "\x00",
                    "x" * 255, "y" * 256, "é" * 200, "\u20ac" * 100],
        "surrogates": ["\ud800", "a\udfffb", "\udc80" * 300],
        "long string": "z" * 70000,
        "long non-ascii string": "日本" * 40000,
        "bytes": [b"", b"\x00", b"abc", bytes(range(256)), b"x" * 255, b"y" * 256, b"z" * 65536],
        "large bytes": bytes(range(256)) * 4096,
        "bytearrays": [bytearray(), bytearray(b"abc"), bytearray(70000)],
        "tuples": [(), (1,), (1, 2), (1, 2, 3), (1, 2, 3, 4), ((),), ((1,), (2, (3,)))],
        "lists": [[], [1], [1, 2], list(range(999)), list(range(1000)), list(range(1001)),
                  list(range(2500))],
        "dicts": [{}, {"a": 1}, {1: 2, 3: 4}, {i: str(i) for i in range(2500)},
                  {(1, 2): frozenset({3}), None: [], 1.5: b"x"}],
        "sets": [set(), {1}, {1, 2, 3}, set(range(2500)), frozenset(), frozenset({1, "a"}),
                 frozenset(range(1500))],
        "shared containers": [shared, shared, (shared,), {"k": shared}],
        "complex": [1 + 2j, complex(0, -1)],
        "plain instance": Plain(),
        "plain instances": [Plain(i, str(i)) for i in range(50)],
        "empty instance": Empty(),
        "slots": WithSlots(),
        "slots unset": WithSlots.__new__(WithSlots),
        "partly slotted": PartlySlotted(),
        "getstate": WithState(),
        "false state": FalseState(),
        "getnewargs": NewArgs(1, "b"),
        "getnewargs_ex": NewArgsEx(1, y=[2]),
        "reduce to name": REDUCE_TO_NAME,
        "reduce tuple": ReduceTuple([1, 2]),
        "reduce_ex": ReduceEx(),
        "state setter": StateSetter(8),
        "list subclass": ListSub([1, 2, 3]),
        "dict subclass": DictSub(a=1, b=[2]),
        "int subclass": IntSub(7),
        "str subclass": StrSub("sub"),
        "tuple subclass": TupleSub((1, 2)),
        "copyreg registered": Registered([1]),
        "classes": [int, str, Plain, Outer, Outer.Inner, Outer.Inner.Deepest, type, object],
        "nested instances": [Outer.Inner(), Outer.Inner.Deepest()],
        "functions": [module_function, Outer.static, functools.partial(module_function, 1)],
        "builtins": [len, print, dict.fromkeys, str.join],
        "singletons": [Ellipsis, NotImplemented, type(None), type(Ellipsis), type(NotImplemented)],
        "bound method": Plain(5).method,
        "exceptions": [ValueError("bad"), KeyError("k"), OSError(2, "missing"), CustomError(3, "x"),
                       StopIteration(1)],
        "enums": [Color.RED, Color.GREEN, Level.HIGH, Perm.R | Perm.W, Color],
        "dataclass": Record(1, "n", ["t"]),
        "frozen slots dataclass": FrozenPoint(1.0, 2.0),
        "datetime": [datetime.datetime(2024, 2, 29, 12, 30, 1, 5),
                     datetime.datetime(2024, 1, 1, tzinfo=datetime.timezone.utc),
                     datetime.date(1999, 12, 31), datetime.time(23, 59),
                     datetime.timedelta(days=-1, microseconds=3),
                     datetime.timezone(datetime.timedelta(hours=5, minutes=30), "IST")],
        "decimal": [decimal.Decimal("1.10"), decimal.Decimal("-Infinity"), decimal.Decimal("-0")],
        "fraction": fractions.Fraction(3, 7),
        "collections": [collections.OrderedDict(a=1, b=2), collections.defaultdict(list, {1: [2]}),
                        collections.deque([1, 2, 3], maxlen=5), collections.Counter("hello"),
                        Pair(1, "r"), collections.ChainMap({1: 2}, {3: 4})],
        "array": [array.array("i", [1, -2, 3]), array.array("d", [0.5]), array.array("q", [2**40]),
                  array.array("B")],
        "misc stdlib": [range(1, 10, 3), slice(1, None, 2), uuid.UUID(int=12345),
                        pathlib.PurePosixPath("/a/b"), re.compile(r"\d+", re.I)],
    }


def dumps_outcome(dumps, obj, proto):
    """The pickle, or the type of the exception raised instead."""
    try:
        return dumps(obj, proto)
    except Exception as exc:   # the type is what is compared
        return type(exc)


def assert_dumps_like_stdlib(obj):
    """fastwire's dumps gives the stdlib's bytes, or raises its exception
    type, at every protocol fastwire writes itself."""
    import pickle

    from fastwire import pickle as fw
    for proto in range(2, pickle.HIGHEST_PROTOCOL + 1):
        assert dumps_outcome(fw.dumps, obj, proto) == dumps_outcome(pickle.dumps, obj, proto), proto
