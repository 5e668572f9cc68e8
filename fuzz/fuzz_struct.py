"""Fuzz fastwire.struct against the standard library's struct (the oracle).

One input = a format (raw bytes, or bytes mapped onto the format alphabet so
most formats are valid), a buffer, an offset and a choice of values. Every
entry point must agree with the stdlib: the same result, or an exception of the
same type. Run with the commands in fuzz/README.md.
"""

import math
import re
import struct as std

import _harness

fw = _harness.import_fastwire_part("struct")

ALPHABET = b"xcbB?hHiIlLqQnNefdspP@=<>! 0123456789"
PACK_SIZE_LIMIT = 1 << 16  # keep pack's (legitimate) output allocation small

VALUE_POOL = [
    0, 1, -1, 127, 128, -129, 255, 256, 65535, -32769, 2**31 - 1, 2**31, -2**31 - 1,
    2**63 - 1, 2**63, -2**63 - 1, 2**64, 2**200, 0.5, -0.0, 1e300, float("inf"), float("nan"),
    b"", b"x", b"xyz" * 100, bytearray(b"ab"), "s", None, True, [1], 3 + 4j,
]


def formats_agree_on_float_overflow(fmt, values):
    """fastwire raises OverflowError for a native 'f' that overflows, where
    CPython before gh-145633 silently packs inf (the standard byte orders
    already raise; an int argument gives struct.error, as _struct.c reports
    every int overflow). The one intended departure in this target."""
    native = not fmt[:1] or fmt[:1] not in b"=<>!"
    return native and b"f" in fmt and any(overflows_float32(v) for v in values)


def overflows_float32(value):
    try:
        x = float(value)
    except (TypeError, ValueError, OverflowError):
        return False
    return math.isfinite(x) and abs(x) > 3.4028235677973366e38


def stdlib_has_zero_pascal_bug():
    """gh-124248 (fixed in 3.12.7 and 3.13): the stdlib raises SystemError
    unpacking '0p' and writes a length byte outside the field packing it.
    fastwire treats '0p' like '0s', as fixed CPythons do."""
    try:
        std.unpack("0p", b"")
    except SystemError:
        return True
    return False


ZERO_PASCAL = re.compile(rb"(?<![0-9])0+p")
SKIP_ZERO_PASCAL = stdlib_has_zero_pascal_bug()


def same(a, b):
    return _harness.same_value(a, b)


def agree(where, expected, got, departure=False):
    kind_e, val_e = expected
    kind_g, val_g = got
    if kind_g == "error":
        _harness.check_clean_error(val_g, where)
        if departure and isinstance(val_g, (OverflowError, std.error)):
            return  # fastwire stops at the overflowing float, whatever follows it
    if kind_e == kind_g == "ok":
        if not same(val_e, val_g):
            raise AssertionError(f"{where}: stdlib {val_e!r} != fastwire {val_g!r}")
    elif kind_e == kind_g == "error":
        if type(val_e) is not type(val_g):
            raise AssertionError(f"{where}: stdlib raised {val_e!r}, fastwire {val_g!r}")
    else:
        raise AssertionError(f"{where}: stdlib gave {expected!r}, fastwire {got!r}")


def test_one_input(data):
    inp = _harness.Input(data)
    control = inp.byte()
    fmt = inp.take(inp.byte() % 24)
    if control & 1:
        fmt = bytes(ALPHABET[c % len(ALPHABET)] for c in fmt)
    offset = inp.uint(2) - 32768 if control & 2 else inp.byte() % 16
    picks = inp.take(8)
    buffer = inp.rest()
    fmt_arg = fmt.decode("latin-1") if control & 4 else fmt
    where = f"fmt={fmt_arg!r}"
    if SKIP_ZERO_PASCAL and ZERO_PASCAL.search(fmt):
        return  # no trustworthy oracle on this Python; tests/test_struct_hostile.py covers '0p'

    size = _harness.outcome(std.calcsize, fmt_arg)
    agree(f"calcsize {where}", size, _harness.outcome(fw.calcsize, fmt_arg))
    if size[0] == "error":
        agree(f"Struct {where}", _harness.outcome(std.Struct, fmt_arg), _harness.outcome(fw.Struct, fmt_arg))
        return
    size = size[1]

    agree(f"unpack {where}", _harness.outcome(std.unpack, fmt_arg, buffer),
          _harness.outcome(fw.unpack, fmt_arg, buffer))
    view = memoryview(buffer)
    agree(f"unpack_from {where} offset={offset}", _harness.outcome(std.unpack_from, fmt_arg, view, offset),
          _harness.outcome(fw.unpack_from, fmt_arg, view, offset))
    if size:
        agree(f"iter_unpack {where}", _harness.outcome(lambda: list(std.iter_unpack(fmt_arg, buffer))),
              _harness.outcome(lambda: list(fw.iter_unpack(fmt_arg, buffer))))
        agree(f"unpack_many {where}", _harness.outcome(lambda: list(std.iter_unpack(fmt_arg, buffer))),
              _harness.outcome(lambda: fw.Struct(fmt_arg).unpack_many(buffer)))

    if size > PACK_SIZE_LIMIT:
        return
    # Values: what the stdlib decodes from the buffer (valid by construction),
    # with some replaced from a pool of awkward values.
    values = list(std.unpack_from(fmt_arg, buffer.ljust(size, b"\0")))
    for i, pick in enumerate(picks):
        if values and pick & 0x80:
            values[(pick >> 3) % len(values)] = VALUE_POOL[(pick + i) % len(VALUE_POOL)]
    if picks[:1] and picks[0] & 0x40 and values:
        values.pop()  # wrong item count
    departure = formats_agree_on_float_overflow(fmt, values)
    agree(f"pack {where} values={values!r}", _harness.outcome(std.pack, fmt_arg, *values),
          _harness.outcome(fw.pack, fmt_arg, *values), departure)

    target_std = bytearray(buffer)
    target_fw = bytearray(buffer)
    packed_std = _harness.outcome(std.pack_into, fmt_arg, target_std, offset, *values)
    packed_fw = _harness.outcome(fw.pack_into, fmt_arg, target_fw, offset, *values)
    agree(f"pack_into {where} offset={offset}", packed_std, packed_fw, departure)
    # Every CPython up to 3.13.0 at least writes a length byte for a zero-width
    # 'p' field (3.11/3.12: 0xff, 3.13.0: 0x00) into the byte after it; fastwire
    # writes nothing there (test_regression_zero_width_pascal_string_gh124248).
    stdlib_writes_outside = ZERO_PASCAL.search(fmt) is not None
    if packed_std[0] == packed_fw[0] == "ok" and target_std != target_fw and not stdlib_writes_outside:
        raise AssertionError(f"pack_into {where}: buffers differ: {target_std!r} != {target_fw!r}")
    if packed_fw[0] == "error" and target_fw != buffer:
        raise AssertionError(f"pack_into {where}: a failed pack_into changed the buffer")


if __name__ == "__main__":
    _harness.main(test_one_input)
