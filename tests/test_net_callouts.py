"""Callouts of fastwire.net.Connection: Python that runs in the middle of a call.

Pickling (``__reduce__``), unpickling (an allowed callable, ``__setstate__``), a
buffer's ``__buffer__``, an offset's or a timeout's comparisons, and signal
handlers on an interrupted system call all run Python while a send or receive
is in progress. Each test's callback does the worst there: closes the
connection, and then opens a new socket pair, which the kernel gives the
descriptor number just freed. The call must then raise (OSError("handle is
closed"), as multiprocessing.connection does for a closed connection) or give
the correct result, and the new socket must see nothing: no frame written to
it, no byte read from it. Every test is registered in docs/callouts.md.
"""

from __future__ import annotations

import contextlib
import pickle
import signal
import socket
import struct
import sys
import threading

import pytest

from fastwire import net
from tests.support.descriptors import Reuse


def frame(payload):
    return struct.pack("!i", len(payload)) + payload


@pytest.fixture
def pipe():
    a, b = net.Pipe(trusted=True)
    yield a, b
    a.close()
    b.close()


def closing_pickle(action):
    class ClosesWhenPickled:
        def __reduce__(self):
            action()
            return (int, (7,))

    return ClosesWhenPickled()


# -- sending -------------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["send", "send_many"])
def test_send_reduce_closes_and_the_descriptor_is_reused(pipe, how):
    a, b = pipe
    reuse = Reuse()
    obj = closing_pickle(lambda: reuse(a))
    with pytest.raises(OSError, match="handle is closed"):
        a.send(obj) if how == "send" else a.send_many(["before", obj])
    reuse.assert_untouched()
    with pytest.raises(EOFError):
        b.recv()  # the peer sees the end of the stream, and no frame before it


def test_send_reduce_closes_from_another_thread(pipe):
    a, _b = pipe
    reuse = Reuse()

    def close_elsewhere():
        thread = threading.Thread(target=reuse, args=(a,))
        thread.start()
        thread.join()

    with pytest.raises(OSError, match="handle is closed"):
        a.send(closing_pickle(close_elsewhere))
    reuse.assert_untouched()


def test_send_reduce_gives_the_connection_a_timeout(pipe):
    # The descriptor path stops applying mid-call: the message goes the socket module's way.
    a, b = pipe
    a.send(["x", closing_pickle(lambda: a.settimeout(5))])
    assert b.recv() == ["x", 7]


def test_send_reduce_sends_on_the_same_connection(pipe):
    a, b = pipe
    a.send(["outer", closing_pickle(lambda: a.send("inner"))])
    assert b.recv() == "inner"
    assert b.recv() == ["outer", 7]


def test_send_reduce_reinitialises_the_connection(pipe):
    a, b = pipe
    spare = socket.socketpair()

    def reinit():
        a.__init__(spare[0])

    with pytest.raises(RuntimeError, match="initialised twice"):
        a.send(closing_pickle(reinit))
    a.send("still works")
    assert b.recv() == "still works"
    for sock in spare:
        sock.close()


class ClosingOffset(int):
    """An offset whose comparison (a callout in send_bytes/recv_bytes_into) closes the connection."""

    def __new__(cls, value, action):
        self = super().__new__(cls, value)
        self.action = action
        return self

    def __lt__(self, other):
        self.action()
        return int(self) < other


def test_send_bytes_offset_comparison_closes(pipe):
    a, _b = pipe
    reuse = Reuse()
    with pytest.raises(OSError, match="handle is closed"):
        a.send_bytes(b"payload", ClosingOffset(1, lambda: reuse(a)))
    reuse.assert_untouched()


@pytest.mark.skipif(sys.version_info < (3, 12), reason="__buffer__ in Python classes is 3.12+ (PEP 688)")
def test_send_bytes_buffer_callout_closes(pipe):
    a, _b = pipe
    reuse = Reuse()

    class ClosingBuffer:
        def __buffer__(self, flags):
            reuse(a)
            return memoryview(b"payload")

    with pytest.raises(OSError, match="handle is closed"):
        a.send_bytes(ClosingBuffer())
    reuse.assert_untouched()


@pytest.mark.skipif(sys.version_info < (3, 12), reason="__buffer__ in Python classes is 3.12+ (PEP 688)")
def test_recv_bytes_into_buffer_callout_closes(pipe):
    a, b = pipe
    reuse = Reuse()
    target = bytearray(100)

    class ClosingBuffer:
        def __buffer__(self, flags):
            reuse(b)
            return memoryview(target)

    a.send_bytes(b"message")
    with pytest.raises(OSError, match="handle is closed"):
        b.recv_bytes_into(ClosingBuffer())
    reuse.assert_untouched()


class StillBlocked(AssertionError):
    """Raised by the alarm's later firings: the call went on after the connection was closed."""


@contextlib.contextmanager
def alarm_closing(conn, reuse):
    """SIGALRM after 0.2 s closes `conn` (and reuses its descriptor); should the call
    still be blocked a second later (on the descriptor's new owner), the next alarm
    fails it, so a regression fails instead of hanging."""
    fired = []

    def handler(*_):
        fired.append(1)
        if len(fired) == 1:
            reuse(conn)
        else:
            raise StillBlocked("the call kept blocking after its connection was closed")

    previous = signal.signal(signal.SIGALRM, handler)
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.2, 1.0)
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def test_signal_handler_closes_during_a_blocking_send(pipe):
    """EINTR in the compiled send loop runs the handler, which closes the connection;
    the retry must not write to the descriptor's next owner."""
    a, _b = pipe
    reuse = Reuse()
    with alarm_closing(a, reuse), pytest.raises(OSError, match="handle is closed"):
        a.send(b"x" * 900_000)  # compiled path; blocks: the peer does not read
    reuse.assert_untouched()


# -- receiving --------------------------------------------------------------------------


def test_signal_handler_closes_during_a_blocking_recv(pipe):
    _a, b = pipe
    reuse = Reuse()
    with alarm_closing(b, reuse), pytest.raises(OSError, match="handle is closed"):
        b.recv()  # compiled path; blocks: nothing was sent
    reuse.assert_untouched()


class Rebuilt:
    """Rebuilt on arrival by calling its class: the callout of an allowed global."""

    on_rebuild = None

    def __init__(self, value):
        self.value = value
        if Rebuilt.on_rebuild is not None:
            Rebuilt.on_rebuild()

    def __reduce__(self):
        return (Rebuilt, (self.value,))


@pytest.fixture
def rebuild_hook():
    yield Rebuilt
    Rebuilt.on_rebuild = None


@pytest.mark.parametrize("trusted", [True, False])
def test_recv_callout_closes_while_a_small_message_is_decoded(rebuild_hook, trusted):
    a, b = net.Pipe(trusted=trusted, allowed=() if trusted else [Rebuilt])
    reuse = Reuse()
    message = [Rebuilt(1), "tail"]
    Rebuilt.on_rebuild = lambda: reuse(b)
    a.send(message)
    got = b.recv()  # the frame had arrived whole: decoding it is correct
    assert got[0].value == 1 and got[1] == "tail"
    with pytest.raises(OSError, match="handle is closed"):
        b.recv()
    reuse.assert_untouched()
    a.close()


@pytest.mark.parametrize("trusted", [True, False])
def test_recv_callout_closes_while_a_large_message_arrives(rebuild_hook, trusted):
    """A frame over 1 MiB is decoded while it arrives; the callout closes the connection
    half-way, so the rest of the frame must not be read from the descriptor's next owner."""
    a, b = net.Pipe(trusted=trusted, allowed=() if trusted else [Rebuilt])
    reuse = Reuse()
    message = pickle.dumps([Rebuilt(1)] + [bytes([i % 251]) * 4096 + b"%d" % i for i in range(1024)],
                           protocol=5)
    assert len(message) > net.STREAM_THRESHOLD
    Rebuilt.on_rebuild = lambda: reuse(b)
    def send():
        try:
            a.send_bytes(message)
        except OSError:  # BrokenPipeError: the receiver closed half-way, as it must
            pass

    sender = threading.Thread(target=send)
    sender.start()
    with pytest.raises(OSError):
        b.recv()
    sender.join(10)
    assert b.closed
    reuse.assert_untouched()
    a.close()


class ClosingIndex:
    def __init__(self, value, action):
        self.value, self.action = value, action

    def __index__(self):
        self.action()
        return self.value


def test_recv_bytes_into_offset_index_closes(pipe):
    a, b = pipe
    reuse = Reuse()
    a.send_bytes(b"message")
    with pytest.raises(OSError, match="handle is closed"):
        b.recv_bytes_into(bytearray(100), ClosingIndex(0, lambda: reuse(b)))
    reuse.assert_untouched()


def test_recv_bytes_into_offset_comparison_is_made_once_before_receiving(pipe):
    # An int subclass is read as its value, once: its comparisons never run mid-call.
    a, b = pipe
    calls = []
    target = bytearray(10)
    a.send_bytes(b"message")
    assert b.recv_bytes_into(target, ClosingOffset(2, lambda: calls.append(1))) == 7
    assert target == b"\0\0message\0" and not calls


class ClosingTimeout(float):
    def __new__(cls, value, action):
        self = super().__new__(cls, value)
        self.action = action
        return self

    def __gt__(self, other):
        self.action()
        return float(self) > other

    def __lt__(self, other):
        self.action()
        return float(self) < other


@pytest.mark.parametrize("call", ["poll", "recv", "recv_bytes"])
def test_timeout_comparison_closes(pipe, call):
    _a, b = pipe
    reuse = Reuse()
    timeout = ClosingTimeout(1.0, lambda: reuse(b))
    with pytest.raises(OSError, match="handle is closed"):
        b.poll(timeout) if call == "poll" else getattr(b, call)(timeout=timeout)
    reuse.assert_untouched()


def test_close_from_another_thread_during_a_blocking_recv_with_deadline(pipe):
    _a, b = pipe
    reuse = Reuse()
    timer = threading.Timer(0.2, reuse, args=(b,))
    timer.start()
    with pytest.raises(OSError):
        b.recv(timeout=5)
    timer.join()
    reuse.assert_untouched()


def test_init_reentered_from_the_descriptors_index():
    """__init__ claims the connection only after the socket's methods ran: an
    __index__ that initialises the same connection wins, the outer call is
    refused, and the descriptor it was given stays the caller's, open."""
    ours, peer = socket.socketpair()
    inner, inner_peer = socket.socketpair()
    conn = net.Connection.__new__(net.Connection)

    class Descriptor:
        def __index__(self):
            conn.__init__(inner)
            return ours.fileno()

    with pytest.raises(RuntimeError, match="initialised twice"):
        conn.__init__(Descriptor())
    with net.Connection(inner_peer) as other:
        conn.send("inner")
        assert other.recv() == "inner"
    ours.sendall(b"open")
    assert peer.recv(4) == b"open"
    conn.close()
    for sock in (ours, peer):
        sock.close()


class SocketClosingInFileno(socket.socket):
    """A socket whose fileno() runs `action` (once) after reading the number."""

    action = None

    def fileno(self):
        number = super().fileno()
        action, self.action = self.action, None
        if action is not None:
            action()
        return number


def test_settimeout_callout_closes_and_the_descriptor_is_reused(pipe):
    """settimeout(None) looks up the descriptor through the socket's methods; one
    that closes the connection meanwhile must not leave that number behind for
    the compiled send()/recv() (the next socket opened takes it over)."""
    _a, b = pipe
    s1, s2 = socket.socketpair()
    conn = net.Connection(SocketClosingInFileno(fileno=s1.detach()), trusted=True)
    reuse = Reuse()
    conn.settimeout(1.0)
    conn._sock.action = lambda: reuse(conn)
    conn.settimeout(None)
    assert conn._fd == -1
    with pytest.raises(OSError, match="handle is closed"):
        conn.send("lost")
    with pytest.raises(OSError, match="handle is closed"):
        conn.recv()
    reuse.assert_untouched()
    s2.close()
