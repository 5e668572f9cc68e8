"""Objects that exercise every part of the pickle format, shared by the pickle
reader tests (loads, truncation, restricted mode); the encoder tests keep
their own in pickle_catalogue.py.

Classes live here, in an importable module, so both the stdlib and fastwire
find them by name.  ``catalogue()`` returns fresh objects; ``pickles()`` is
what the stdlib writes for them at every protocol that can represent them.
"""

from __future__ import annotations

import collections
import copyreg
import datetime
import decimal
import enum
import fractions
import functools
import io
import pickle


class Plain:
    def __init__(self, a, b):
        self.a = a
        self.b = b

    def __eq__(self, other):
        return type(other) is type(self) and other.__dict__ == self.__dict__


class Slotted:
    __slots__ = ("x", "y")

    def __init__(self, x, y):
        self.x = x
        self.y = y

    def __eq__(self, other):
        return type(other) is type(self) and (other.x, other.y) == (self.x, self.y)


class SlottedWithDict(Plain):
    """Pickled with a (dict, slots) state tuple from protocol 2 on."""

    __slots__ = ("s",)

    def __init__(self, a, b, s):
        super().__init__(a, b)
        self.s = s

    def __eq__(self, other):
        return super().__eq__(other) and other.s == self.s


class WithSetstate:
    def __init__(self, value):
        self.value = value

    def __getstate__(self):
        return ("v1", self.value)

    def __setstate__(self, state):
        version, self.value = state

    def __eq__(self, other):
        return type(other) is type(self) and other.value == self.value


class FalsyState:
    """__getstate__ returning a false value: no BUILD is written."""

    def __getstate__(self):
        return {}

    def __eq__(self, other):
        return type(other) is type(self)


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
        return (FullReduce, (), "state", iter(list(self)), iter(self.mapping.items()),
                set_state_via_setter)

    def __eq__(self, other):
        return (type(other) is type(self) and list(other) == list(self)
                and other.mapping == self.mapping and other.extra == "state")


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


class MyList(list):
    pass


class MyDict(dict):
    pass


class MySet(set):
    pass


class MyInt(int):
    pass


class MyStr(str):
    pass


class MyBytes(bytes):
    pass


class Outer:
    class Inner:
        def __eq__(self, other):
            return type(other) is type(self)


class Color(enum.Enum):
    RED = 1
    GREEN = "green"


Point = collections.namedtuple("Point", "x y")


def module_function(x):
    return x


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


def catalogue() -> dict[str, object]:
    """Fresh tricky objects, keyed by a readable name."""
    shared = [1, 2]
    recursive_list = []
    recursive_list.append(recursive_list)
    recursive_dict = {}
    recursive_dict["self"] = recursive_dict
    tuple_cycle = ([],)
    tuple_cycle[0].append(tuple_cycle)
    full = FullReduce([1, 2, 3])
    full.mapping["k"] = "v"
    self_ref = Plain(None, None)
    self_ref.a = self_ref
    return {
        "none": None,
        "bools": [True, False],
        "small ints": [0, 1, -1, 255, 256, 65535, 65536, -32768, 2**31 - 1, -(2**31)],
        "big ints": [2**31, -(2**31) - 1, 2**63, -(2**63), 2**64 + 1, 2**1000, -(2**1000)],
        "floats": [0.0, -0.0, 1 / 3, 1e308, 5e-324, float("inf"), float("-inf"), float("nan")],
        "complex": [1j, complex(-1.5, 2.25)],
        "strings": ["", "a", "ascii only", "é", "😀 non-BMP", "\ud800 lone surrogate",
                    "new\nline \\ backslash", "x" * 300, "\x00nul"],
        "bytes": [b"", b"a", bytes(range(256)), b"\n" * 300],
        "bytearray": [bytearray(), bytearray(b"abc"), bytearray(range(256))],
        "tuples": [(), (1,), (1, 2), (1, 2, 3), (1, 2, 3, 4), ((),)],
        "lists": [[], [[]], list(range(2500))],
        "dicts": [{}, {"a": 1}, {i: str(i) for i in range(2500)}, {(1, 2): frozenset({3})}],
        "sets": [set(), {1, 2, 3}, frozenset(), frozenset({"a", "b"}), set(range(1500))],
        "shared": [shared, shared, (shared,)],
        "recursive list": recursive_list,
        "recursive dict": recursive_dict,
        "tuple cycle": tuple_cycle,
        "self reference": self_ref,
        "plain": Plain(1, "two"),
        "slotted": Slotted(1, [2]),
        "slotted with dict": SlottedWithDict(1, 2, 3),
        "setstate": WithSetstate({"k": [1, 2]}),
        "falsy state": FalsyState(),
        "reduce": Reduced("k", (1, 2)),
        "full reduce": full,
        "keyword only": KeywordOnly(1, b=2),
        "subclasses": [MyList([1, 2]), MyDict(a=1), MySet({1}), MyInt(7), MyStr("s"),
                       MyBytes(b"b")],
        "nested class": Outer.Inner(),
        "enum": [Color.RED, Color.GREEN],
        "namedtuple": Point(1, 2),
        "functions and classes": [module_function, len, Plain, int, type(None),
                                  functools.partial(module_function, 1)],
        "singletons": [Ellipsis, NotImplemented],
        "extension codes": [ExtOne(), ExtTwo(), ExtFour()],
        "datetime": [datetime.datetime(2024, 5, 6, 7, 8, 9, 10),
                     datetime.date(1999, 12, 31), datetime.time(1, 2, 3),
                     datetime.timedelta(days=-1, seconds=5),
                     datetime.datetime(2020, 1, 1, tzinfo=datetime.timezone.utc)],
        "decimal and fraction": [decimal.Decimal("1.10"), fractions.Fraction(3, 7)],
        "collections": [collections.OrderedDict(a=1, b=2),
                        collections.defaultdict(list, {"a": [1]}),
                        collections.deque([1, 2, 3], maxlen=5), collections.Counter("abca")],
        "range and slice": [range(1, 10, 3), slice(1, None, 2)],
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


def same_object_graph(a, b, proto=pickle.HIGHEST_PROTOCOL) -> bool:
    """Equal values *and* the same sharing and cycles: the stdlib writes the
    same bytes for two graphs exactly when both hold (memo references encode
    identity), which also makes NaN compare equal to itself."""
    return pickle.dumps(a, proto) == pickle.dumps(b, proto)


def outcome(fn):
    """A comparable summary: the result's pickle, or the exception type."""
    try:
        value = fn()
    except Exception as exc:  # noqa: BLE001 - comparing exception types is the point
        return ("raises", type(exc))
    try:
        return ("value", pickle.dumps(value, 4))
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
