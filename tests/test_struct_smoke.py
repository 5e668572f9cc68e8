"""Fast first-line checks of fastwire.struct against the standard library.

The exhaustive, generated comparison lives in test_struct_differential.py;
these are the cases a reader checks first when something is off.
"""

import struct as std_struct

import pytest

import fastwire
from fastwire import struct as fw_struct

SMALL_FORMATS = [
    (">ii", (1, -2)),
    ("<HHI", (1, 2, 3)),
    ("!IhB", (70000, -5, 7)),
    ("<qd", (-(2**40), 3.25)),
    ("10s", (b"fastwire!!",)),
    ("@bhilqnNP?efd", (1, 2, 3, 4, 5, 6, 7, 8, True, 1.5, 2.5, 3.5)),
    ("=bhilq", (1, 2, 3, 4, 5)),
    ("3x2s5p", (b"ab", b"hello")),
    ("0s0x0i", (b"",)),
    ("c?", (b"x", 0)),
    (b"<e", (65504.0,)),
    ("b i h q", (1, 2, 3, 4)),
]


@pytest.mark.parametrize("fmt,values", SMALL_FORMATS)
def test_pack_unpack_match_stdlib(fmt, values):
    packed = std_struct.pack(fmt, *values)
    assert fw_struct.pack(fmt, *values) == packed
    assert fw_struct.Struct(fmt).pack(*values) == packed
    assert fw_struct.unpack(fmt, packed) == std_struct.unpack(fmt, packed)
    assert fw_struct.calcsize(fmt) == std_struct.calcsize(fmt)


def test_error_is_the_stdlib_class():
    assert fw_struct.error is std_struct.error
    assert fastwire.error is std_struct.error


def test_names_are_reexported_at_top_level():
    for name in ("pack", "unpack", "pack_into", "unpack_from", "iter_unpack", "calcsize", "Struct"):
        assert getattr(fastwire, name) is getattr(fw_struct, name)


def test_pack_many_and_unpack_many_round_trip():
    record = fw_struct.Struct("<iHdq")
    rows = [(i, i & 0xFFFF, i * 0.5, -i) for i in range(100)]
    blob = record.pack_many(rows)
    assert blob == b"".join(std_struct.Struct("<iHdq").pack(*r) for r in rows)
    assert record.unpack_many(blob) == rows


def test_unpack_many_restores_collector_state():
    """unpack_many pauses the cyclic GC internally; it must restore exactly the
    state it found, on success and on error."""
    import gc

    record = fw_struct.Struct("<iHdq")
    blob = record.pack_many([(1, 2, 3.0, 4)] * 10)
    was_enabled = gc.isenabled()
    try:
        gc.enable()
        record.unpack_many(blob)
        assert gc.isenabled()
        with pytest.raises(fw_struct.error):
            record.unpack_many(blob[:-1])
        assert gc.isenabled()
        gc.disable()
        record.unpack_many(blob)
        assert not gc.isenabled()
    finally:
        if was_enabled:
            gc.enable()
        else:
            gc.disable()
