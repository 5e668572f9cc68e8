"""fastwire: C-accelerated, byte-compatible drop-ins for struct, pickle and
multiprocessing.connection.

``from fastwire import struct`` / ``from fastwire import pickle`` are drop-in
modules; the struct names are also available here (``fastwire.pack`` ...).
"""

try:
    from . import _fastwire  # noqa: F401
except ImportError as exc:  # pragma: no cover - only on a broken install
    # Never fall back silently to something slower: say what is missing.
    raise ImportError(
        "fastwire's compiled core (fastwire._fastwire) is missing or failed to load; "
        "reinstall fastwire with `python -m pip install fastwire` (or build it from a "
        f"checkout with `python -m pip install .`). Original error: {exc}"
    ) from exc

from .struct import (  # noqa: E402
    Struct,
    calcsize,
    error,
    iter_unpack,
    pack,
    pack_into,
    unpack,
    unpack_from,
)

__version__ = "0.1.0"

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
