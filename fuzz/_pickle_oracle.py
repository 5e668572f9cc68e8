"""What fastwire.pickle is compared with: the standard library's Unpickler,
restricted the way fastwire's documentation says it restricts, and the
harmless-types-only find_class the full-mode targets install on both sides."""

import _compat_pickle
import codecs
import collections
import copyreg
import datetime
import decimal
import io
import pickle as std_pickle
import pickletools
import re

# Restricted mode (allowed=()): the builtin value types' constructors (pickles
# of complex, bytearray and sets call them; bytes in protocols 0-2 go through
# _codecs.encode; instances below protocol 2 through copyreg._reconstructor).
# Protocol 0-2 names (__builtin__) are mapped by fix_imports. This mirrors the
# documented set in src/_fastwire/pickle_read.pxi.
VALUE_TYPES = (bool, int, float, complex, str, bytes, bytearray, list, tuple,
               dict, set, frozenset, object)
VALUE_GLOBALS = {("builtins", t.__name__) for t in VALUE_TYPES} | {
    ("_codecs", "encode"), ("copyreg", "_reconstructor"),
}
ALLOW_LIST = ["collections.OrderedDict", datetime.datetime, datetime.date,
              datetime.timedelta, "decimal.Decimal"]
ALLOW_LIST_GLOBALS = VALUE_GLOBALS | {
    ("collections", "OrderedDict"), ("datetime", "datetime"), ("datetime", "date"),
    ("datetime", "timedelta"), ("decimal", "Decimal"),
}

# A bytearray of N bytes costs a pickle ~10 bytes: an allocation sized by an
# untrusted number (see fuzz/crashes/README.md, "restricted bytearray").
# Past this size the oracle refuses and the targets do not hand the input to
# fastwire, so a fuzz run cannot exhaust the machine on a known issue.
AMPLIFICATION_LIMIT = 1 << 20


class KnownAmplification(Exception):
    """The input asks for a large allocation from a small size field (known issue)."""


MEMO_PUTS = {"PUT", "BINPUT", "LONG_BINPUT"}


def refuse_amplification(stream):
    """Raise KnownAmplification if a counted field (BINBYTES, BYTEARRAY8, ...)
    declares far more bytes than the stream holds, or a memo index is huge.

    F3 (see fuzz/crashes/README.md): CPython 3.11-3.13's _pickle allocates a
    bytes/bytearray of the declared size before reading it, so the stdlib
    oracle itself (and the stdlib-backed interim facade) would allocate
    gigabytes for an 8-byte input. pickletools reads the same fields without
    allocating them, so it can tell such inputs apart beforehand.
    """
    f = io.BytesIO(stream)
    while f.tell() < len(stream):
        start = f.tell()
        try:
            for opcode, arg, _ in pickletools.genops(f):
                # F4: the stdlib sizes its memo table by the largest PUT index
                # (a 20-byte pickle reached 12 GB resident).
                if opcode.name in MEMO_PUTS and int(arg) > AMPLIFICATION_LIMIT // 8:
                    raise KnownAmplification(f"{opcode.name} {arg} grows the memo table")
        except ValueError as exc:
            declared = re.search(r"expected (\d+) bytes", str(exc))
            if declared and int(declared.group(1)) > AMPLIFICATION_LIMIT:
                raise KnownAmplification(f"counted field declares {declared.group(1)} bytes") from None
            return
        if f.tell() == start:
            return


def guarded_bytearray(*args):
    if args and not isinstance(args[0], (bytes, bytearray, str)):
        try:
            size = int(args[0])
        except Exception:
            size = 0
        if size > AMPLIFICATION_LIMIT:
            raise KnownAmplification(f"bytearray({size}) from a pickle")
    return bytearray(*args)


# Restricted mode calls _codecs.encode only the way pickles of bytes do
# (protocols 0-2): a str and one of the codecs built into the interpreter, so a
# hostile pickle cannot make a codec lookup import an encodings.* module.
SAFE_CODECS = frozenset({"latin1", "latin-1", "ascii", "utf-8", "utf8"})


def guarded_codecs_encode(*args):
    if len(args) != 2 or type(args[0]) is not str or type(args[1]) is not str \
            or args[1] not in SAFE_CODECS:
        raise std_pickle.UnpicklingError("_codecs.encode refused")
    return codecs.encode(*args)


def guarded_reconstructor(cls, base, state):
    # Restricted mode builds instances only of allowed classes, on a value-type base.
    if not isinstance(cls, type) or not (base is object or base in VALUE_TYPES):
        raise std_pickle.UnpicklingError("copyreg._reconstructor refused")
    return copyreg._reconstructor(cls, base, state)


def harmless_find_class(module, name):
    """The find_class of the full-mode targets (installed on both sides)."""
    harmless = {
        ("builtins", "complex"): complex, ("builtins", "set"): set,
        ("builtins", "frozenset"): frozenset, ("builtins", "bytearray"): guarded_bytearray,
        ("builtins", "slice"): slice, ("_codecs", "encode"): _codecs_encode(),
        ("collections", "OrderedDict"): collections.OrderedDict,
        ("datetime", "datetime"): datetime.datetime, ("datetime", "date"): datetime.date,
        ("datetime", "time"): datetime.time, ("datetime", "timedelta"): datetime.timedelta,
        ("datetime", "timezone"): datetime.timezone, ("decimal", "Decimal"): decimal.Decimal,
    }
    try:
        return harmless[python3_name(module, name)]
    except KeyError:
        raise std_pickle.UnpicklingError(f"global '{module}.{name}' is not harmless") from None


def _codecs_encode():
    import _codecs
    return _codecs.encode


def python3_name(module, name):
    """The name a protocol 0-2 pickle's global has in Python 3 (fix_imports)."""
    if (module, name) in _compat_pickle.NAME_MAPPING:
        return _compat_pickle.NAME_MAPPING[module, name]
    return _compat_pickle.IMPORT_MAPPING.get(module, module), name


class RestrictedStdUnpickler(std_pickle.Unpickler):
    def __init__(self, file, allowed_globals, **kwargs):
        super().__init__(file, **kwargs)
        self.allowed_globals = allowed_globals

    def find_class(self, module, name):
        # The check applies to the Python 3 name; the stdlib maps it again
        # (only for protocol < 3) in super().find_class.
        if python3_name(module, name) not in self.allowed_globals:
            raise std_pickle.UnpicklingError(f"global '{module}.{name}' is not allowed")
        if python3_name(module, name) == ("builtins", "bytearray"):
            return guarded_bytearray
        if python3_name(module, name) == ("copyreg", "_reconstructor"):
            return guarded_reconstructor
        if python3_name(module, name) == ("_codecs", "encode"):
            return guarded_codecs_encode
        return super().find_class(module, name)


class HarmlessStdUnpickler(std_pickle.Unpickler):
    def find_class(self, module, name):
        return harmless_find_class(module, name)


def make_fastwire_harmless_unpickler(fw_pickle):
    class HarmlessFastwireUnpickler(fw_pickle.Unpickler):
        def find_class(self, module, name):
            return harmless_find_class(module, name)
    return HarmlessFastwireUnpickler


ENCODINGS = [("ASCII", "strict"), ("latin1", "strict"), ("bytes", "strict"), ("utf-8", "replace")]


def oracle_unpickler(mode, file, encoding, errors):
    """mode 0: restricted, 1: allow-list, 2: harmless find_class."""
    kwargs = dict(encoding=encoding, errors=errors)
    if mode == 0:
        return RestrictedStdUnpickler(file, VALUE_GLOBALS, **kwargs)
    if mode == 1:
        return RestrictedStdUnpickler(file, ALLOW_LIST_GLOBALS, **kwargs)
    return HarmlessStdUnpickler(file, **kwargs)


def fastwire_unpickler(fw_pickle, harmless_cls, mode, file, encoding, errors):
    kwargs = dict(encoding=encoding, errors=errors)
    if mode == 0:
        return fw_pickle.Unpickler(file, allowed=(), **kwargs)
    if mode == 1:
        return fw_pickle.Unpickler(file, allowed=ALLOW_LIST, **kwargs)
    return harmless_cls(file, **kwargs)


def std_loads(mode, data, encoding, errors):
    return oracle_unpickler(mode, io.BytesIO(data), encoding, errors).load()


# A tuple subclass an allow-list can name: calls whose argument tuple is one of
# these must be checked like calls with a plain tuple.
Pair = collections.namedtuple("Pair", "first second")
