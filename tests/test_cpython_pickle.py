"""CPython's own pickle suite (``test.pickletester``) against fastwire.

The running interpreter's ``Lib/test/test_pickle.py`` binds the abstract test
classes of ``test.pickletester`` to the C pickle (``_pickle``). This module
takes every one of those bindings, as that version defines them (class names
and the set of classes differ between 3.11, 3.12 and 3.13, so they are found at
run time, not listed), and rebinds it to fastwire in every pairing:

* ``fw``: fastwire writes and reads (Pickler/Unpickler objects, dump/dumps,
  load/loads, dispatch tables, hooks, persistent ids);
* ``fwdump``: fastwire writes, the C pickle reads;
* ``fwload``: the C pickle writes, fastwire reads.

A binding with only one side (unpickler-only tests, pickling-error tests,
dispatch tables, hooks) gets the one variant that puts fastwire on that side.
``InMemoryPickleTests`` calls ``pickle.dumps``/``pickle.loads`` from its methods
rather than through attributes, so it is rebound by overriding those methods.

No test is skipped here: fastwire passes every test of 3.11, 3.12 and 3.13.
The skips pytest reports are CPython's own (32-bit-only tests, bigmem tests
that need ``-M``, and the in-memory class's test that needs a Pickler class),
the same as for the C pickle.
"""

from __future__ import annotations

import _pickle
import inspect
import pickle
import unittest

import pytest

import fastwire.pickle as fw

test_pickle = pytest.importorskip("test.test_pickle", reason="this Python ships without its test package")

# The C pickle's objects, each with fastwire's counterpart and the side it is on.
DUMP_SIDE = {_pickle.Pickler: fw.Pickler, _pickle.dump: fw.dump, _pickle.dumps: fw.dumps}
LOAD_SIDE = {_pickle.Unpickler: fw.Unpickler, _pickle.load: fw.load, _pickle.loads: fw.loads}

# Tests of C-pickle internals fastwire does not share.
NOT_BOUND = {"SizeofTests"}

def _replacement(value, table):
    """fastwire's counterpart of `value` under `table`, or None if it has none."""
    if isinstance(value, staticmethod):
        inner = _replacement(value.__func__, table)
        return None if inner is None else staticmethod(inner)
    try:
        if value in table:
            return table[value]
    except TypeError:  # unhashable class attribute
        return None
    if inspect.isclass(value) and any(base in table for base in value.__bases__):
        # A test-local subclass of the C Pickler (the hook tests'): the same
        # class body on fastwire's base.
        body = {k: v for k, v in vars(value).items() if k not in ("__dict__", "__weakref__")}
        bases = tuple(table.get(base, base) for base in value.__bases__)
        return type(value.__name__, bases, body)
    return None


def _bound_attributes(cls, table):
    """{name: fastwire value} for every attribute of `cls` bound to the C pickle's
    side `table`."""
    found = {}
    for klass in reversed(cls.__mro__):
        for name, value in vars(klass).items():
            replacement = _replacement(value, table)
            if replacement is not None:
                found[name] = replacement
            elif name in found:
                del found[name]
    return found


def _in_memory_methods(dump_side: bool, load_side: bool):
    def dumps(self, arg, protocol=None, **kwargs):
        return (fw.dumps if dump_side else pickle.dumps)(arg, protocol, **kwargs)

    def loads(self, buf, **kwargs):
        return (fw.loads if load_side else pickle.loads)(buf, **kwargs)

    return {"dumps": dumps, "loads": loads}


def _bindings():
    """(name, class) for every fastwire binding of the running version's suite."""
    out = []
    for name, cls in sorted(vars(test_pickle).items()):
        if not (inspect.isclass(cls) and issubclass(cls, unittest.TestCase)) or name in NOT_BOUND:
            continue
        if name == "InMemoryPickleTests":
            variants = {"fw": (True, True), "fwdump": (True, False), "fwload": (False, True)}
            for suffix, (d, lo) in variants.items():
                body = {"__module__": __name__, **_in_memory_methods(d, lo)}
                out.append((f"Test_{name}_{suffix}", type(f"Test_{name}_{suffix}", (cls,), body)))
            continue
        dump_attrs = _bound_attributes(cls, DUMP_SIDE)
        load_attrs = _bound_attributes(cls, LOAD_SIDE)
        variants = {}
        if dump_attrs and load_attrs:
            variants = {"fw": {**dump_attrs, **load_attrs}, "fwdump": dump_attrs, "fwload": load_attrs}
        elif dump_attrs or load_attrs:
            variants = {"fw": {**dump_attrs, **load_attrs}}
        for suffix, attrs in variants.items():
            body = {"__module__": __name__, "_fastwire_bound": tuple(sorted(attrs)), **attrs}
            out.append((f"Test_{name}_{suffix}", type(f"Test_{name}_{suffix}", (cls,), body)))
    return out


BINDINGS = _bindings()
globals().update(BINDINGS)


def test_fastwire_is_the_code_under_test():
    """Every C-pickle binding of the running version's test_pickle was rebound,
    and what was rebound is fastwire's (not the C pickle left in place)."""
    c_bound = [name for name, cls in vars(test_pickle).items()
               if inspect.isclass(cls) and issubclass(cls, unittest.TestCase) and name not in NOT_BOUND
               and (_bound_attributes(cls, DUMP_SIDE) or _bound_attributes(cls, LOAD_SIDE))]
    assert c_bound, "test_pickle binds nothing to the C pickle: the rebinding found nothing to rebind"
    rebound = {name.split("_", 1)[1].rsplit("_", 1)[0] for name, _ in BINDINGS}
    assert set(c_bound) <= rebound
    fastwire_objects = set(DUMP_SIDE.values()) | set(LOAD_SIDE.values())
    for name, cls in BINDINGS:
        if name.startswith("Test_InMemoryPickleTests"):
            continue
        for attr in cls._fastwire_bound:
            value = getattr(cls, attr)
            assert value in fastwire_objects or issubclass(value, (fw.Pickler, fw.Unpickler)), (name, attr)
            assert not (inspect.isclass(value) and issubclass(value, (_pickle.Pickler, _pickle.Unpickler)))


def test_in_memory_binding_calls_fastwire():
    """The in-memory rebinding really reaches fastwire: a fastwire-only
    argument (allowed=) is accepted by the fw loads and refused by the stdlib's."""
    bindings = dict(BINDINGS)
    fw_case = bindings["Test_InMemoryPickleTests_fw"]("test_misc")
    assert fw_case.loads(fw_case.dumps([1], 5), allowed=()) == [1]
    with pytest.raises(TypeError):
        bindings["Test_InMemoryPickleTests_fwdump"]("test_misc").loads(b"N.", allowed=())
