"""Pausing Python's cyclic garbage collector while a large pickle is rebuilt.

Unpickling 100,000 small records creates about 300,000 container objects in one
call. The collector runs every 700 allocations (2,000 on 3.13), finds that every
young object survives (each is reachable from the value being built), promotes
them, and soon runs full collections that walk every object in the process. On
the development machine that is 60-70% of ``pickle.loads`` for such data with
either codec (stdlib: 188 ms with the collector, 75 ms without; fastwire: 216 ms
and 62 ms), and it is the same work Dask's own pickle family pays on every
worker that receives data. Nothing the unpickler builds can become cyclic
garbage before it returns unless a ``__setstate__``/reduce callable makes some,
and that is collected by the first collection after the pause.

The pause defers work rather than removing all of it: the first allocation after
it runs a young collection over every object the unpickler made, no longer in
cache. For data the collector handles cheaply as it goes (tuples of atoms, which
it untracks) that one cold pass costs more than the warm ones it replaces: about
5 ms more per 200,000 small tuples, against 85-160 ms saved per 100,000 records.

The pause is counted, so concurrent unpicklings in several threads (Dask
deserializes large messages in an offload thread while tasks run) keep the
collector off until the last one finishes, and it is switched back on only if it
was on before: a process that disabled it stays as it was. Not covered: code
that calls ``gc.disable()`` or ``gc.enable()`` itself from another thread during
a pause (the pause's end may undo or precede it).
"""

from __future__ import annotations

import gc
import threading

#: Pickles shorter than this are rebuilt with the collector left alone: they
#: create too few objects for a full collection to be likely.
PAUSE_FROM = 64 * 1024

_lock = threading.Lock()
_depth = 0  # unpicklings currently holding the pause
_we_disabled = False  # whether the pause (not the user) switched the collector off
_enabled = True  # the process-wide setting (fastwire.pause-gc)


def set_enabled(enabled: bool) -> None:
    """Turn the pause on or off for later unpicklings in this process."""
    global _enabled
    _enabled = bool(enabled)


def enabled() -> bool:
    """Whether large pickles are rebuilt with the collector paused."""
    return _enabled


def _size(data) -> int:
    kind = type(data)
    return len(data) if kind is bytes or kind is bytearray else memoryview(data).nbytes


def loads_paused(loads, data, **kwargs):
    """``loads(data, **kwargs)``, with the cyclic collector paused if ``data`` is
    at least :data:`PAUSE_FROM` bytes and the pause is enabled.

    Raises whatever ``loads`` raises; the collector is restored either way.
    """
    global _depth, _we_disabled
    if not _enabled or _size(data) < PAUSE_FROM:
        return loads(data, **kwargs)
    with _lock:
        if _depth == 0:
            _we_disabled = gc.isenabled()
            if _we_disabled:
                gc.disable()
        _depth += 1
    try:
        return loads(data, **kwargs)
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0 and _we_disabled:
                _we_disabled = False
                gc.enable()
