"""Plumbing shared by the fuzz targets in this directory.

Every target is a script with a ``test_one_input(data: bytes)`` function and
ends with ``_harness.main(test_one_input)``. It then runs in one of two ways:

* under atheris (coverage-guided, libFuzzer flags such as ``-runs=``,
  ``-max_total_time=``, ``-seed=`` and corpus directories are passed through);
* ``--replay PATH...`` without atheris: every file (or every file in every
  directory) is run once, in name order. This is how the seed corpora and the
  reproducers in ``fuzz/crashes/`` are checked on a Python where atheris cannot
  be installed.

A target signals a finding by raising (an ``AssertionError`` for a
differential mismatch) or by crashing the process; an input that makes both
the oracle and fastwire fail cleanly is a pass.
"""

import gc
import math
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
# The oracles are shared with the tests (tests/support/); appended, not
# prepended, so that the fastwire under test still comes from sys.path.
if ROOT not in sys.path:
    sys.path.append(ROOT)


def load_atheris():
    """Import atheris before fastwire, or return None if it is not installed.

    The fuzz build of the extension (scripts/sanitize-build --fuzz) calls
    libFuzzer's coverage hooks. Under scripts/sanitize-run --fuzz they come
    from the preloaded runtime; without it, loading atheris (and its built-in
    libFuzzer) with RTLD_GLOBAL is what lets the extension find them.
    """
    flags = sys.getdlopenflags()
    sys.setdlopenflags(flags | os.RTLD_GLOBAL)
    try:
        import atheris
    except ImportError:
        return None
    finally:
        sys.setdlopenflags(flags)
    return atheris


atheris = load_atheris()


def import_fastwire_part(name):
    """Import fastwire.<name>, instrumented for coverage when fuzzing with atheris."""
    import importlib

    fuzzing = os.path.basename(sys.argv[0]).startswith("fuzz_") and "--replay" not in sys.argv
    if atheris is not None and fuzzing:
        with atheris.instrument_imports(include=["fastwire"]):
            return importlib.import_module(f"fastwire.{name}")
    return importlib.import_module(f"fastwire.{name}")


class Input:
    """Deterministic decoding of a fuzz input into the choices a target makes.

    The same bytes always make the same choices, with or without atheris, so a
    crash file replays exactly. Reading past the end yields zeros / b"".
    """

    def __init__(self, data):
        self.data = data
        self.pos = 0

    def byte(self):
        if self.pos >= len(self.data):
            return 0
        self.pos += 1
        return self.data[self.pos - 1]

    def uint(self, nbytes):
        return int.from_bytes(self.take(nbytes).ljust(nbytes, b"\0"), "little")

    def take(self, n):
        chunk = self.data[self.pos:self.pos + n]
        self.pos += len(chunk)
        return chunk

    def rest(self):
        return self.take(len(self.data) - self.pos)


def same_value(a, b, _seen=None):
    """Deep equality for decoded values: types must match exactly, NaNs equal
    themselves, and shared or self-referencing containers are compared by shape
    (pickles can build cycles through the memo)."""
    if type(a) is not type(b):
        return False
    if a is b:
        return True
    if isinstance(a, float):
        return (math.isnan(a) and math.isnan(b)) or (a == b and math.copysign(1, a) == math.copysign(1, b))
    if isinstance(a, complex):
        return same_value(a.real, b.real) and same_value(a.imag, b.imag)
    if isinstance(a, (list, tuple, dict, set, frozenset)) or hasattr(a, "__dict__"):
        if _seen is None:
            _seen = {}
        key = (id(a), id(b))
        if key in _seen:
            return True
        _seen[key] = (a, b)  # keep both alive so ids are not reused
        if isinstance(a, (list, tuple)):
            return len(a) == len(b) and all(same_value(x, y, _seen) for x, y in zip(a, b))
        if isinstance(a, dict):
            return (len(a) == len(b) and list(map(repr_key, a)) == list(map(repr_key, b))
                    and all(same_value(a[k], b[k], _seen) for k in a))
        if isinstance(a, (set, frozenset)):
            return a == b
        return same_value(vars(a), vars(b), _seen)
    try:
        if a == b:
            return True
    except Exception:
        pass
    return repr(a) == repr(b)  # e.g. Decimal('NaN'), which equals nothing


def repr_key(key):
    return (type(key).__name__, repr(key))


def outcome(fn, *args, **kwargs):
    """('ok', value) or ('error', exception) for one call."""
    try:
        return "ok", fn(*args, **kwargs)
    except Exception as exc:  # noqa: BLE001 - classifying is the point
        return "error", exc


def check_clean_error(exc, where):
    """A rejection must be an ordinary exception, never a sign of a broken C
    invariant (SystemError: a NULL return without an exception, or the reverse)."""
    if isinstance(exc, SystemError):
        raise AssertionError(f"{where}: SystemError means a broken C-API contract: {exc!r}") from exc


def instrument_own_code():
    """Python-level coverage for the targets, their oracles and the fastwire
    facade (not all of the stdlib: atheris.instrument_all takes minutes on a
    sanitizer build). The extension's own (C) coverage comes from the fuzz
    build's counters."""
    import inspect

    def ours(module):
        path = getattr(module, "__file__", None) or ""
        return path.startswith(HERE) or os.sep + "fastwire" + os.sep in path

    for module in [m for m in list(sys.modules.values()) if m is not None and ours(m)]:
        for obj in list(vars(module).values()):
            functions = [obj] if inspect.isfunction(obj) else []
            if inspect.isclass(obj) and obj.__module__ == module.__name__:
                functions += [f for f in vars(obj).values() if inspect.isfunction(f)]
            for function in functions:
                if function.__module__ == module.__name__:
                    atheris.instrument_func(function)


def replay(test_one_input, paths):
    files = []
    for path in paths:
        if os.path.isdir(path):
            files += sorted(os.path.join(path, name) for name in os.listdir(path)
                            if not name.startswith(".") and not name.endswith(".md"))
        else:
            files.append(path)
    for path in files:
        with open(path, "rb") as f:
            data = f.read()
        try:
            test_one_input(data)
            # A reference-count bug shows as a crash in the collector; make it
            # show at the input that caused it.
            gc.collect()
        except BaseException:
            print(f"FAILED on {path}", file=sys.stderr, flush=True)
            raise
    print(f"replayed {len(files)} inputs through {os.path.basename(sys.argv[0])}: all passed", flush=True)


def main(test_one_input):
    args = sys.argv[1:]
    if args and args[0] == "--replay":
        replay(test_one_input, args[1:])
        return
    if atheris is None:
        sys.exit(f"atheris is not installed for Python {sys.version.split()[0]} "
             "(pip install '.[fuzz]'); use --replay PATH to run a corpus without it")
    instrument_own_code()
    last_input = os.environ.get("FASTWIRE_FUZZ_LAST_INPUT")
    if last_input:
        # A crash that kills the process before libFuzzer can write the input
        # (a wild jump, a stack overflow) still leaves it here.
        target = test_one_input

        def test_one_input(data):
            with open(last_input, "wb") as f:
                f.write(data)
            target(data)
    atheris.Setup([sys.argv[0]] + args, test_one_input)
    atheris.Fuzz()
