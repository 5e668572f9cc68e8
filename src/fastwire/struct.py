"""Drop-in replacement for the standard library's :mod:`struct`, compiled.

Same names, signatures, byte layouts and exception classes: :data:`error` *is*
``struct.error``, so existing ``except struct.error`` clauses keep working.
Beyond the standard library, :class:`Struct` has ``pack_many`` and
``unpack_many`` for whole batches of records.
"""

from struct import error

from ._fastwire import (
    Struct,
    _clearcache,
    calcsize,
    iter_unpack,
    pack,
    pack_into,
    unpack,
    unpack_from,
)

__all__ = [
    "Struct",
    "calcsize",
    "error",
    "iter_unpack",
    "pack",
    "pack_into",
    "unpack",
    "unpack_from",
]
