"""The stdlib ``struct`` as the oracle for fastwire.struct: outcome capture,
value normalisation, the known-stdlib-bug correction, and hypothesis
strategies for formats, values and buffers.

Shared by the ``test_struct_*`` modules (found through ``pythonpath = ["tests"]``
in pyproject.toml).
"""

from __future__ import annotations

import array
import math
import mmap
import re
import struct as std
import sys
from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction

from hypothesis import strategies as st

PREFIXES = ("", "@", "=", "<", ">", "!")
ALL_CODES = "xcbB?hHiIlLqQnNefdspP"
NATIVE_ONLY_CODES = "nNP"
SIGNED_INT_CODES = "bhilqn"
UNSIGNED_INT_CODES = "BHILQNP"
INT_CODES = SIGNED_INT_CODES + UNSIGNED_INT_CODES
FLOAT_CODES = "efd"
# Everything the stdlib skips between items (isspace() in the C locale).
WHITESPACE = " \t\n\r\v\f"


# --------------------------------------------------------------------------
# Outcomes


def normalize(value):
    """A comparable form of a struct result.

    Floats become their IEEE-754 bit pattern (so NaN == NaN only when the
    payload and sign agree, and -0.0 != 0.0); every other leaf keeps its type,
    so True and 1, or bytes and bytearray, never compare equal by accident.
    """
    if type(value) is float:
        return ("float", std.pack("<d", value))
    if type(value) in (tuple, list):
        return (type(value).__name__, tuple(normalize(v) for v in value))
    return (type(value).__name__, value)


def outcome(fn):
    """('ok', normalised result) or ('raise', exception type) for fn()."""
    try:
        return ("ok", normalize(fn()))
    except Exception as exc:  # noqa: BLE001 - the type is what we compare
        return ("raise", type(exc))


# --------------------------------------------------------------------------
# Format specs


_ZERO_P = re.compile(r"(?<![0-9])0+p")
_ZERO_P_BYTES = re.compile(rb"(?<![0-9])0+p")


def oracle_format(fmt):
    """The format to give the stdlib so that its answer is the correct one.

    A zero-length Pascal string ('0p') is one more spelling of '0s': nothing
    to read, nothing to write. The stdlib gets it wrong (gh-124248: unpacking
    raises SystemError on 3.11 and 3.12; gh-156939: packing writes a length
    byte past the item, past the buffer's end when the item is last), so the
    oracle is asked about '0s' instead. Anything else passes unchanged.
    """
    if isinstance(fmt, str):
        return _ZERO_P.sub("0s", fmt)
    if isinstance(fmt, bytes):
        return _ZERO_P_BYTES.sub(b"0s", fmt)
    return fmt


@dataclass(frozen=True)
class FormatSpec:
    """A struct format as a list of items, rendered with chosen whitespace."""

    prefix: str
    items: tuple  # ((count or None, code), ...)
    separators: tuple  # whitespace before each item, plus one trailing
    as_bytes: bool = False

    @property
    def text(self):
        parts = [self.prefix]
        for sep, (count, code) in zip(self.separators, self.items):
            parts.append(sep + ("" if count is None else str(count)) + code)
        parts.append(self.separators[-1])
        text = "".join(parts)
        return text.encode("ascii") if self.as_bytes else text

    @property
    def oracle_text(self):
        """The format to give the stdlib so that its answer is the correct one."""
        return oracle_format(self.text)

    @property
    def native(self):
        return self.prefix in ("", "@")

    def value_codes(self):
        """The format code each packed value is matched against, in order."""
        codes = []
        for count, code in self.items:
            if code == "x":
                continue
            if code in "sp":
                codes.append(code)
            else:
                codes.extend(code * (1 if count is None else count))
        return codes

    def neutral_values(self):
        """One valid value per slot: what the format accepts without complaint."""
        neutral = {"c": b"\0", "?": False, "s": b"", "p": b"", "e": 0.0, "f": 0.0, "d": 0.0}
        return tuple(neutral.get(code, 0) for code in self.value_codes())

    def __repr__(self):  # what hypothesis prints for a failing example
        return f"FormatSpec({self.text!r})"


def int_range(code, prefix):
    """(lowest, highest) integer the stdlib accepts for an integer code."""
    size = std.calcsize(("@" if code in NATIVE_ONLY_CODES else prefix or "@") + code)
    if code in SIGNED_INT_CODES:
        return -(1 << (8 * size - 1)), (1 << (8 * size - 1)) - 1
    return 0, (1 << (8 * size)) - 1


def counts_for(code):
    if code in "sxp":
        return st.one_of(st.none(), st.integers(0, 12), st.sampled_from([255, 256, 257, 300, 4096]))
    return st.one_of(st.none(), st.none(), st.integers(0, 5), st.just(33))


@st.composite
def format_specs(draw, max_items=6, max_values=40, codes=None, prefixes=PREFIXES):
    """Valid formats: any prefix, any item, counts (incl. 0 and large), whitespace."""
    prefix = draw(st.sampled_from(prefixes))
    allowed = codes or ALL_CODES
    if prefix not in ("", "@"):
        allowed = "".join(c for c in allowed if c not in NATIVE_ONLY_CODES)
    items = []
    values = 0
    for _ in range(draw(st.integers(0, max_items))):
        code = draw(st.sampled_from(allowed))
        count = draw(counts_for(code))
        n = 0 if code == "x" else 1 if code in "sp" else (1 if count is None else count)
        if values + n > max_values:
            continue
        values += n
        items.append((count, code))
    separator = st.sampled_from(["", "", "", " ", "\t", "\n  ", "\r\v\f"])
    separators = tuple(draw(separator) for _ in range(len(items) + 1))
    return FormatSpec(prefix, tuple(items), separators, draw(st.booleans()))


# Formats that are mostly wrong: junk characters, counts without codes,
# whitespace inside counts, prefixes out of place, NUL, non-ASCII.
junk_format_text = st.text(
    alphabet=ALL_CODES + "0123456789" + "@=<>!" + " \t" + "\0zZä-+j",
    max_size=10,
)
junk_formats = st.one_of(
    junk_format_text,
    junk_format_text.map(lambda s: s.encode("utf-8")),
    st.sampled_from([
        None, 5, 1.5, ["i"], bytearray(b"i"), memoryview(b"i"),
        "99999999999999999999i", "9223372036854775807i", "4611686018427387904s",
        "9223372036854775807x", "9223372036854775808x", "2147483648s",
        "4611686018427387903s4611686018427387903s",
        "i\0", "<i\0i", "iä", "\udc80", "5", "i5", " <i", "<<i", "i<i", "5 i", "-1i",
    ]),
)


# --------------------------------------------------------------------------
# Values


class Index:
    """Has only __index__ (accepted for integer codes and, via float(), floats)."""

    def __init__(self, v):
        self.v = v

    def __index__(self):
        return self.v

    def __repr__(self):
        return f"Index({self.v!r})"


class IntOnly:
    """Has only __int__: the stdlib refuses it for integer codes."""

    def __init__(self, v):
        self.v = v

    def __int__(self):
        return self.v

    def __repr__(self):
        return f"IntOnly({self.v!r})"


class FloatOnly:
    """Has only __float__: accepted for float codes, refused for integer codes."""

    def __init__(self, v):
        self.v = v

    def __float__(self):
        return self.v

    def __repr__(self):
        return f"FloatOnly({self.v!r})"


class Boom(Exception):
    pass


class Raises:
    """Every conversion raises Boom: the exception must surface (or be
    replaced exactly as the stdlib replaces it), never be swallowed."""

    def __index__(self):
        raise Boom

    def __float__(self):
        raise Boom

    def __bool__(self):
        raise Boom

    def __repr__(self):
        return "Raises()"


class MyInt(int):
    def __repr__(self):
        return f"MyInt({int(self)})"


class MyFloat(float):
    def __repr__(self):
        return f"MyFloat({float(self)!r})"


class MyBytes(bytes):
    pass


FLOAT32_MAX = std.unpack("<f", b"\xff\xff\x7f\x7f")[0]
# The smallest double that rounds to float32 infinity (and one ulp below it).
FLOAT32_OVERFLOW = math.ldexp((1 << 25) - 1, 127 - 24)
FLOAT32_LARGEST_ROUNDING_DOWN = math.nextafter(FLOAT32_OVERFLOW, 0.0)

EDGE_FLOATS = [
    0.0, -0.0, 1.0, -1.5, 5e-324, -5e-324, 1e-310, 2.2250738585072014e-308,
    math.inf, -math.inf, math.nan, -math.nan,
    65504.0, 65519.99, 65520.0, -65520.0, 6.103515625e-05, 5.960464477539063e-08, 2.9e-08,
    FLOAT32_MAX, -FLOAT32_MAX, FLOAT32_OVERFLOW, -FLOAT32_OVERFLOW,
    FLOAT32_LARGEST_ROUNDING_DOWN, 1.401298464324817e-45, 7e-46, 3.5e38, 1e300, -1e300, 1.7976931348623157e308,
]

# NaNs with payloads and both signs, quiet and signalling.
nan_with_payload = st.builds(
    lambda sign, quiet, payload: std.unpack(
        "<d", ((sign << 63) | (0x7FF << 52) | (quiet << 51) | payload).to_bytes(8, "little"))[0],
    st.integers(0, 1), st.integers(0, 1), st.integers(1, (1 << 51) - 1),
)

wrong_type_values = st.sampled_from([
    None, "1", b"1", 1j, [1], object(), Decimal("1.5"), Fraction(1, 2), Raises(),
])


def valid_values_for(code, prefix, count=None):
    """Values the stdlib packs for one slot of code without complaint."""
    if code in INT_CODES:
        lo, hi = int_range(code, prefix)
        return st.one_of(
            st.integers(lo, hi), st.integers(lo, hi), st.integers(lo, hi),
            st.sampled_from([lo, hi, 0, -1 if lo else 1]),
            st.booleans(), st.integers(lo, hi).map(MyInt), st.integers(lo, hi).map(Index),
        )
    if code in FLOAT_CODES:
        width = {"e": 16, "f": 32, "d": 64}[code]
        return st.one_of(
            st.floats(width=width), st.floats(width=width), st.floats(width=width),
            nan_with_payload, st.sampled_from([math.inf, -math.inf, -0.0, 5e-324]),
            st.integers(-2048, 2048), st.booleans(),
            st.floats(width=width).map(FloatOnly), st.floats(width=width).map(MyFloat),
            st.integers(-2048, 2048).map(Index),
        )
    if code == "?":
        return st.one_of(st.booleans(), st.integers(), st.binary(max_size=2), st.none(),
                         st.just([]), st.floats())
    if code == "c":
        byte = st.binary(min_size=1, max_size=1)
        return st.one_of(byte, byte, byte.map(bytearray), byte.map(MyBytes))
    if code in "sp":
        size = 1 if count is None else count
        data = st.binary(max_size=size + 3)
        return st.one_of(data, data, data.map(bytearray), data.map(MyBytes),
                         st.binary(min_size=250, max_size=300))
    raise AssertionError(code)


def invalid_values_for(code, prefix):
    """Values the stdlib refuses for one slot of code (or, for a few edge
    values, values at the boundary that it may accept)."""
    if code in INT_CODES:
        lo, hi = int_range(code, prefix)
        return st.one_of(
            st.sampled_from([lo - 1, hi + 1, 1 << 64, -(1 << 64), 1 << 200, -(1 << 63) - 1, lo, hi]),
            st.sampled_from([IntOnly(1), FloatOnly(1.0), 1.0, 1.5, math.nan, Index(1.5),
                             Index(hi + 1), Index(lo - 1), MyFloat(2.0)]),
            wrong_type_values,
        )
    if code in FLOAT_CODES:
        return st.one_of(
            st.floats(), st.sampled_from(EDGE_FLOATS), st.sampled_from(EDGE_FLOATS).map(FloatOnly),
            st.sampled_from(EDGE_FLOATS).map(MyFloat), st.integers(-(1 << 70), 1 << 70),
            st.sampled_from([1 << 1000, 1 << 1100, -(1 << 2000), Index(1 << 2000), Index(70000),
                             FloatOnly(1), FloatOnly("x"), IntOnly(1)]),
            wrong_type_values,
        )
    if code == "?":
        return st.just(Raises())
    if code == "c":
        return st.sampled_from([b"", b"ab", "a", 97, None, memoryview(b"a"), Raises()])
    if code in "sp":
        return st.sampled_from(["abc", "", 1, None, memoryview(b"ab"), [1], Raises()])
    raise AssertionError(code)


@st.composite
def pack_cases(draw, specs=None):
    """(FormatSpec, args). Most cases are valid; the rest have one bad value,
    a mix of good and bad values (so the order of checks matters), or one
    value too few or too many."""
    spec = draw(format_specs() if specs is None else specs)
    slots = []  # (code, count of its item) per value
    for count, code in spec.items:
        if code in "sp":
            slots.append((code, count))
        elif code != "x":
            slots.extend([(code, None)] * (1 if count is None else count))
    mode = draw(st.sampled_from(["valid"] * 5 + ["one-bad", "one-bad", "mixed", "count"]))
    bad = draw(st.integers(0, len(slots) - 1)) if mode == "one-bad" and slots else None
    args = []
    for i, (code, count) in enumerate(slots):
        valid = valid_values_for(code, spec.prefix, count)
        invalid = invalid_values_for(code, spec.prefix)
        if i == bad:
            args.append(draw(invalid))
        elif mode == "mixed":
            args.append(draw(st.one_of(valid, valid, invalid)))
        else:
            args.append(draw(valid))
    if mode == "count":
        if args and draw(st.booleans()):
            del args[draw(st.integers(0, len(args) - 1))]
        else:
            args.insert(draw(st.integers(0, len(args))), draw(st.sampled_from([0, 1.0, b"x", True])))
    return spec, tuple(args)


# --------------------------------------------------------------------------
# Buffers


READABLE_KINDS = (
    "bytes", "bytearray", "memoryview", "memoryview-bytearray", "readonly-memoryview",
    "array-B", "array-b", "array-H", "mmap", "memoryview-cast-2d", "bytes-subclass",
)
WRITABLE_KINDS = ("bytearray", "memoryview-bytearray", "array-B", "array-H", "mmap")
UNUSABLE_KINDS = ("noncontiguous", "str", "int", "none", "list")
READONLY_KINDS = ("bytes", "memoryview", "readonly-memoryview", "readonly-mmap", "bytes-subclass")


@dataclass(frozen=True)
class BufferMaker:
    """Builds a fresh buffer of a given kind holding data, so the stdlib and
    fastwire each get their own (pack_into writes into it)."""

    kind: str
    data: bytes

    def make(self):
        data, kind = self.data, self.kind
        if kind == "bytes":
            return bytes(data)
        if kind == "bytes-subclass":
            return MyBytes(data)
        if kind == "bytearray":
            return bytearray(data)
        if kind == "memoryview":
            return memoryview(bytes(data))
        if kind == "memoryview-bytearray":
            return memoryview(bytearray(data))
        if kind == "readonly-memoryview":
            return memoryview(bytearray(data)).toreadonly()
        if kind in ("array-B", "array-b", "array-H"):
            return array.array(kind[-1], data)
        if kind in ("mmap", "readonly-mmap"):
            m = mmap.mmap(-1, len(data))
            m[:] = data
            if kind == "readonly-mmap":
                # An anonymous mapping can't be reopened read-only; a read-only
                # memoryview of it is the same read-only buffer to struct.
                return memoryview(m).toreadonly()
            return m
        if kind == "memoryview-cast-2d":
            return memoryview(bytearray(data)).cast("B", (1, len(data))) if data else memoryview(b"")
        if kind == "noncontiguous":
            doubled = bytearray(len(data) * 2 + 2)
            doubled[::2] = data + b"\0"
            return memoryview(doubled)[::2]
        if kind == "str":
            return data.decode("latin-1")
        if kind == "int":
            return len(data)
        if kind == "none":
            return None
        if kind == "list":
            return list(data)
        raise AssertionError(kind)

    @staticmethod
    def contents(buf):
        """The bytes a buffer holds now (after pack_into wrote into it)."""
        if isinstance(buf, array.array):
            return buf.tobytes()
        if isinstance(buf, mmap.mmap):
            return buf[:]
        return bytes(buf)


def buffer_makers(data, kinds):
    """Strategy of BufferMakers over data (adjusted so every kind can hold it)."""

    def fit(kind):
        payload = data
        if kind == "array-H" and len(payload) % 2:
            payload += b"\0"
        if kind in ("mmap", "readonly-mmap") and not payload:
            kind = "bytearray" if kind == "mmap" else "bytes"
        return BufferMaker(kind, payload)

    return st.sampled_from(kinds).map(fit)


# --------------------------------------------------------------------------
# The oracle, with the stdlib's known bugs corrected


def native_f_overflows(value):
    """True when value converts to a finite double that float32 cannot hold.

    The stdlib's standard-size 'f' refuses such a value; its native 'f' on
    3.11-3.13 casts to float and silently packs inf (gh-145633).
    """
    as_double = outcome(lambda: std.pack("<d", value))
    if as_double[0] != "ok":
        return False
    x = std.unpack("<d", as_double[1][1])[0]
    return math.isfinite(x) and outcome(lambda: std.pack("<f", x)) == ("raise", OverflowError)


def corrected_value_error(prefix, code, value):
    """The exception type packing value for code should raise where the
    stdlib's answer is known to be wrong, else None.

    * gh-145633 (3.11-3.13): native 'f' packs inf for a finite value float32
      cannot hold; correct is what standard-size 'f' raises for it
      (OverflowError, or struct.error "int too large to convert" for an int).
    * gh-98248 (3.11, fixed in 3.12): an out-of-range __index__ object (not
      an int) for 'q'/'Q' in the non-native byte order ('>', '!' on this
      little-endian host) raises OverflowError where every other integer code
      and byte order raises struct.error.
    """
    if code == "f" and prefix in ("", "@") and native_f_overflows(value):
        return outcome(lambda: std.pack("<f", value))[1]
    if code in "qQ" and prefix in (">", "!") and sys.byteorder == "little" and not isinstance(value, int) \
            and outcome(lambda: std.pack(prefix + code, value)) == ("raise", OverflowError) \
            and outcome(lambda: std.pack("<" + code, value)) == ("raise", std.error):
        return std.error
    return None


def first_value_correction(spec, args):
    """The corrected exception type for the first value of args that the
    stdlib packs wrongly, provided no value before it fails; else None."""
    if len(args) != len(spec.value_codes()):
        return None
    for code, value in zip(spec.value_codes(), args):
        corrected = corrected_value_error(spec.prefix, code, value)
        if corrected is not None:
            return corrected
        single = ("@" if code in NATIVE_ONLY_CODES else spec.prefix) + code
        if outcome(lambda: std.pack(single, value))[0] == "raise":
            return None
    return None


def expected_pack_outcome(call, spec, args):
    """The correct outcome of call(module, format, args), from the stdlib.

    call may pack through any entry point (pack, pack_into, Struct.pack...).
    The stdlib is asked about spec.oracle_text (see oracle_format), and its
    answer is corrected where it packs a value wrongly
    (corrected_value_error): when every check that precedes value conversion
    passes (the call succeeds with neutral values) and no value before the
    wrongly packed one fails, the outcome is the corrected exception.
    """
    fmt = spec.oracle_text
    correction = first_value_correction(spec, args)
    if correction is not None and outcome(lambda: call(std, fmt, spec.neutral_values()))[0] == "ok":
        return ("raise", correction)
    return outcome(lambda: call(std, fmt, args))
