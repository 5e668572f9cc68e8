"""Out-of-band (PEP 574) messages over fastwire.net.

``out_of_band=True`` makes send() set PickleBuffers aside and send each as a
frame of its own after a manifest frame (fastwire/_protocol.py's format);
every Connection receives such messages, within max_frame_size, max_buffers
and max_message_size. The oracle is the standard library's pickle with a
buffer_callback and ``loads(..., buffers=)``; peers are real sockets and real
processes, hostile ones are raw sockets writing bytes by hand.
"""

from __future__ import annotations

import os
import pickle
import socket
import struct
import subprocess
import sys
import threading
import tracemalloc
from multiprocessing import connection as std_connection

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from fastwire import net
from fastwire._fastwire import receive_buffer_pool
from fastwire._protocol import (
    DEFAULT_MAX_BUFFERS,
    DEFAULT_MAX_MESSAGE_SIZE,
    OOB_MAGIC,
    manifest,
    parse_manifest,
)
from fastwire.frames import FrameError, FrameTooLarge

np = pytest.importorskip("numpy")

MiB = 1024 * 1024


def frame(payload):
    return struct.pack("!i", len(payload)) + payload


def oob_message(obj):
    """The wire bytes of `obj` as an out-of-band message, built from the
    standard library's pickle and _protocol.manifest (the documented format)."""
    buffers = []
    stream = pickle.dumps(obj, 5, buffer_callback=buffers.append)
    raws = [b.raw() for b in buffers]
    out = frame(manifest(raws) + stream)
    for raw in raws:
        out += frame(bytes(raw))
    return out


def manifest_frame(entries, stream=b"\x80\x05N.", version=1, magic=OOB_MAGIC, count=None):
    """A hand-made manifest frame: `entries` as (flags, size) pairs."""
    head = struct.pack("!4sBI", magic, version, len(entries) if count is None else count)
    head += b"".join(struct.pack("!BQ", flags, size) for flags, size in entries)
    return frame(head + stream)


def read_exactly(sock, n):
    """`n` bytes read from the raw socket `sock` (blocking)."""
    data = bytearray()
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        assert chunk, "peer closed"
        data += chunk
    return bytes(data)


def read_frames(sock, count):
    """`count` frames read from the raw socket `sock` (blocking)."""
    frames = []
    for _ in range(count):
        (n,) = struct.unpack("!i", read_exactly(sock, 4))
        if n == -1:
            (n,) = struct.unpack("!Q", read_exactly(sock, 8))
        frames.append(read_exactly(sock, n))
    return frames


@pytest.fixture
def pipe():
    a, b = net.Pipe(out_of_band=True, trusted=True)
    yield a, b
    a.close()
    b.close()


@pytest.fixture
def raw_peer():
    """(raw socket, fastwire Connection) over a socketpair: the raw end writes
    whatever a hostile peer would."""
    left, right = socket.socketpair()
    conn = net.Connection(right, trusted=True)
    yield left, conn
    left.close()
    conn.close()


def in_thread(fn, *args):
    """Run fn(*args) in a thread (a sender that may block on a full socket); join() it."""
    errors = []

    def run():
        try:
            fn(*args)
        except BaseException as exc:  # noqa: BLE001 - reported by join()
            errors.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()

    class Joined:
        def join(self):
            thread.join(60)
            assert not thread.is_alive()
            if errors:
                raise errors[0]
    return Joined()


def stdlib_round_trip(obj):
    buffers = []
    data = pickle.dumps(obj, 5, buffer_callback=buffers.append)
    return pickle.loads(data, buffers=buffers)


def assert_same(got, expected):
    """Equal values, and for arrays the same dtype, shape, order and writability;
    for raw buffers, the same bytes and read-only flag."""
    if isinstance(expected, np.ndarray):
        assert type(got) is np.ndarray
        assert got.dtype == expected.dtype and got.shape == expected.shape
        assert got.flags.c_contiguous == expected.flags.c_contiguous
        assert got.flags.f_contiguous == expected.flags.f_contiguous
        assert got.flags.writeable == expected.flags.writeable
        assert np.array_equal(got, expected)
    elif isinstance(expected, (pickle.PickleBuffer, memoryview)):
        got_view, expected_view = memoryview(got), memoryview(expected)
        assert got_view.readonly == expected_view.readonly
        assert got_view.tobytes() == expected_view.tobytes()
    elif isinstance(expected, dict):
        assert type(got) is dict and got.keys() == expected.keys()
        for key in expected:
            assert_same(got[key], expected[key])
    elif isinstance(expected, (list, tuple)):
        assert type(got) is type(expected) and len(got) == len(expected)
        for g, e in zip(got, expected):
            assert_same(g, e)
    else:
        assert type(got) is type(expected) and got == expected


def read_only(array):
    array = array.copy()
    array.flags.writeable = False
    return array


# -- what travels, and what comes back -------------------------------------------------

ROUND_TRIPS = {
    "c-contiguous float64": lambda: np.arange(1000.0),
    "f-contiguous 2-d": lambda: np.asfortranarray(np.arange(60, dtype=np.int32).reshape(6, 10)),
    "read-only array": lambda: read_only(np.arange(17, dtype=np.uint8)),
    "empty array": lambda: np.zeros(0),
    "bytearray via PickleBuffer": lambda: pickle.PickleBuffer(bytearray(b"writable bytes")),
    "bytes via PickleBuffer (read-only)": lambda: pickle.PickleBuffer(b"read-only bytes"),
    "dict of arrays and values": lambda: {"x": np.ones((3, 4)), "n": 7, "s": "text",
                                          "y": [np.arange(5), b"in band"]},
    "non-contiguous array (in band)": lambda: np.arange(20.0)[::3],
    "array over 1 MiB": lambda: np.arange(300_000, dtype=np.float64),
}


@pytest.mark.parametrize("name", ROUND_TRIPS)
def test_out_of_band_round_trip_agrees_with_stdlib(pipe, name):
    a, b = pipe
    obj = ROUND_TRIPS[name]()
    sender = in_thread(a.send, obj)
    got = b.recv()
    sender.join()
    assert_same(got, stdlib_round_trip(ROUND_TRIPS[name]()))


def test_a_bare_buffer_comes_back_as_a_pickle_buffer_read_only_as_the_senders(pipe):
    # As the standard library's loads(buffers=) gives back what the sender's
    # buffer_callback got: a PickleBuffer, read-only exactly when the sender's was.
    a, b = pipe
    a.send(pickle.PickleBuffer(b"abc"))
    got = b.recv()
    assert type(got) is pickle.PickleBuffer and memoryview(got).readonly and bytes(got) == b"abc"
    a.send(pickle.PickleBuffer(bytearray(b"xyz")))
    got = b.recv()
    assert type(got) is pickle.PickleBuffer and not memoryview(got).readonly and bytes(got) == b"xyz"


def test_regression_a_received_bare_buffer_can_be_sent_on(pipe):
    # A read-only buffer came back as a memoryview, which cannot be pickled: a
    # process forwarding what it received (an echo, a proxy) failed on it.
    a, b = pipe
    for sent in (pickle.PickleBuffer(b"read-only"), pickle.PickleBuffer(bytearray(b"writable")),
                 pickle.PickleBuffer(bytearray(2 * MiB))):
        sender = in_thread(a.send, sent)  # 2 MiB do not fit in the socket's buffer
        received = b.recv()
        sender.join()
        forwarder = in_thread(b.send, received)
        back = a.recv()
        forwarder.join()
        assert bytes(back) == bytes(sent) and memoryview(back).readonly == memoryview(sent).readonly


def test_writable_buffers_come_back_writable_and_owned(pipe):
    a, b = pipe
    sent = np.arange(10.0)
    a.send(sent)
    got = b.recv()
    got[0] = 42.0  # memory the array owns: writing it is fine and changes nothing sent
    assert sent[0] == 0.0 and got.flags.writeable


def test_a_message_without_buffers_is_the_ordinary_single_frame():
    # Same bytes with the option on or off, for objects that set nothing aside
    # (a non-contiguous array is pickled in band by NumPy itself).
    objects = [1, "text", {"k": [1, 2.5]}, b"x" * 100, np.arange(10.0)[::2], b"y" * (2 * MiB)]
    captured = {}
    for out_of_band in (False, True):
        left, right = socket.socketpair()
        with net.Connection(left, out_of_band=out_of_band) as conn, right:
            for obj in objects:
                sender = in_thread(conn.send, obj)
                captured.setdefault(out_of_band, []).append(read_frames(right, 1)[0])
                sender.join()
    assert captured[True] == captured[False]
    assert all(frame[:4] != OOB_MAGIC for frame in captured[True])


def test_the_timeout_path_sends_the_same_messages(pipe):
    # With a timeout, send() is the Python one (_send_slowly): same frames.
    a, b = pipe
    a.settimeout(10)
    obj = {"x": np.arange(12.0).reshape(3, 4), "n": [1, 2]}
    sender = in_thread(a.send, obj)
    assert_same(b.recv(), obj)
    sender.join()
    a.send(5)
    assert b.recv() == 5


def test_wire_format_is_the_documented_one():
    # The raw peer reads what fastwire sends with the standard library only.
    left, right = socket.socketpair()
    obj = {"a": np.arange(6.0), "ro": pickle.PickleBuffer(b"const"), "b": bytearray(b"in band")}
    with net.Connection(left, out_of_band=True) as conn, right:
        sender = in_thread(conn.send, obj)
        (first,) = read_frames(right, 1)
        sizes, readonly, offset = parse_manifest(first)
        buffers = read_frames(right, len(sizes))
        sender.join()
    assert first[:4] == OOB_MAGIC == b"\xf5FWB" and first[4] == 1
    assert struct.unpack("!I", first[5:9]) == (2,)
    assert sizes == [48, 5] and readonly == [False, True]
    assert [len(b) for b in buffers] == sizes
    got = pickle.loads(first[offset:], buffers=buffers)
    assert np.array_equal(got["a"], obj["a"]) and bytes(got["ro"]) == b"const" and got["b"] == obj["b"]


@pytest.mark.parametrize("timeout", [None, 30])
def test_send_writes_the_manifest_and_frames_the_documented_format_gives(timeout):
    # Without a timeout send() writes the manifest and the frame headers itself,
    # in C; with one, the hook writes them with _protocol.manifest(). Both give
    # the bytes _protocol.manifest() and the frame format give for the buffers
    # the standard library's pickle sets aside (a Fortran-ordered, a read-only
    # and an empty array, and more buffers than one scatter-gather write takes).
    obj = {"f": np.asfortranarray(np.arange(12.0).reshape(3, 4)), "ro": read_only(np.arange(5, dtype=np.uint8)),
           "empty": np.zeros(0), "many": [pickle.PickleBuffer(bytearray(pattern_bytes(i % 7, i))) for i in range(600)]}
    buffers = []
    pickle.dumps(obj, 5, buffer_callback=buffers.append)
    raws = [b.raw() for b in buffers]
    buffer_frames = b"".join(frame(bytes(raw)) for raw in raws)
    left, right = socket.socketpair()
    with net.Connection(left, out_of_band=True) as conn, right:
        if timeout is not None:
            conn.settimeout(timeout)
        sender = in_thread(conn.send, obj)
        (first,) = read_frames(right, 1)
        rest = read_exactly(right, len(buffer_frames))
        sender.join()
        right.setblocking(False)
        with pytest.raises(BlockingIOError):
            right.recv(1)  # nothing more
    offset = parse_manifest(first)[2]
    assert first[:offset] == manifest(raws)
    assert rest == buffer_frames
    assert_same(pickle.loads(first[offset:], buffers=[b.raw() for b in buffers]), obj)


@pytest.mark.skipif(sys.version_info < (3, 12), reason="__buffer__ in Python classes is 3.12+ (PEP 688)")
def test_a_buffer_over_a_python_exporter_is_refused_as_by_pickle_buffer_raw():
    # send() takes its own export of each buffer set aside, as
    # PickleBuffer.raw() does; CPython cannot export a PickleBuffer made over
    # a class's __buffer__ again, and send() raises raw()'s TypeError,
    # having written nothing, the connection still usable.
    class Exporter:
        def __buffer__(self, flags):
            return memoryview(b"payload")

    buffers = []
    pickle.dumps(pickle.PickleBuffer(Exporter()), 5, buffer_callback=buffers.append)
    with pytest.raises(TypeError) as stdlib:
        buffers[0].raw()
    left, right = socket.socketpair()
    with net.Connection(left, out_of_band=True) as conn, net.Connection(right) as peer:
        with pytest.raises(TypeError) as ours:
            conn.send(pickle.PickleBuffer(Exporter()))
        assert str(ours.value) == str(stdlib.value)
        conn.send("next")
        assert peer.recv(timeout=30) == "next"


def test_a_hand_made_message_in_the_documented_format_is_received(raw_peer):
    raw, conn = raw_peer
    obj = [np.arange(4, dtype=np.int16), pickle.PickleBuffer(b"ro"), "tail"]
    raw.sendall(oob_message(obj) + frame(pickle.dumps("next", 5)))
    assert_same(conn.recv(), stdlib_round_trip(obj))
    assert conn.recv() == "next"


def test_a_large_manifest_frame_is_received_whole(pipe):
    # Over 1 MiB of in-band data in the pickle stream beside an out-of-band buffer.
    a, b = pipe
    obj = [b"z" * (3 * MiB), np.arange(8.0), bytearray(2 * MiB)]
    sender = in_thread(a.send, obj)
    assert_same(b.recv(), obj)
    sender.join()


def test_a_large_manifest_split_before_its_magic_is_recognised(raw_peer):
    # The frame header arrives alone: recv() must read the magic before choosing a path.
    raw, conn = raw_peer
    message = oob_message([b"q" * (2 * MiB), np.arange(3.0)])
    raw.sendall(message[:4])
    thread = in_thread(lambda: (threading.Event().wait(0.2), raw.sendall(message[4:])))
    got = conn.recv(timeout=30)
    thread.join()
    assert got[0] == b"q" * (2 * MiB) and np.array_equal(got[1], np.arange(3.0))


def test_non_contiguous_pickle_buffer_is_refused_as_by_stdlib(pipe):
    a, b = pipe
    strided = pickle.PickleBuffer(memoryview(b"abcdef")[::2])
    try:
        with pytest.raises(pickle.PicklingError) as stdlib_error:
            pickle.dumps(strided, 5, buffer_callback=list().append)
        with pytest.raises(pickle.PicklingError) as ours:
            a.send(strided)
        assert str(ours.value) == str(stdlib_error.value)
    finally:
        # The tracebacks make a cycle through this PickleBuffer; the collector
        # breaking it while the buffer still holds the memoryview's export
        # crashes CPython before 3.12.7 (gh-77894, gh-122306), stdlib pickle alone.
        strided.release()
    a.send("still usable")
    assert b.recv() == "still usable"


def test_send_makes_no_user_space_copy_of_the_buffers(pipe):
    # 32 MiB out of band: tracemalloc sees only the manifest and headers allocated
    # (the receiver, in another thread, receives into memory allocated before).
    a, b = pipe
    array = np.ones(4 * MiB)
    target = bytearray(array.nbytes)
    received = []
    reader = in_thread(lambda: received.append(b.recv(buffers=lambda size, readonly: target)))
    tracemalloc.start()
    try:
        a.send(array)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    reader.join()
    assert np.array_equal(received[0], array)
    assert peak < MiB, peak


def test_messages_of_many_buffers_and_in_band_ones_interleave(pipe):
    a, b = pipe
    messages = []
    for i in range(30):
        messages.append({f"k{j}": np.full(j + i, j, dtype=np.int64) for j in range(i % 7)})
        messages.append(i)
    sender = in_thread(lambda: [a.send(m) for m in messages])
    for expected in messages:
        assert_same(b.recv(), expected)
    sender.join()


# -- one block per message -------------------------------------------------------------------


def address(buffer):
    return np.frombuffer(buffer, dtype=np.uint8).ctypes.data


def test_the_buffers_of_a_message_share_one_block_kept_while_any_of_them_lives(pipe, empty_receive_pool):
    a, b = pipe
    sizes = [3, 0, 70_000, 5, MiB]
    sender = in_thread(a.send, [pickle.PickleBuffer(bytearray(bytes([i + 1]) * n)) for i, n in enumerate(sizes)])
    parts = b.recv()
    sender.join()
    starts = [address(p) for p in parts]
    for i in range(1, len(sizes)):
        assert starts[i] == starts[i - 1] + sizes[i - 1]  # one after the other, in one block
    np.frombuffer(parts[2], dtype=np.uint8)[:] = 0xEE      # each writable, and only its own bytes
    assert bytes(parts[0]) == b"\x01" * 3 and bytes(parts[3]) == b"\x04" * 5
    assert bytes(parts[4]) == b"\x05" * MiB
    kept = parts[3]
    del parts
    assert receive_buffer_pool()["blocks"] == 0            # a part lives: the block is in use
    assert bytes(kept) == b"\x04" * 5 and memoryview(kept).nbytes == 5
    del kept
    assert receive_buffer_pool()["blocks"] == 1            # the last part gone: pooled


def test_a_dropped_message_block_is_received_into_again(pipe, empty_receive_pool):
    a, b = pipe
    message = {f"a{i}": np.arange(i * 8192, (i + 1) * 8192, dtype=np.float64) for i in range(100)}
    sender = in_thread(lambda: [a.send(message) for _ in range(2)])
    first = address(b.recv()["a0"])  # dropped at once
    assert receive_buffer_pool()["blocks"] == 1  # 100 buffers of 64 KiB: one block, pooled
    again = b.recv()
    sender.join()
    assert receive_buffer_pool()["blocks"] == 0
    assert address(again["a0"]) == first
    for key, array in message.items():
        assert_same(again[key], array)


@pytest.mark.parametrize("chunk", [None, 1, 4093, 65_537])
def test_buffers_already_buffered_and_still_arriving_are_received_alike(raw_peer, chunk):
    # Zero-size buffers among others, frames that arrive whole with the manifest,
    # cut at their header or their payload, and read straight from the socket.
    raw, conn = raw_peer
    obj = [pickle.PickleBuffer(bytearray(pattern_bytes(n, n))) for n in
           (0, 5, 70_000, 0, 3, 200_000, 1, 0)] + [pickle.PickleBuffer(b"read-only")]
    data = oob_message(obj)
    if chunk is None:
        sender = in_thread(raw.sendall, data)
    elif chunk == 1:  # byte by byte up to the third buffer, then the rest at once
        def trickle():
            for i in range(data.index(pattern_bytes(70_000, 70_000)[:16]) + 8):
                raw.sendall(data[i:i + 1])
            raw.sendall(data[i + 1:])
        sender = in_thread(trickle)
    else:
        sender = in_thread(lambda: [raw.sendall(data[i:i + chunk]) for i in range(0, len(data), chunk)])
    got = conn.recv()
    sender.join()
    for part, expected in zip(got, stdlib_round_trip(obj)):
        assert_same(part, expected)


def pattern_bytes(n, seed):
    """n bytes that differ at every offset modulo 251, starting at `seed`: a
    misplaced or swapped chunk shows."""
    return bytes((seed + i) % 251 for i in range(n))


def test_only_zero_size_buffers(pipe):
    a, b = pipe
    obj = [pickle.PickleBuffer(bytearray()), pickle.PickleBuffer(b""), np.zeros(0), {"e": np.empty((0, 3))}]
    a.send(obj)
    got = b.recv()
    expected = stdlib_round_trip(obj)
    for part, want in zip(got, expected[:3]):
        assert_same(part, want)
    assert_same(got[3]["e"], expected[3]["e"])


def test_max_buffers_distinct_buffers_in_one_message(pipe):
    a, b = pipe
    obj = [pickle.PickleBuffer(bytearray(pattern_bytes(i % 300, i))) for i in range(DEFAULT_MAX_BUFFERS)]
    a.send(obj)
    got = b.recv()
    assert len(got) == DEFAULT_MAX_BUFFERS
    for part, expected in zip(got, stdlib_round_trip(obj)):
        assert_same(part, expected)


def test_a_pickling_error_after_buffers_were_set_aside_sends_nothing_and_keeps_nothing(pipe):
    a, b = pipe
    payload = pickle.PickleBuffer(bytearray(b"set aside"))
    before = sys.getrefcount(payload)
    with pytest.raises((pickle.PicklingError, AttributeError)):
        a.send([payload, lambda: None])
    assert sys.getrefcount(payload) == before
    a.send([payload, "next"])
    got = b.recv()
    assert bytes(got[0]) == b"set aside" and got[1] == "next"


def test_send_reduce_sends_on_the_same_connection_while_buffers_are_set_aside(pipe):
    # Pickling runs __reduce__ after a buffer was set aside; it sends a whole
    # out-of-band message of its own on the same connection: that one goes out
    # first, then the outer one, each with its own buffers.
    a, b = pipe

    class SendsWhilePickled:
        def __reduce__(self):
            a.send([pickle.PickleBuffer(bytearray(b"inner")), "inner"])
            return str, ("outer",)

    a.send([pickle.PickleBuffer(bytearray(b"outer buffer")), SendsWhilePickled()])
    inner = b.recv()
    outer = b.recv()
    assert bytes(inner[0]) == b"inner" and inner[1] == "inner"
    assert bytes(outer[0]) == b"outer buffer" and outer[1] == "outer"


def buffer_leaves():
    dtypes = st.sampled_from(["u1", "i4", "f8", "c16", ">i2"])

    @st.composite
    def arrays(draw):
        shape = tuple(draw(st.lists(st.integers(0, 6), max_size=3)))
        array = np.arange(int(np.prod(shape, dtype=np.int64)), dtype=draw(dtypes)).reshape(shape)
        order = draw(st.sampled_from(["C", "F", "strided"]))
        if order == "F":
            array = np.asfortranarray(array)
        elif order == "strided" and array.ndim:
            array = array[::2]
        if draw(st.booleans()):
            array.flags.writeable = False
        return array
    raw = st.binary(max_size=300)
    return st.one_of(
        arrays(), raw, raw.map(bytearray),
        raw.map(pickle.PickleBuffer), raw.map(lambda b: pickle.PickleBuffer(bytearray(b))),
        st.integers(), st.text(max_size=10), st.none())


OOB_OBJECTS = st.recursive(
    buffer_leaves(),
    lambda children: st.one_of(st.lists(children, max_size=5),
                               st.dictionaries(st.text(max_size=5), children, max_size=5),
                               st.lists(children, max_size=3).map(tuple)),
    max_leaves=12)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(obj=OOB_OBJECTS)
def test_differential_against_stdlib_pickle_with_buffers(pipe, obj):
    a, b = pipe
    a.send(obj)
    assert_same(b.recv(), stdlib_round_trip(obj))


def test_threads_receiving_at_once_each_get_whole_messages(pipe):
    # Small frames (taken without the lock when queued) interleaved with
    # out-of-band messages of many small buffers, whose frames arrive queued
    # with the manifest: while one thread assembles such a message (its
    # buffers= callable sleeps, letting the others run), the others must not
    # take its buffer frames. Every message arrives whole, exactly once.
    a, b = pipe
    count = 300
    received = []

    def provide(size, readonly):
        threading.Event().wait(0.001)
        return bytearray(size)

    def receiver():
        while True:
            message = b.recv(timeout=60, buffers=provide)
            if message is None:
                return
            received.append(message)

    for i in range(0, count, 3):
        a.send_many([("small", i), ("small", i + 1)])
        a.send(("buffers", i + 2, [pickle.PickleBuffer(bytearray([i % 256, j])) for j in range(20)]))
    a.send_many([None] * 4)
    threads = [threading.Thread(target=receiver, daemon=True) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sorted(m[1] for m in received) == list(range(count))
    for message in received:
        if message[0] == "buffers":
            i = message[1] - 2
            assert [bytes(x) for x in message[2]] == [bytes([i % 256, j]) for j in range(20)]


def test_buffer_frames_queued_during_assembly_stay_with_their_message(raw_peer):
    # The manifest arrives alone; its buffer frames and two small messages in
    # the next read, queued together. A second thread calling recv() while the
    # first assembles (from the buffers= callable) must wait for the lock, not
    # take a buffer frame as if it were a message.
    raw, conn = raw_peer
    obj = [pickle.PickleBuffer(bytearray([j])) for j in range(5)]
    message = oob_message(obj)
    (manifest_size,) = struct.unpack("!i", message[:4])
    first, rest = message[:4 + manifest_size], message[4 + manifest_size:]
    second = []

    def provide(size, readonly):
        if not second:
            thread = threading.Thread(target=lambda: second.append(conn.recv(timeout=30)), daemon=True)
            second.append(thread)
            thread.start()
            thread.join(0.5)  # it either took a queued frame by now, or waits for the lock
        return bytearray(size)

    raw.sendall(first)
    sender = in_thread(lambda: (threading.Event().wait(0.2),
                                raw.sendall(rest + frame(pickle.dumps("one", 5)) + frame(pickle.dumps("two", 5)))))
    got = conn.recv(timeout=30, buffers=provide)
    sender.join()
    second[0].join(30)
    assert [bytes(x) for x in got] == [bytes([j]) for j in range(5)]
    assert second[1:] == ["one"]
    assert conn.recv(timeout=30) == "two"


# -- the buffer frames, laid out by the manifest ------------------------------------------
#
# Once the manifest is parsed, where every following byte goes is known: the
# frames the scanner already split are taken first, then the bytes it holds
# are copied into place, then the rest is read with scatter-gather straight
# into the message's block (with a deadline: piece by piece). ARRIVALS picks
# which of these the buffer frames reach.

ARRIVALS = {
    # Everything in one write: the receiver's first read takes it all.
    "with the manifest": (False, None),
    # The manifest alone first, the buffer frames a moment later: read straight into place.
    "after the manifest": (True, None),
    # The same with a deadline: read piece by piece, each read waiting at most until it.
    "after the manifest, with a deadline": (True, 30),
}


def send_after_manifest(raw, data, later):
    """Write the manifest frame of the message `data` now, and with `later` the
    rest from a thread a moment later (after the receiver took the manifest,
    as a rule); else everything now."""
    (manifest_size,) = struct.unpack("!i", data[:4])
    cut = 4 + manifest_size if later else len(data)
    return send_in_two(raw, data, cut)


def send_in_two(raw, data, cut, shutdown=False):
    """Write data[:cut] now and data[cut:] from a thread a moment later, then,
    with `shutdown`, end the stream; the thread, to join()."""
    raw.sendall(data[:cut])

    def rest():
        threading.Event().wait(0.005)
        if cut < len(data):
            raw.sendall(data[cut:])
        if shutdown:
            raw.shutdown(socket.SHUT_WR)
    return in_thread(rest)


def three_buffer_frames(headers, payload=b"abcde"):
    """A manifest announcing three buffers of len(payload) bytes, then a frame
    per header of `headers` (raw bytes) with that payload."""
    data = manifest_frame([(0, len(payload))] * 3)
    for header in headers:
        data += header + payload
    return data


BAD_HEADERS = {
    "larger": (struct.pack("!i", 6), FrameError, "frame of 6 bytes, the manifest announced 5"),
    "smaller": (struct.pack("!i", 4), FrameError, "frame of 4 bytes, the manifest announced 5"),
    "negative": (struct.pack("!i", -2), FrameError, "negative frame length"),
    "long form, larger": (struct.pack("!iQ", -1, 6), FrameError, "frame of 6 bytes, the manifest announced 5"),
    "beyond max_frame_size": (struct.pack("!i", 2**31 - 1), FrameTooLarge, "exceeds max_frame_size"),
}


@pytest.mark.parametrize("arrival", ARRIVALS)
@pytest.mark.parametrize("position", [0, 1, 2])
@pytest.mark.parametrize("bad", BAD_HEADERS)
def test_a_buffer_header_disagreeing_with_the_manifest_is_refused(raw_peer, arrival, position, bad):
    raw, conn = raw_peer
    later, timeout = ARRIVALS[arrival]
    header, error, message = BAD_HEADERS[bad]
    headers = [struct.pack("!i", 5)] * 3
    headers[position] = header
    sender = send_after_manifest(raw, three_buffer_frames(headers), later)
    with pytest.raises(error, match=message):
        conn.recv(timeout=timeout)
    assert conn.closed
    try:
        sender.join()
    except OSError:
        pass  # the receiver closed before the rest was written


@pytest.mark.parametrize("arrival", ARRIVALS)
def test_a_buffer_header_in_the_12_byte_form_is_accepted_as_multiprocessing_reads_it(raw_peer, arrival):
    # multiprocessing's reader takes -1 then '!Q' for any size; only the
    # shortest form is what the layout assumes, so the bytes after such a
    # header are placed again.
    raw, conn = raw_peer
    later, timeout = ARRIVALS[arrival]
    obj = [pickle.PickleBuffer(bytearray(pattern_bytes(n, n))) for n in (3, 0, 70_000, 5)]
    buffers = []
    stream = pickle.dumps(obj, 5, buffer_callback=buffers.append)
    raws = [b.raw() for b in buffers]
    data = frame(manifest(raws) + stream)
    for i, raw_buffer in enumerate(raws):
        header = struct.pack("!iQ", -1, raw_buffer.nbytes) if i in (1, 2) else struct.pack("!i", raw_buffer.nbytes)
        data += header + bytes(raw_buffer)
    data += frame(pickle.dumps("after", 5))
    sender = send_after_manifest(raw, data, later)
    got = conn.recv(timeout=timeout)
    sender.join()
    assert_same(got, stdlib_round_trip(obj))
    assert conn.recv(timeout=timeout) == "after"


@pytest.mark.parametrize("sizes", [[2**63 + 5], [2**62 + 1, 2**62 + 1, 2**62 + 1]])
def test_buffer_sizes_past_py_ssize_t_are_refused_when_the_limits_allow_them(sizes):
    # Limits configured past what a Py_ssize_t holds: a size, or a total,
    # beyond it is refused before anything is laid out or read, never taken
    # as a negative length.
    left, right = socket.socketpair()
    conn = net.Connection(right, trusted=True, max_frame_size=2**64 - 1, max_message_size=2**66)
    with conn, left:
        left.sendall(manifest_frame([(0, size) for size in sizes]) + struct.pack("!iQ", -1, sizes[0]) + b"x" * 100)
        with pytest.raises((OverflowError, ValueError, FrameError)):
            conn.recv()
        assert conn.closed


def small_message():
    """An out-of-band message of six small buffers (empty, read-only, of
    every size up to 5 bytes), then an ordinary message: (bytes, the first
    message's value as the standard library returns it)."""
    obj = [pickle.PickleBuffer(bytearray(pattern_bytes(n, n))) for n in (0, 5, 1, 0, 3)]
    obj.append(pickle.PickleBuffer(b"ro"))
    return oob_message(obj) + frame(pickle.dumps("after", 5)), stdlib_round_trip(obj)


@pytest.mark.parametrize("timeout", [None, 30])
def test_a_message_split_at_every_byte_is_received_whole_and_the_next_one_kept(raw_peer, timeout):
    raw, conn = raw_peer
    data, expected = small_message()
    for cut in range(1, len(data)):
        sender = send_in_two(raw, data, cut)
        got = conn.recv(timeout=timeout)
        sender.join()
        assert_same(got, expected)
        assert conn.recv(timeout=timeout) == "after"


@pytest.mark.parametrize("later", [False, True])
@pytest.mark.parametrize("timeout", [None, 30])
def test_a_stream_cut_at_every_byte_after_the_manifest_returns_nothing_and_closes(later, timeout):
    data, _ = small_message()
    (manifest_size,) = struct.unpack("!i", data[:4])
    end = len(data) - len(frame(pickle.dumps("after", 5)))
    for cut in range(4 + manifest_size, end):
        left, right = socket.socketpair()
        conn = net.Connection(right, trusted=True)
        with conn:
            sender = send_in_two(left, data[:cut], 4 + manifest_size if later else cut, shutdown=True)
            with pytest.raises(EOFError) as info:
                conn.recv(timeout=timeout)
            sender.join()
            assert info.value.args  # a cut message, not the clean end of the stream
            assert conn.closed
        left.close()


def test_more_buffer_frames_than_one_scatter_gather_read_takes(pipe):
    # 1000 buffers: headers and payloads across several batches of pieces,
    # and a block that grows while they arrive.
    a, b = pipe
    obj = [np.full(700 + i % 3, i, dtype=np.int16) for i in range(1000)]
    sender = in_thread(a.send, obj)
    got = b.recv()
    sender.join()
    assert_same(got, obj)


# -- options -----------------------------------------------------------------------------


def test_options_and_their_defaults():
    a, b = net.Pipe()
    with a, b:
        assert not a.out_of_band
        assert a.max_buffers == DEFAULT_MAX_BUFFERS == net.DEFAULT_MAX_BUFFERS == 1024
        assert a.max_message_size == DEFAULT_MAX_MESSAGE_SIZE == net.DEFAULT_MAX_MESSAGE_SIZE == 1 << 30
    a, b = net.Pipe(out_of_band=True, max_buffers=3, max_message_size=100)
    with a, b:
        assert a.out_of_band and b.out_of_band
        assert (a.max_buffers, b.max_message_size) == (3, 100)
    with pytest.raises(ValueError):
        net.Pipe(max_buffers=-1)
    with pytest.raises(TypeError):
        net.Pipe(max_message_size=1.5)


def test_listener_and_client_pass_the_options_on(tmp_path):
    address = str(tmp_path / "s")
    with net.Listener(address, out_of_band=True, max_buffers=2, max_message_size=64,
                      trusted=True) as listener:
        accepted = []
        thread = in_thread(lambda: accepted.append(listener.accept()))
        with net.Client(address, out_of_band=True, max_buffers=5) as client:
            thread.join()
            server = accepted[0]
            with server:
                assert server.out_of_band and (server.max_buffers, server.max_message_size) == (2, 64)
                assert client.out_of_band and client.max_buffers == 5
                client.send([np.arange(4.0), np.arange(2.0)])
                assert_same(server.recv(), [np.arange(4.0), np.arange(2.0)])
                client.send([np.arange(4.0), np.arange(1.0), np.arange(2.0)])
                with pytest.raises(FrameTooLarge, match="max_buffers=2"):
                    server.recv()
                assert server.closed


def test_every_fastwire_end_receives_out_of_band_messages_whatever_its_setting():
    a, b = net.Pipe(trusted=True)
    with a, b, net.Connection(os.dup(a.fileno()), out_of_band=True) as sender:
        sender.send(np.arange(5))
        assert_same(b.recv(), np.arange(5))


# -- bounds and hostile peers --------------------------------------------------------------


def test_count_over_max_buffers_is_refused_before_anything_is_read(raw_peer):
    raw, conn = raw_peer
    raw.sendall(manifest_frame([], count=2**32 - 1))
    with pytest.raises(FrameTooLarge, match="max_buffers"):
        conn.recv()
    assert conn.closed


def test_buffer_over_max_frame_size_is_refused(raw_peer):
    raw, conn = raw_peer
    raw.sendall(manifest_frame([(0, 2**64 - 1)]))
    with pytest.raises(FrameTooLarge, match="max_frame_size"):
        conn.recv()
    assert conn.closed


@pytest.mark.parametrize("count, refused", [(3, False), (4, True)])
def test_max_buffers_accepts_the_limit_and_refuses_one_past_it(count, refused):
    a, b = net.Pipe(out_of_band=True, max_buffers=3)
    with a, b:
        sent = [pickle.PickleBuffer(bytearray([i])) for i in range(count)]
        a.send(sent)
        if refused:
            with pytest.raises(FrameTooLarge, match="max_buffers=3"):
                b.recv()
            assert b.closed
        else:
            assert [bytes(x) for x in b.recv()] == [bytes([i]) for i in range(count)]


@pytest.mark.parametrize("total, refused", [(1000, False), (1001, True)])
def test_max_message_size_accepts_the_limit_and_refuses_one_past_it(total, refused):
    a, b = net.Pipe(out_of_band=True, max_message_size=1000)
    with a, b:
        a.send([pickle.PickleBuffer(bytearray(600)), pickle.PickleBuffer(bytearray(total - 600))])
        if refused:
            with pytest.raises(FrameTooLarge, match="max_message_size=1000"):
                b.recv()
            assert b.closed
        else:
            assert [memoryview(x).nbytes for x in b.recv()] == [600, 400]


def test_total_over_max_message_size_is_refused():
    left, right = socket.socketpair()
    with left, net.Connection(right, max_message_size=1000) as conn:
        left.sendall(manifest_frame([(0, 600), (0, 600)]) + frame(b"x" * 600))
        with pytest.raises(FrameTooLarge, match="max_message_size=1000"):
            conn.recv()
        assert conn.closed


def test_a_manifest_frame_over_max_frame_size_is_refused_by_its_header():
    left, right = socket.socketpair()
    with left, net.Connection(right, max_frame_size=100) as conn:
        left.sendall(manifest_frame([(0, 1)], stream=b"\x80\x05N." + b"x" * 200))
        with pytest.raises(FrameTooLarge):
            conn.recv()
        assert conn.closed


@pytest.mark.parametrize("bad, error", [
    (manifest_frame([(0, 4)], version=2), "version 2"),
    (manifest_frame([(0x80, 4)]), "flags"),
    (manifest_frame([(0, 4)], count=3), "cut short"),
    (frame(OOB_MAGIC + b"\x01"), "cut short"),
])
def test_malformed_manifests_are_refused(raw_peer, bad, error):
    raw, conn = raw_peer
    raw.sendall(bad + frame(b"abcd"))
    with pytest.raises(FrameError, match=error):
        conn.recv()
    assert conn.closed


HOSTILE_PEAK = """
import socket, struct, sys, threading
from fastwire import net
claim, header_claim, sent = map(int, sys.argv[1:4])

def peak_rss():
    # VmHWM: this process's own peak (ru_maxrss would carry the parent's over exec).
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:"))

left, right = socket.socketpair()
conn = net.Connection(right)
head = struct.pack("!4sBI", b"\\xf5FWB", 1, 1) + struct.pack("!BQ", 0, claim) + b"\\x80\\x05N."

def hostile():
    left.sendall(struct.pack("!i", len(head)) + head + struct.pack("!i", header_claim) + b"x" * sent)
    left.shutdown(socket.SHUT_WR)

before = peak_rss()
thread = threading.Thread(target=hostile)
thread.start()
try:
    conn.recv()
except Exception as exc:
    print(type(exc).__name__, str(exc).replace(" ", "_"), conn.closed)
thread.join()
print(peak_rss() - before)
"""


def hostile_peak(claim, header_claim, sent):
    """In a fresh process, a peer's out-of-band message claiming one buffer of
    `claim` bytes, whose frame header claims `header_claim`, cut after `sent`
    bytes: (error name, message, closed, growth of the peak resident memory)."""
    out = subprocess.run([sys.executable, "-c", HOSTILE_PEAK, str(claim), str(header_claim), str(sent)],
                         capture_output=True, text=True, timeout=120, env=child_env())
    assert out.returncode == 0, out.stderr
    first, growth = out.stdout.split("\n")[:2]
    name, message, closed = first.split(" ")
    return name, message.replace("_", " "), closed == "True", int(growth)


needs_proc = pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="reads VmHWM from Linux /proc")


@needs_proc
@pytest.mark.parametrize("claimed", [3, 5, 100 * MiB, 200 * MiB])
def test_buffer_frame_disagreeing_with_the_manifest_is_refused_unallocated(claimed):
    name, message, closed, growth = hostile_peak(4, claimed, 3)
    assert closed
    if claimed <= 100 * MiB:
        assert name == "FrameError" and f"frame of {claimed} bytes, the manifest announced 4" in message
    else:  # beyond max_frame_size: its header alone is refused
        assert name == "FrameTooLarge"
    assert growth < 8 * MiB, growth


@needs_proc
def test_cut_in_the_middle_of_a_large_buffer_allocates_only_what_arrived():
    # A claim of 100 MiB (within max_frame_size and max_message_size), then
    # 1 MiB and the end: memory follows what arrived, not what was claimed.
    name, message, closed, growth = hostile_peak(100 * MiB, 100 * MiB, MiB)
    assert name == "EOFError" and closed
    assert growth < 8 * MiB, growth


def test_cut_in_the_middle_of_a_buffer(raw_peer):
    raw, conn = raw_peer
    raw.sendall(manifest_frame([(0, 100)]) + struct.pack("!i", 100) + b"x" * 40)
    raw.shutdown(socket.SHUT_WR)
    with pytest.raises(EOFError, match="middle of a message|closed"):
        conn.recv()
    assert conn.closed


def test_cut_between_the_manifest_and_its_buffers(raw_peer):
    raw, conn = raw_peer
    raw.sendall(manifest_frame([(0, 1), (0, 1)]) + frame(b"x"))
    raw.shutdown(socket.SHUT_WR)
    with pytest.raises(EOFError) as info:
        conn.recv()
    assert info.value.args  # a cut message, not the clean end of the stream
    assert conn.closed


def test_timeout_in_the_middle_of_a_message_closes(raw_peer):
    raw, conn = raw_peer
    raw.sendall(manifest_frame([(0, 10), (0, 10)]) + frame(b"0123456789"))
    with pytest.raises(TimeoutError):
        conn.recv(timeout=0.3)
    assert conn.closed


def test_socket_timeout_in_the_middle_of_a_large_buffer_closes(raw_peer):
    raw, conn = raw_peer
    conn.settimeout(0.3)
    raw.sendall(manifest_frame([(0, 4 * MiB)]) + struct.pack("!i", 4 * MiB) + b"x" * 1000)
    with pytest.raises(TimeoutError):
        conn.recv()
    assert conn.closed


def test_the_deadline_covers_the_whole_message(raw_peer):
    # Each piece arrives well within the timeout; the whole does not.
    raw, conn = raw_peer
    message = oob_message([np.arange(10.0), np.arange(10.0)])

    def trickle():
        for i in range(0, len(message), 40):
            if conn.closed:
                return
            raw.sendall(message[i:i + 40])
            threading.Event().wait(0.05)
    thread = in_thread(trickle)
    with pytest.raises(TimeoutError):
        conn.recv(timeout=0.3)
    assert conn.closed
    try:
        thread.join()
    except OSError:
        pass  # the receiver closed


# -- restricted mode --------------------------------------------------------------------


def test_restricted_refusal_after_every_frame_is_consumed_leaves_the_connection_usable():
    a, b = net.Pipe(out_of_band=True)  # b decodes in restricted mode
    with a, b:
        sender = in_thread(lambda: (a.send({"array": np.arange(300_000.0), "more": np.arange(3)}),
                                    a.send(["next", 1])))
        with pytest.raises(pickle.UnpicklingError, match="not allowed"):
            b.recv()
        assert b.recv() == ["next", 1]
        sender.join()


def test_restricted_mode_rebuilds_plain_buffers():
    # A PickleBuffer's object needs no global: restricted mode receives it.
    a, b = net.Pipe(out_of_band=True)
    with a, b:
        a.send([pickle.PickleBuffer(bytearray(b"rw")), pickle.PickleBuffer(b"ro"), 5])
        got = b.recv()
        assert bytes(got[0]) == b"rw" and not memoryview(got[0]).readonly
        assert bytes(got[1]) == b"ro" and memoryview(got[1]).readonly and got[2] == 5


# -- receiving into the caller's memory (buffers=) -----------------------------------------


def test_buffers_callable_receives_into_the_callers_memory(pipe):
    a, b = pipe
    calls = []

    def provide(size, readonly):
        target = bytearray(size)
        calls.append((size, readonly, target))
        return target
    obj = {"big": np.arange(400_000.0), "small": np.arange(3, dtype=np.int8),
           "ro": pickle.PickleBuffer(b"const")}
    sender = in_thread(a.send, obj)
    got = b.recv(buffers=provide)
    sender.join()
    assert [(size, readonly) for size, readonly, _ in calls] == [(3_200_000, False), (3, False), (5, True)]
    assert np.shares_memory(got["big"], np.frombuffer(calls[0][2], dtype=np.uint8))
    assert np.array_equal(got["big"], obj["big"]) and got["small"].tolist() == [0, 1, 2]
    assert memoryview(got["ro"]).readonly and bytes(got["ro"]) == b"const"
    a.send("no buffers")
    assert b.recv(buffers=provide) == "no buffers" and len(calls) == 3


def test_buffers_callable_may_return_more_memory_or_another_format(pipe):
    a, b = pipe
    spare = np.zeros(100, dtype=np.float64)  # 800 bytes, format 'd'
    a.send(pickle.PickleBuffer(bytearray(b"0123456789")))
    got = b.recv(buffers=lambda size, readonly: spare)
    assert type(got) is memoryview and got.nbytes == 10 and bytes(got) == b"0123456789"
    assert spare.tobytes()[:10] == b"0123456789"


def worst_case(pipe, provide, error):
    a, b = pipe
    sender = in_thread(a.send, [np.arange(10.0), np.arange(300_000.0)])
    with pytest.raises(error):
        b.recv(buffers=provide)
    assert b.closed  # the rest of the message was not read: the stream is lost
    try:
        sender.join()
    except OSError:
        pass  # the receiving end is gone


def test_buffers_callable_closes_the_connection(pipe):
    b = pipe[1]

    def provide(size, readonly):
        b.close()
        return bytearray(size)
    worst_case(pipe, provide, OSError)


def test_buffers_callable_returns_a_buffer_too_small(pipe):
    worst_case(pipe, lambda size, readonly: bytearray(size - 1), ValueError)


def test_buffers_callable_returns_a_read_only_buffer(pipe):
    worst_case(pipe, lambda size, readonly: bytes(size), TypeError)


def test_buffers_callable_returns_a_non_buffer(pipe):
    worst_case(pipe, lambda size, readonly: None, TypeError)


def test_buffers_callable_raises(pipe):
    def provide(size, readonly):
        raise KeyError("caller's own error")
    worst_case(pipe, provide, KeyError)


def test_buffers_callable_reenters_recv_from_the_same_thread(pipe):
    b = pipe[1]
    worst_case(pipe, lambda size, readonly: b.recv(), RuntimeError)


def test_buffers_callable_reenters_recv_from_another_thread(pipe):
    # The other thread waits for the receive in progress, then gets the next message.
    a, b = pipe
    results = []
    threads = []

    def provide(size, readonly):
        if not threads:
            thread = threading.Thread(target=lambda: results.append(b.recv(timeout=30)), daemon=True)
            threads.append(thread)
            thread.start()
        return bytearray(size)
    a.send([np.arange(5.0), np.arange(6.0)])
    a.send(np.arange(7.0))
    got = b.recv(buffers=provide)
    threads[0].join(30)
    assert [x.tolist() for x in got] == [np.arange(5.0).tolist(), np.arange(6.0).tolist()]
    assert results[0].tolist() == np.arange(7.0).tolist()


def test_send_reduce_closes_and_the_descriptor_is_reused():
    # Pickling runs __reduce__ (as NumPy's runs before its buffer is set aside):
    # it closes the connection and a new socket takes over the descriptor number.
    # send() raises and writes nothing to the new socket.
    a, b = net.Pipe(out_of_band=True)
    number = a.fileno()
    reused = []

    class ClosesWhilePickled:
        def __reduce__(self):
            a.close()
            pair = socket.socketpair()
            reused.append(pair)
            return bytearray, (pickle.PickleBuffer(bytearray(b"payload")),)

    with b, pytest.raises(OSError, match="handle is closed"):
        a.send([ClosesWhilePickled()])
    left, right = reused[0]
    with left, right:
        assert number in (left.fileno(), right.fileno())
        left.setblocking(False)
        right.setblocking(False)
        for end in (left, right):
            with pytest.raises(BlockingIOError):
                end.recv(1)


# -- real processes ------------------------------------------------------------------------

CHILD_SENDER = """
import socket, sys
import numpy as np
from fastwire import net
kind, where = sys.argv[1], sys.argv[2]
if kind == "pipe":
    conn = net.Connection(socket.socket(fileno=int(where)), out_of_band=True)
else:
    conn = net.Client(where if kind == "unix" else ("127.0.0.1", int(where)), out_of_band=True)
with conn:
    conn.send([np.arange(2_000_000, dtype=np.float64),
               np.asfortranarray(np.arange(12, dtype=np.int32).reshape(3, 4)),
               {"ro": np.frombuffer(b"read-only!", dtype=np.uint8)}])
    assert conn.recv() == "done"
"""


def check_child_arrays(got):
    big, fortran, rest = got
    assert big.dtype == np.float64 and np.array_equal(big, np.arange(2_000_000, dtype=np.float64))
    assert fortran.flags.f_contiguous and fortran.tolist() == np.arange(12).reshape(3, 4).tolist()
    assert not rest["ro"].flags.writeable and rest["ro"].tobytes() == b"read-only!"
    assert big.flags.writeable


def child_env():
    return dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))


@pytest.mark.parametrize("kind", ["tcp", "unix", "pipe"])
def test_child_process_sends_arrays_out_of_band(kind, tmp_path):
    if kind == "pipe":
        parent_end, child_end = socket.socketpair()
        conn = net.Connection(parent_end, trusted=True)
        proc = subprocess.Popen([sys.executable, "-c", CHILD_SENDER, kind, str(child_end.fileno())],
                                pass_fds=[child_end.fileno()], env=child_env())
        child_end.close()
        listener = None
    else:
        address = str(tmp_path / "s") if kind == "unix" else ("127.0.0.1", 0)
        listener = net.Listener(address, trusted=True)
        where = listener.address if kind == "unix" else str(listener.address[1])
        proc = subprocess.Popen([sys.executable, "-c", CHILD_SENDER, kind, where], env=child_env())
    try:
        if listener is not None:
            conn = listener.accept()
        with conn:
            check_child_arrays(conn.recv(timeout=60))
            conn.send("done")
        assert proc.wait(60) == 0
    finally:
        proc.kill()
        proc.wait()
        if listener is not None:
            listener.close()


STDLIB_PEER = """
import sys
import numpy as np
from multiprocessing.connection import Client
with Client(sys.argv[1]) as c:
    got = c.recv()
    assert np.array_equal(got["a"], np.arange(50.0)) and got["n"] == 1
    c.send({"b": np.arange(40, dtype=np.int16).reshape(4, 10), "s": "stdlib"})
    try:
        c.recv()
    except Exception as exc:
        print(type(exc).__name__, exc, flush=True)
"""


def test_stdlib_peer_in_another_process_with_the_default_setting(tmp_path):
    # Default (off): the stdlib peer gets ordinary in-band pickles both ways.
    # An out-of-band message reaching it fails loudly (invalid load key), never silently.
    address = str(tmp_path / "s")
    with net.Listener(address, trusted=True) as listener:
        proc = subprocess.Popen([sys.executable, "-c", STDLIB_PEER, address], env=child_env(),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            with listener.accept() as conn:
                assert not conn.out_of_band
                conn.send({"a": np.arange(50.0), "n": 1})
                got = conn.recv(timeout=60)
                assert got["s"] == "stdlib" and got["b"].tolist() == np.arange(40).reshape(4, 10).tolist()
                with net.Connection(os.dup(conn.fileno()), out_of_band=True) as oob:
                    oob.send(np.arange(3.0))
                out, err = proc.communicate(timeout=60)
        finally:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert out.startswith("UnpicklingError") and "invalid load key" in out


def test_stdlib_connection_in_process_reads_the_default_frames():
    left, right = socket.socketpair()
    with net.Connection(left, trusted=True) as ours:
        theirs = std_connection.Connection(right.detach())
        try:
            ours.send([np.arange(4.0), pickle.PickleBuffer(b"in band")])
            got = theirs.recv()
            assert got[0].tolist() == [0.0, 1.0, 2.0, 3.0] and bytes(got[1]) == b"in band"
            theirs.send({"x": np.ones(3)})
            assert ours.recv()["x"].tolist() == [1.0, 1.0, 1.0]
        finally:
            theirs.close()
