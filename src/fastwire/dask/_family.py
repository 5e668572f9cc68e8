"""The ``"fastwire"`` serialization family: Dask's (header, frames) contract on top of
:mod:`fastwire.pickle`.

Frame 0 is a protocol-5 pickle; every out-of-band buffer (PEP 574: NumPy arrays,
``pickle.PickleBuffer`` objects) is a frame of its own, handed to Dask as a view of
the object's memory, never copied.

Classes and functions another process cannot import by name (defined in
``__main__``, in a module registered with ``cloudpickle.register_pickle_by_value``,
lambdas, closures, local classes) travel *by value*, as Dask's pickle family sends
them through cloudpickle: the encoder offers each distinct class or function to
cloudpickle's reducers once per message (``by_value`` of
:func:`fastwire.pickle.dumps`), and writes the instances itself. The pickle loads
with the standard library's ``pickle.loads`` wherever cloudpickle is importable.

Values Dask has a type-specific serializer for (NumPy arrays, bytes-like values,
``array.array`` and whatever else is registered with ``dask_serialize``) are
declined, so Dask's ``"dask"`` family sends them exactly as it would without
fastwire (strides, compression, frame sizes). Declining raises
:class:`NotImplementedError`, Dask's signal to try the next family; so does any
value fastwire cannot pickle, so the family never raises an error Dask would not
have raised without it.
"""

from __future__ import annotations

import collections
import io
import sys
import threading
import types
import weakref
from collections.abc import Iterable
from typing import Any

import cloudpickle  # a dependency of distributed
from distributed.protocol.serialize import dask_serialize

from ..pickle import dumps as _fw_dumps, loads as _fw_loads
from . import _gc_pause
from ._whole import WHOLE_TYPES

#: The family's name in Dask's registry and in every frame header it writes.
FAMILY = "fastwire"

_lock = threading.Lock()
# Restricted decoding (None: unrestricted). Set per process by register().
_allowed: frozenset | None = None
#: Decodes done in this process, by family name (see fastwire.dask.decode_counts).
decodes: collections.Counter = collections.Counter()


def _by_value(module: str, registry) -> bool:
    """Whether cloudpickle pickles ``module`` by value: it or a parent package is registered."""
    while True:
        if module in registry:
            return True
        parent = module.rpartition(".")[0]
        if not parent:
            return False
        module = parent


def _importable_by_name(obj, registry) -> bool:
    """True if cloudpickle would write the class or function ``obj`` by name too.

    The common case, answered in a few attribute look-ups: a top-level attribute
    of an imported module that is not ``__main__`` nor (``registry``: cloudpickle's
    by-value modules) registered to be pickled by value. Everything else (nested
    names, ``<lambda>``, ``<locals>``, builtins such as ``mappingproxy`` that no
    module holds by name) is left to cloudpickle's own test."""
    module_name = getattr(obj, "__module__", None)
    qualname = getattr(obj, "__qualname__", None)
    if type(module_name) is not str or type(qualname) is not str or module_name == "__main__" \
            or "." in qualname:
        return False
    module = sys.modules.get(module_name)
    if module is None or getattr(module, qualname, None) is not obj:
        return False
    return not (registry and _by_value(module_name, registry))


_CODE_REDUCE = cloudpickle.Pickler.dispatch_table[types.CodeType]
# Code objects are immutable, so their reduction (a tuple of their attributes, about
# a third of the work of sending a function by value) is the same every time a task
# function is sent. Kept per code object (by identity: equal code objects may differ
# in co_filename) for as long as it lives.
_code_reductions: dict = {}


def _code_reduce(code):
    """cloudpickle's reduction of a code object, computed once per code object."""
    entry = _code_reductions.get(id(code))
    if entry is not None and entry[0]() is code:
        return entry[1]
    reduction = _CODE_REDUCE(code)
    key = id(code)
    _code_reductions[key] = (weakref.ref(code, lambda _, key=key: _code_reductions.pop(key, None)), reduction)
    return reduction


class _ByValue:
    """``by_value`` for :func:`fastwire.pickle.dumps`, one per message: cloudpickle's
    reducers for the classes and functions other processes cannot import by name.

    The encoder asks once per distinct class or function, so this never runs per
    instance. The cloudpickle pickler is made only when a message needs it, one per
    message as ``cloudpickle.dumps`` does: functions that share a module's globals
    then share one globals dict on arrival.
    """

    __slots__ = ("_pickler", "_protocol", "_registry")
    dispatch_table = collections.ChainMap({types.CodeType: _code_reduce}, cloudpickle.Pickler.dispatch_table)

    def __init__(self, protocol: int):
        self._pickler = None
        self._protocol = protocol
        self._registry = None

    def reducer_override(self, obj):
        registry = self._registry
        if registry is None:
            registry = self._registry = cloudpickle.list_registry_pickle_by_value()
        if _importable_by_name(obj, registry):
            return NotImplemented
        pickler = self._pickler
        if pickler is None:
            pickler = self._pickler = cloudpickle.Pickler(io.BytesIO(), protocol=self._protocol)
        return pickler.reducer_override(obj)


# type -> (size of Dask's dispatch table when asked, whether Dask has a serializer).
# Dask's Dispatch only ever adds entries, so an answer stays valid while the size
# is unchanged; asking Dask directly costs microseconds per value.
_dask_typed: dict = {}
_DASK_TYPED_MAX = 4096


def _dask_has_serializer(kind: type) -> bool:
    """Whether Dask's ``"dask"`` family has a type-specific serializer for ``kind``."""
    lookup = getattr(dask_serialize, "_lookup", None)
    stamp = len(lookup) if isinstance(lookup, dict) else -1  # -1: do not cache
    known = _dask_typed.get(kind)
    if known is not None and known[0] == stamp:
        return known[1]
    try:
        dask_serialize.dispatch(kind)
        found = True
    except TypeError:
        found = False
    if stamp >= 0:
        if len(_dask_typed) >= _DASK_TYPED_MAX:
            _dask_typed.clear()
        _dask_typed[kind] = (stamp, found)
    return found


def dumps(x: Any, context: dict | None = None) -> tuple[dict, list]:
    """Serialize ``x`` for Dask: ``({"writeable": (...)}, [pickle, *buffers])``.

    Raises :class:`NotImplementedError` (never anything else) when Dask has a
    type-specific serializer for ``type(x)``, when the peer negotiated a pickle
    protocol below 2, or when fastwire cannot pickle ``x``, so that Dask moves on
    to its next serialization family.
    """
    if _dask_has_serializer(type(x)):
        raise NotImplementedError(f"Dask's own serializer for {type(x).__qualname__} keeps its wire format")
    protocol = 5
    if context:
        negotiated = context.get("pickle-protocol")
        if negotiated is not None:
            # The peer negotiated an older protocol; out-of-band buffers need 5.
            protocol = min(protocol, negotiated)
            if protocol < 2:
                raise NotImplementedError("pickle protocols 0-1 cannot carry classes by value")
    # Out-of-band PickleBuffers are collected as they come (list.append returns
    # None: "out of band") and turned into views afterwards: no closure per call,
    # which matters when Dask calls this once per element of a plain list.
    frames: list = [None]
    try:
        frame0 = _fw_dumps(x, protocol, buffer_callback=frames.append if protocol >= 5 else None,
                           by_value=_ByValue(protocol))
    except Exception as exc:
        # Locks, open files, classes not found under their own name ...: Dask's
        # pickle family decides (cloudpickle, or the error users already know).
        raise NotImplementedError(f"fastwire cannot pickle {type(x).__qualname__}: {exc}") from exc
    frames[0] = frame0
    if len(frames) == 1:
        return {"writeable": ()}, frames
    writeable = []
    for i in range(1, len(frames)):
        view = memoryview(frames[i])  # a view of the object's own memory: no copy
        frames[i] = view
        writeable.append(not view.readonly)
    return {"writeable": tuple(writeable)}, frames


def _as_bytes_view(frame) -> memoryview:
    """A flat unsigned-byte view of a received frame, copying only if it is scattered."""
    view = frame if isinstance(frame, memoryview) else memoryview(frame)
    if not view.c_contiguous:
        return memoryview(bytearray(view))
    if view.ndim != 1 or view.format != "B":
        return view.cast("B")
    return view


def _with_writeable(view: memoryview, writeable: bool) -> memoryview:
    """Give the buffer the writability it had on the sending side, as Dask's pickle family does."""
    if writeable and view.readonly:
        return memoryview(bytearray(view))  # a writable object needs writable memory: one copy
    if not writeable and not view.readonly:
        return view.toreadonly()  # only a flag, no copy
    return view


def loads(header: dict, frames: list) -> Any:
    """Rebuild the object written by :func:`dumps` from Dask's ``header`` and ``frames``.

    Raises :class:`ValueError` for a header that does not match the frames, and
    :class:`pickle.UnpicklingError` for a corrupt pickle or, when the family was
    registered with ``allowed=``, for a global outside the allowed set.
    """
    if not frames:
        raise ValueError("fastwire frames: no pickle frame")
    count = len(frames) - 1
    writeable = header.get("writeable")
    if not isinstance(writeable, (tuple, list)) or len(writeable) != count:
        listed = len(writeable) if isinstance(writeable, (tuple, list)) else "no"
        raise ValueError(f"fastwire frames: header lists {listed} buffers but {count} arrived")
    buffers = ([_with_writeable(_as_bytes_view(b), bool(w)) for b, w in zip(frames[1:], writeable)]
               if count else ())
    value = _gc_pause.loads_paused(_fw_loads, frames[0], buffers=buffers, allowed=_allowed)
    decodes[FAMILY] += 1
    return value


def register(allowed: Iterable[str | type] | None = None, *, pause_gc: bool = True) -> None:
    """Register (or re-register) the ``"fastwire"`` family in this process's Dask registry.

    ``allowed``: restrict what the family decodes to builtin value types plus these
    globals (``"module.qualname"`` strings or the objects themselves), for processes
    that accept data from less-trusted peers; ``None`` (the default) decodes
    anything, like Dask's own pickle family. fastwire's :func:`~fastwire.dask.whole`
    containers are always allowed. Classes and functions sent by value are code:
    a restricted family refuses them (their cloudpickle reconstructors are not
    builtin value types), so list no ``cloudpickle`` globals for data you do not
    trust. ``pause_gc``: rebuild pickles of 64 KiB or more
    with Python's cyclic garbage collector paused (default True; see
    ``fastwire.dask._gc_pause`` for why and what it means for other threads); it
    applies to the family and to the :func:`~fastwire.dask.use_fastwire_pickle`
    path. Registration is per process: every process that decodes the family
    (client, scheduler, workers) must have run it, which importing
    :mod:`fastwire.dask` does with the defaults.
    """
    global _allowed
    from distributed.protocol.serialize import register_serialization_family

    with _lock:
        _allowed = None if allowed is None else frozenset(list(allowed) + list(WHOLE_TYPES))
        _gc_pause.set_enabled(pause_gc)
        register_serialization_family(FAMILY, dumps, loads)


def allowed() -> frozenset | None:
    """The globals this process's family accepts beyond builtin values (None: unrestricted)."""
    return _allowed
