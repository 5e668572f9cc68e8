"""Classes and functions written by name after the first pickle that named them.

dumps remembers where it found a top-level class or function and, in later
pickles, re-checks by identity everything that lookup depended on. Each test
pickles once so that the name is remembered, changes one of those things, and
holds fastwire to the stdlib's result (bytes, or exception type) afterwards.
"""

import builtins
import copyreg
import pickle as std
import sys
import types

import pytest

from fastwire import pickle as fw
from tests.support import pickle_catalogue as cat

CORE_PROTOCOLS = range(2, std.HIGHEST_PROTOCOL + 1)


outcome = cat.dumps_outcome
same_as_stdlib = cat.assert_dumps_like_stdlib


@pytest.fixture
def module():
    """A fresh module in sys.modules holding a class C and a function f."""
    name = "fastwire_global_cache_probe"
    mod = types.ModuleType(name)
    mod.C = type("C", (), {"__module__": name})
    module_function(mod, "f")
    sys.modules[name] = mod
    try:
        yield mod
    finally:
        sys.modules.pop(name, None)


def module_function(module, name):
    """A new top-level function `name` of `module`."""
    def function():
        pass

    function.__module__ = module.__name__
    function.__name__ = function.__qualname__ = name
    setattr(module, name, function)
    return function


def remembered(obj):
    """Pickle obj (and an instance list holding it) so that its name is cached."""
    for proto in CORE_PROTOCOLS:
        assert fw.dumps(obj, proto) == std.dumps(obj, proto)
        assert fw.dumps([obj, obj], proto) == std.dumps([obj, obj], proto)
    return obj


def test_names_are_written_as_the_stdlib_writes_them(module):
    remembered(module.C)
    remembered(module.f)
    same_as_stdlib(module.C)
    same_as_stdlib(module.f)
    same_as_stdlib([module.C(), module.C, module.f])


@pytest.mark.parametrize("what", ["C", "f"])
def test_module_attribute_rebound_after_caching(module, what):
    obj = remembered(getattr(module, what))
    setattr(module, what, lambda: None)
    same_as_stdlib(obj)
    with pytest.raises(std.PicklingError):
        fw.dumps(obj, 5)
    delattr(module, what)
    same_as_stdlib(obj)


@pytest.mark.parametrize("what", ["C", "f"])
def test_qualname_changed_after_caching(module, what):
    obj = remembered(getattr(module, what))
    obj.__qualname__ = "Renamed"
    same_as_stdlib(obj)                     # not found under the new name
    module.Renamed = obj
    same_as_stdlib(obj)
    assert b"Renamed" in fw.dumps(obj, 5)


@pytest.mark.parametrize("what", ["C", "f"])
def test_module_changed_after_caching(module, what):
    obj = remembered(getattr(module, what))
    other = types.ModuleType("fastwire_global_cache_other")
    setattr(other, what, obj)
    sys.modules[other.__name__] = other
    try:
        obj.__module__ = other.__name__
        same_as_stdlib(obj)
        assert b"fastwire_global_cache_other" in fw.dumps(obj, 5)
        obj.__module__ = "fastwire_no_such_module"
        same_as_stdlib(obj)
    finally:
        sys.modules.pop(other.__name__, None)


def test_module_replaced_or_removed_in_sys_modules(module):
    remembered(module.C)
    replacement = types.ModuleType(module.__name__)
    sys.modules[module.__name__] = replacement
    same_as_stdlib(module.C)                # not found in the new module
    replacement.C = module.C
    same_as_stdlib(module.C)
    del sys.modules[module.__name__]
    # Both re-import by name: no such module on the path now.
    same_as_stdlib(module.C)


def test_extension_code_registered_after_caching(module):
    remembered(module.C)
    copyreg.add_extension(module.__name__, "C", 240)
    try:
        same_as_stdlib(module.C)
        assert fw.dumps(module.C, 2) == b"\x80\x02\x82\xf0."
    finally:
        copyreg.remove_extension(module.__name__, "C", 240)
    same_as_stdlib(module.C)


def test_import_hook_installed_after_caching_is_still_called(module):
    remembered(module.C)
    calls = []
    original = builtins.__import__

    def hook(name, *args, **kwargs):
        calls.append(name)
        return original(name, *args, **kwargs)

    builtins.__import__ = hook
    try:
        std.dumps(module.C, 5)
        std_calls = calls.count(module.__name__)
        del calls[:]
        fw.dumps(module.C, 5)
        fw_calls = calls.count(module.__name__)
    finally:
        builtins.__import__ = original
    assert std_calls == fw_calls == 1


def test_metaclass_module_property_is_asked_every_time(module):
    other = types.ModuleType("fastwire_global_cache_other")
    sys.modules[other.__name__] = other

    class Meta(type):
        where = module.__name__

        @property
        def __module__(cls):
            return Meta.where

    try:
        d = Meta("D", (), {})
        module.D = other.D = d
        same_as_stdlib(d)
        Meta.where = other.__name__
        same_as_stdlib(d)
        assert other.__name__.encode() in fw.dumps(d, 5)
    finally:
        sys.modules.pop(other.__name__, None)


def test_regression_evicting_an_entry_whose_release_runs_a_finalizer_that_pickles(module):
    """The cache holds the last reference to a function whose default
    argument's finalizer calls dumps on the names the cache holds; that
    release happens while another name takes the slot."""
    seen = []

    class Finalizer:
        def __del__(self):
            for obj in (module.C, module.f, victim_slot_taker[0]):
                seen.append(fw.dumps(obj, 5) == std.dumps(obj, 5))

    victim_slot_taker = [module.C]
    module_function(module, "doomed").__defaults__ = (Finalizer(),)
    remembered(module.doomed)
    slot = (id(module.doomed) >> 4) & 63
    del module.doomed           # the cache now holds the only reference
    takers = []
    for i in range(10000):
        taker = module_function(module, f"taker{i}")
        if (id(taker) >> 4) & 63 == slot:
            takers.append(taker)
            break
        takers.append(taker)
    victim_slot_taker[0] = takers[-1]
    assert (id(takers[-1]) >> 4) & 63 == slot
    for proto in CORE_PROTOCOLS:
        assert fw.dumps(takers[-1], proto) == std.dumps(takers[-1], proto)
    assert seen and all(seen)
