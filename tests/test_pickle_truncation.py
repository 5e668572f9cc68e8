"""Every valid pickle cut short: fastwire raises a clean error exactly where
the stdlib does, of the same type, from memory and from every kind of file."""

import io
import pickle

import pytest

from fastwire import pickle as fwpickle
from tests.support import pickle_catalogue as cat
from tests.support.pickle_catalogue import ReadReadlineOnly, outcome

# Small pickles are cut at every byte; large ones at a stride plus the bytes
# around every frame header, which is where a file reader changes buffers.
EVERY_BYTE_LIMIT = 2000
SAMPLED_CUTS = 40


def _cuts(data):
    if len(data) <= EVERY_BYTE_LIMIT:
        return range(len(data))
    cuts = set(range(0, len(data), len(data) // SAMPLED_CUTS))
    pos = data.find(b"\x95")
    while pos != -1:
        cuts.update(range(max(pos - 2, 0), min(pos + 12, len(data))))
        pos = data.find(b"\x95", pos + 1)
    return sorted(cuts)


SOURCES = {
    "bytes": lambda data: data,
    "BytesIO": io.BytesIO,
    "BufferedReader": lambda data: io.BufferedReader(io.BytesIO(data), 256),
    "read/readline only": ReadReadlineOnly,
}


def _loader(module, source):
    if source == "bytes":
        return module.loads
    return lambda data: module.load(SOURCES[source](data))


# Files without peek() are read one opcode at a time by both libraries, so the
# 200-300 kB pickles are cut only in memory and through a BufferedReader. The
# pickles past 400 kB (the writer's "large bytes", a protocol 0 bytearray) are
# left out: every cut reloads the whole prefix, and a bytes(range(256)) payload
# holds a FRAME opcode byte every 256 bytes, each of which adds its own cuts.
SLOW_SOURCES = ("BytesIO", "read/readline only")
SIZE_LIMIT = 400_000
CASES = [(name, proto, data, source) for name, proto, data in cat.pickles()
         if len(data) < SIZE_LIMIT
         for source in SOURCES if len(data) < 50_000 or source not in SLOW_SOURCES]


@pytest.mark.parametrize("name,proto,data,source", CASES,
                         ids=[f"{n}-p{p}-{s}" for n, p, _, s in CASES])
def test_truncated_pickle_fails_like_stdlib(name, proto, data, source):
    std_load, fw_load = _loader(pickle, source), _loader(fwpickle, source)
    mismatches = []
    for cut in _cuts(data):
        piece = data[:cut]
        expected = outcome(lambda: std_load(piece))
        got = outcome(lambda: fw_load(piece))
        if got != expected:
            mismatches.append((cut, expected, got))
    assert not mismatches[:5]


def test_truncation_errors_are_the_stdlib_types():
    data = pickle.dumps("a string", 2)  # no frame: cuts reach the opcodes
    with pytest.raises(EOFError):
        fwpickle.loads(b"")
    with pytest.raises(pickle.UnpicklingError, match="truncated"):
        fwpickle.loads(data[:10])  # inside the string's bytes
    with pytest.raises(EOFError):
        fwpickle.loads(data[:-1])  # right before STOP: no opcode left
    with pytest.raises(pickle.UnpicklingError, match="truncated"):
        fwpickle.loads(pickle.dumps(data, 5)[:-4])  # inside a frame


def test_regression_empty_bytes_at_end_of_input_is_truncation_like_stdlib():
    """The stdlib's in-memory reader reports a zero-length SHORT_BINBYTES that
    ends the input as truncated (it asks the missing file for 0 bytes);
    fastwire gives the same error rather than a different exception type."""
    data = b"\x80\x03C\x00"
    with pytest.raises(pickle.UnpicklingError):
        pickle.loads(data)
    with pytest.raises(pickle.UnpicklingError):
        fwpickle.loads(data)
    with pytest.raises(EOFError):
        pickle.load(io.BytesIO(data))
    with pytest.raises(EOFError):
        fwpickle.load(io.BytesIO(data))


def test_truncated_stream_does_not_hang_on_a_socket():
    import socket
    import threading

    left, right = socket.socketpair()
    data = pickle.dumps(list(range(1000)), 5)

    def send():
        with left:
            left.sendall(data[: len(data) // 2])

    sender = threading.Thread(target=send)
    sender.start()
    try:
        with right, right.makefile("rb") as stream, pytest.raises(pickle.UnpicklingError):
            fwpickle.load(stream)
    finally:
        sender.join()
