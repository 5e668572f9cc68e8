"""The ``"fastwire"`` serialization family: Dask's (header, frames) contract on top of
:mod:`fastwire.pickle`.

Frame 0 is a protocol-5 pickle; every out-of-band buffer (PEP 574: NumPy arrays,
``pickle.PickleBuffer`` objects) is a frame of its own, handed to Dask as a view of
the object's memory, never copied. Top-level ``bytes``, ``bytearray`` and
``memoryview`` values are declined so that Dask's "dask" family sends them as
frames (pickle would copy them in band, as the standard library does).

Anything fastwire cannot pickle *by reference in a way another process can load*
raises :class:`NotImplementedError`, which is Dask's signal to try the next family
in the client's list (normally ``"pickle"``, which then falls back to cloudpickle):
the family never raises an error Dask would not have raised without it. The
encoder reports the modules the pickle's globals come from, so the check is exact
and costs no scan of the bytes: data that merely contains the text ``__main__``
is pickled here (Dask's own pickle path searches the bytes and would hand it to
cloudpickle).
"""

from __future__ import annotations

import collections
import threading
from typing import Any, Iterable

from cloudpickle import list_registry_pickle_by_value  # a dependency of distributed

from .._fastwire import _dumps_naming_modules
from ..pickle import loads as _fw_loads
from . import _gc_pause
from ._whole import WHOLE_TYPES

#: The family's name in Dask's registry and in every frame header it writes.
FAMILY = "fastwire"

# Modules a pickle may not reference if another process must load it by name:
# ``__main__`` differs per process, and modules registered with cloudpickle's
# ``register_pickle_by_value`` are deliberately absent on the workers.
_MAIN_NAME = "__main__"
_MAIN = _MAIN_NAME.encode()

# Pickle keeps bytes and bytearray in band (a copy into frame 0); Dask's "dask"
# family sends a top-level one as a frame of its own. Declining them lets it.
_LEFT_TO_DASK = (bytes, bytearray, memoryview)

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


def _needs_by_value(modules: set | None, frame0: bytes) -> bool:
    """True if the pickle refers to a module other processes cannot import by name.

    ``modules`` are the module names the encoder looked globals up in. For the
    protocols the standard library writes (0-1, only if a peer negotiates them)
    it is None, and the bytes are searched instead, as Dask's own check does."""
    registry = list_registry_pickle_by_value()
    if modules is None:
        return _MAIN in frame0 or any(module.encode() in frame0 for module in registry)
    if _MAIN_NAME in modules:
        return True
    return bool(registry) and any(_by_value(module, registry) for module in modules)


def dumps(x: Any, context: dict | None = None) -> tuple[dict, list]:
    """Serialize ``x`` for Dask: ``({"writeable": (...)}, [pickle, *buffers])``.

    Raises :class:`NotImplementedError` (never anything else) when fastwire cannot
    produce a pickle that other processes can load, so that Dask moves on to its
    next serialization family.
    """
    if type(x) in _LEFT_TO_DASK:
        raise NotImplementedError("Dask's own 'dask' family sends bytes-like values as frames")
    protocol = 5
    if context:
        negotiated = context.get("pickle-protocol")
        if negotiated is not None:
            # The peer negotiated an older protocol; out-of-band buffers need 5.
            protocol = min(protocol, negotiated)
    # Out-of-band PickleBuffers are collected as they come (list.append returns
    # None: "out of band") and turned into views afterwards: no closure per call,
    # which matters when Dask calls this once per element of a plain list.
    frames: list = [None]
    try:
        frame0, modules = _dumps_naming_modules(x, protocol, frames.append if protocol >= 5 else None)
    except Exception as exc:
        # Lambdas, local classes, locks ...: Dask's pickle family decides (it
        # retries with cloudpickle, or raises the error users already know).
        raise NotImplementedError(f"fastwire cannot pickle {type(x).__qualname__}: {exc}") from exc
    if _needs_by_value(modules, frame0):
        raise NotImplementedError(f"{type(x).__qualname__} refers to __main__ or a pickle-by-value module")
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
    containers are always allowed. ``pause_gc``: rebuild pickles of 64 KiB or more
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
