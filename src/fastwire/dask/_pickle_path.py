"""Opt-in: let Dask's own pickle path run on :mod:`fastwire.pickle`.

Some hops never consult the client's serialization families: the task graph goes
to the scheduler through ``serialize`` with Dask's default families, the scheduler
sends task specifications and small messages to workers as ``ToPickle``, and
processes that were not configured with fastwire's families (a worker without the
preload, for example) answer with the ``"pickle"`` family. All of those call
``distributed.protocol.pickle.dumps``/``loads``, which in turn call the standard
library's ``pickle.dumps``/``pickle.loads`` through that module's global ``pickle``
(falling back to cloudpickle exactly as before).

:func:`use_fastwire_pickle` rebinds that one global to a stand-in whose
``dumps``/``loads`` are fastwire's. Because fastwire's pickles are byte-compatible
with the standard library's, a patched process and an unpatched one still talk to
each other: the opt-in can be rolled out process by process. It depends on a
private detail of ``distributed`` and is checked against the layout it expects; it
is tested on the ``distributed`` versions in :data:`TESTED_DISTRIBUTED`.
"""

from __future__ import annotations

import pickle as _stdlib_pickle
import threading

from .. import pickle as _fw_pickle
from . import _gc_pause
from ._family import decodes

#: Oldest and newest ``distributed`` releases the opt-in is tested on (the whole
#: test suite ran on 2025.1.0, 2025.7.0 and 2026.8.0).
TESTED_DISTRIBUTED = ("2025.1.0", "2026.8.0")

#: Key under which decodes through the patched path are counted (see decode_counts).
DASK_PICKLE_PATH = "dask-pickle-path:fastwire"

_lock = threading.Lock()


class _FastwirePickleModule:
    """Stands in for the ``pickle`` module inside ``distributed.protocol.pickle``.

    ``dumps`` and ``loads`` are fastwire's; any other attribute is the standard
    library's, so code that reads constants or classes from it is unaffected.
    """

    def __getattr__(self, name):
        return getattr(_stdlib_pickle, name)

    @staticmethod
    def dumps(obj, protocol=None, *, fix_imports=True, buffer_callback=None):
        return _fw_pickle.dumps(obj, protocol=protocol, fix_imports=fix_imports,
                                buffer_callback=buffer_callback)

    @staticmethod
    def loads(data, /, *, fix_imports=True, encoding="ASCII", errors="strict", buffers=()):
        decodes[DASK_PICKLE_PATH] += 1
        return _gc_pause.loads_paused(_fw_pickle.loads, data, fix_imports=fix_imports,
                                      encoding=encoding, errors=errors, buffers=buffers)


_STAND_IN = _FastwirePickleModule()


def use_fastwire_pickle(enable: bool = True) -> bool:
    """Make this process's Dask pickle path use fastwire.pickle (``enable=False`` undoes it).

    Returns whether the path is now fastwire's. Raises :class:`RuntimeError` if the
    installed ``distributed`` does not have the layout this relies on (its
    ``distributed.protocol.pickle`` module calling the global ``pickle``), rather
    than patching something it does not understand.
    """
    import distributed.protocol.pickle as dask_pickle

    with _lock:
        current = getattr(dask_pickle, "pickle", None)
        if not enable:
            if current is _STAND_IN:
                dask_pickle.pickle = _stdlib_pickle
            return False
        if current is _STAND_IN:
            return True
        if current is not _stdlib_pickle or not callable(getattr(dask_pickle, "dumps", None)):
            import distributed

            raise RuntimeError(
                "fastwire.dask.use_fastwire_pickle: distributed "
                f"{distributed.__version__} does not have the layout it patches "
                f"(tested on distributed {TESTED_DISTRIBUTED[0]} to {TESTED_DISTRIBUTED[1]}); "
                "use the 'fastwire' serialization family instead"
            )
        dask_pickle.pickle = _STAND_IN
        return True


def fastwire_pickle_in_use() -> bool:
    """Whether this process's Dask pickle path currently runs on fastwire.pickle."""
    import distributed.protocol.pickle as dask_pickle

    return getattr(dask_pickle, "pickle", None) is _STAND_IN
