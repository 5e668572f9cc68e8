"""Fuzz fastwire.pickle.Unpickler reading a stream of pickles from a file object.

Input: a control byte, then the stream. The control byte picks the file kind
(io.BytesIO, a real file on disk, a minimal object with only read/readline,
one with readinto and peek), the mode as in fuzz_pickle_loads.py and the str8
encoding. ``load()`` is called until the first error (at most 8 times); every
call must match the standard library's Unpickler on the same stream, and so
must the file position afterwards (an unpickler reads no byte past its pickle
on a file it cannot peek into).
"""

import contextlib
import io
import os
import tempfile

import _harness
import _pickle_oracle as oracle

fw_pickle = _harness.import_fastwire_part("pickle")
HarmlessFastwireUnpickler = oracle.make_fastwire_harmless_unpickler(fw_pickle)
MAX_LOADS = 8


class ReadOnlyFile:
    """The least a file object can offer the Unpickler: read and readline."""

    def __init__(self, data):
        self._stream = io.BytesIO(data)

    def read(self, n=-1):
        return self._stream.read(n)

    def readline(self):
        return self._stream.readline()

    def tell(self):
        return self._stream.tell()


class PeekingFile(ReadOnlyFile):
    def readinto(self, buffer):
        return self._stream.readinto(buffer)

    def peek(self, n=0):
        position = self._stream.tell()
        chunk = self._stream.read(max(n, 1))
        self._stream.seek(position)
        return chunk


_scratch = tempfile.TemporaryFile()  # noqa: SIM115 - reused by every input, closed at exit


def open_stream(kind, data):
    if kind == 0:
        return io.BytesIO(data)
    if kind == 1:
        _scratch.seek(0)
        _scratch.truncate()
        _scratch.write(data)
        _scratch.flush()
        return os.fdopen(os.dup(_scratch.fileno()), "rb", buffering=0)
    if kind == 2:
        return ReadOnlyFile(data)
    return PeekingFile(data)


def opened(kind, data):
    """A context manager for the stream (only the real file needs closing)."""
    f = open_stream(kind, data)
    return f if kind == 1 else contextlib.nullcontext(f)


def load_all(make_unpickler, file):
    results = []
    unpickler = make_unpickler(file)
    for _ in range(MAX_LOADS):
        result = _harness.outcome(unpickler.load)
        results.append(result)
        if result[0] == "error":
            break
    return results, file.tell()


def test_one_input(data):
    if not data:
        return
    kind = data[0] % 4
    mode = (data[0] >> 2) % 3
    encoding, errors = oracle.ENCODINGS[(data[0] >> 4) % len(oracle.ENCODINGS)]
    stream = data[1:]

    try:
        oracle.refuse_amplification(stream)
    except oracle.KnownAmplification:
        return

    def std_unpickler(file):
        return oracle.oracle_unpickler(mode, file, encoding, errors)

    def fw_unpickler(file):
        return oracle.fastwire_unpickler(fw_pickle, HarmlessFastwireUnpickler, mode, file, encoding, errors)

    with opened(kind, stream) as f:
        expected, expected_pos = load_all(std_unpickler, f)
    if any(r[0] == "error" and isinstance(r[1], oracle.KnownAmplification) for r in expected):
        return
    with opened(kind, stream) as f:
        got, got_pos = load_all(fw_unpickler, f)

    where = f"kind={kind} mode={mode} encoding={encoding} stream={stream[:64]!r}"
    for i, (e, g) in enumerate(zip(expected, got)):
        if g[0] == "error":
            _harness.check_clean_error(g[1], where)
        if e[0] != g[0] or (e[0] == "ok" and not _harness.same_value(e[1], g[1])):
            raise AssertionError(f"{where}: load #{i}: stdlib {e!r}, fastwire {g!r}")
    if len(expected) != len(got):
        raise AssertionError(f"{where}: stdlib made {len(expected)} loads, fastwire {len(got)}")
    if expected[-1][0] == "ok" and expected_pos != got_pos:
        raise AssertionError(f"{where}: file left at {got_pos}, stdlib leaves it at {expected_pos}")


if __name__ == "__main__":
    _harness.main(test_one_input)
