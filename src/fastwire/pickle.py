"""Drop-in replacement for the standard library's :mod:`pickle`.

Both directions are compiled.  :func:`loads`, :func:`load` and
:class:`Unpickler` read every pickle the standard library writes (protocols
0-5), raise its exception types, and add a restricted mode for untrusted data: pass ``allowed=`` (classes
and/or ``"module.name"`` strings) and only builtin value types plus those
globals are built; any other global raises :class:`UnpicklingError` before
anything is imported or called.  See ``help(Unpickler)`` for the security
model and the memory bounds on hostile input.
"""

from pickle import (
    DEFAULT_PROTOCOL,
    HIGHEST_PROTOCOL,
    PickleBuffer,
    PickleError,
    PicklingError,
    UnpicklingError,
)

# The encoder is fastwire's own: protocols 2-5 are written by the compiled
# core, 0-1 by the stdlib. Pickler.memo is a PicklerMemoProxy like the C
# pickle's (copy() -> {id(obj): (index, obj)}, clear(), len()); assigning a
# dict of that shape or another proxy replaces the memo.
from ._fastwire import (
    DEFAULT_MAX_DEPTH,
    DEFAULT_WORK_FACTOR,
    Allowed,
    Pickler,
    PicklerMemoProxy,
    Unpickler,
    UnpicklerMemoProxy,
    dump,
    dumps,
    load,
    loads,
)

