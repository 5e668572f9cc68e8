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
import datetime
import pickle
import sys
import types

import pytest

import fastwire.pickle as fw
from tests.pickle_read_catalogue import outcome

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
        assert outcome(lambda: current(data)) == outcome(lambda: pickle.loads(data))
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
        got = outcome(lambda: loads(data))
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
