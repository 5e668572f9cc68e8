"""What fastwire.pickle is compared with: the standard library's Unpickler,
restricted the way fastwire's documentation says it restricts, and the
harmless-types-only find_class the full-mode targets install on both sides."""

import collections
import datetime
import decimal
import io
import pickle as std_pickle

# Restricted mode (allowed=()): only what pickles of the builtin value types
# reference (complex, bytearray, set, frozenset; bytes in protocols 0-2 go
# through _codecs.encode). Protocol 0-2 names (__builtin__) are mapped by fix_imports.
VALUE_GLOBALS = {
    ("builtins", "complex"), ("builtins", "bytearray"), ("builtins", "set"),
    ("builtins", "frozenset"), ("_codecs", "encode"),
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


def guarded_bytearray(*args):
    if args and not isinstance(args[0], (bytes, bytearray, str)):
        try:
            size = int(args[0])
        except Exception:
            size = 0
        if size > AMPLIFICATION_LIMIT:
            raise KnownAmplification(f"bytearray({size}) from a pickle")
    return bytearray(*args)


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
        return harmless[module, name]
    except KeyError:
        raise std_pickle.UnpicklingError(f"global '{module}.{name}' is not harmless") from None


def _codecs_encode():
    import _codecs
    return _codecs.encode


class RestrictedStdUnpickler(std_pickle.Unpickler):
    def __init__(self, file, allowed_globals, **kwargs):
        super().__init__(file, **kwargs)
        self.allowed_globals = allowed_globals

    def find_class(self, module, name):
        if (module, name) not in self.allowed_globals:
            raise std_pickle.UnpicklingError(f"global '{module}.{name}' is not allowed")
        if (module, name) == ("builtins", "bytearray"):
            return guarded_bytearray
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
