"""Objects that exercise every part of the pickle format, shared by the pickle
writer tests (dumps, Pickler hooks) and the reader tests (loads, truncation,
restricted mode).

Classes live here, in an importable module, so both the stdlib and fastwire
find them by name; each defines __eq__ so that a round trip can be compared by
value.  ``catalogue()`` returns fresh objects; ``pickles()`` is what the stdlib
writes for them at every protocol that can represent them.
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
import io
import pathlib
import pickle
import re
import uuid


class Plain:
    def __init__(self, a=1, b="two"):
        self.a = a
        self.b = b

    def __eq__(self, other):
        return type(other) is type(self) and other.__dict__ == self.__dict__

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


class SlottedWithDict(Plain):
    """Pickled with a (dict, slots) state tuple from protocol 2 on."""

    __slots__ = ("s",)

    def __init__(self, a, b, s):
        super().__init__(a, b)
        self.s = s

    def __eq__(self, other):
        return super().__eq__(other) and other.s == self.s


class WithState:
    """A dict state that leaves out what cannot be pickled."""

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


class WithSetstate:
    """A tuple state, which only __setstate__ can apply."""

    def __init__(self, value):
        self.value = value

    def __getstate__(self):
        return ("v1", self.value)

    def __setstate__(self, state):
        version, self.value = state

    def __eq__(self, other):
        return type(other) is type(self) and other.value == self.value


class FalseState(Plain):
    """__getstate__ returning a false value: BUILD must be skipped only for None."""

    def __init__(self):
        super().__init__(0, "restored")

    def __getstate__(self):
        return 0

    def __setstate__(self, state):
        self.__dict__.update(a=state, b="restored")


class FalsyState:
    """__getstate__ returning a false value and no __setstate__: no BUILD is written."""

    def __getstate__(self):
        return {}

    def __eq__(self, other):
        return type(other) is type(self)


class NewArgs:
    def __new__(cls, x, y):
        self = super().__new__(cls)
        self.x, self.y = x, y
        return self

    def __getnewargs__(self):
        return (self.x, self.y)

    def __eq__(self, other):
        return type(other) is type(self) and (self.x, self.y) == (other.x, other.y)


class KeywordOnly:
    """__getnewargs_ex__ with keywords: NEWOBJ_EX from protocol 4, a
    functools.partial of copyreg.__newobj_ex__ at 2 and 3."""

    def __new__(cls, a, *, b):
        self = super().__new__(cls)
        self.a = a
        self.b = b
        return self

    def __getnewargs_ex__(self):
        return (self.a,), {"b": self.b}

    def __eq__(self, other):
        return type(other) is type(self) and (other.a, other.b) == (self.a, self.b)


class ReduceToName:
    """__reduce__ returning a string: pickled as the global of that name."""

    def __reduce__(self):
        return "REDUCE_TO_NAME"


REDUCE_TO_NAME = ReduceToName()


def make_reduced(kind, value):
    return Reduced(kind, value)


class Reduced:
    def __init__(self, kind, value):
        self.kind = kind
        self.value = value

    def __reduce__(self):
        return (make_reduced, (self.kind, self.value))

    def __eq__(self, other):
        return type(other) is type(self) and (other.kind, other.value) == (self.kind, self.value)


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


def set_state_via_setter(obj, state):
    obj.extra = state


class FullReduce(list):
    """A 6-tuple __reduce__: listitems, dictitems (via __setitem__) and a
    state setter (protocol 5)."""

    def __init__(self, *args):
        super().__init__(*args)
        self.mapping = {}
        self.extra = None

    def __setitem__(self, key, value):
        if isinstance(key, str):
            self.mapping[key] = value
        else:
            super().__setitem__(key, value)

    def __reduce__(self):
        return (FullReduce, (), self.extra, iter(list(self)), iter(self.mapping.items()),
                set_state_via_setter)

    def __eq__(self, other):
        return (type(other) is type(self) and list(other) == list(self)
                and other.mapping == self.mapping and other.extra == self.extra)


class ListSub(list):
    def __init__(self, *args):
        super().__init__(*args)
        self.tag = "L"

    def __eq__(self, other):
        return type(other) is ListSub and list(self) == list(other) and self.tag == other.tag


class DictSub(dict):
    def __eq__(self, other):
        return type(other) is DictSub and dict(self) == dict(other) and self.__dict__ == other.__dict__


class MyList(list):
    pass


class MyDict(dict):
    pass


class MySet(set):
    pass


class IntSub(int):
    pass


class StrSub(str):
    pass


class MyBytes(bytes):
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
Point = collections.namedtuple("Point", "x y")


class ExtOne:
    def __eq__(self, other):
        return type(other) is type(self)


class ExtTwo(ExtOne):
    pass


class ExtFour(ExtOne):
    pass


# Extension codes exercise EXT1, EXT2 and EXT4 (registered once, process-wide).
EXTENSION_CODES = {ExtOne: 0x7E, ExtTwo: 0x7E31, ExtFour: 0x7E3141}
for _cls, _code in EXTENSION_CODES.items():
    if copyreg._extension_registry.get((__name__, _cls.__qualname__)) != _code:
        copyreg.add_extension(__name__, _cls.__qualname__, _code)


# Entries whose loaded copy cannot equal the original under ==: no value
# equality (functions, exceptions, bound methods), NaN, or a cycle that ==
# would follow forever. Compare them with same_object_graph instead.
NO_VALUE_EQUALITY = frozenset({
    "singletons", "bound method", "exceptions", "functions", "nan",
    "recursive list", "recursive dict", "tuple cycle", "self reference",
})


def catalogue() -> dict[str, object]:
    """Fresh tricky objects, keyed by a readable name."""
    shared = [1, 2]
    big = 2 ** 10000
    recursive_list = []
    recursive_list.append(recursive_list)
    recursive_dict = {}
    recursive_dict["self"] = recursive_dict
    tuple_cycle = ([],)
    tuple_cycle[0].append(tuple_cycle)
    full = FullReduce([1, 2, 3])
    full.mapping["k"] = "v"
    full.extra = "state"  # reaches a copy only through the state setter
    self_ref = Plain(None, None)
    self_ref.a = self_ref
    return {
        "none": None,
        "bools": [True, False],
        "ints": [0, 1, 255, 256, 65535, 65536, -1, -128, -129, -255, -256, -257, -32768,
                 2**31 - 1, 2**31, -2**31, -2**31 - 1, 2**32, 2**63 - 1, 2**63, -2**63,
                 -2**63 - 1, 2**64, -2**64, 2**64 - 1, 2**64 + 1, 0x7f, 0x80, -0x80, -0x81,
                 2**255, -2**255, 2**1000, -(2**1000), 2**2040, -2**2040 - 1,
                 big, -big, big + 1],
        "floats": [0.0, -0.0, 1 / 3, 1.5, -2.25, 1e308, -1e-308, 5e-324,
                   float("inf"), float("-inf")],
        "nan": [float("nan"), -float("nan")],
        "complex": [1 + 2j, complex(0, -1), 1j, complex(-1.5, 2.25)],
        "strings": ["", "a", "ascii text", "é", "naïve café", "日本語", "\U0001f600",
                    "😀 non-BMP", "\x00", "\x00nul", "new\nline \\ backslash",
                    "x" * 255, "y" * 256, "x" * 300, "é" * 200, "\u20ac" * 100],
        "surrogates": ["\ud800", "\ud800 lone surrogate", "a\udfffb", "\udc80" * 300],
        "long string": "z" * 70000,
        "long non-ascii string": "日本" * 40000,
        "bytes": [b"", b"\x00", b"a", b"abc", bytes(range(256)), b"x" * 255, b"y" * 256,
                  b"\n" * 300, b"z" * 65536],
        "large bytes": bytes(range(256)) * 4096,
        "bytearrays": [bytearray(), bytearray(b"abc"), bytearray(range(256)), bytearray(70000)],
        "tuples": [(), (1,), (1, 2), (1, 2, 3), (1, 2, 3, 4), ((),), ((1,), (2, (3,)))],
        "lists": [[], [1], [[]], [1, 2], list(range(999)), list(range(1000)),
                  list(range(1001)), list(range(2500))],
        "dicts": [{}, {"a": 1}, {1: 2, 3: 4}, {i: str(i) for i in range(2500)},
                  {(1, 2): frozenset({3}), None: [], 1.5: b"x"}],
        "sets": [set(), {1}, {1, 2, 3}, set(range(2500)), frozenset(), frozenset({1, "a"}),
                 frozenset({"a", "b"}), frozenset(range(1500))],
        "shared containers": [shared, shared, (shared,), {"k": shared}],
        "recursive list": recursive_list,
        "recursive dict": recursive_dict,
        "tuple cycle": tuple_cycle,
        "self reference": self_ref,
        "plain instance": Plain(1, "two"),
        "plain instances": [Plain(i, str(i)) for i in range(50)],
        "empty instance": Empty(),
        "slots": WithSlots(1, [2]),
        "slots unset": WithSlots.__new__(WithSlots),
        "partly slotted": PartlySlotted(),
        "slotted with dict": SlottedWithDict(1, 2, 3),
        "getstate": WithState(),
        "setstate": WithSetstate({"k": [1, 2]}),
        "false state": FalseState(),
        "falsy state": FalsyState(),
        "getnewargs": NewArgs(1, "b"),
        "getnewargs_ex": KeywordOnly(1, b=[2]),
        "reduce to name": REDUCE_TO_NAME,
        "reduce": Reduced("k", (1, 2)),
        "reduce_ex": ReduceEx(),
        "state setter": StateSetter(8),
        "full reduce": full,
        "list subclass": ListSub([1, 2, 3]),
        "dict subclass": DictSub(a=1, b=[2]),
        "subclasses": [MyList([1, 2]), MyDict(a=1), MySet({1}), IntSub(7), StrSub("sub"),
                       MyBytes(b"b"), TupleSub((1, 2))],
        "copyreg registered": Registered([1]),
        "extension codes": [ExtOne(), ExtTwo(), ExtFour()],
        "classes": [int, str, Plain, Outer, Outer.Inner, Outer.Inner.Deepest, type, object,
                    type(None)],
        "nested instances": [Outer.Inner(), Outer.Inner.Deepest()],
        "functions": [module_function, Outer.static, functools.partial(module_function, 1)],
        "builtins": [len, print, dict.fromkeys, str.join],
        "singletons": [Ellipsis, NotImplemented, type(None), type(Ellipsis), type(NotImplemented)],
        "bound method": Plain(5).method,
        "exceptions": [ValueError("bad"), KeyError("k"), OSError(2, "missing"), CustomError(3, "x"),
                       StopIteration(1)],
        "enums": [Color.RED, Color.GREEN, Level.HIGH, Perm.R | Perm.W, Color],
        "namedtuples": [Pair(1, "r"), Point(1, 2)],
        "dataclass": Record(1, "n", ["t"]),
        "frozen slots dataclass": FrozenPoint(1.0, 2.0),
        "datetime": [datetime.datetime(2024, 2, 29, 12, 30, 1, 5),
                     datetime.datetime(2024, 1, 1, tzinfo=datetime.UTC),
                     datetime.date(1999, 12, 31), datetime.time(23, 59), datetime.time(1, 2, 3),
                     datetime.timedelta(days=-1, microseconds=3),
                     datetime.timedelta(days=-1, seconds=5),
                     datetime.timezone(datetime.timedelta(hours=5, minutes=30), "IST")],
        "decimal": [decimal.Decimal("1.10"), decimal.Decimal("-Infinity"), decimal.Decimal("-0")],
        "fraction": fractions.Fraction(3, 7),
        "collections": [collections.OrderedDict(a=1, b=2), collections.defaultdict(list, {1: [2]}),
                        collections.deque([1, 2, 3], maxlen=5), collections.Counter("hello"),
                        collections.ChainMap({1: 2}, {3: 4})],
        "array": [array.array("i", [1, -2, 3]), array.array("d", [0.5]), array.array("q", [2**40]),
                  array.array("B")],
        "misc stdlib": [range(1, 10, 3), slice(1, None, 2), uuid.UUID(int=12345),
                        pathlib.PurePosixPath("/a/b"), re.compile(r"\d+", re.I)],
        "many short strings": [f"s{i}" for i in range(20000)],
        "references past 256 memo entries": [f"r{i}" for i in range(300)] * 2,
    }


def pickles(protocols=range(pickle.HIGHEST_PROTOCOL + 1)):
    """(name, protocol, bytes) for every catalogue object the stdlib can write
    at each protocol."""
    result = []
    for name, obj in catalogue().items():
        for proto in protocols:
            try:
                data = pickle.dumps(obj, proto)
            except (pickle.PicklingError, TypeError, AttributeError):
                continue  # e.g. nested classes below protocol 4 on some versions
            result.append((name, proto, data))
    return result


class _StrByValue(pickle.Pickler):
    """The stdlib's Pickler, writing every exact str by its value (as a
    persistent id), never as a reference to an equal str written before:
    which equal strings are one object is not part of a value, and fastwire's
    loads returns one object for equal short strings (unpickle.h's string
    cache) where the stdlib makes one per occurrence. Everything else shared,
    and every cycle, is still written as the memo reference it is."""

    def persistent_id(self, obj):
        if type(obj) is str:
            return obj.encode("utf-8", "surrogatepass")
        return None


def graph_pickle(obj, proto=pickle.HIGHEST_PROTOCOL) -> bytes:
    """obj's pickle by the stdlib, each str written by value (_StrByValue)."""
    out = io.BytesIO()
    _StrByValue(out, proto).dump(obj)
    return out.getvalue()


def same_object_graph(a, b, proto=pickle.HIGHEST_PROTOCOL) -> bool:
    """Equal values *and* the same sharing and cycles (str identity aside):
    the stdlib writes the same bytes for two graphs exactly when both hold
    (memo references encode identity), which also makes NaN compare equal to
    itself."""
    return graph_pickle(a, proto) == graph_pickle(b, proto)


def dumps_outcome(dumps, obj, proto):
    """The pickle, or the type of the exception raised instead."""
    try:
        return dumps(obj, proto)
    except Exception as exc:   # the type is what is compared
        return type(exc)


def assert_dumps_like_stdlib(obj):
    """fastwire's dumps gives the stdlib's bytes, or raises its exception
    type, at every protocol fastwire writes itself."""
    from fastwire import pickle as fw
    for proto in range(2, pickle.HIGHEST_PROTOCOL + 1):
        assert dumps_outcome(fw.dumps, obj, proto) == dumps_outcome(pickle.dumps, obj, proto), proto


def outcome(fn):
    """A comparable summary: the result's pickle (str identity aside, see
    _StrByValue), or the exception type."""
    try:
        value = fn()
    except Exception as exc:  # noqa: BLE001 - comparing exception types is the point
        return ("raises", type(exc))
    try:
        return ("value", graph_pickle(value, 4))
    except Exception as exc:  # noqa: BLE001 - e.g. a half-built object from a mutated pickle
        return ("value that cannot be pickled", type(value), type(exc))


class ReadReadlineOnly:
    """The minimal file the stdlib accepts: read(n) and readline()."""

    def __init__(self, data):
        self._f = io.BytesIO(data)
        self.reads = 0

    def read(self, n=-1):
        self.reads += 1
        return self._f.read(n)

    def readline(self):
        return self._f.readline()

    def rest(self):
        return self._f.read()
