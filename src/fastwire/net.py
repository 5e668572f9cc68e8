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

Arrays at memory speed: with ``out_of_band=True`` send() sends every
PickleBuffer (a NumPy array's data ...) out of band, PEP 574, written from the
caller's memory with one scatter-gather ``sendmsg``; every Connection receives
such messages, each buffer read once into memory the rebuilt object owns, or
the caller's (``recv(buffers=)``), bounded by ``max_frame_size``,
``max_buffers`` and ``max_message_size``. Off by default: a standard-library
peer cannot read them.

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

import os
import re
import socket
from multiprocessing import AuthenticationError, BufferTooShort, connection as _std_connection
from time import monotonic as _monotonic

from . import pickle as _pickle
from ._fastwire import (
    FAST_SOCKETS as FAST_SOCKETS,  # re-exported, as MessageLock
    ConnectionCore,
    MessageLock as MessageLock,
    deadline_of,
    recv_exactly,
)
from ._protocol import (
    COPY_THRESHOLD,
    DEFAULT_HANDSHAKE_TIMEOUT,
    DEFAULT_MAX_BUFFERS,
    DEFAULT_MAX_MESSAGE_SIZE,
    EOF_IN_MESSAGE,
    HANDSHAKE_FAILURES,
    MAX_HANDSHAKE_MESSAGE,
    PREFIX,
    RECEIVE,
    STREAM_THRESHOLD,
    answer_steps,
    challenge_steps,
    check_authkey,
    check_handshake_timeout,
    handshake_failure,
    manifest,
    restriction_of,
)
from .frames import DEFAULT_MAX_FRAME_SIZE, dumps_framed

__all__ = [
    "DEFAULT_HANDSHAKE_TIMEOUT",
    "DEFAULT_MAX_BUFFERS",
    "DEFAULT_MAX_MESSAGE_SIZE",
    "DEFAULT_MAX_FRAME_SIZE",
    "AuthenticationError",
    "BufferTooShort",
    "Client",
    "Connection",
    "Listener",
    "Pipe",
    "wait",
]

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
    `max_frame_size` are refused. ``out_of_band=True`` sends PickleBuffers
    (NumPy arrays' data ...) out of band, PEP 574: turn it on only when the
    peer is fastwire (a standard-library peer cannot read such a message);
    every Connection receives them, each within `max_frame_size`, at most
    `max_buffers` of them and `max_message_size` bytes in all per message.
    On TCP, a stream of sends uses Nagle's algorithm and every other message
    leaves at once (docs/net.md, "TCP and Nagle's algorithm");
    ``nodelay=True`` keeps TCP_NODELAY on for every message.
    The socket's timeout applies to every call
    (``TimeoutError``); a non-blocking socket raises ValueError here.
    A Connection is initialised once: calling ``__init__`` again raises
    RuntimeError (a call in progress holds the state it set up).

    State, send(), and every receive (recv, recv_bytes, recv_bytes_into,
    poll) are the compiled ConnectionCore's; this class provides its hooks
    (large messages: bytes sent without a copy, frames decoded while they
    arrive; out-of-band messages written with scatter-gather) and the sends
    that take several buffers.
    """

    def __init__(self, sock, readable=True, writable=True, *, trusted=False, allowed=(),
                 max_frame_size=DEFAULT_MAX_FRAME_SIZE, out_of_band=False,
                 max_buffers=DEFAULT_MAX_BUFFERS, max_message_size=DEFAULT_MAX_MESSAGE_SIZE, nodelay=False):
        super().__init__(sock, readable, writable, max_frame_size=max_frame_size,
                         allowed=restriction_of(trusted, allowed), out_of_band=out_of_band,
                         max_buffers=max_buffers, max_message_size=max_message_size, nodelay=nodelay)

    def __del__(self):
        sock = getattr(self, "_sock", None)
        if sock is not None:
            sock.close()

    def __repr__(self):
        sock = self._sock
        state = "closed" if sock is None else f"fd={sock.fileno()}"
        return f"<fastwire.net.Connection {state}{' trusted' if self.trusted else ''}>"

    # -- sending ---------------------------------------------------------------

    def _send_slowly(self, obj):
        self._live()
        self._check_writable()
        if type(obj) in (bytes, bytearray) and len(obj) >= STREAM_THRESHOLD:
            chunks = []
            _pickle.dump(obj, _ChunkWriter(chunks), protocol=5)
            self._send_message(chunks)
            return
        if self.out_of_band:
            set_aside = []
            stream = _pickle.dumps(obj, 5, buffer_callback=set_aside.append)
            if set_aside:
                self._send_out_of_band(stream, set_aside)
                return
            self._send_message((stream,))
            return
        self._send_locked(dumps_framed((obj,), PREFIX, 5))

    def _send_out_of_band(self, stream, buffers):
        """The manifest frame (carrying `stream`), then each buffer's bytes as a
        frame, in one scatter-gather write straight from the buffers' memory.
        The views made here are released after; the PickleBuffers are not (the
        caller may have passed them, and may use them again)."""
        raws = []
        try:
            for buffer in buffers:
                raws.append(buffer.raw())  # contiguous: the pickler refused any other
            head = manifest(raws)
            first = PREFIX.header(len(head) + len(stream)) + head
            parts = [first + stream] if len(stream) < COPY_THRESHOLD else [first, stream]
            for raw in raws:
                parts += (PREFIX.header(raw.nbytes), raw)
            self._send_locked(parts, _sendmsg_all)
        finally:
            for raw in raws:
                raw.release()

    def send_many(self, objs):
        """Send every object of `objs`, in order, with as few system calls as possible.

        Each object is pickled straight into one shared output buffer behind its
        frame header (no per-message objects, no concatenation copies), which
        leaves in a single ``sendall``. Same errors as send(); if pickling
        fails, nothing is sent.
        """
        self._live()
        self._check_writable()
        frames = dumps_framed(objs, PREFIX, 5)
        if frames:
            self._send_locked(frames)

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
        header = PREFIX.header(size)
        if size < COPY_THRESHOLD:
            # One write: no Nagle delay between header and payload (bpo-20540).
            self._send_locked(header + b"".join(chunks))
        else:
            self._send_locked([header, *chunks], _sendmsg_all)

    # -- receiving -------------------------------------------------------------

    def _load_streamed(self, length, received, recv_into):
        """Decode a large frame while reading it, straight into the objects it makes."""
        shape = _lone_bytes_pickle(received, length)
        if shape is not None:
            return self._load_lone_bytes(length, received, *shape, recv_into)
        reader = _FrameReader(recv_into, length, received)
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

    def _load_lone_bytes(self, length, received, op_end, size, trailer_size, recv_into):
        """A frame that pickles one large bytes object, received like recv_bytes()
        (into recycled memory when it can be), then checked against its trailer."""
        try:
            data = self._receive_bytes(size, received[op_end:op_end + size], recv_into)
            trailer = bytearray(received[op_end + size:])
            if len(trailer) < trailer_size:
                missing = bytearray(trailer_size - len(trailer))
                recv_exactly(recv_into, memoryview(missing))
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

    def __init__(self, recv_into, length, received):
        self._recv_into_raw = recv_into  # honours the receive's deadline
        self._head = received         # payload bytes received, not yet consumed from _pos
        self._pos = 0
        self._unread = length - len(received)  # payload bytes still on the socket

    def _available(self):
        return len(self._head) - self._pos + self._unread

    def _recv_into(self, view):
        recv_exactly(self._recv_into_raw, view)
        self._unread -= len(view)

    def _refill(self):
        """Replace the consumed head with the next bytes that arrive (one read)."""
        chunk = memoryview(bytearray(min(self._unread, _LINE_CHUNK)))
        n = self._recv_into_raw(chunk)
        if n == 0:
            raise EOFError(EOF_IN_MESSAGE)
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


def _remaining(deadline):
    """Seconds left before `deadline` (None: no deadline), as a timeout that is
    already over rather than an invalid one once it has passed."""
    return None if deadline is None else max(deadline - _monotonic(), 1e-9)


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


# -- authentication (the steps are _protocol's; these drive them over a Connection) --


def run_handshake(connection, steps, timeout=None):
    """Drive handshake steps over a Connection (messages over 256 bytes are refused).

    `timeout` bounds the whole handshake. Every failure, whatever the peer
    did, raises AuthenticationError (chained to the error it caused).
    """
    deadline = deadline_of(timeout)
    reply = None
    try:
        while True:
            out = steps.send(reply)
            if out is RECEIVE:
                reply = connection.recv_bytes(MAX_HANDSHAKE_MESSAGE, timeout=_remaining(deadline))
            else:
                connection.send_bytes(out)
                reply = None
    except StopIteration:
        pass
    except HANDSHAKE_FAILURES as exc:
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
    deadline = deadline_of(timeout)
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
    :class:`Connection` options (`trusted`, `allowed`, `max_frame_size`,
    `out_of_band`, `max_buffers`, `max_message_size`, `nodelay`) given to every accepted
    connection. With `authkey`, accept() runs the challenge
    handshake and raises AuthenticationError (the connection closed) for any
    peer that does not complete it: another key, garbage, a cut stream, or
    no answer within `handshake_timeout` seconds (None: wait forever).
    ``allow_md5=False`` refuses HMAC-MD5 both ways (peers before 3.12).
    """

    def __init__(self, address=None, family=None, backlog=1, authkey=None, *, trusted=False,
                 allowed=(), max_frame_size=DEFAULT_MAX_FRAME_SIZE,
                 handshake_timeout=DEFAULT_HANDSHAKE_TIMEOUT, allow_md5=True, out_of_band=False,
                 max_buffers=DEFAULT_MAX_BUFFERS, max_message_size=DEFAULT_MAX_MESSAGE_SIZE, nodelay=False):
        family = _family(address, family)
        address = address or _arbitrary_address(family)
        if authkey is not None:
            check_authkey(authkey)
        self._handshake_timeout = check_handshake_timeout(handshake_timeout)
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
        self._options = dict(trusted=trusted, allowed=allowed, max_frame_size=max_frame_size,
                             out_of_band=out_of_band, max_buffers=max_buffers,
                             max_message_size=max_message_size, nodelay=nodelay)
        self._last_accepted = None

    def accept(self):
        """Wait for a connection; the authenticated :class:`Connection`."""
        if self._socket is None:
            raise OSError("listener is closed")
        sock, self._last_accepted = self._socket.accept()
        sock.setblocking(True)
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
           allow_md5=True, out_of_band=False, max_buffers=DEFAULT_MAX_BUFFERS,
           max_message_size=DEFAULT_MAX_MESSAGE_SIZE, nodelay=False):
    """Connect to a Listener (fastwire's or the standard library's); a :class:`Connection`.

    `timeout` bounds the connect and every later read or write. With `authkey`,
    runs the challenge handshake: AuthenticationError (the connection closed)
    on a key mismatch or any other failure, including no answer within
    `handshake_timeout` seconds. That is None (no deadline) by default, unlike
    Listener's: a server starts the handshake only when it calls accept(),
    which may be late. ``allow_md5=False`` refuses HMAC-MD5 both ways.
    `out_of_band`, `max_buffers`, `max_message_size` and `nodelay` are the
    :class:`Connection`'s.
    """
    family = _family(address, family)
    if authkey is not None:
        check_authkey(authkey)
    check_handshake_timeout(handshake_timeout)
    sock = socket.socket(_FAMILIES[family])
    try:
        sock.settimeout(timeout)
        sock.connect(address)
    except BaseException:
        sock.close()
        raise
    conn = Connection(sock, trusted=trusted, allowed=allowed, max_frame_size=max_frame_size,
                      out_of_band=out_of_band, max_buffers=max_buffers, max_message_size=max_message_size,
                      nodelay=nodelay)
    if authkey is not None:
        if handshake_timeout is not None and (timeout is None or handshake_timeout < timeout):
            conn.settimeout(handshake_timeout)  # bounds the handshake's writes
        _authenticate(conn, authkey, server=False, allow_md5=allow_md5, timeout=handshake_timeout)
        conn.settimeout(timeout)
    return conn


def Pipe(duplex=True, *, trusted=False, allowed=(), max_frame_size=DEFAULT_MAX_FRAME_SIZE,
         out_of_band=False, max_buffers=DEFAULT_MAX_BUFFERS, max_message_size=DEFAULT_MAX_MESSAGE_SIZE):
    """A connected pair of Connections over a socketpair (the keywords are
    :class:`Connection`'s, given to both).

    With ``duplex=False`` the first can only receive and the second only send.
    """
    s1, s2 = socket.socketpair()
    s1.setblocking(True)
    s2.setblocking(True)
    options = dict(trusted=trusted, allowed=allowed, max_frame_size=max_frame_size,
                   out_of_band=out_of_band, max_buffers=max_buffers, max_message_size=max_message_size)
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
    if timeout is None or timeout > 0:
        for c in object_list:
            if isinstance(c, Connection):
                c._push_before_waiting()
    return _std_connection.wait(object_list, timeout)
