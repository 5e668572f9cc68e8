"""Drop-in replacement for the standard library's :mod:`pickle`.

INTERIM: until the Cython codec lands (issue 3) this module delegates to the
standard library, so that code built on the facade (fastwire.net, fastwire.aio)
does not change when the compiled encoder/decoder replaces it. The restricted
mode (``allowed=``) is already real: it refuses any global outside the builtin
value types plus what the caller allows, before importing anything.
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

# Globals a pickle of builtin value types may reference (complex, bytearray and
# sets are built through REDUCE; protocol 0-2 bytes through _codecs.encode).
_VALUE_GLOBALS = frozenset({
    ("builtins", "complex"),
    ("builtins", "bytearray"),
    ("builtins", "set"),
    ("builtins", "frozenset"),
    ("_codecs", "encode"),
})


def _allowed_names(allowed):
    names = set(_VALUE_GLOBALS)
    for item in allowed:
        if isinstance(item, str):
            module, _, name = item.rpartition(".")
            names.add((module, name))
        else:
            names.add((item.__module__, item.__qualname__))
    return frozenset(names)


class Unpickler(_std.Unpickler):
    def __init__(self, file, *, fix_imports=True, encoding="ASCII", errors="strict",
                 buffers=(), allowed=None):
        super().__init__(file, fix_imports=fix_imports, encoding=encoding,
                         errors=errors, buffers=buffers)
        self._allowed = None if allowed is None else _allowed_names(allowed)

    def find_class(self, module, name):
        if self._allowed is not None and (module, name) not in self._allowed:
            raise UnpicklingError(f"global '{module}.{name}' is not allowed")
        return super().find_class(module, name)


# The encoder is fastwire's own: protocols 2-5 are written by the compiled
# core, 0-1 by the stdlib. Pickler.memo is a PicklerMemoProxy like the C
# pickle's (copy() -> {id(obj): (index, obj)}, clear(), len()); assigning a
# dict of that shape or another proxy replaces the memo.
from ._fastwire import Pickler, PicklerMemoProxy, dump, dumps  # noqa: E402


def loads(data, /, *, fix_imports=True, encoding="ASCII", errors="strict", buffers=(), allowed=None):
    import io

    return Unpickler(io.BytesIO(data), fix_imports=fix_imports, encoding=encoding,
                     errors=errors, buffers=buffers, allowed=allowed).load()


def load(file, *, fix_imports=True, encoding="ASCII", errors="strict", buffers=(), allowed=None):
    return Unpickler(file, fix_imports=fix_imports, encoding=encoding, errors=errors,
                     buffers=buffers, allowed=allowed).load()
