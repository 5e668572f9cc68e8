"""The decoder's shortcuts on object creation agree with the stdlib.

Each shortcut (resolving a global without running the import machinery,
calling a class's Python ``__new__`` without a prepended argument tuple)
applies only where the long way would do nothing observable more; these
tests change exactly what the shortcut relies on and check that fastwire
still does what the C pickle does: the same result, the same exception type,
the same hooks called.
"""

from __future__ import annotations

import builtins
import collections
import copyreg
import dataclasses
import datetime
import io
import pickle
import sys
import types

import pytest
from hypothesis import given, settings, strategies as st

import fastwire.pickle as fw
from tests.support.pickle_catalogue import outcome

IMPLS = [pytest.param(pickle.loads, id="stdlib"), pytest.param(fw.loads, id="fastwire")]


def global_pickle(module: str, name: str, proto: int) -> bytes:
    """A pickle of the global module.name alone: GLOBAL below protocol 4,
    STACK_GLOBAL from 4."""
    if proto < 4:
        return b"\x80\x02c" + module.encode() + b"\n" + name.encode() + b"\n."
    m, n = module.encode(), name.encode()
    return (b"\x80\x04\x8c" + bytes([len(m)]) + m + b"\x8c" + bytes([len(n)]) + n
            + b"\x93.")


@pytest.fixture
def scratch_module():
    """A fresh module registered in sys.modules, removed afterwards."""
    name = "fastwire_scratch_module"
    module = types.ModuleType(name)
    sys.modules[name] = module
    yield module
    sys.modules.pop(name, None)


@pytest.mark.parametrize("proto", [2, 4])
def test_global_calls_a_replaced_builtins_import_like_stdlib(proto, monkeypatch):
    data = global_pickle("datetime", "date", proto)
    seen = {}
    real_import = builtins.__import__
    for loads in (pickle.loads, fw.loads):
        calls = []

        def recording_import(name, *args, calls=calls, **kwargs):
            calls.append(name)
            return real_import(name, *args, **kwargs)
        monkeypatch.setattr(builtins, "__import__", recording_import)
        assert loads(data) is datetime.date
        monkeypatch.setattr(builtins, "__import__", real_import)
        seen[loads] = calls.count("datetime")
    assert seen[pickle.loads] == 1
    assert seen[fw.loads] == seen[pickle.loads]


@pytest.mark.parametrize("proto", [2, 4])
def test_global_from_a_non_module_in_sys_modules(proto, monkeypatch):
    holder = types.SimpleNamespace(Thing=object())
    monkeypatch.setitem(sys.modules, "fastwire_scratch_holder", holder)
    data = global_pickle("fastwire_scratch_holder", "Thing", proto)
    assert pickle.loads(data) is holder.Thing
    assert fw.loads(data) is holder.Thing


@pytest.mark.parametrize("proto", [2, 4])
def test_global_sees_attribute_reassigned_between_loads(proto, scratch_module):
    data = global_pickle(scratch_module.__name__, "Thing", proto)
    for value in (1, "two", (3,)):
        scratch_module.Thing = value
        assert fw.loads(data) is value
    del scratch_module.Thing
    assert outcome(lambda: fw.loads(data)) == outcome(lambda: pickle.loads(data)) \
        == ("raises", AttributeError)


@pytest.mark.parametrize("proto", [2, 4])
def test_global_of_module_removed_from_sys_modules_is_imported_again(proto):
    import colorsys
    data = global_pickle("colorsys", "rgb_to_hsv", proto)
    assert fw.loads(data) is colorsys.rgb_to_hsv
    del sys.modules["colorsys"]
    try:
        got = fw.loads(data)
        assert "colorsys" in sys.modules
        assert got is sys.modules["colorsys"].rgb_to_hsv
        assert got is not colorsys.rgb_to_hsv
    finally:
        sys.modules["colorsys"] = colorsys


@pytest.mark.parametrize("proto", [2, 4])
def test_global_of_module_without_spec_asks_its_getattr_like_stdlib(proto, scratch_module):
    del scratch_module.__spec__
    scratch_module.Thing = 5
    data = global_pickle(scratch_module.__name__, "Thing", proto)
    seen = {}
    for loads in (pickle.loads, fw.loads):
        calls = []

        def module_getattr(name, calls=calls):
            calls.append(name)
            raise AttributeError(name)
        scratch_module.__getattr__ = module_getattr
        assert loads(data) == 5
        seen[loads] = calls
    assert "__spec__" in seen[pickle.loads]
    assert seen[fw.loads] == seen[pickle.loads]


@pytest.mark.parametrize("proto", [2, 4])
def test_global_of_module_still_initializing_takes_the_import(proto, scratch_module):
    """A module whose spec says it is initializing goes through the import
    (which waits for its lock, here free, and asks the spec again)."""
    asked = {}

    class Spec:
        name = scratch_module.__name__

        @property
        def _initializing(self):
            asked[current] = asked.get(current, 0) + 1
            return True
    scratch_module.__spec__ = Spec()
    scratch_module.Thing = "t"
    data = global_pickle(scratch_module.__name__, "Thing", proto)
    for current in (pickle.loads, fw.loads):
        assert outcome(lambda f=current: f(data)) == outcome(lambda: pickle.loads(data))
    assert asked[pickle.loads] >= 1
    assert asked[fw.loads] >= 1


def test_global_spec_callout_reenters_loads_and_drops_the_module(scratch_module):
    """The spec's _initializing is Python code: it calls loads() (the shared
    decoder is busy, a fresh one serves it) and removes the module from
    sys.modules while the outer load resolves a global of it."""
    name = scratch_module.__name__
    inner = pickle.dumps([1, {"a": (2, 3)}], 5)

    class Spec:
        def __init__(self):
            self.name = name
            self.inner_results = []

        @property
        def _initializing(self):
            self.inner_results.append(fw.loads(inner))
            sys.modules.pop(name, None)
            return False
    for loads in (pickle.loads, fw.loads):
        module = types.ModuleType(name)
        module.Thing = ("thing",)
        module.__spec__ = Spec()
        sys.modules[name] = module
        data = global_pickle(name, "Thing", 4)
        got = outcome(lambda f=loads, d=data: f(d))
        if loads is pickle.loads:
            expected = got
        else:
            assert got == expected
            assert module.__spec__.inner_results[:1] == [[1, {"a": (2, 3)}]]
    # The shared decoder is usable afterwards.
    assert fw.loads(inner) == [1, {"a": (2, 3)}]


@pytest.mark.parametrize("loads", IMPLS)
@pytest.mark.parametrize("obj", [collections.OrderedDict(a=1), collections.Counter("abc"),
                                 datetime.date(2024, 5, 6)],
                         ids=["package-global", "package-global-2", "module-global"])
def test_globals_of_packages_and_modules_round_trip(loads, obj):
    for proto in range(6):
        assert loads(pickle.dumps(obj, proto)) == obj


# ------------------------------------------------- NEWOBJ with a Python __new__ ----

Point = collections.namedtuple("Point", "x y")


class Point3(Point):
    """A namedtuple subclass: __new__ found in a base's dict."""

    __slots__ = ()


class NewReturnsOther:
    def __new__(cls, *args):
        return ("not an instance", cls.__name__, args)


class NewCounts:
    calls = 0

    def __new__(cls, a, b=2):
        NewCounts.calls += 1
        self = super().__new__(cls)
        self.ab = (a, b)
        return self

    def __reduce_ex__(self, proto):
        return (copyreg.__newobj__, (NewCounts, *self.ab))

    def __eq__(self, other):
        return type(other) is NewCounts and other.ab == self.ab


class NewFromStaticLambda:
    __new__ = staticmethod(lambda cls, *args: object.__new__(cls))

    def __reduce_ex__(self, proto):
        return (copyreg.__newobj__, (NewFromStaticLambda, 1, 2))


class MetaRedirectsNew(type):
    """A metaclass whose __getattribute__ answers __new__ itself: the slot
    asks it, so a shortcut that read the class dict would differ."""

    def __getattribute__(cls, name):
        if name == "__new__":
            return lambda klass, *args: ("metaclass __new__", args)
        return super().__getattribute__(name)


class WithMetaNew(metaclass=MetaRedirectsNew):
    def __new__(cls, *args):
        return ("class __new__", args)


def newobj_pickle(cls, args, proto: int = 4) -> bytes:
    """cls, args, NEWOBJ, written by the stdlib's Python pickler (which,
    unlike a __reduce_ex__, may name any class and any argument object)."""
    marker = object()

    class Writer(pickle._Pickler):
        def save(self, obj, save_persistent_id=True):
            if obj is not marker:
                return super().save(obj, save_persistent_id)
            self.save(cls)
            self.save(args)
            self.write(pickle.NEWOBJ)
    out = io.BytesIO()
    Writer(out, proto).dump(marker)
    return out.getvalue()


class ArgsTuple(tuple):
    """A tuple subclass whose iteration is off limits to NEWOBJ."""

    def __iter__(self):
        raise AssertionError("NEWOBJ must not iterate its argument tuple")

    def __reduce__(self):
        return (ArgsTuple, ((3, 4),))


NEWOBJ_CASES = [
    pytest.param(Point, (1, 2), id="namedtuple"),
    pytest.param(Point3, (1, 2), id="namedtuple-subclass"),
    pytest.param(NewReturnsOther, (1, "a"), id="new-returns-other"),
    pytest.param(NewCounts, (5,), id="default-argument"),
    pytest.param(NewCounts, (), id="too-few-arguments"),
    pytest.param(NewCounts, (1, 2, 3), id="too-many-arguments"),
    pytest.param(NewReturnsOther, tuple(range(8)), id="eight-arguments"),
    pytest.param(NewReturnsOther, tuple(range(9)), id="nine-arguments"),
    pytest.param(NewReturnsOther, tuple(range(40)), id="forty-arguments"),
    pytest.param(NewFromStaticLambda, (1, 2), id="staticmethod-lambda"),
    pytest.param(WithMetaNew, (1,), id="metaclass-getattribute"),
    pytest.param(collections.OrderedDict, (), id="builtin-new"),
    pytest.param(int, (7,), id="builtin-int"),
]


@pytest.mark.parametrize("cls,args", NEWOBJ_CASES)
@pytest.mark.parametrize("proto", [2, 4, 5])
def test_newobj_like_stdlib(cls, args, proto):
    data = newobj_pickle(cls, args, proto)
    expected = outcome(lambda: pickle.loads(data))
    assert outcome(lambda: fw.loads(data)) == expected
    assert outcome(lambda: fw.loads(data, allowed=[cls])) == expected


@pytest.mark.parametrize("proto", [2, 4, 5])
def test_newobj_args_tuple_subclass_like_stdlib(proto):
    data = newobj_pickle(Point, ArgsTuple((3, 4)), proto)
    assert pickle.loads(data) == Point(3, 4)
    assert outcome(lambda: fw.loads(data)) == outcome(lambda: pickle.loads(data))


@pytest.mark.parametrize("proto", [2, 4, 5])
def test_newobj_args_not_a_tuple_like_stdlib(proto):
    data = newobj_pickle(Point, [3, 4], proto)
    assert outcome(lambda: fw.loads(data)) == outcome(lambda: pickle.loads(data)) \
        == ("raises", pickle.UnpicklingError)


def test_newobj_python_new_reenters_loads_and_load():
    """__new__ is Python: it calls loads() (the shared decoder is busy; a
    fresh one serves it) and load() of the Unpickler that is running it."""
    seen = []

    class Reenters:
        unpickler = None

        def __new__(cls, x):
            seen.append(fw.loads(pickle.dumps({"inner": x}, 5)))
            if Reenters.unpickler is not None:
                with pytest.raises(RuntimeError, match="in use"):
                    Reenters.unpickler.load()
            return ("made", x)
    globals()["Reenters"] = Reenters
    Reenters.__qualname__ = "Reenters"
    try:
        data = newobj_pickle(Reenters, (9,), 5)
        assert fw.loads(data) == ("made", 9)
        assert seen == [{"inner": 9}]
        u = fw.Unpickler(io.BytesIO(data + data))
        Reenters.unpickler = u
        assert u.load() == ("made", 9)
        assert u.load() == ("made", 9)
        assert seen == [{"inner": 9}] * 3
    finally:
        del globals()["Reenters"]


# ------------------------------------------------------- non-ASCII str ----

def str_pickles(raw: bytes) -> list[bytes]:
    """raw as the payload of SHORT_BINUNICODE (when short), BINUNICODE and
    BINUNICODE8, each a whole pickle."""
    out = []
    if len(raw) < 256:
        out.append(b"\x80\x04\x8c" + bytes([len(raw)]) + raw + b".")
    out.append(b"\x80\x04X" + len(raw).to_bytes(4, "little") + raw + b".")
    out.append(b"\x80\x04\x8d" + len(raw).to_bytes(8, "little") + raw + b".")
    return out


def assert_str_like_stdlib(raw: bytes):
    for data in str_pickles(raw):
        expected = outcome(lambda d=data: pickle.loads(d))
        assert outcome(lambda d=data: fw.loads(d)) == expected, raw
        if expected[0] == "value":
            got, want = fw.loads(data), pickle.loads(data)
            assert type(got) is str and got == want


UTF8_EDGES = [
    "caf\xe9", "\xe9\xe8", "\u65e5\u672c", "\U0001f600x", "a\u0100", "\x80\x81", "\xff\xfe",
    "\u07ff\u0800", "\uffff\U00010000", "\U0010ffff\x00", "\u00e9" * 200, "\u65e5" * 85,
    "\U0001f600" * 64, "x" * 255 + "\xe9",
]
UTF8_BAD = [
    b"\xc3", b"a\xc3", b"\xc0\x80", b"\xc1\xbf", b"\xe0\x80\x80", b"\xe0\x9f\xbf",
    b"\xed\xa0\x80", b"\xed\xbf\xbfz", b"\xed\xa0\x80\xed\xb0\x80",  # surrogates: allowed
    b"\xf0\x80\x80\x80", b"\xf0\x8f\xbf\xbf", b"\xf4\x90\x80\x80", b"\xf5\x80\x80\x80",
    b"\xff", b"\xfe\xfe", b"\x80", b"ab\xbf", b"\xe6\x97", b"\xf0\x9f\x98", b"\xc3\xa9\xc3",
    b"\xc3\x28", b"\xe6\x28\xa5", b"\xf0\x9f\x28\x80", b"\xf0\x9f\x98\x28",
]


@pytest.mark.parametrize("text", UTF8_EDGES, ids=range(len(UTF8_EDGES)))
def test_non_ascii_str_like_stdlib(text):
    assert_str_like_stdlib(text.encode("utf-8", "surrogatepass"))


@pytest.mark.parametrize("raw", UTF8_BAD, ids=range(len(UTF8_BAD)))
def test_malformed_or_surrogate_utf8_like_stdlib(raw):
    assert_str_like_stdlib(raw)
    assert_str_like_stdlib(b"caf\xc3\xa9" + raw)
    assert_str_like_stdlib(raw + b"\xe6\x97\xa5")


@pytest.mark.parametrize("length", [25, 31, 32, 33, 63, 64, 65, 100, 5001])
def test_one_non_ascii_byte_anywhere_in_a_long_str_is_seen(length):
    """Past the short-str cache the ASCII check reads 32 bytes a step, then
    words, then bytes: a non-ASCII character at each offset of each of those
    stretches must send the str to the UTF-8 decoder (regression: a check that
    missed a lane would build a mangled pure-ASCII str)."""
    for at in sorted({*range(min(length, 70)), *range(max(0, length - 40), length)}):
        assert_str_like_stdlib(b"a" * at + b"\xc3\xa9" + b"b" * (length - at - 1))
        assert_str_like_stdlib(b"a" * at + b"\x80" + b"b" * (length - at - 1))


def test_one_non_ascii_character_is_the_interpreters_own():
    """Length-1 strs below U+0100 are interned singletons in CPython."""
    for ch in ("\xe9", "\x80", "\xff"):
        for data in str_pickles(ch.encode()):
            assert fw.loads(data) is pickle.loads(data)


@settings(max_examples=600, deadline=None)
@given(st.lists(st.one_of(
    st.text(min_size=0, max_size=6).map(lambda t: t.encode("utf-8", "surrogatepass")),
    st.binary(min_size=0, max_size=4),
    st.sampled_from([b"\xc3", b"\xed\xa0\x80", b"\xf4\x8f\xbf\xbf", b"\xe0\xa0\x80", b"\x80"]),
), max_size=12).map(b"".join))
def test_random_utf8_like_stdlib(raw):
    assert_str_like_stdlib(raw)


# --------------------------------------------------------------- LONG1/LONG4 ----

def long_pickles(payload: bytes) -> list[bytes]:
    return [b"\x80\x02\x8a" + bytes([len(payload)]) + payload + b".",
            b"\x80\x02\x8b" + len(payload).to_bytes(4, "little") + payload + b"."]


LONG_EDGES = [b"", b"\x00", b"\x7f", b"\x80", b"\xff", b"\xff\x00", b"\x00\x80",
              b"\xff" * 8, b"\x00" * 8, b"\xff\xff\xff\xff\xff\xff\xff\x7f",
              b"\x00\x00\x00\x00\x00\x00\x00\x80", b"\x01\x00\x00\x00\x00\x00\x00\x80",
              b"\xff" * 7 + b"\x80", b"\x00" * 9, b"\xff" * 9, b"\x00" * 8 + b"\x01",
              b"\x12\x34\x56", b"\xfe\xff\xff\xff\xff"]


@pytest.mark.parametrize("payload", LONG_EDGES, ids=range(len(LONG_EDGES)))
def test_counted_long_like_stdlib(payload):
    for data in long_pickles(payload):
        want = pickle.loads(data)
        got = fw.loads(data)
        assert type(got) is int and got == want == int.from_bytes(payload, "little", signed=True)


@settings(max_examples=500, deadline=None)
@given(st.binary(min_size=1, max_size=10))
def test_random_counted_long_like_stdlib(payload):
    for data in long_pickles(payload):
        assert fw.loads(data) == pickle.loads(data)


@pytest.mark.parametrize("value", [0, 1, -1, 2**31, -2**31 - 1, 2**63 - 1, -2**63, 2**63, -2**63 - 1,
                                   2**64, 10**30, -10**30])
def test_ints_round_trip_through_every_protocol(value):
    for proto in range(6):
        data = pickle.dumps([value, -value], proto)
        assert fw.loads(data) == pickle.loads(data) == [value, -value]


# ------------------------------------------------------- REDUCE, SHORT_BINBYTES ----

def raises_value_error(*args):
    raise ValueError(args)


def returns_args(*args):
    return ("called", args)


def here(name: str) -> bytes:
    """STACK_GLOBAL of this module's `name` (protocol 4 opcodes)."""
    return global_pickle(__name__, name, 4)[2:-1]


REDUCE_STREAMS = {
    # callable, args tuple, REDUCE
    "call": pickle.dumps(datetime.date(2024, 5, 6), 5),
    "callable raises": b"\x80\x04" + here("raises_value_error") + b"K\x01\x85R.",
    "args not a tuple": b"\x80\x04" + here("returns_args") + b"]R.",
    "args a list then tuple": b"\x80\x04" + here("returns_args") + b"(K\x01K\x02tR.",
    "not callable": b"\x80\x04K\x05)R.",
    "one item only": b"\x80\x04)R.",
    "empty stack": b"\x80\x04R.",
    "after a mark": b"\x80\x04" + here("returns_args") + b"()R.",
    "memoized and fetched": b"\x80\x04" + here("returns_args") + b"K\x07\x85R\x94h\x00\x86.",
}


@pytest.mark.parametrize("name", list(REDUCE_STREAMS))
def test_reduce_like_stdlib(name):
    data = REDUCE_STREAMS[name]
    expected = outcome(lambda: pickle.loads(data))
    assert outcome(lambda: fw.loads(data)) == expected
    assert outcome(lambda: fw.Unpickler(io.BytesIO(data)).load()) == expected


def test_reduce_streams_reach_the_paths_they_name():
    assert pickle.loads(REDUCE_STREAMS["args a list then tuple"]) == ("called", (1, 2))
    assert pickle.loads(REDUCE_STREAMS["memoized and fetched"]) == (("called", (7,)),) * 2
    for name in ("callable raises", "not callable", "one item only", "empty stack",
                 "after a mark", "args not a tuple"):
        assert outcome(lambda n=name: pickle.loads(REDUCE_STREAMS[n]))[0] == "raises"


def reduce_reentering(*args):
    """A REDUCE callable that loads() and re-enters the running Unpickler."""
    inner = fw.loads(pickle.dumps({"inner": args}, 5))
    if RUNNING:
        with pytest.raises(RuntimeError, match="in use"):
            RUNNING[0].load()
    return ("outer", inner)


RUNNING: list = []


def test_reduce_callable_reenters_loads_and_load():
    data = b"\x80\x04" + here("reduce_reentering") + b"K\x03\x85R."
    expected = ("outer", {"inner": (3,)})
    assert fw.loads(data) == pickle.loads(data) == expected
    u = fw.Unpickler(io.BytesIO(data * 2))
    RUNNING.append(u)
    try:
        assert u.load() == expected
        assert u.load() == expected
    finally:
        RUNNING.clear()
    assert fw.loads(data) == expected


SHORT_BINBYTES_STREAMS = {
    "empty": b"\x80\x04C\x00.",
    "empty at the end": b"\x80\x04C\x00",
    "short": b"\x80\x04C\x03abc.",
    "truncated payload": b"\x80\x04C\x05abc",
    "no length": b"\x80\x04C",
    "memoized": b"\x80\x04C\x02ab\x94h\x00\x86.",
    "max length": b"\x80\x04C\xff" + b"z" * 255 + b".",
}


@pytest.mark.parametrize("name", list(SHORT_BINBYTES_STREAMS))
def test_short_binbytes_like_stdlib(name):
    data = SHORT_BINBYTES_STREAMS[name]
    expected = outcome(lambda: pickle.loads(data))
    assert outcome(lambda: fw.loads(data)) == expected
    assert outcome(lambda: fw.Unpickler(io.BytesIO(data)).load()) == \
        outcome(lambda: pickle.Unpickler(io.BytesIO(data)).load())



# --- BUILD with a dict state on classes that define their own __setattr__ -----------------
# The state goes into the instance's __dict__ without the class's __setattr__,
# as the stdlib's inst.__dict__ update does; fastwire stores it through the
# generic attribute store where __dict__ is the one a class statement makes.

SETATTR_CALLS: list = []


@dataclasses.dataclass(frozen=True)
class FrozenRecord:
    sku: str
    qty: int


class RecordsSetattr:
    """__setattr__ that records every call: BUILD with a dict state makes none in the stdlib."""

    def __init__(self, a, b):
        object.__setattr__(self, "a", a)
        object.__setattr__(self, "b", b)

    def __setattr__(self, name, value):
        SETATTR_CALLS.append(name)
        object.__setattr__(self, name, value)


class SetattrAndProperty(RecordsSetattr):
    """A state key that names a property (a data descriptor): it still lands in __dict__."""

    @property
    def a(self):
        return "from the property"


class SetattrAndMethod(RecordsSetattr):
    """A state key that names a method (not a data descriptor)."""

    def b(self):
        return "method"


class SetattrReentering(RecordsSetattr):
    """__setattr__ that loads another pickle and clears the calls: the worst it can do if called."""

    def __setattr__(self, name, value):
        fw.loads(pickle.dumps(FrozenRecord("x", 1)))
        SETATTR_CALLS.clear()
        SETATTR_CALLS.append(name)
        object.__setattr__(self, name, value)


class ExceptionWithState(Exception):
    """A subclass of a C type whose __dict__ is its own getset, not a class
    statement's (and whose __setstate__, BaseException's, does call __setattr__)."""

    def __setattr__(self, name, value):
        SETATTR_CALLS.append(name)
        super().__setattr__(name, value)


def _with_dict(obj, **attrs):
    obj.__dict__.update(attrs)
    return obj


def _instances():
    return [FrozenRecord("s1", 7), RecordsSetattr(1, "two"),
            _with_dict(object.__new__(SetattrAndProperty), a=1, b=2), SetattrAndMethod(1, 2),
            SetattrReentering(5, 6), _with_dict(ExceptionWithState("boom"), note=3)]


@pytest.mark.parametrize("proto", range(2, pickle.HIGHEST_PROTOCOL + 1))
@pytest.mark.parametrize("index", range(len(_instances())))
def test_dict_state_of_a_class_with_its_own_setattr_lands_as_stdlibs(index, proto):
    blob = pickle.dumps(_instances()[index], proto)
    SETATTR_CALLS.clear()
    expected = pickle.loads(blob)
    stdlib_calls = SETATTR_CALLS[:]
    SETATTR_CALLS.clear()
    got = fw.loads(blob)
    assert stdlib_calls == SETATTR_CALLS
    assert stdlib_calls == (["note"] if isinstance(expected, Exception) else [])
    assert type(got) is type(expected)
    assert list(vars(got).items()) == list(vars(expected).items())
    assert got.__dict__ is vars(got)


# --- BUILD with a slot state whose __setattr__ changes that state -------------------------
# fastwire sets each slot-state item with setattr, as the stdlib does, holding
# the key and value across the call; a __setattr__ that edits the dict being
# applied must neither crash it nor make it part from the stdlib's result.

SLOT_STATE_SEEN: dict = {}


def _stash_slot_state(state):
    SLOT_STATE_SEEN["state"] = state
    return state


class _StashedState:
    def __init__(self, state):
        self.state = state

    def __reduce__(self):
        return _stash_slot_state, (self.state,)


def _new_slot_state_editor():
    return object.__new__(SlotStateEditor)


class SlotStateEditor:
    """Each setattr edits the slot-state dict BUILD is applying: the worst a __setattr__ can do to it."""

    __slots__ = ("a", "b", "c")
    EDIT = "clear"
    STATE_TO_DUMP: dict = {}

    def __reduce__(self):
        return _new_slot_state_editor, (), (None, SlotStateEditor.STATE_TO_DUMP)

    def __setattr__(self, name, value):
        state = SLOT_STATE_SEEN.get("state")
        if state is not None:
            if SlotStateEditor.EDIT == "clear":
                state.clear()
            elif SlotStateEditor.EDIT == "grow":
                state[f"k{len(state)}"] = value
            elif SlotStateEditor.EDIT == "replace":
                for key in list(state):
                    state[key] = "replaced"
        object.__setattr__(self, name, value)


@pytest.mark.parametrize("edit", ["clear", "grow", "replace"])
def test_slot_state_edited_by_setattr_while_applied_like_stdlib(edit, monkeypatch):
    monkeypatch.setattr(SlotStateEditor, "EDIT", edit)
    state = {"a": [1], "b": "two", "c": None}
    monkeypatch.setattr(SlotStateEditor, "STATE_TO_DUMP", state)
    blob = pickle.dumps([_StashedState(state), object.__new__(SlotStateEditor)], 5)

    def slots_of(loads):
        SLOT_STATE_SEEN.clear()
        try:
            _, inst = loads(blob)
        except Exception as exc:  # the exception type is what must agree
            return type(exc)
        return {name: getattr(inst, name, "<unset>") for name in SlotStateEditor.__slots__}

    assert slots_of(fw.loads) == slots_of(pickle.loads)


# --- LONG1/LONG4: ints wider than 8 bytes built digit by digit ----------------------------


def _long_pickle(raw: bytes) -> bytes:
    """raw as a LONG1 (when short) or LONG4 payload, a whole protocol-2 pickle."""
    if len(raw) < 256:
        return b"\x80\x02\x8a" + bytes([len(raw)]) + raw + b"."
    return b"\x80\x02\x8b" + len(raw).to_bytes(4, "little") + raw + b"."


def _assert_long_like_stdlib(raw: bytes):
    data = _long_pickle(raw)
    got, want = fw.loads(data), pickle.loads(data)
    assert type(got) is int and got == want, raw.hex()
    if -5 <= want <= 256:  # the interpreter's cached ints come back as themselves
        assert got is want


@pytest.mark.parametrize("bits", [56, 57, 63, 64, 65, 71, 72, 89, 90, 91, 95, 96, 97, 120, 128, 1000, 8191])
def test_wide_long_payloads_at_digit_and_word_edges_like_stdlib(bits):
    """Each power of two near a 30-bit digit or 32-bit step edge, one either
    side of it, both signs, and padded with redundant sign bytes (which
    shrink some of them back under 8 bytes)."""
    for value in (1 << bits, (1 << bits) - 1, (1 << bits) + 1, ((1 << bits) - 1) // 3):
        for v in (value, -value):
            width = (v.bit_length() + 8) // 8
            for pad in (0, 1, 3, 8, 300):
                _assert_long_like_stdlib(v.to_bytes(width + pad, "little", signed=True))


@settings(max_examples=400, deadline=None)
@given(st.binary(min_size=1, max_size=300))
def test_any_long_payload_like_stdlib(raw):
    _assert_long_like_stdlib(raw)
