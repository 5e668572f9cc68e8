"""Restricted unpickling (allowed=): value types load, everything else is
refused before it is imported or called.

The canaries are real: a module on disk that leaves a marker file when it is
imported, and a function that records every call.
"""

import copyreg
import io
import os
import pickle
import sys

import pytest

from fastwire import pickle as fwpickle
from tests.support import pickle_catalogue as cat
from tests.support.pickle_catalogue import same_object_graph

CANARY = "fw_restricted_canary"

CANARY_SOURCE = '''
import pathlib
pathlib.Path(__file__).with_suffix(".imported").write_text("imported")

def record(*args, **kwargs):
    raise AssertionError("canary called")

class Canary:
    def __init__(self, *args, **kwargs):
        raise AssertionError("canary instantiated")
'''

CALLS = []


def recorder(*args, **kwargs):
    """A callable a hostile pickle would like to run."""
    CALLS.append(args)
    return "called"


class Recording:
    """An importable class whose every construction and state change is recorded."""

    def __new__(cls, *args, **kwargs):
        CALLS.append(("new", cls))
        return super().__new__(cls)

    def __init__(self, *args):
        CALLS.append(("init", args))

    def __setstate__(self, state):
        CALLS.append(("setstate", state))


@pytest.fixture
def canary(tmp_path, monkeypatch):
    path = tmp_path / f"{CANARY}.py"
    path.write_text(CANARY_SOURCE)
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop(CANARY, None)
    CALLS.clear()
    yield path.with_suffix(".imported")
    sys.modules.pop(CANARY, None)


def _global(module, name, proto):
    """The opcodes pushing module.name, as the stdlib writes them."""
    if proto >= 4:
        m, n = module.encode(), name.encode()
        return b"\x8c" + bytes([len(m)]) + m + b"\x8c" + bytes([len(n)]) + n + b"\x93"
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def _hostile_pickles(module, name):
    """Every way a pickle can reach a global, by opcode."""
    cases = {}
    for proto in range(6):
        head = b"\x80" + bytes([proto]) if proto >= 2 else b""
        cases[f"REDUCE p{proto}"] = head + _global(module, name, proto) + b")R."
        cases[f"BUILD p{proto}"] = head + _global(module, name, proto) + b"}b."
    cases["NEWOBJ"] = b"\x80\x02" + _global(module, name, 2) + b")\x81."
    cases["NEWOBJ_EX"] = b"\x80\x04" + _global(module, name, 4) + b")}\x92."
    cases["INST"] = b"(i" + module.encode() + b"\n" + name.encode() + b"\n."
    cases["OBJ"] = b"(" + _global(module, name, 0) + b"o."
    cases["global alone"] = _global(module, name, 0) + b"."
    return cases


HOSTILE_CANARY = _hostile_pickles(CANARY, "record")


@pytest.mark.parametrize("how", HOSTILE_CANARY)
@pytest.mark.parametrize("allowed", [(), [cat.Plain], ["tests.support.pickle_catalogue.Plain"]])
def test_refused_global_is_never_imported(how, allowed, canary):
    data = HOSTILE_CANARY[how]
    with pytest.raises(pickle.UnpicklingError, match=f"{CANARY}.record"):
        fwpickle.loads(data, allowed=allowed)
    with pytest.raises(pickle.UnpicklingError, match=f"{CANARY}.record"):
        fwpickle.load(io.BytesIO(data), allowed=allowed)
    assert CANARY not in sys.modules
    assert not canary.exists()


def test_canary_really_is_imported_without_restriction(canary):
    """The canary works: the same pickle imports the module when unrestricted."""
    with pytest.raises(AssertionError, match="canary called"):
        fwpickle.loads(HOSTILE_CANARY["REDUCE p2"])
    assert canary.exists()


HOSTILE_RECORDER = _hostile_pickles(__name__, "recorder")
HOSTILE_RECORDER.update({f"class {k}": v for k, v in _hostile_pickles(__name__, "Recording").items()})


@pytest.mark.parametrize("how", HOSTILE_RECORDER)
def test_refused_callable_is_never_called(how):
    CALLS.clear()
    with pytest.raises(pickle.UnpicklingError, match="is not allowed"):
        fwpickle.loads(HOSTILE_RECORDER[how], allowed=[cat.Plain])
    assert CALLS == []


def test_recorder_really_is_called_without_restriction():
    CALLS.clear()
    assert fwpickle.loads(pickle.dumps(cat.Reduced("k", 1), 2)) == cat.Reduced("k", 1)
    fwpickle.loads(HOSTILE_RECORDER["REDUCE p2"])
    assert CALLS == [()]


def test_extension_codes_are_checked_like_globals(canary):
    code = 0x7A11
    copyreg.add_extension(CANARY, "record", code)
    try:
        for data in (b"\x80\x02\x83" + code.to_bytes(2, "little") + b")R.",
                     b"\x80\x02\x83" + code.to_bytes(2, "little") + b"."):
            with pytest.raises(pickle.UnpicklingError, match=f"{CANARY}.record"):
                fwpickle.loads(data, allowed=())
        assert not canary.exists()
        # An object already in the extension cache is not trusted either.
        copyreg._extension_cache[code] = recorder
        with pytest.raises(pickle.UnpicklingError):
            fwpickle.loads(b"\x80\x02\x83" + code.to_bytes(2, "little") + b")R.", allowed=())
        assert CALLS == []
    finally:
        copyreg.remove_extension(CANARY, "record", code)


def test_persistent_ids_need_the_callers_persistent_load():
    data = b"\x80\x02X\x03\x00\x00\x00pidQ."
    with pytest.raises(pickle.UnpicklingError, match="persistent"):
        fwpickle.loads(data, allowed=())
    with pytest.raises(pickle.UnpicklingError, match="persistent"):
        fwpickle.loads(b"Ppid\n.", allowed=())

    class Loader(fwpickle.Unpickler):
        def persistent_load(self, pid):
            return ("resolved by the caller", pid)

    assert Loader(io.BytesIO(data), allowed=()).load() == ("resolved by the caller", "pid")


VALUE_NAMES = ["none", "bools", "ints", "floats", "nan", "complex", "strings", "surrogates",
               "long string", "long non-ascii string", "bytes", "large bytes", "bytearrays",
               "tuples", "lists", "dicts", "sets", "shared containers",
               "recursive list", "recursive dict", "tuple cycle",
               "references past 256 memo entries"]


@pytest.mark.parametrize("name", VALUE_NAMES)
@pytest.mark.parametrize("proto", range(6))
def test_builtin_value_types_load_at_every_protocol(name, proto):
    obj = cat.catalogue()[name]
    data = pickle.dumps(obj, proto)
    assert same_object_graph(fwpickle.loads(data, allowed=()), pickle.loads(data))


@pytest.mark.parametrize("allowed", [[cat.Plain], ["tests.support.pickle_catalogue.Plain"]])
@pytest.mark.parametrize("proto", range(6))
def test_allowed_class_loads_at_every_protocol(allowed, proto):
    """Protocols 0 and 1 build instances through copyreg._reconstructor."""
    obj = [cat.Plain(1, [2, 3]), cat.Plain("x", None)]
    assert fwpickle.loads(pickle.dumps(obj, proto), allowed=allowed) == obj


@pytest.mark.parametrize("proto", range(6))
def test_allowed_classes_with_state_slots_and_newargs(proto):
    allowed = [cat.WithSlots, cat.SlottedWithDict, cat.WithSetstate, cat.KeywordOnly]
    for obj in (cat.WithSlots(1, 2), cat.SlottedWithDict(1, 2, 3), cat.WithSetstate([1])):
        try:
            data = pickle.dumps(obj, proto)
        except TypeError:
            continue  # slots without __getstate__ need protocol 2
        assert fwpickle.loads(data, allowed=allowed) == obj
    if proto >= 2:
        data = pickle.dumps(cat.KeywordOnly(1, b=2), proto)
        if proto >= 4:
            assert fwpickle.loads(data, allowed=allowed) == cat.KeywordOnly(1, b=2)
        else:  # written as functools.partial(copyreg.__newobj_ex__, ...)
            with pytest.raises(pickle.UnpicklingError, match="functools.partial"):
                fwpickle.loads(data, allowed=allowed)


def test_nested_class_below_protocol_4_needs_getattr_and_is_refused():
    obj = cat.Outer.Inner()
    for proto in range(4):
        with pytest.raises(pickle.UnpicklingError, match="builtins.getattr"):
            fwpickle.loads(pickle.dumps(obj, proto), allowed=[cat.Outer, cat.Outer.Inner])
    for proto in (4, 5):
        assert fwpickle.loads(pickle.dumps(obj, proto), allowed=[cat.Outer.Inner]) == obj


def test_build_never_sets_attributes_on_a_class():
    # state (None, {"__eq__": 1}): BUILD would setattr(Plain, "__eq__", 1).
    data = (b"\x80\x02" + _global("tests.support.pickle_catalogue", "Plain", 2)
            + b"N}X\x06\x00\x00\x00__eq__K\x01s\x86b.")
    before = cat.Plain.__dict__["__eq__"]
    with pytest.raises(pickle.UnpicklingError, match="BUILD"):
        fwpickle.loads(data, allowed=[cat.Plain])
    assert cat.Plain.__dict__["__eq__"] is before


class Meta(type):
    pass


class WithMeta(metaclass=Meta):
    pass


def test_build_never_sets_attributes_on_a_class_even_when_its_metaclass_is_allowed():
    # The class is an instance of an allowed class (Meta); BUILD on it would
    # still set class attributes, which no allowed= entry asks for.
    data = (b"\x80\x02" + _global(WithMeta.__module__, "WithMeta", 2)
            + b"}X\x06\x00\x00\x00__eq__K\x01sb.")
    with pytest.raises(pickle.UnpicklingError, match="BUILD"):
        fwpickle.loads(data, allowed=[WithMeta, Meta])
    assert "__eq__" not in WithMeta.__dict__


def test_build_on_value_types_is_refused():
    with pytest.raises(pickle.UnpicklingError, match="BUILD"):
        fwpickle.loads(b"\x80\x02]}b.", allowed=())


@pytest.mark.parametrize("data,what", [
    (b"\x80\x02c__builtin__\nbytes\n\x8a\x05\x00\x10\xa5\xd4\xe8\x85R.", "bytes(int)"),
    (b"\x80\x02c__builtin__\nbytearray\n\x8a\x05\x00\x10\xa5\xd4\xe8\x85R.", "bytearray(int)"),
    (b"\x80\x02c__builtin__\nbytes\n\x8a\x05\x00\x10\xa5\xd4\xe8\x85\x81.", "NEWOBJ bytes"),
    (b"\x80\x02c_codecs\nencode\nX\x01\x00\x00\x00xX\x05\x00\x00\x00rot13\x86R.", "codec"),
    (b"\x80\x02c__builtin__\nstr\nC\x01xX\x04\x00\x00\x00idna\x86R.", "codec"),
    (b"ccopy_reg\n_reconstructor\n(c__builtin__\nobject\nc__builtin__\nobject\nNtR.",
     "_reconstructor"),
    (b"\x80\x02c__builtin__\ngetattr\n.", "getattr"),
    (b"\x80\x02cos\nsystem\nX\x04\x00\x00\x00trueR.", "os.system"),
    (b"\x80\x02cbuiltins\neval\n.", "eval"),
    (b"\x80\x02cbuiltins\ntype\nX\x01\x00\x00\x00A)}\x87R.", "type"),
])
def test_value_constructors_cannot_allocate_or_import_by_surprise(data, what):
    with pytest.raises(pickle.UnpicklingError):
        fwpickle.loads(data, allowed=())


def test_allowed_rejects_names_that_defeat_it():
    for name in ("builtins.getattr", "builtins.eval", "os.system", "builtins.__import__"):
        with pytest.raises(ValueError, match=name):
            fwpickle.loads(b"N.", allowed=[name])
    with pytest.raises(TypeError):
        fwpickle.loads(b"N.", allowed="tests.support.pickle_catalogue.Plain")
    with pytest.raises(ValueError):
        fwpickle.loads(b"N.", allowed=["nodot"])


@pytest.mark.parametrize("entry", [eval, exec, getattr, __import__, os.system],
                         ids=lambda f: f.__name__)
def test_allowed_rejects_callables_that_defeat_it_passed_as_objects(entry):
    # The object form must meet the same refusal as the "module.name" form:
    # a pickle naming builtins.eval would otherwise get the caller's eval.
    with pytest.raises(ValueError, match=entry.__name__):
        fwpickle.loads(b"N.", allowed=[entry])
    with pytest.raises(ValueError, match=entry.__name__):
        fwpickle.Unpickler(io.BytesIO(b"N."), allowed=(entry,))


def test_subclass_find_class_is_only_asked_about_allowed_names(canary):
    asked = []

    class Loader(fwpickle.Unpickler):
        def find_class(self, module, name):
            asked.append((module, name))
            return super().find_class(module, name)

    data = pickle.dumps([cat.Plain(1, 2)], 2)
    assert Loader(io.BytesIO(data), allowed=[cat.Plain]).load() == [cat.Plain(1, 2)]
    assert asked == [("tests.support.pickle_catalogue", "Plain")]
    with pytest.raises(pickle.UnpicklingError):
        Loader(io.BytesIO(HOSTILE_CANARY["REDUCE p2"]), allowed=[cat.Plain]).load()
    assert asked == [("tests.support.pickle_catalogue", "Plain")]
    assert not canary.exists()


def test_python2_names_are_checked_after_renaming():
    data = b"\x80\x02c__builtin__\nset\n]K\x01a\x85R."
    assert fwpickle.loads(data, allowed=()) == {1}
    with pytest.raises(pickle.UnpicklingError, match="__builtin__.set"):
        fwpickle.loads(data, allowed=(), fix_imports=False)


class ElsewhereOnly:
    """A class whose module cannot be imported: only the object itself finds it."""

    def __init__(self, value):
        self.value = value

    def __eq__(self, other):
        return type(other) is ElsewhereOnly and other.value == self.value


ElsewhereOnly.__module__ = "fastwire_tests_no_such_module"


@pytest.mark.parametrize("data", [
    b"\x80\x02cfastwire_tests_no_such_module\nElsewhereOnly\n)\x81}X\x05\x00\x00\x00valueK\x07sb.",
    b"\x80\x04\x8c\x1dfastwire_tests_no_such_module\x8c\rElsewhereOnly\x93)\x81}\x8c\x05valueK\x07sb.",
], ids=["GLOBAL", "STACK_GLOBAL"])
def test_passing_the_class_object_imports_nothing(data):
    before = set(sys.modules)
    assert fwpickle.loads(data, allowed=[ElsewhereOnly]) == ElsewhereOnly(7)
    assert set(sys.modules) == before
    # By name, the same pickle needs the import, which fails: the object was used.
    with pytest.raises(ModuleNotFoundError):
        fwpickle.loads(data, allowed=["fastwire_tests_no_such_module.ElsewhereOnly"])


def test_regression_codec_argument_that_is_a_memo_dag_is_refused_by_type_s6():
    # fuzz/crashes/pickle_structure/S6: str(b"a", <40 doublings of a tuple>).
    # The refusal must neither hash nor repr() the argument (2**40 of either).
    dag = b"K\x01" + b"q\x00h\x00\x86" * 40
    data = b"\x80\x02cbuiltins\nstr\nC\x01a" + dag + b"\x86R."
    with pytest.raises(pickle.UnpicklingError, match="codec of type 'tuple'") as refused:
        fwpickle.loads(data, allowed=())
    assert len(str(refused.value)) < 200
