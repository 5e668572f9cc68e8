"""load(file): how the unpickler reads a file, and what it does when the file's
read(), readinto() or peek() misbehave (short reads, too much data, re-entry).

Every case is judged against the stdlib's pickle.load on the same stream,
except where the stdlib is known wrong (the test says which upstream issue).
"""

from __future__ import annotations

import io
import os
import pickle
import threading

import pytest

import fastwire.pickle as fw

VALUES = [
    {"id": 12345, "name": "fastwire", "score": 3.25, "tags": ["a", "b"]},
    [b"x" * 300_000, "y" * 200_000, list(range(1000))],
    ("\u20ac" * 5000, 2 ** 200, None, True, 1.5),
]
PICKLES = [pickle.dumps(v, p) for v in VALUES for p in range(pickle.HIGHEST_PROTOCOL + 1)]


class Dribble(io.BytesIO):
    """A stream whose read() and readinto() return at most `most` bytes: what an
    unbuffered pipe or socket does. No peek(), as a raw stream has none."""

    def __init__(self, data, most):
        super().__init__(data)
        self.most = most

    def read(self, n=-1):
        return super().read(self.most if n < 0 else min(n, self.most))

    def readinto(self, b):
        with memoryview(b) as view:
            return super().readinto(view[:self.most])


@pytest.mark.parametrize("most", [1, 7, 4096])
@pytest.mark.parametrize("data", PICKLES, ids=range(len(PICKLES)))
def test_short_reads_load_the_whole_pickle(data, most):
    """gh-93050 ("pickle does not work with unbuffered streams"): the stdlib
    treats a short read() as truncation; fastwire reads on until the stream
    ends, and leaves the stream just past the pickle."""
    f = Dribble(data + b"tail", most)
    assert fw.load(f) == pickle.loads(data)
    assert f.getvalue()[f.tell():] == b"tail"


def test_short_reads_from_an_unbuffered_pipe():
    """gh-93050 with a real pipe: an unbuffered read() returns at most what the
    pipe holds (64 KiB on Linux), so every payload above that arrives short."""
    data = pickle.dumps(VALUES, 5) * 2
    r, w = os.pipe()
    writer = threading.Thread(target=_write_all, args=(w, data))
    writer.start()
    try:
        with open(r, "rb", buffering=0) as f:
            assert fw.load(f) == VALUES
            assert fw.load(f) == VALUES
            with pytest.raises(EOFError):
                fw.load(f)
    finally:
        writer.join(timeout=30)


def _write_all(fd, data):
    with open(fd, "wb", buffering=0) as f:
        view = memoryview(data)
        while view:
            view = view[f.write(view):]


class TooMuch(io.BytesIO):
    """read() hands back more than it was asked for (the rest of the stream)."""

    def read(self, n=-1):
        return super().read(-1 if n >= 0 else n)


@pytest.mark.parametrize("data", PICKLES, ids=range(len(PICKLES)))
def test_read_returning_more_than_asked_is_input_as_the_stdlib_takes_it(data):
    def outcome(load):
        try:
            return ("value", load(TooMuch(data + pickle.dumps("next"))))
        except Exception as exc:  # noqa: BLE001 - the stdlib's exception type is the oracle
            return ("raises", type(exc))
    assert outcome(fw.load) == outcome(pickle.load)


class ReadintoTooMuch(io.BytesIO):
    def readinto(self, b):
        n = super().readinto(b)
        return n + 100


def test_readinto_claiming_more_than_its_buffer_raises_cleanly():
    """A readinto() that reports more bytes than the buffer it was given must
    not make the unpickler use bytes past that buffer.

    Known difference: the stdlib asks for the whole payload in one readinto()
    and only checks that the count is not short, so it returns the payload;
    fastwire reads a large payload in chunks that grow with what has arrived
    and places each chunk by the previous count, so an impossible count is a
    ValueError rather than a guess."""
    data = pickle.dumps(b"p" * (3 << 20), 4)
    assert pickle.load(ReadintoTooMuch(data)) == b"p" * (3 << 20)
    with pytest.raises(ValueError, match="more bytes than the buffer"):
        fw.load(ReadintoTooMuch(data))


class LoadsFromRead(io.BytesIO):
    """read() (and peek()) run a whole load() of another stream, with other
    options, while the outer load() holds the shared decoder."""

    def __init__(self, data, inner):
        super().__init__(data)
        self.inner = inner
        self.results = []

    def _inner(self):
        self.results.append(fw.load(io.BytesIO(self.inner), encoding="bytes"))
        self.results.append(fw.load(io.BufferedReader(io.BytesIO(self.inner))))

    def read(self, n=-1):
        self._inner()
        return super().read(n)

    def peek(self, n=0):
        self._inner()
        pos = self.tell()
        data = super().read(n)
        self.seek(pos)
        return data


@pytest.mark.parametrize("data", [pickle.dumps(VALUES, 5), pickle.dumps(VALUES[0], 0)])
def test_file_read_calls_load_here(data):
    inner = pickle.dumps({"inner": [1, 2]}, 2)
    f = LoadsFromRead(data, inner)
    assert fw.load(f) == pickle.loads(data)
    assert f.results and all(r == {"inner": [1, 2]} for r in f.results)
    # The nested loads left no options behind: a default load still decodes
    # str as str.
    assert fw.load(io.BytesIO(pickle.dumps("s", 0))) == "s"


def test_options_of_one_load_do_not_leak_into_the_next():
    py2_str = b"U\x04caf\xe9q\x00."  # Python 2 SHORT_BINSTRING, latin-1 text
    assert fw.load(io.BytesIO(py2_str), encoding="latin1") == pickle.load(io.BytesIO(py2_str), encoding="latin1")
    assert fw.load(io.BytesIO(py2_str), encoding="bytes") == b"caf\xe9"
    with pytest.raises(UnicodeDecodeError):
        pickle.load(io.BytesIO(py2_str))
    with pytest.raises(UnicodeDecodeError):
        fw.load(io.BytesIO(py2_str))


def test_back_to_back_pickles_from_a_buffered_reader():
    """load() peeks at a BufferedReader and then reads exactly what it decoded,
    so pickles written back to back load one per call."""
    stream = b"".join(pickle.dumps(v, p) for v in VALUES for p in (2, 5)) + b"rest"
    f = io.BufferedReader(io.BytesIO(stream), 8192)
    assert [fw.load(f) for _ in range(2 * len(VALUES))] == [v for v in VALUES for _ in (2, 5)]
    assert f.read() == b"rest"
