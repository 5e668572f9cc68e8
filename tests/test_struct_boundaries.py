"""Every buffer-end and range boundary of fastwire.struct, checked exhaustively.

Random differential tests hit a one-byte error in a bounds check only
sometimes; these walk every offset around each end of the buffer (exactly the
size, one short, one over, at the end, negative offsets at each boundary) for
formats of several sizes, so an off-by-one in any buffer-end check always
fails a case. The stdlib is the oracle: the same result (buffer bytes
included) or the same exception type and message.
"""

from __future__ import annotations

import struct as std
import sys

import pytest

from fastwire import struct as fw

FORMATS = ["b", "<h", "<i", "<iHd", "@iq", "7s", "3p", "1p", "10s", "11s", "x", "", "<5H"]


def outcome(call):
    try:
        return ("ok", call())
    except Exception as exc:  # noqa: BLE001 - any exception is an outcome to compare
        return ("raise", type(exc), str(exc))


def values_for(fmt):
    items = std.unpack(fmt, bytes(std.calcsize(fmt)))
    # Byte strings longer than any field here, so truncation bounds are crossed too.
    return [b"abcdefghij" if isinstance(v, bytes) else (1 if isinstance(v, int) else 1.5) for v in items]


def boundary_offsets(size, length):
    near = {0, 1, -1, size, length, length - size, -size, -length}
    return sorted({base + delta for base in near for delta in (-1, 0, 1)})


def cases():
    for fmt in FORMATS:
        size = std.calcsize(fmt)
        for length in sorted({max(size - 1, 0), size, size + 1, size + 5}):
            for offset in boundary_offsets(size, length):
                yield fmt, length, offset


CASES = list(cases())


@pytest.mark.parametrize("fmt,length,offset", CASES)
def test_pack_into_at_every_boundary(fmt, length, offset):
    values = values_for(fmt)

    def run(module):
        target = bytearray(b"\xee" * length)
        result = outcome(lambda: module.pack_into(fmt, target, offset, *values))
        return result, bytes(target)

    assert run(fw) == run(std)
    struct_result = outcome(lambda: fw.Struct(fmt).pack_into(bytearray(length), offset, *values))
    assert struct_result[:2] == run(std)[0][:2]


@pytest.mark.parametrize("fmt,length,offset", CASES)
def test_unpack_from_at_every_boundary(fmt, length, offset):
    data = bytes(range(length))
    expected = outcome(lambda: std.unpack_from(fmt, data, offset))
    assert outcome(lambda: fw.unpack_from(fmt, data, offset)) == expected
    assert outcome(lambda: fw.Struct(fmt).unpack_from(bytearray(data), offset)) == expected


@pytest.mark.parametrize("fmt", FORMATS)
def test_unpack_and_batches_at_every_length(fmt):
    size = std.calcsize(fmt)
    for length in sorted({0, max(size - 1, 0), size, size + 1, 2 * size - 1, 2 * size, 2 * size + 1}):
        data = bytes(range(length))
        assert outcome(lambda d=data: fw.unpack(fmt, d)) == outcome(lambda d=data: std.unpack(fmt, d))
        expected = outcome(lambda d=data: list(std.iter_unpack(fmt, d)))
        assert outcome(lambda d=data: list(fw.iter_unpack(fmt, d)))[:2] == expected[:2]
        many = outcome(lambda d=data: fw.Struct(fmt).unpack_many(d))
        assert many[:2] == expected[:2]


@pytest.mark.parametrize("offset", [sys.maxsize, sys.maxsize - 3, -sys.maxsize - 1, -sys.maxsize])
@pytest.mark.parametrize("fmt", ["<I", "b", "10s"])
def test_offsets_near_the_ssize_t_limits(fmt, offset):
    """size + offset overflowed Py_ssize_t (undefined behaviour) and printed a
    negative size in the message."""
    values = values_for(fmt)
    assert outcome(lambda: fw.pack_into(fmt, bytearray(10), offset, *values)) == \
        outcome(lambda: std.pack_into(fmt, bytearray(10), offset, *values))
    assert outcome(lambda: fw.unpack_from(fmt, bytearray(10), offset)) == \
        outcome(lambda: std.unpack_from(fmt, bytearray(10), offset))


INTEGER_CODES = "bBhHiIlLqQnN"
RANGE_VALUES = [2**70, -2**70, 2**64, 2**64 - 1, 2**63, 2**63 - 1, -2**63, -2**63 - 1, 2**32, 2**31,
                -2**31 - 1, 70000, -70000, 65536, 32768, -32769, 256, 128, -129, -1]


@pytest.mark.parametrize("order", ["", "@", "=", "<", ">", "!"])
@pytest.mark.parametrize("code", INTEGER_CODES)
def test_range_error_messages_follow_the_running_python(order, code):
    """Python 3.11 words range errors by the C routine that packed the value
    ("short format requires ...", "argument out of range", "int too large to
    convert"); 3.12+ says "'h' format requires ...". Each Python gets its own."""
    if code in "nN" and order not in ("", "@"):
        pytest.skip("'n' and 'N' exist only in native mode")
    fmt = order + code
    for value in RANGE_VALUES:
        assert outcome(lambda v=value: fw.pack(fmt, v)) == outcome(lambda v=value: std.pack(fmt, v)), value


class Recorder:
    def __init__(self):
        self.converted = 0

    def __index__(self):
        self.converted += 1
        return 1


@pytest.mark.parametrize("fmt,rows", [
    (f"<{sys.maxsize // 4}si", 4),       # the first row count whose rows x size exceeds sys.maxsize
    (f"<{sys.maxsize // 4}si", 5),
    (f"<{sys.maxsize // 2 - 1}si", 1),   # fits the limit, cannot be allocated
])
def test_pack_many_raises_memoryerror_before_packing(fmt, rows):
    """docs/limits.md: pack_many raises MemoryError, before anything is packed,
    when rows x size is too large."""
    s = fw.Struct(fmt)
    assert rows != 4 or sys.maxsize // s.size + 1 == rows
    recorders = [Recorder() for _ in range(rows)]
    with pytest.raises(MemoryError):
        s.pack_many([(b"x", r) for r in recorders])
    assert [r.converted for r in recorders] == [0] * rows


@pytest.mark.parametrize("fmt", ["<7s2x", "<1s2x", "<0s2x", "<3p2x", "<1p2x", "<255p2x", "<256p2x"])
def test_string_fields_at_every_value_length(fmt):
    """'s' and 'p' values one shorter, as long as and one longer than the field
    (a truncation off by one writes into the padding after it). "0p" is left
    out: the stdlib writes outside that field (gh-124248, test_struct_hostile.py)."""
    size = std.calcsize(fmt) - 2
    for n in sorted({0, max(size - 2, 0), max(size - 1, 0), size, size + 1, size + 2, 300}):
        value = bytes(range(1, n + 1)) if n < 256 else b"v" * n
        expected = outcome(lambda v=value: std.pack(fmt, v))
        assert outcome(lambda v=value: fw.pack(fmt, v)) == expected, n
        target = bytearray(size + 4)
        assert outcome(lambda v=value: fw.pack_into(fmt, target, 1, v))[0] == "ok"
        assert bytes(target) == b"\0" + expected[1] + b"\0", n
        assert outcome(lambda: fw.unpack(fmt, expected[1])) == outcome(lambda: std.unpack(fmt, expected[1]))
