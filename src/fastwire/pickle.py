"""Drop-in replacement for the standard library's :mod:`pickle`.

Reading is compiled: :func:`loads`, :func:`load` and :class:`Unpickler` read
every pickle the standard library writes (protocols 0-5), raise its exception
types, and add a restricted mode for untrusted data: pass ``allowed=`` (classes
and/or ``"module.name"`` strings) and only builtin value types plus those
globals are built; any other global raises :class:`UnpicklingError` before
anything is imported or called.  See ``help(Unpickler)`` for the security
model and the memory bounds on hostile input.

INTERIM (writer half): until the compiled encoder lands, Pickler/dumps/dump
delegate to the standard library.
"""

import pickle as _std
from pickle import (
    DEFAULT_PROTOCOL,
    HIGHEST_PROTOCOL,
    PickleBuffer,
    PickleError,
    PicklingError,
    UnpicklingError,
)

from ._fastwire import Unpickler, UnpicklerMemoProxy, load, loads  # noqa: E402

Pickler = _std.Pickler
dumps = _std.dumps
dump = _std.dump
