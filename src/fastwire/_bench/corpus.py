"""The broad pickle corpus: every family of types the C pickle meets.

The seven data sets of :mod:`fastwire._bench.datasets` are what the codec was
first tuned on; this corpus is what users send: atoms of every size, every
container, shared and cyclic structure, the standard library's value types,
each customisation hook of the reduce protocol, and record shapes from
pyperformance's ``bm_pickle`` (its objects, value for value: a user-profile
dict, a tuple of a list of ids, a group of three records of strs, nested lists
of small ints, and a dict of small dicts).

Every class is defined at module level so that any pickler can find it by
name. Everything is built deterministically: two processes build equal data.
"""

from __future__ import annotations

import collections
import copyreg
import dataclasses
import datetime
import decimal
import enum
import fractions
import ipaddress
import pathlib
import random
import sys
import uuid

# --- classes exercising each path of the reduce protocol -----------------------------


class Color(enum.Enum):
    RED = 1
    GREEN = 2
    BLUE = 3


class Level(enum.IntEnum):
    LOW = 10
    HIGH = 20


Pair2 = collections.namedtuple("Pair2", "key value")
Row = collections.namedtuple("Row", "id name score active")


@dataclasses.dataclass
class Item:
    sku: str
    qty: int
    price: float


@dataclasses.dataclass(frozen=True)
class FrozenItem:
    sku: str
    qty: int


class Slotted:
    __slots__ = ("a", "b", "c")

    def __init__(self, a, b, c):
        self.a, self.b, self.c = a, b, c

    def __eq__(self, other):
        return type(other) is Slotted and (self.a, self.b, self.c) == (other.a, other.b, other.c)


class Reduced:
    """``__reduce__`` returning a constructor call."""

    def __init__(self, x, y):
        self.x, self.y = x, y

    def __reduce__(self):
        return (Reduced, (self.x, self.y))

    def __eq__(self, other):
        return type(other) is Reduced and (self.x, self.y) == (other.x, other.y)


class ReducedEx:
    """``__reduce_ex__`` returning a constructor call and a state."""

    def __init__(self, x):
        self.x = x
        self.cache = None

    def __reduce_ex__(self, protocol):
        return (ReducedEx, (self.x,), {"cache": self.cache})

    def __eq__(self, other):
        return type(other) is ReducedEx and self.x == other.x


class WithState:
    """``__getstate__``/``__setstate__`` with a tuple state."""

    def __init__(self, a, b):
        self.a, self.b = a, b

    def __getstate__(self):
        return (self.a, self.b)

    def __setstate__(self, state):
        self.a, self.b = state

    def __eq__(self, other):
        return type(other) is WithState and (self.a, self.b) == (other.a, other.b)


class NewArgs:
    """``__getnewargs__`` (NEWOBJ with arguments) and a ``__dict__`` state."""

    def __new__(cls, key):
        self = super().__new__(cls)
        self.key = key
        return self

    def __getnewargs__(self):
        return (self.key,)

    def __eq__(self, other):
        return type(other) is NewArgs and self.__dict__ == other.__dict__


class Registered:
    """Reduced through ``copyreg.pickle`` (the dispatch table), not a method."""

    def __init__(self, v):
        self.v = v

    def __eq__(self, other):
        return type(other) is Registered and self.v == other.v


def _reduce_registered(obj):
    return (Registered, (obj.v,))


copyreg.pickle(Registered, _reduce_registered)


class Plain:
    """A class that customises nothing: ``object.__reduce_ex__``'s default path."""

    def __init__(self, i):
        self.i = i
        self.name = f"n{i}"

    def __eq__(self, other):
        return type(other) is Plain and self.__dict__ == other.__dict__


# --- pyperformance bm_pickle data ---------------------------------------------------------
# The objects of pyperformance's bm_pickle benchmark, value for value
# (pyperformance/data-files/benchmarks/bm_pickle/run_benchmark.py).

BM_PICKLE_DICT = {
    "ads_flags": 0, "age": 18, "birthday": datetime.date(1980, 5, 7), "bulletin_count": 0,
    "comment_count": 0, "country": "BR", "encrypted_id": "G9urXXAJwjE", "favorite_count": 9,
    "first_name": "", "flags": 412317970704, "friend_count": 0, "gender": "m",
    "gender_for_display": "Male", "id": 302935349, "is_custom_profile_icon": 0, "last_name": "",
    "locale_preference": "pt_BR", "member": 0, "tags": ["a", "b", "c", "d", "e", "f", "g"],
    "profile_foo_id": 827119638, "secure_encrypted_id": "Z_xxx2dYx3t4YAdnmfgyKw", "session_number": 2,
    "signup_id": "201-19225-223", "status": "A", "theme": 1, "time_created": 1225237014,
    "time_updated": 1233134493, "unread_message_count": 0, "user_group": "0", "username": "collinwinter",
    "play_count": 9, "view_count": 7, "zip": "",
}

BM_PICKLE_TUPLE = (
    [265867233, 265868503, 265252341, 265243910, 265879514, 266219766, 266021701, 265843726, 265592821,
     265246784, 265853180, 45526486, 265463699, 265848143, 265863062, 265392591, 265877490, 265823665,
     265828884, 265753032],
    60,
)


def _bm_pickle_group() -> list[dict]:
    """Three copies of BM_PICKLE_DICT whose every value is replaced by the str of
    a random float below sys.maxsize (from random.Random(5)): the benchmark's
    DICT_GROUP, a record of strs such as '4.5e+18'."""
    rng = random.Random(5)
    return [{key: str(rng.random() * sys.maxsize) for key in BM_PICKLE_DICT} for _ in range(3)]


BM_PICKLE_GROUP = _bm_pickle_group()
BM_PICKLE_LIST = [[list(range(10)), list(range(10))] for _ in range(10)]
BM_PICKLE_MICRO_DICT = {key: dict.fromkeys(range(10)) for key in range(100)}


def bm_pickle_sets() -> dict[str, object]:
    """bm_pickle's objects, one corpus entry each (the benchmark's own cases
    time some of them together: see corpus_cases.bm_pickle_pairs)."""
    return {
        "bm_pickle profile dict": BM_PICKLE_DICT,
        "bm_pickle id tuple": BM_PICKLE_TUPLE,
        "bm_pickle dict group": BM_PICKLE_GROUP,
        "bm_pickle_list nested lists": BM_PICKLE_LIST,
        "bm_pickle_dict dict of dicts": BM_PICKLE_MICRO_DICT,
    }


# --- the corpus ------------------------------------------------------------------------------


def corpus() -> dict[str, object]:
    """Name -> object, one per family; each object is a few hundred to a few thousand values."""
    n = 500
    utc = datetime.UTC
    plus2 = datetime.timezone(datetime.timedelta(hours=2))
    base = datetime.datetime(2024, 1, 2, 3, 4, 5, 678901)
    shared = [1, 2, 3]
    cyclic = []
    for i in range(200):
        node = {"i": i}
        node["self"] = node
        cyclic.append(node)
    sets = {
        # atoms
        "small ints": list(range(-100, 100)) * 5,
        "ints 32-bit": [(1 << 31) - i * 7919 for i in range(n)],
        "ints 64-bit negative": [-(1 << 62) + i * 1234567 for i in range(n)],
        "ints above 64 bits": [(1 << 64) + i * 0x1234567 for i in range(n)],
        "ints of 1000 bits": [(1 << 1000) - i for i in range(100)],
        "floats": [i / 7.0 for i in range(n)],
        "complex": [complex(i, -i / 3) for i in range(n)],
        "str ascii": [f"word{i}" for i in range(n)],
        "str latin-1": [f"caf\xe9{i}" for i in range(n)],
        "str BMP": [f"\u65e5\u672c{i}" for i in range(n)],
        "str astral": [f"\U0001f600{i}" for i in range(n)],
        "str long": ["x" * 5000 + str(i) for i in range(20)],
        "bytes short": [bytes([i % 256]) * 16 for i in range(n)],
        "bytearray": [bytearray(b"ab" * 10) for _ in range(200)],
        "None/bool mix": [None, True, False] * 200,
        # containers
        "tuples nested": [(i, (i, (i, "x"))) for i in range(n)],
        "tuples of atoms": [(i, float(i), str(i)) for i in range(n)],
        "lists of lists": [[i, [i, i + 1]] for i in range(n)],
        "dicts int keys": [{j: j * 2 for j in range(10)} for _ in range(50)],
        "sets": [set(range(i, i + 10)) for i in range(100)],
        "frozensets": [frozenset(range(i, i + 10)) for i in range(100)],
        "empty containers": [[], {}, (), set(), frozenset(), "", b""] * 70,
        # structure
        "shared references": [shared] * n,
        "cycles": cyclic,
        # stdlib value types
        "datetime": [base + datetime.timedelta(seconds=i) for i in range(n)],
        "date": [datetime.date(2000, 1, 1) + datetime.timedelta(days=i) for i in range(n)],
        "time": [datetime.time(i % 24, i % 60, i % 60, i) for i in range(n)],
        "datetime tz-aware + timedelta": [(base.replace(tzinfo=utc if i % 2 else plus2),
                                           datetime.timedelta(days=i, seconds=i))
                                          for i in range(n // 2)],
        "Decimal": [decimal.Decimal(i) / 7 for i in range(200)],
        "Fraction": [fractions.Fraction(i, 7) for i in range(200)],
        "UUID": [uuid.UUID(int=i * 0x9E3779B97F4A7C15) for i in range(200)],
        "enum": [Color(i % 3 + 1) for i in range(n)] + [Level.LOW, Level.HIGH] * 100,
        "pathlib": [pathlib.PurePosixPath(f"/usr/lib/x{i}.so") for i in range(200)],
        "ipaddress": [ipaddress.IPv4Address(i * 65537) for i in range(200)]
        + [ipaddress.IPv6Network(f"2001:db8:{i:x}::/48") for i in range(50)],
        "Counter": [collections.Counter({f"k{j}": j for j in range(5)}) for _ in range(100)],
        "deque": [collections.deque(range(10)) for _ in range(100)],
        "defaultdict": [collections.defaultdict(list, {j: [j] for j in range(5)}) for _ in range(100)],
        "OrderedDict": [collections.OrderedDict((f"k{j}", j) for j in range(5)) for _ in range(100)],
        "namedtuple": [Row(i, f"r{i}", i * 0.5, bool(i % 2)) for i in range(n)],
        "dataclass": [Item(f"s{i}", i, i * 1.25) for i in range(n)],
        "frozen dataclass": [FrozenItem(f"s{i}", i) for i in range(n)],
        "slotted class": [Slotted(i, str(i), None) for i in range(n)],
        "plain class": [Plain(i) for i in range(n)],
        # reduce-protocol hooks
        "__reduce__": [Reduced(i, -i) for i in range(n)],
        "__reduce_ex__ with state": [ReducedEx(i) for i in range(n)],
        "__getstate__/__setstate__": [WithState(i, str(i)) for i in range(n)],
        "__getnewargs__": [NewArgs(i) for i in range(n)],
        "copyreg.pickle": [Registered(i) for i in range(n)],
        "namedtuple keys in dict": {Pair2(i, str(i)): i for i in range(200)},
    }
    sets.update(bm_pickle_sets())
    return sets
