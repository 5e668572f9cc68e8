"""What allowed= may contain, and what restricted mode hands out.

The rule of docs/security.md: an entry is refused with ValueError when its
module (or a package above it) runs processes, imports, builds or evaluates
code, loads native code, deserializes, touches files, sockets or the
interpreter's internals, or reaches attributes by name; when its name says it
executes, evaluates, spawns, imports, loads, opens or gets attributes; or when
it is a builtin other than a plain class.  Entries given as objects go
through the same rule as names, and are also matched by identity.
"""

import collections
import dataclasses
import datetime
import decimal
import fractions
import importlib
import marshal
import operator
import os
import pathlib
import pickle
import re
import runpy
import shelve
import subprocess
import sys
import textwrap
import types
import uuid

import pytest

import fastwire.pickle
from fastwire import pickle as fwpickle
from tests.support import pickle_catalogue as cat

REFUSED_NAMES = [
    # deserializers and the loaders of code
    "fastwire.pickle.loads", "fastwire.pickle.load", "fastwire._fastwire.loads",
    "fastwire.pickle.Unpickler", "pickle.loads", "_pickle.loads", "pickle.Unpickler",
    "marshal.loads", "shelve.open", "yaml.load", "yaml.unsafe_load", "dill.loads",
    "cloudpickle.loads", "json.loads", "numpy.load", "myapp.serializers.loads",
    # processes
    "os.system", "posix.system", "nt.system", "os.popen", "os.execv", "os.execve",
    "os.spawnv", "os.posix_spawn", "os.fork", "os.kill", "subprocess.Popen",
    "subprocess.run", "subprocess.getoutput", "subprocess.check_output", "pty.spawn",
    "multiprocessing.Process", "signal.signal", "_posixsubprocess.fork_exec",
    "asyncio.create_subprocess_shell", "webbrowser.open", "platform.popen",
    # imports and code
    "importlib.import_module", "importlib.util.spec_from_file_location",
    "builtins.__import__", "__builtin__.eval", "builtins.eval", "builtins.exec",
    "builtins.compile", "pkgutil.resolve_name", "runpy.run_path", "runpy.run_module",
    "zipimport.zipimporter", "types.FunctionType", "types.CodeType", "builtins.function",
    "code.InteractiveInterpreter", "timeit.Timer", "sys.modules", "gc.get_objects",
    "ctypes.CDLL", "ctypes.cdll", "_ctypes.dlopen",
    # attribute access and generic callers
    "builtins.getattr", "builtins.setattr", "builtins.delattr", "operator.attrgetter",
    "operator.methodcaller", "operator.itemgetter", "functools.partial", "functools.reduce",
    "builtins.type", "builtins.object", "builtins.super", "builtins.vars",
    "builtins.globals", "builtins.breakpoint",
    # files and sockets
    "builtins.open", "io.open", "io.FileIO", "codecs.open", "socket.socket",
    "socket.create_connection", "shutil.rmtree", "logging.config.listen",
    "myapp.tools.evaluate", "myapp.tools.exec_script", "myapp.tools.popen_shell",
    "myapp.tools.spawn_worker", "myapp.lazy.import_string", "myapp.util.call",
    "myapp.jobs.ExecutionPlan",
]


def loads(data):
    """An application's own loader: refused by its name, not by where it lives."""
    return pickle.loads(data)


def evaluate_expression(text):
    return eval(text)


def _refused_objects():
    objects = [loads, evaluate_expression, fastwire.pickle.loads, fastwire.pickle.load, fastwire.pickle.Unpickler,
               pickle.loads, pickle.Unpickler, marshal.loads, shelve.open, os.system,
               os.popen, os.execv, subprocess.Popen, subprocess.getoutput, runpy.run_path,
               importlib.import_module, types.FunctionType, types.CodeType,
               operator.attrgetter, operator.methodcaller, type, object, super, eval, exec,
               compile, getattr, setattr, __import__, open, vars, globals]
    try:
        import ctypes
        objects += [ctypes.CDLL, ctypes.cast]
    except ImportError:
        pass
    return objects


@pytest.mark.parametrize("name", REFUSED_NAMES)
def test_allowed_refuses_code_running_names(name):
    with pytest.raises(ValueError, match="must not contain"):
        fwpickle.Allowed([name])
    with pytest.raises(ValueError, match="must not contain"):
        fwpickle.loads(b"N.", allowed=[name])


@pytest.mark.parametrize("obj", _refused_objects(), ids=lambda o: getattr(o, "__qualname__", repr(o)))
def test_allowed_refuses_code_running_objects(obj):
    with pytest.raises(ValueError, match="must not contain"):
        fwpickle.Allowed([obj])
    with pytest.raises(ValueError, match="must not contain"):
        fwpickle.loads(b"N.", allowed=(obj,))


def test_a_refused_object_is_refused_by_identity_whatever_its_names_say():
    fwpickle.Allowed(())                      # the module is indexed once imported
    target = subprocess.getoutput
    saved = target.__module__, target.__qualname__, target.__name__
    target.__module__, target.__qualname__, target.__name__ = "harmless", "Point", "Point"
    try:
        with pytest.raises(ValueError, match="must not contain harmless.Point"):
            fwpickle.Allowed([target])
    finally:
        target.__module__, target.__qualname__, target.__name__ = saved


@dataclasses.dataclass
class Point:
    x: int
    y: int


Pair = collections.namedtuple("Pair", "a b")

ACCEPTED = [Point, Pair, cat.Plain, datetime.datetime, datetime.date, datetime.timedelta,
            datetime.timezone, decimal.Decimal, fractions.Fraction, collections.OrderedDict,
            collections.deque, uuid.UUID, pathlib.PurePosixPath, range, slice, int, list,
            complex, "collections.OrderedDict", "datetime.datetime", "decimal.Decimal",
            "builtins.range", f"{__name__}.Point",
            # names that merely contain a refused word
            "myapp.search.RetrievalResult", "myapp.models.ImportantNote",
            "myapp.models.PicklableModel"]


@pytest.mark.parametrize("entry", ACCEPTED, ids=str)
def test_allowed_accepts_plain_data_classes(entry):
    assert fwpickle.Allowed([entry]) is not None


def test_allowed_data_classes_round_trip():
    value = [Point(1, 2), Pair(3, 4), datetime.datetime(2024, 1, 2), decimal.Decimal("1.5"),
             collections.OrderedDict(a=1), uuid.UUID(int=5)]
    allowed = fwpickle.Allowed([Point, Pair, datetime.datetime, decimal.Decimal,
                                collections.OrderedDict, uuid.UUID])
    for proto in range(pickle.HIGHEST_PROTOCOL + 1):
        assert fwpickle.loads(pickle.dumps(value, proto), allowed=allowed) == value


# --- what restricted mode hands out -----------------------------------------------------------


def _documented_types():
    """The type names security.md lists under 'Only these objects are built'."""
    text = (pathlib.Path(__file__).parent.parent / "docs" / "security.md").read_text()
    bullet = text[text.index("**Only these objects are built**"):]
    bullet = bullet[:bullet.index("\n- **")]
    listed = bullet[:bullet.index("and the globals")]
    return set(re.findall(r"`(\w+)`", listed))


DOCUMENTED = {"None": type(None), "bool": bool, "int": int, "float": float,
              "complex": complex, "str": str, "bytes": bytes, "bytearray": bytearray,
              "list": list, "tuple": tuple, "dict": dict, "set": set, "frozenset": frozenset}

# Every global a restricted load resolves without allowed=, and every call it
# permits on them, as the opcode set can express it.
VALUE_GLOBALS = [("builtins", t) for t in ("bool", "int", "float", "complex", "str", "bytes",
                                           "bytearray", "list", "tuple", "dict", "set",
                                           "frozenset", "object")]
VALUE_GLOBALS += [("_codecs", "encode"), ("copyreg", "_reconstructor")]
ARGUMENTS = [b")", b"K\x01\x85", b"X\x01\x00\x00\x001\x85", b"C\x01a\x85", b"]\x85",
             b"(K\x01K\x02t", b"X\x01\x00\x00\x00aX\x05\x00\x00\x00ascii\x86"]


def _reachable_types(value):
    seen, todo, types_found = set(), [value], set()
    while todo:
        obj = todo.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        types_found.add(type(obj))
        if isinstance(obj, dict):
            todo.extend(obj.keys())
            todo.extend(obj.values())
        elif isinstance(obj, (list, tuple, set, frozenset)):
            todo.extend(obj)
    return types_found


def _every_restricted_result():
    """Load every global alone, called with every argument shape through
    REDUCE, NEWOBJ and OBJ, and every catalogue value at every protocol."""
    for module, name in VALUE_GLOBALS:
        g = f"c{module}\n{name}\n".encode()
        yield g + b"."
        for args in ARGUMENTS:
            yield b"\x80\x02" + g + args + b"R."
            yield b"\x80\x02" + g + args + b"\x81."
    for _name, _proto, data in cat.pickles():
        yield data
    values = [None, True, 1, 2**80, 1.5, 2j, "s", b"b", bytearray(b"a"), [1], (1,), {1: 2},
              {1}, frozenset({1})]
    for proto in range(pickle.HIGHEST_PROTOCOL + 1):
        yield pickle.dumps(values, proto)
        yield pickle.dumps(values + [object()], proto)


def test_what_restricted_mode_builds_is_the_documented_list():
    assert _documented_types() == set(DOCUMENTED)
    built = set()
    for data in _every_restricted_result():
        try:
            value = fwpickle.loads(data, allowed=())
        except (pickle.UnpicklingError, TypeError, ValueError, AttributeError):
            continue
        built |= _reachable_types(value)
    assert built <= set(DOCUMENTED.values()), built - set(DOCUMENTED.values())
    assert built == set(DOCUMENTED.values())        # and the list is not longer than needed


@pytest.mark.parametrize("data, what", [
    (b"cbuiltins\nint\n.", "builtins.int"),
    (b"c_codecs\nencode\n.", "_codecs.encode"),
    (b"ccopyreg\n_reconstructor\n.", "copyreg._reconstructor"),
    (b"\x80\x02cbuiltins\nobject\n)\x81.", "builtins.object"),
    (b"\x80\x02cbuiltins\nobject\n)R.", "builtins.object"),
    (b"\x80\x02]cbuiltins\nlist\na.", "builtins.list"),
])
def test_value_type_globals_and_object_are_never_handed_out(data, what):
    pickle.loads(data)                                  # the stdlib hands them out
    with pytest.raises(pickle.UnpicklingError, match=re.escape(what)):
        fwpickle.loads(data, allowed=())


def test_allowed_globals_and_their_instances_are_handed_out():
    assert fwpickle.loads(pickle.dumps(Point), allowed=[Point]) is Point
    assert fwpickle.loads(pickle.dumps([Point(1, 2)]), allowed=[Point]) == [Point(1, 2)]


def test_passing_the_class_object_imports_nothing(tmp_path):
    (tmp_path / "fw_elsewhere.py").write_text(textwrap.dedent("""
        import dataclasses
        @dataclasses.dataclass
        class Point:
            x: int
    """))
    script = textwrap.dedent(f"""
        import pickle, sys
        sys.path.insert(0, {str(tmp_path)!r})
        import fw_elsewhere
        from fastwire import pickle as fwpickle
        Point = fw_elsewhere.Point
        data = pickle.dumps([Point(1), Point(2)], 4)
        del sys.modules["fw_elsewhere"]          # importing it again would be visible
        sys.path.pop(0)                          # and would fail
        before = set(sys.modules)
        value = fwpickle.loads(data, allowed=[Point])
        after = set(sys.modules)
        assert value == [Point(1), Point(2)], value
        print("imported:", sorted(after - before))
        try:
            fwpickle.loads(data, allowed=["fw_elsewhere.Point"])
        except ModuleNotFoundError:
            print("by name: needs the import")
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "imported: []" in proc.stdout and "by name: needs the import" in proc.stdout


class Guarded:
    """An allowed class that keeps an object of a type nobody allowed."""

    def __init__(self, value):
        self.value = value
        self.lock = __import__("threading").Lock()

    def __reduce__(self):
        return Guarded, (self.value,)


def test_what_allowed_classes_make_themselves_is_left_alone():
    got = fwpickle.loads(pickle.dumps([Guarded([1, 2])]), allowed=[Guarded])
    assert got[0].value == [1, 2] and got[0].lock.acquire(blocking=False)


def test_a_value_type_global_smuggled_into_an_allowed_instance_is_refused():
    data = b"\x80\x02" + f"c{__name__}\nPoint\n".encode() + b")\x81}X\x01\x00\x00\x00xcbuiltins\nint\nsb."
    assert pickle.loads(data).x is int
    with pytest.raises(pickle.UnpicklingError, match="builtins.int"):
        fwpickle.loads(data, allowed=[Point])


REENTERED = []
ARMED = []


class _NamesByReentering(type):
    @property
    def __module__(cls):
        if ARMED:
            entries = ARMED.pop()
            # The restriction being built for these entries is not finished:
            # the nested load builds its own from the same tuple.
            REENTERED.append(fwpickle.loads(pickle.dumps([Reentrant(), (2,)]), allowed=entries))
        return __name__


class Reentrant(metaclass=_NamesByReentering):
    def __eq__(self, other):
        return type(other) is Reentrant

    __hash__ = object.__hash__


def test_an_entry_whose_name_reenters_loads_gets_clean_results():
    payload = pickle.dumps([Reentrant(), "x"])
    entries = (Reentrant,)                        # a tuple no restriction was built from yet
    REENTERED.clear()
    ARMED[:] = [entries]
    outer = fwpickle.loads(payload, allowed=entries)
    assert outer == [Reentrant(), "x"]
    assert [[Reentrant(), (2,)]] == REENTERED
