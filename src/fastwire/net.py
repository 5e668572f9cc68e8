"""A drop-in, faster :mod:`multiprocessing.connection` for sockets.

:class:`Connection`, :class:`Listener`, :func:`Client`, :func:`Pipe` and
:func:`wait` have the standard library's names, signatures and wire format:
the same ``'!i'`` length header (``-1`` then ``'!Q'`` above 2 GiB) and the same
authkey challenge/response handshake (the digest-negotiating one of Python
3.12+, which also answers and verifies the legacy HMAC-MD5 of 3.11 peers), so
a fastwire Client talks to a standard Listener and the other way round.
TCP over IPv4 and IPv6, and Unix sockets.

What is faster: ``send()`` and ``recv()`` are compiled (ConnectionCore): on a
socket without timeout (POSIX) a message is pickled behind its frame header
into a stack buffer and written with one ``send(2)`` on the descriptor, and one
``recv(2)`` straight into the frame scanner's buffer brings in every frame the
kernel has, each decoded without leaving C; with a timeout the socket module's
methods are used; :meth:`Connection.send_many`
writes a whole batch into one buffer and one system call; a large bytes
message is not copied on the way out (scatter/gather ``sendmsg``), and a
message over 1 MiB is read straight into its final place: the caller's
buffer (``recv_bytes_into``), the bytes returned (``recv_bytes``), or the
objects ``recv`` decodes while reading, which grow with the bytes that
arrive, never by what the pickle claims. Receiving 64 MiB then peaks at 1x
the payload. A large ``bytes`` received (``recv_bytes``, or ``recv`` of a
message that is one bytes object) is filled into the memory of the previous
one if the caller has dropped it: paging in fresh memory costs more than the
transfer. The connection keeps that one buffer until the next large message
or ``close()``.

Safe by default: :meth:`Connection.recv` decodes in fastwire.pickle's
restricted mode (builtin value types plus the ``allowed=`` globals); only a
connection opened with ``trusted=True`` runs arbitrary pickles. A frame longer
than ``max_frame_size`` (default 128 MiB) raises
:class:`~fastwire.frames.FrameTooLarge` and closes the connection.

Differences from the standard library, all on hostile or broken input: a peer
that closes mid-frame gives ``EOFError`` (the standard library raises OSError);
a negative length prefix raises :class:`~fastwire.frames.FrameError` (the
standard library reads it as an empty message).

Threads: one Connection may be shared by any number of threads. Sends are
serialised by one lock and receives by another (:class:`MessageLock`: a thread
waiting for one cannot be interrupted by a signal), so each message is written
and read whole, one sender and one receiver thread never wait for each other,
and the messages of one sending thread arrive in the order it sent them.
A call that finds its connection closed mid-way (by a callback it ran, a
signal handler or another thread) raises ``OSError("handle is closed")`` and
never touches the descriptor number again.

Unauthenticated peers cannot stall a server: the handshake has one deadline
(``handshake_timeout``, 10 s by default) and every way it can fail raises
AuthenticationError; ``allow_md5=False`` refuses legacy HMAC-MD5. A socket
timeout bounds each read; ``recv(timeout=)`` bounds a whole receive.
"""

from __future__ import annotations

import collections
import functools
import hmac
import operator
import os
import re
import select
import socket
import time
from multiprocessing import AuthenticationError, BufferTooShort
from multiprocessing import connection as _std_connection

from . import pickle as _pickle
from ._fastwire import FAST_SOCKETS, STREAM_THRESHOLD, ConnectionCore, MessageLock
from .frames import (
    DEFAULT_MAX_FRAME_SIZE,
    FrameError,
    FramePrefix,
    FrameScanner,
    dumps_framed,
)

__all__ = [
    "DEFAULT_HANDSHAKE_TIMEOUT",
    "DEFAULT_MAX_FRAME_SIZE",
    "AuthenticationError",
    "BufferTooShort",
    "Client",
    "Connection",
    "Listener",
    "Pipe",
    "wait",
]

_PREFIX = FramePrefix("multiprocessing")
# Payloads below this are copied out of the receive buffer (and concatenated with
# their header on the way out); larger ones are views / scatter-gather (pyzmq's rule).
COPY_THRESHOLD = 64 * 1024
# STREAM_THRESHOLD (from the compiled core, which tests it too): recv() decodes a frame
# at least this large while reading it, straight into the objects it makes, rather
# than assembling the frame first (which would double peak memory).
try:
    _IOV_MAX = max(16, min(os.sysconf("SC_IOV_MAX"), 1024))
except (AttributeError, ValueError, OSError):  # pragma: no cover - not on Linux
    _IOV_MAX = 16

_CHUNK = 1024 * 1024
# How much a large frame's reader takes from the socket at once for a line or a
# peek (the unpickler's prefetch is 128 KiB): bounded, whatever the frame claims.
_LINE_CHUNK = 256 * 1024
_NEWLINE = re.compile(b"\n")  # re searches a memoryview in place; bytes.find would need a copy


class Connection(ConnectionCore):
    """A message connection over a connected, blocking socket.

    ``Connection(sock)`` takes ownership of `sock` (a ``socket.socket`` or a
    file descriptor of one). ``trusted=False`` (the default) makes ``recv()``
    decode in restricted mode, allowing builtin value types plus the globals
    in `allowed`; ``trusted=True`` runs any pickle. Frames longer than
    `max_frame_size` are refused. The socket's timeout applies to every call
    (``TimeoutError``); a non-blocking socket raises ValueError here.
    A Connection is initialised once: calling ``__init__`` again raises
    RuntimeError (a call in progress holds the state it set up).
    """

    def __init__(self, sock, readable=True, writable=True, *, trusted=False, allowed=(),
                 max_frame_size=DEFAULT_MAX_FRAME_SIZE):
        if self._scanner is not None:
            raise RuntimeError("a fastwire.net.Connection cannot be initialised twice")
        if not isinstance(sock, socket.socket):
            sock = socket.socket(fileno=sock.__index__())
        if not readable and not writable:
            raise ValueError("at least one of `readable` and `writable` must be True")
        if sock.gettimeout() == 0.0:
            sock.close()
            raise ValueError(
                "fastwire.net.Connection needs a blocking socket (timeout None or > 0); "
                "use fastwire.aio for non-blocking I/O")
        self._sock = sock
        self._readable = readable
        self._writable = writable
        self._allowed = None if trusted else _pickle._restriction_of(allowed)
        self._max_frame_size = max_frame_size
        self._scanner = FrameScanner(_PREFIX, max_frame_size=max_frame_size,
                                     copy_threshold=COPY_THRESHOLD)
        self._ready = collections.deque()  # complete payloads received, not yet returned
        self._send_lock = MessageLock()
        self._recv_lock = MessageLock()
        self._fd = -1
        self._track_fast_path()

    # -- state -----------------------------------------------------------------

    @property
    def closed(self):
        """True if the connection is closed."""
        return self._sock is None

    @property
    def readable(self):
        """True if the connection is readable."""
        return self._readable

    @property
    def writable(self):
        """True if the connection is writable."""
        return self._writable

    @property
    def trusted(self):
        """True if recv() runs arbitrary pickles."""
        return self._allowed is None

    @property
    def max_frame_size(self):
        return self._max_frame_size

    def fileno(self):
        """File descriptor of the socket. Raises OSError if closed."""
        return self._live().fileno()

    def settimeout(self, timeout):
        """Set the timeout (seconds or None) of every later call. 0 is refused (non-blocking)."""
        if timeout is not None and timeout <= 0:
            raise ValueError("timeout must be None or > 0")
        self._live().settimeout(timeout)
        self._track_fast_path()

    def _track_fast_path(self):
        # The compiled send()/recv() use the descriptor directly only while the
        # socket blocks without a timeout; a timeout needs the socket module's.
        sock = self._sock
        self._fd = sock.fileno() if FAST_SOCKETS and sock is not None and sock.gettimeout() is None else -1

    def close(self):
        """Close the connection (idempotent)."""
        self._fd = -1  # first: the descriptor number may be reused once closed
        self._spare = None
        sock, self._sock = self._sock, None
        if sock is not None:
            sock.close()

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc_value, exc_tb):
        self.close()

    def __del__(self):
        sock = getattr(self, "_sock", None)
        if sock is not None:
            sock.close()

    def __repr__(self):
        state = "closed" if self._sock is None else f"fd={self._sock.fileno()}"
        return f"<fastwire.net.Connection {state}{' trusted' if self.trusted else ''}>"

    def _live(self):
        sock = self._sock
        if sock is None:
            raise OSError("handle is closed")
        return sock

    def _check_writable(self):
        if not self._writable:
            raise OSError("connection is read-only")

    def _check_readable(self):
        if not self._readable:
            raise OSError("connection is write-only")

    # -- sending ---------------------------------------------------------------

    # send() and recv() are ConnectionCore's (compiled); these are their
    # general paths: sockets with a timeout, Windows, large messages, errors.

    def _send_slowly(self, obj):
        sock = self._sock
        if sock is None or not self._writable:
            self._live()
            self._check_writable()
        if type(obj) in (bytes, bytearray) and len(obj) >= STREAM_THRESHOLD:
            chunks = []
            _pickle.dump(obj, _ChunkWriter(chunks), protocol=5)
            self._send_message(chunks)
            return
        self._send_frames(dumps_framed((obj,), _PREFIX, 5))

    def send_many(self, objs):
        """Send every object of `objs`, in order, with as few system calls as possible.

        Each object is pickled straight into one shared output buffer behind its
        frame header (no per-message objects, no concatenation copies), which
        leaves in a single ``sendall``. Same errors as send(); if pickling
        fails, nothing is sent.
        """
        self._live()
        self._check_writable()
        frames = dumps_framed(objs, _PREFIX, 5)
        if frames:
            self._send_frames(frames)

    def _send_frames(self, frames):
        # One write: no Nagle delay between header and payload (bpo-20540).
        with self._send_lock:
            self._guarded(self._live().sendall, frames)

    def send_bytes(self, buf, offset=0, size=None):
        """Send `size` bytes of the bytes-like `buf` from `offset` as one message.

        Raises ValueError for a bad offset/size (as the standard library does).
        """
        self._live()
        self._check_writable()
        m = memoryview(buf)
        if m.itemsize > 1:
            m = m.cast("B")
        n = m.nbytes
        if offset < 0:
            raise ValueError("offset is negative")
        if n < offset:
            raise ValueError("buffer length < offset")
        if size is None:
            size = n - offset
        elif size < 0:
            raise ValueError("size is negative")
        elif offset + size > n:
            raise ValueError("buffer length < offset + size")
        self._send_message((m[offset:offset + size],))

    def _send_message(self, chunks):
        size = 0
        for chunk in chunks:
            size += len(chunk)
        header = _PREFIX.header(size)
        if size < COPY_THRESHOLD:
            self._send_frames(header + b"".join(chunks))
        else:
            with self._send_lock:
                self._guarded(_sendmsg_all, self._live(), [header, *chunks])

    def _guarded(self, call, *args):
        """Run a socket write; a timeout mid-message leaves the stream unusable, so close."""
        try:
            return call(*args)
        except (TimeoutError, InterruptedError):
            self.close()
            raise

    # -- receiving -------------------------------------------------------------

    def _recv_slowly(self, timeout=None):
        self._live()
        self._check_readable()
        return self._recv_arriving(_deadline(timeout))  # it takes an already buffered frame first

    def _recv_arriving(self, deadline=None):
        """recv() when no complete frame is buffered: read until one is."""
        ready = self._ready
        with self._recv_lock:
            while True:
                while not ready:
                    self._fill(deadline=deadline)
                    if not ready:
                        length = self._scanner.partial_frame_size
                        if length is not None and length >= STREAM_THRESHOLD:
                            return self._load_streamed(*self._scanner.take_partial(), deadline)
                try:
                    frame = ready.popleft()
                except IndexError:  # a lock-free recv() in another thread took it
                    continue
                break
        return _pickle.loads(frame, allowed=self._allowed)

    def recv_bytes(self, maxlength=None, *, timeout=None):
        """Receive one message as bytes.

        Raises OSError("bad message length") if it is longer than `maxlength`
        (the connection then stops being readable, as in the standard
        library), EOFError/FrameTooLarge/TimeoutError as recv() does.
        `timeout` is a deadline for the whole call, as in recv().
        """
        self._live()
        self._check_readable()
        if maxlength is not None and maxlength < 0:
            raise ValueError("negative maxlength")
        deadline = _deadline(timeout)
        with self._recv_lock:
            frame = self._next_frame(maxlength, deadline)
        return frame if type(frame) is bytes else bytes(frame)

    def recv_bytes_into(self, buf, offset=0, *, timeout=None):
        """Receive one message into the writable bytes-like `buf` at byte `offset`.

        Returns its size. Raises BufferTooShort (carrying the whole message)
        if it does not fit, ValueError for a bad offset. `timeout` is a
        deadline for the whole call, as in recv().
        """
        self._live()
        self._check_readable()
        offset = operator.index(offset)  # once, before any lock: __index__ runs Python
        deadline = _deadline(timeout)
        with memoryview(buf) as m:
            itemsize = m.itemsize
            bytesize = itemsize * len(m)
            if offset < 0:
                raise ValueError("negative offset")
            elif offset > bytesize:
                raise ValueError("offset too large")
            with self._recv_lock, m.cast("B") as target:
                while not self._ready:
                    self._fill(deadline=deadline)
                    length = self._scanner.partial_frame_size
                    if (not self._ready and length is not None and length >= STREAM_THRESHOLD
                            and offset + length <= bytesize):
                        # Large and fits: the rest of it goes straight from the socket into buf.
                        length, head = self._scanner.take_partial()
                        target[offset:offset + len(head)] = head
                        try:
                            _recv_exactly(self._live(), target[offset + len(head):offset + length],
                                          deadline)
                        except BaseException:
                            self.close()  # the frame is cut: the stream cannot be resynchronised
                            raise
                        return length
                frame = self._ready.popleft()
                size = len(frame)
                if bytesize < offset + size:
                    raise BufferTooShort(bytes(frame))
                target[offset:offset + size] = frame
                return size

    def poll(self, timeout=0.0):
        """Whether a message can be received without blocking (waits up to `timeout`
        seconds, None = forever). Also True when the peer has closed (recv() then raises).
        """
        self._live()
        self._check_readable()
        deadline = None if timeout is None else time.monotonic() + max(timeout, 0.0)
        with self._recv_lock:
            while not self._ready:
                remaining = None if deadline is None else max(deadline - time.monotonic(), 0.0)
                if not _readable(self._live(), remaining):
                    return False
                if not self._fill(nonblocking=True):
                    return True  # end of stream: recv() raises EOFError at once
                if deadline is not None and time.monotonic() >= deadline and not self._ready:
                    return False
            return True

    def _next_frame(self, maxlength, deadline=None):
        while not self._ready:
            self._fill(deadline=deadline)
            length = None if self._ready else self._scanner.partial_frame_size
            if length is not None:
                if maxlength is not None and length > maxlength:
                    self._bad_message_length()
                if length >= STREAM_THRESHOLD:
                    return self._receive_large(deadline)
        if maxlength is not None and len(self._ready[0]) > maxlength:
            self._bad_message_length()
        return self._ready.popleft()

    def _receive_large(self, deadline=None):
        """The rest of a large frame, read straight into the bytes object returned."""
        length, head = self._scanner.take_partial()
        try:
            return self._receive_bytes(length, head, _recv_into_by(self._live(), deadline))
        except BaseException:
            self.close()  # the frame is cut: the stream cannot be resynchronised
            raise

    def _bad_message_length(self):
        if self._writable:
            self._readable = False
        else:
            self.close()
        raise OSError("bad message length")

    def _fill(self, nonblocking=False, deadline=None):
        """One read into the scanner; queue the frames it completed. False at end of stream.

        With a `deadline` (time.monotonic()), TimeoutError once it has passed
        with no byte to read; the bytes received so far stay buffered.
        """
        sock = self._live()
        waited = deadline is not None
        if waited:
            _wait_readable(sock, deadline)
        try:
            if nonblocking or waited:
                try:
                    frames = self._scanner.recv_from(sock, socket.MSG_DONTWAIT)
                except BlockingIOError:  # nothing yet (or a spurious wake-up)
                    return True
            else:
                frames = self._scanner.recv_from(sock)
        except FrameError:
            self.close()
            raise
        if frames is None:
            if nonblocking:
                return False  # poll(): recv() will raise at once
            if self._scanner.pending:
                self.close()
                raise EOFError("the peer closed the connection in the middle of a message")
            raise EOFError
        self._ready.extend(frames)
        return True

    def _load_streamed(self, length, received, deadline=None):
        """Decode a large frame while reading it, straight into the objects it makes."""
        shape = _lone_bytes_pickle(received, length)
        if shape is not None:
            return self._load_lone_bytes(length, received, *shape, deadline)
        reader = _FrameReader(self._live(), length, received, deadline)
        try:
            obj = _pickle.load(reader, allowed=self._allowed)
        except (EOFError, OSError):
            self.close()  # the frame is cut: the stream cannot be resynchronised
            raise
        except BaseException:
            self._drain(reader)
            raise
        self._drain(reader)  # the standard library ignores bytes after STOP too
        return obj

    def _drain(self, reader):
        try:
            reader.skip_rest()
        except BaseException:
            self.close()
            raise


    def _load_lone_bytes(self, length, received, op_end, size, trailer_size, deadline=None):
        """A frame that pickles one large bytes object, received like recv_bytes()
        (into recycled memory when it can be), then checked against its trailer."""
        try:
            sock = self._live()
            data = self._receive_bytes(size, received[op_end:op_end + size], _recv_into_by(sock, deadline))
            trailer = bytearray(received[op_end + size:])
            if len(trailer) < trailer_size:
                missing = bytearray(trailer_size - len(trailer))
                _recv_exactly(sock, memoryview(missing), deadline)
                trailer += missing
        except BaseException:
            self.close()  # the frame is cut: the stream cannot be resynchronised
            raise
        if trailer in (b".", b"\x94."):  # STOP, or MEMOIZE then STOP
            return data
        # Some other opcode follows the bytes: decode the frame the general way.
        return _pickle.loads(bytes(received[:op_end]) + data + trailer, allowed=self._allowed)


def _lone_bytes_pickle(received, length):
    """If the frame's pickle is PROTO, BINBYTES/BINBYTES8 and a 1- or 2-byte
    trailer (how every pickler writes one large bytes object), where its
    payload starts, its size and the trailer's size; else None."""
    if len(received) < 11 or received[0] != 0x80 or not 2 <= received[1] <= _pickle.HIGHEST_PROTOCOL:
        return None
    op = received[2]
    if op == 0x42:    # BINBYTES: 4-byte little-endian size
        op_end, size = 7, int.from_bytes(received[3:7], "little")
    elif op == 0x8E:  # BINBYTES8
        op_end, size = 11, int.from_bytes(received[3:11], "little")
    else:
        return None
    trailer_size = length - op_end - size
    return (op_end, size, trailer_size) if trailer_size in (1, 2) else None


class _ChunkWriter:
    """A file for pickle.Pickler that keeps the written chunks; the C pickler hands
    large bytes payloads over as the object itself, so they are never copied."""

    __slots__ = ("write",)

    def __init__(self, chunks):
        self.write = chunks.append


class _FrameReader:
    """The payload of one frame as a binary file, read from the socket on demand.

    It never returns a byte beyond the frame, and allocates only for bytes
    that have arrived, in chunks of at most 1 MiB (256 KiB for lines and
    peeks), except readinto() which fills the caller's (already allocated)
    buffer. ``peek()`` and a buffered ``readline()`` let the unpickler decode
    text opcodes from whole chunks, never a system call per byte.
    """

    def __init__(self, sock, length, received, deadline=None):
        self._sock = sock
        self._deadline = deadline
        self._head = received         # payload bytes received, not yet consumed from _pos
        self._pos = 0
        self._unread = length - len(received)  # payload bytes still on the socket

    def _available(self):
        return len(self._head) - self._pos + self._unread

    def _recv_into(self, view):
        _recv_exactly(self._sock, view, self._deadline)
        self._unread -= len(view)

    def _refill(self):
        """Replace the consumed head with the next bytes that arrive (one read)."""
        chunk = memoryview(bytearray(min(self._unread, _LINE_CHUNK)))
        n = _recv_into_by(self._sock, self._deadline)(chunk)
        if n == 0:
            raise EOFError("the peer closed the connection in the middle of a message")
        self._unread -= n
        self._head, self._pos = chunk[:n], 0

    def readinto(self, b):
        with memoryview(b) as m, m.cast("B") as target:
            n = min(len(target), self._available())
            head = min(n, len(self._head) - self._pos)
            target[:head] = self._head[self._pos:self._pos + head]
            self._pos += head
            if n > head:
                self._recv_into(target[head:n])
            return n

    def read(self, n=-1):
        if n is None or n < 0:
            n = self._available()
        n = min(n, self._available())
        head = min(n, len(self._head) - self._pos)
        parts = [self._head[self._pos:self._pos + head]]
        self._pos += head
        rest = n - head
        while rest:
            chunk = bytearray(min(rest, _CHUNK))
            self._recv_into(memoryview(chunk))
            parts.append(chunk)
            rest -= len(chunk)
        return b"".join(parts)

    def peek(self, n=0):
        """Buffered bytes (at most `n` if it is positive), without consuming them;
        reads once if none are buffered."""
        if self._pos == len(self._head) and self._unread:
            self._refill()
        end = len(self._head) if n <= 0 else min(len(self._head), self._pos + n)
        return bytes(self._head[self._pos:end])

    def readline(self, size=-1):
        parts = []
        got = 0
        while size is None or size < 0 or got < size:
            if self._pos == len(self._head):
                if not self._unread:
                    break
                self._refill()
            end = len(self._head)
            if size is not None and size >= 0:
                end = min(end, self._pos + size - got)
            newline = _NEWLINE.search(self._head, self._pos, end)
            stop = newline.end() if newline else end
            parts.append(self._head[self._pos:stop])
            got += stop - self._pos
            self._pos = stop
            if newline:
                break
        return b"".join(parts)

    def skip_rest(self):
        self._pos = len(self._head)
        scratch = memoryview(bytearray(min(self._unread, _CHUNK)))
        while self._unread:
            self._recv_into(scratch[:min(self._unread, len(scratch))])


def _deadline(timeout):
    """The time.monotonic() by which a call given `timeout` seconds must finish (None: never)."""
    if timeout is None:
        return None
    if not timeout > 0:
        raise ValueError("timeout must be None or > 0")
    return time.monotonic() + timeout


def _remaining(deadline):
    """Seconds left before `deadline` (None: no deadline), as a timeout that is
    already over rather than an invalid one once it has passed."""
    return None if deadline is None else max(deadline - time.monotonic(), 1e-9)


def _wait_readable(sock, deadline):
    """Wait until `sock` is readable; TimeoutError once `deadline` has passed."""
    remaining = deadline - time.monotonic()
    if remaining <= 0 or not _readable(sock, remaining):
        raise TimeoutError("timed out")


def _recv_some(sock, deadline, view):
    """One read into `view` of the bytes that arrive before `deadline`."""
    while True:
        _wait_readable(sock, deadline)
        try:
            return sock.recv_into(view, 0, socket.MSG_DONTWAIT)
        except BlockingIOError:  # a spurious wake-up
            continue


def _recv_into_by(sock, deadline):
    """`sock.recv_into`, or with a deadline, a recv_into that raises TimeoutError after it."""
    if deadline is None:
        return sock.recv_into
    return functools.partial(_recv_some, sock, deadline)


def _recv_exactly(sock, view, deadline=None):
    """Fill the writable byte view from the socket; EOFError if the peer closes first."""
    recv_into = _recv_into_by(sock, deadline)
    got, n = 0, len(view)
    while got < n:
        k = recv_into(view[got:])
        if k == 0:
            raise EOFError("the peer closed the connection in the middle of a message")
        got += k


def _sendmsg_all(sock, buffers):
    """Write every buffer with scatter/gather sendmsg, resuming after partial writes.

    Every buffer is bytes-like with len() == its size in bytes (bytes, bytearray,
    byte-format memoryviews).
    """
    while buffers:
        batch = buffers if len(buffers) <= _IOV_MAX else buffers[:_IOV_MAX]
        sent = sock.sendmsg(batch)
        if sent == sum(map(len, batch)):  # the usual case: all of it went out
            buffers = buffers[len(batch):]
            continue
        done = 0
        for buf in batch:
            if sent < len(buf):
                break
            sent -= len(buf)
            done += 1
        buffers = buffers[done:]
        if sent:
            buffers[0] = memoryview(buffers[0]).cast("B")[sent:]


def _readable(sock, timeout):
    if hasattr(select, "poll"):
        poller = select.poll()
        poller.register(sock, select.POLLIN)
        return bool(poller.poll(None if timeout is None else timeout * 1000))
    return bool(select.select([sock], [], [], timeout)[0])  # pragma: no cover


# -- authentication (Lib/multiprocessing/connection.py, 3.12+ protocol) -----------

_MESSAGE_LENGTH = 40
_CHALLENGE = b"#CHALLENGE#"
_WELCOME = b"#WELCOME#"
_FAILURE = b"#FAILURE#"
_ALLOWED_DIGESTS = frozenset({b"md5", b"sha256", b"sha384", b"sha3_256", b"sha3_384"})
_MAX_DIGEST_LEN = max(len(d) for d in _ALLOWED_DIGESTS)
# A 3.11 peer sends a bare 20-byte challenge and answers with a bare 16-byte HMAC-MD5.
_LEGACY_LENGTHS = (20, 16)


# Every handshake waits this long at most, by default: an idle or trickling
# peer must not hold a Listener's accept() (or an aio server's task) forever.
DEFAULT_HANDSHAKE_TIMEOUT = 10.0
# What an unauthenticated peer can make a handshake read raise, besides
# AuthenticationError: cut streams, timeouts, oversize messages (OSError, EOFError),
# bad length prefixes (FrameError/FrameTooLarge are ValueErrors), and digests
# this build of hashlib cannot compute (ValueError).
_HANDSHAKE_FAILURES = (OSError, EOFError, ValueError)


def _digest_name_and_payload(message):
    if len(message) in _LEGACY_LENGTHS:
        return "", message
    if message.startswith(b"{"):
        curly = message.find(b"}", 1, _MAX_DIGEST_LEN + 2)
        if curly > 0 and message[1:curly] in _ALLOWED_DIGESTS:
            return message[1:curly].decode("ascii"), message[curly + 1:]
    raise AuthenticationError(
        "unsupported message length, missing digest prefix, or unsupported digest")


def _digest_of(message, allow_md5):
    """The digest the peer's challenge or response uses ('md5' for a bare, legacy one);
    AuthenticationError if it is MD5 and `allow_md5` is false."""
    digest_name = _digest_name_and_payload(message)[0] or "md5"
    if digest_name == "md5" and not allow_md5:
        raise AuthenticationError("the peer uses HMAC-MD5, refused (allow_md5=False)")
    return digest_name


def _response(authkey, message):
    digest_name = _digest_name_and_payload(message)[0]
    if not digest_name:
        try:
            return hmac.new(authkey, message, "md5").digest()
        except ValueError:  # no MD5 (FIPS build)
            digest_name = "sha256"
    mac = hmac.new(authkey, message, digest_name).digest()
    return b"{%s}%s" % (digest_name.encode("ascii"), mac)


def _verify(authkey, message, response):
    digest_name, mac = _digest_name_and_payload(response)
    try:
        expected = hmac.new(authkey, message, digest_name or "md5").digest()
    except ValueError:
        raise AuthenticationError(f"digest {digest_name!r} unsupported") from None
    if len(expected) != len(mac) or not hmac.compare_digest(expected, mac):
        raise AuthenticationError("digest received was wrong")


def _check_authkey(authkey):
    if not isinstance(authkey, bytes):
        raise TypeError("authkey should be a byte string")


def _check_handshake_timeout(timeout):
    if timeout is not None and not timeout > 0:
        raise ValueError("handshake_timeout must be None or > 0")
    return timeout


# The handshake is written once, as generators of I/O steps: each yields the
# bytes to send, or _RECEIVE to be sent the next message back; run_handshake
# drives them over a Connection, fastwire.aio over a stream.
_RECEIVE = None
_MAX_HANDSHAKE_MESSAGE = 256


def challenge_steps(authkey, digest_name="sha256", *, allow_md5=True):
    """Challenge the peer to prove it knows `authkey` (AuthenticationError if not).

    With ``allow_md5=False`` a response in HMAC-MD5 (every peer before 3.12)
    is refused like a wrong one. ValueError at once for a `digest_name` the
    protocol does not offer (or "md5" with ``allow_md5=False``).
    """
    if digest_name.encode("ascii") not in _ALLOWED_DIGESTS or (digest_name == "md5" and not allow_md5):
        raise ValueError(f"digest_name {digest_name!r} is not offered")
    return _challenge_steps(authkey, digest_name, allow_md5)


def _challenge_steps(authkey, digest_name, allow_md5):
    message = b"{%s}%s" % (digest_name.encode("ascii"), os.urandom(_MESSAGE_LENGTH))
    yield _CHALLENGE + message
    response = yield _RECEIVE
    try:
        _digest_of(response, allow_md5)
        _verify(authkey, message, response)
    except AuthenticationError:
        yield _FAILURE
        raise
    yield _WELCOME


def answer_steps(authkey, *, allow_md5=True):
    """Prove to the peer that we know `authkey` (AuthenticationError if it disagrees).

    With ``allow_md5=False`` a challenge asking for HMAC-MD5 (every peer
    before 3.12) is refused: AuthenticationError, nothing is answered.
    """
    message = yield _RECEIVE
    if not message.startswith(_CHALLENGE):
        raise AuthenticationError("protocol error, expected a challenge")
    message = message[len(_CHALLENGE):]
    if len(message) < 20:
        raise AuthenticationError(f"challenge too short: {len(message)} bytes")
    _digest_of(message, allow_md5)
    yield _response(authkey, message)
    if (yield _RECEIVE) != _WELCOME:
        raise AuthenticationError("digest sent was rejected")


def handshake_failure(exc):
    """The AuthenticationError a handshake raises for `exc`, an error the peer
    caused (one of _HANDSHAKE_FAILURES): a server that catches
    AuthenticationError survives every unauthenticated peer."""
    return AuthenticationError(f"authentication handshake failed: {exc!r}")


def run_handshake(connection, steps, timeout=None):
    """Drive handshake steps over a Connection (messages over 256 bytes are refused).

    `timeout` bounds the whole handshake. Every failure, whatever the peer
    did, raises AuthenticationError (chained to the error it caused).
    """
    deadline = _deadline(timeout)
    reply = None
    try:
        while True:
            out = steps.send(reply)
            if out is _RECEIVE:
                reply = connection.recv_bytes(_MAX_HANDSHAKE_MESSAGE, timeout=_remaining(deadline))
            else:
                connection.send_bytes(out)
                reply = None
    except StopIteration:
        pass
    except _HANDSHAKE_FAILURES as exc:
        raise handshake_failure(exc) from exc


def deliver_challenge(connection, authkey, digest_name="sha256", *, allow_md5=True, timeout=None):
    """Challenge the peer on `connection`; AuthenticationError if it lacks `authkey`,
    answers in HMAC-MD5 while ``allow_md5=False``, or fails in any other way
    (`timeout`, seconds: a deadline for the whole exchange)."""
    run_handshake(connection, challenge_steps(authkey, digest_name, allow_md5=allow_md5), timeout)


def answer_challenge(connection, authkey, *, allow_md5=True, timeout=None):
    """Answer the peer's challenge on `connection`; AuthenticationError if refused,
    if it asks for HMAC-MD5 while ``allow_md5=False``, or on any other failure
    (`timeout`, seconds: a deadline for the whole exchange)."""
    run_handshake(connection, answer_steps(authkey, allow_md5=allow_md5), timeout)


def _authenticate(conn, authkey, *, server, allow_md5, timeout):
    """Both challenges over a new Connection (the server challenges first), within
    one deadline; the connection is closed if they fail."""
    deadline = _deadline(timeout)
    steps = (challenge_steps(authkey, allow_md5=allow_md5), answer_steps(authkey, allow_md5=allow_md5))
    try:
        for step in (steps if server else steps[::-1]):
            run_handshake(conn, step, _remaining(deadline))
    except BaseException:
        conn.close()
        raise


# -- endpoints ---------------------------------------------------------------------

_FAMILIES = {"AF_INET": socket.AF_INET, "AF_INET6": socket.AF_INET6}
if hasattr(socket, "AF_UNIX"):
    _FAMILIES["AF_UNIX"] = socket.AF_UNIX


def address_type(address):
    """'AF_INET', 'AF_INET6' or 'AF_UNIX' for an address; ValueError if unrecognised."""
    if type(address) is tuple:
        return "AF_INET6" if len(address) == 4 or ":" in str(address[0]) else "AF_INET"
    if type(address) in (str, bytes) or isinstance(address, os.PathLike):
        return "AF_UNIX"
    raise ValueError(f"address type of {address!r} unrecognized")


def _family(address, family):
    family = family or (address and address_type(address)) or _std_connection.default_family
    if family not in _FAMILIES:
        raise ValueError(f"Family {family} is not recognized.")
    return family


def _arbitrary_address(family):
    if family == "AF_INET6":
        return ("::1", 0)
    return _std_connection.arbitrary_address(family)


class Listener:
    """A bound, listening socket; ``accept()`` returns a :class:`Connection`.

    Same signature as ``multiprocessing.connection.Listener`` plus the
    :class:`Connection` options (`trusted`, `allowed`, `max_frame_size`) given
    to every accepted connection. With `authkey`, accept() runs the challenge
    handshake and raises AuthenticationError (the connection closed) for any
    peer that does not complete it: another key, garbage, a cut stream, or
    no answer within `handshake_timeout` seconds (None: wait forever).
    ``allow_md5=False`` refuses HMAC-MD5 both ways (peers before 3.12).
    """

    def __init__(self, address=None, family=None, backlog=1, authkey=None, *, trusted=False,
                 allowed=(), max_frame_size=DEFAULT_MAX_FRAME_SIZE,
                 handshake_timeout=DEFAULT_HANDSHAKE_TIMEOUT, allow_md5=True):
        family = _family(address, family)
        address = address or _arbitrary_address(family)
        if authkey is not None:
            _check_authkey(authkey)
        self._handshake_timeout = _check_handshake_timeout(handshake_timeout)
        self._allow_md5 = allow_md5
        sock = socket.socket(_FAMILIES[family])
        try:
            if os.name == "posix":
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setblocking(True)
            sock.bind(address)
            sock.listen(backlog)
            self._address = sock.getsockname()
        except OSError:
            sock.close()
            raise
        self._socket = sock
        self._family = family
        self._unlink = address if family == "AF_UNIX" and not _is_abstract(address) else None
        self._authkey = authkey
        self._options = dict(trusted=trusted, allowed=allowed, max_frame_size=max_frame_size)
        self._last_accepted = None

    def accept(self):
        """Wait for a connection; the authenticated :class:`Connection`."""
        if self._socket is None:
            raise OSError("listener is closed")
        sock, self._last_accepted = self._socket.accept()
        sock.setblocking(True)
        if self._family != "AF_UNIX":
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn = Connection(sock, **self._options)
        if self._authkey is not None:
            timeout = self._handshake_timeout
            conn.settimeout(timeout)  # bounds the handshake's writes; its reads share one deadline
            _authenticate(conn, self._authkey, server=True, allow_md5=self._allow_md5, timeout=timeout)
            conn.settimeout(None)
        return conn

    def close(self):
        """Close the listening socket (and remove its Unix socket file)."""
        sock, self._socket = self._socket, None
        if sock is not None:
            sock.close()
            path, self._unlink = self._unlink, None
            if path is not None:
                try:
                    os.unlink(path)
                except FileNotFoundError:
                    pass

    @property
    def address(self):
        return self._address

    @property
    def last_accepted(self):
        return self._last_accepted

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc_value, exc_tb):
        self.close()


def _is_abstract(address):
    return (isinstance(address, bytes) and address[:1] == b"\0") or (
        isinstance(address, str) and address[:1] == "\0")


def Client(address, family=None, authkey=None, *, trusted=False, allowed=(),
           max_frame_size=DEFAULT_MAX_FRAME_SIZE, timeout=None, handshake_timeout=None,
           allow_md5=True):
    """Connect to a Listener (fastwire's or the standard library's); a :class:`Connection`.

    `timeout` bounds the connect and every later read or write. With `authkey`,
    runs the challenge handshake: AuthenticationError (the connection closed)
    on a key mismatch or any other failure, including no answer within
    `handshake_timeout` seconds. That is None (no deadline) by default, unlike
    Listener's: a server starts the handshake only when it calls accept(),
    which may be late. ``allow_md5=False`` refuses HMAC-MD5 both ways.
    """
    family = _family(address, family)
    if authkey is not None:
        _check_authkey(authkey)
    _check_handshake_timeout(handshake_timeout)
    sock = socket.socket(_FAMILIES[family])
    try:
        sock.settimeout(timeout)
        sock.connect(address)
        if family != "AF_UNIX":
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except BaseException:
        sock.close()
        raise
    conn = Connection(sock, trusted=trusted, allowed=allowed, max_frame_size=max_frame_size)
    if authkey is not None:
        if handshake_timeout is not None and (timeout is None or handshake_timeout < timeout):
            conn.settimeout(handshake_timeout)  # bounds the handshake's writes
        _authenticate(conn, authkey, server=False, allow_md5=allow_md5, timeout=handshake_timeout)
        conn.settimeout(timeout)
    return conn


def Pipe(duplex=True, *, trusted=False, allowed=(), max_frame_size=DEFAULT_MAX_FRAME_SIZE):
    """A connected pair of Connections over a socketpair.

    With ``duplex=False`` the first can only receive and the second only send.
    """
    s1, s2 = socket.socketpair()
    s1.setblocking(True)
    s2.setblocking(True)
    options = dict(trusted=trusted, allowed=allowed, max_frame_size=max_frame_size)
    if duplex:
        return Connection(s1, **options), Connection(s2, **options)
    s1.shutdown(socket.SHUT_WR)
    s2.shutdown(socket.SHUT_RD)
    return Connection(s1, writable=False, **options), Connection(s2, readable=False, **options)


def wait(object_list, timeout=None):
    """Like ``multiprocessing.connection.wait``, aware of messages a fastwire
    Connection has already buffered: those are ready without touching the socket."""
    buffered = [c for c in object_list if isinstance(c, Connection) and c._ready]
    if buffered:
        return buffered
    return _std_connection.wait(object_list, timeout)
