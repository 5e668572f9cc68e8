"""Benchmark pairs for fastwire.struct against the standard library's struct."""

import struct as std_struct

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
    result = []
    for fmt, values in SMALL_FORMATS.items():
        std_s, fw_s = std_struct.Struct(fmt), fw_struct.Struct(fmt)
        packed = std_s.pack(*values)
        result += [
            Pair(f"Struct.pack {fmt}", "struct",
                 lambda s=std_s, v=values: s.pack(*v),
                 lambda s=fw_s, v=values: s.pack(*v)),
            Pair(f"Struct.unpack {fmt}", "struct",
                 lambda s=std_s, b=packed: s.unpack(b),
                 lambda s=fw_s, b=packed: s.unpack(b)),
            Pair(f"pack {fmt}", "struct",
                 lambda f=fmt, v=values: std_struct.pack(f, *v),
                 lambda f=fmt, v=values: fw_struct.pack(f, *v)),
            Pair(f"unpack {fmt}", "struct",
                 lambda f=fmt, b=packed: std_struct.unpack(f, b),
                 lambda f=fmt, b=packed: fw_struct.unpack(f, b)),
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
