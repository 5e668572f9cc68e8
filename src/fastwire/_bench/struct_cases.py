"""Benchmark pairs for fastwire.struct against the standard library's struct."""

import struct as std_struct
from functools import partial

from fastwire import struct as fw_struct

from . import Pair

# Small formats named in the foundation issue, with representative values.
SMALL_FORMATS = {
    ">ii": (1, -2),
    "<HHI": (1, 2, 3),
    "!IhB": (70000, -5, 7),
    "<qd": (-(2**40), 3.25),
    "10s": (b"fastwire!!",),
}

RECORD_FORMAT = "<iHdq"
RECORD_COUNT = 20_000


def _records():
    return [(i, i & 0xFFFF, i * 0.5, -i) for i in range(RECORD_COUNT)]


def pairs():
    # functools.partial calls each function with its values as plain positional
    # arguments (vectorcall, no argument tuple, no Python frame), the way code
    # calls pack(">ii", a, b); a lambda with *values would time the star-call
    # machinery and a Python frame on both sides as well.
    result = []
    for fmt, values in SMALL_FORMATS.items():
        std_s, fw_s = std_struct.Struct(fmt), fw_struct.Struct(fmt)
        packed = std_s.pack(*values)
        result += [
            Pair(f"Struct.pack {fmt}", "struct",
                 partial(std_s.pack, *values), partial(fw_s.pack, *values)),
            Pair(f"Struct.unpack {fmt}", "struct",
                 partial(std_s.unpack, packed), partial(fw_s.unpack, packed)),
            Pair(f"pack {fmt}", "struct",
                 partial(std_struct.pack, fmt, *values), partial(fw_struct.pack, fmt, *values)),
            Pair(f"unpack {fmt}", "struct",
                 partial(std_struct.unpack, fmt, packed), partial(fw_struct.unpack, fmt, packed)),
        ]

    rows = _records()
    std_s, fw_s = std_struct.Struct(RECORD_FORMAT), fw_struct.Struct(RECORD_FORMAT)
    blob = b"".join(std_s.pack(*r) for r in rows)
    result += [
        Pair(f"pack_many {RECORD_COUNT} x {RECORD_FORMAT}", "struct",
             lambda: b"".join(std_s.pack(*r) for r in rows),
             lambda: fw_s.pack_many(rows),
             target=2.0),
        Pair(f"unpack_many {RECORD_COUNT} x {RECORD_FORMAT}", "struct",
             lambda: list(std_s.iter_unpack(blob)),
             lambda: fw_s.unpack_many(blob),
             target=1.5),
    ]
    return result
