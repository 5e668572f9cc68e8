"""Object streams for asyncio, framed like :mod:`fastwire.net`.

:func:`open_connection` / :func:`start_server` (and the ``unix`` variants)
give :class:`ObjectStream` objects: ``await send(obj)``, ``await recv()``,
``send_many``, ``send_bytes`` / ``recv_bytes``, and ``async for obj in stream``.

The wire format is ``multiprocessing.connection``'s (a ``'!i'`` length
header) and ``authkey=`` runs its challenge handshake, so a stream talks to a
:mod:`fastwire.net` or standard-library Connection on the other end. The same
safety defaults apply: ``recv()`` decodes in restricted mode unless the stream
was opened with ``trusted=True``, and a frame longer than ``max_frame_size``
aborts the connection with :class:`~fastwire.frames.FrameTooLarge`.

The handshake is bounded: a peer that has not completed it within a server's
``handshake_timeout`` seconds (default 10) is disconnected, and every way a
handshake can fail (a wrong key, garbage, a message over 256 bytes, a cut
stream, the timeout) raises AuthenticationError. ``allow_md5=False``
refuses HMAC-MD5 both ways.

Received bytes land in place: the protocol is an ``asyncio.BufferedProtocol``
whose buffer is the :class:`~fastwire.frames.FrameScanner`'s own. Flow control
both ways: ``send`` waits while the transport asks to pause writing, and
reading pauses while more than ``read_limit`` bytes of complete messages wait
to be received.

Out-of-band buffers (PEP 574): with ``out_of_band=True`` a stream sends every
PickleBuffer a pickle refers to (a NumPy array's data, ``PickleBuffer(...)``)
as a frame of its own, written from the caller's memory in paced chunks; every
stream receives such messages, each large buffer read straight into the memory
the rebuilt object owns (or into memory from ``recv(buffers=...)``). The wire
format and its bounds (``max_buffers``, ``max_message_size``) are those of
:mod:`fastwire.net`.
"""

from __future__ import annotations

import asyncio
import collections
import mmap
import operator
from multiprocessing import AuthenticationError

from . import pickle as _pickle
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
    is_out_of_band,
    manifest,
    parse_manifest,
    restriction_of,
)
from .frames import DEFAULT_MAX_FRAME_SIZE, FrameError, FrameScanner, dumps_framed

__all__ = [
    "ObjectStream",
    "open_connection",
    "open_unix_connection",
    "start_server",
    "start_unix_server",
]

DEFAULT_READ_LIMIT = 4 * 1024 * 1024
# A large out-of-band buffer is written in pieces of this size, each once the
# transport has room: its buffer never holds more than its high-water mark
# plus one piece, whatever the buffer's size.
SEND_CHUNK = 1 << 20


class _OutOfBand:
    """An out-of-band message being received, then waiting for recv(): the
    pickle stream and, per buffer, ``(data, source)``.

    `source` is the ``buffers=`` callable whose memory `data` is, None for
    memory this module allocated, or _SCANNED for a frame still in the
    scanner's memory (copied when recv() takes the message).
    """

    __slots__ = ("stream", "sizes", "readonly", "buffers", "target", "filled", "nbytes")

    def __init__(self, frame, sizes, readonly, offset):
        self.stream = memoryview(frame)[offset:]
        self.sizes = sizes
        self.readonly = readonly
        self.buffers = []
        self.target = None       # a landing buffer's memory, while it arrives
        self.filled = 0
        self.nbytes = len(frame) + sum(sizes)

    @property
    def complete(self):
        return len(self.buffers) == len(self.sizes) and self.target is None

    def expected_size(self):
        return self.sizes[len(self.buffers)]

    def settle(self, sink):
        """Give every buffer its final memory for a recv() with ``buffers=sink``."""
        for i, (data, source) in enumerate(self.buffers):
            if source is not sink:
                self.buffers[i] = (_land(data, self.sizes[i], self.readonly[i], sink), sink)

    def load(self, sink, allowed):
        self.settle(sink)
        return _pickle.loads(self.stream, buffers=[data for data, _ in self.buffers], allowed=allowed)


_SCANNED = object()


def _land(data, size, readonly, sink):
    """`data` (`size` bytes) copied into its final memory: from ``sink(size,
    readonly)`` if a callable is given, else a fresh PickleBuffer (read-only if
    the manifest says so: what the sender pickled comes back)."""
    if sink is None:
        if readonly:
            return _pickle.PickleBuffer(data if type(data) is bytes else bytes(data))
        return _pickle.PickleBuffer(bytearray(data))
    result, target = _sink_buffer(sink, size, readonly)
    target[:] = data
    return result


def _sink_buffer(sink, size, readonly):
    """``(object for the reconstruction, writable byte view of size bytes)`` from the
    caller's ``buffers`` callable; TypeError/ValueError if what it returns cannot hold them."""
    obj = sink(size, readonly)
    try:
        view = memoryview(obj)
    except TypeError:
        raise TypeError(f"buffers() must return a writable bytes-like object, not {type(obj).__name__}") from None
    if view.readonly:
        raise TypeError("buffers() returned a read-only buffer")
    if not view.c_contiguous:
        raise ValueError("buffers() returned a non-contiguous buffer")
    if view.nbytes < size:
        raise ValueError(f"buffers() returned {view.nbytes} bytes for a buffer of {size}")
    view = view.cast("B")
    return (obj if view.nbytes == size else view[:size]), view[:size]


def _fresh_buffer(size):
    """`size` bytes of lazily committed memory (pages are taken as bytes arrive
    in them, so a peer's claim alone commits nothing) for a large buffer."""
    memory = mmap.mmap(-1, size, **_PRIVATE)
    if _HUGEPAGE is not None:
        try:
            memory.madvise(_HUGEPAGE)  # fewer page faults while the buffer fills
        except OSError:
            pass
    return memory


_PRIVATE = {"flags": mmap.MAP_PRIVATE} if hasattr(mmap, "MAP_PRIVATE") else {}
_HUGEPAGE = getattr(mmap, "MADV_HUGEPAGE", None)


class _FrameProtocol(asyncio.BufferedProtocol):
    """Receives straight into a FrameScanner and queues the complete messages.

    An out-of-band message is assembled here: its manifest is checked as soon
    as it arrives, small buffer frames come from the scanner, and a large one
    is handed over as soon as its header has arrived, so get_buffer() gives
    out the buffer's final memory and the transport reads into it once.
    """

    def __init__(self, max_frame_size, read_limit, on_connect=None, *,
                 max_buffers=DEFAULT_MAX_BUFFERS, max_message_size=DEFAULT_MAX_MESSAGE_SIZE):
        self._scanner = FrameScanner(PREFIX, max_frame_size=max_frame_size,
                                     copy_threshold=COPY_THRESHOLD)
        self._max_buffers = max_buffers
        self._max_message_size = max_message_size
        self._frames = collections.deque()   # frame payloads and complete _OutOfBand messages
        self._assembly = None        # the _OutOfBand message arriving
        self._queued_bytes = 0
        self._read_limit = read_limit
        self._reading_paused = False
        self._waiter = None          # a recv() waiting for a message
        self._sink = None            # that recv()'s buffers= callable
        self._end = None             # the exception recv() raises once the queue is empty
        self._write_paused = False
        self._drain_waiters = collections.deque()
        self._on_connect = on_connect
        self.transport = None
        self.closed = None

    # -- transport callbacks -----------------------------------------------------

    def connection_made(self, transport):
        self.transport = transport
        self.closed = asyncio.get_running_loop().create_future()
        if self._on_connect is not None:
            self._on_connect(self)

    def get_buffer(self, sizehint):
        assembly = self._assembly
        if assembly is not None and assembly.target is not None:
            return assembly.target[assembly.filled:]
        return self._scanner.get_buffer(sizehint)

    def buffer_updated(self, nbytes):
        if self._end is not None:
            return  # failed: what still arrives is not read
        assembly = self._assembly
        try:
            if assembly is not None and assembly.target is not None:
                assembly.filled += nbytes
                if assembly.filled == len(assembly.target):
                    assembly.target = None
                    if assembly.complete:
                        self._assembled()
                return
            for frame in self._scanner.buffer_updated(nbytes):
                self._accept(frame)
            self._hand_over()
        except Exception as exc:  # FrameError, FrameTooLarge, or the buffers= callable's own error
            self._fail(exc)

    def eof_received(self):
        if self._scanner.pending or self._assembly is not None:
            self._finish(EOFError(EOF_IN_MESSAGE))
        else:
            self._finish(EOFError())
        return False

    def connection_lost(self, exc):
        if exc is None:
            exc = EOFError(EOF_IN_MESSAGE) if self._assembly is not None else EOFError()
        self._finish(exc)
        self._assembly = None
        if not self.closed.done():
            self.closed.set_result(None)
        self._write_paused = False
        while self._drain_waiters:
            waiter = self._drain_waiters.popleft()
            if not waiter.done():
                if exc is None:
                    waiter.set_result(None)
                else:
                    waiter.set_exception(exc)

    def pause_writing(self):
        self._write_paused = True

    def resume_writing(self):
        self._write_paused = False
        while self._drain_waiters:
            waiter = self._drain_waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)

    # -- out-of-band messages --------------------------------------------------------

    def _accept(self, frame):
        """Take one complete frame from the scanner."""
        assembly = self._assembly
        if assembly is not None:
            self._check_buffer_frame(assembly, len(frame))
            assembly.buffers.append((frame, _SCANNED))
            if assembly.complete:
                self._assembled()
        elif is_out_of_band(frame):
            sizes, readonly, offset = parse_manifest(
                frame, max_buffers=self._max_buffers, max_frame_size=self._scanner.max_frame_size,
                max_message_size=self._max_message_size)
            self._assembly = _OutOfBand(frame, sizes, readonly, offset)
            if not sizes:
                self._assembled()
        else:
            self._deliver(frame, len(frame))

    @staticmethod
    def _check_buffer_frame(assembly, length):
        expected = assembly.expected_size()
        if length != expected:
            raise FrameError(f"out-of-band buffer frame of {length} bytes, the manifest announced {expected}")

    def _hand_over(self):
        """If a large buffer frame's header has arrived, take its payload from the
        scanner: what arrived is copied into the buffer's final memory, and
        get_buffer() hands out the rest of that memory."""
        assembly = self._assembly
        length = self._scanner.partial_frame_size
        if assembly is None or length is None:
            return
        self._check_buffer_frame(assembly, length)
        if length < STREAM_THRESHOLD:
            return  # small: read with its neighbours, then copied
        # The memory is the waiting recv()'s if this message is the one it gets.
        sink = self._sink if self._waiter is not None and not self._frames else None
        index = len(assembly.buffers)
        readonly = assembly.readonly[index]
        if sink is None:
            target = memoryview(_fresh_buffer(length))
            result = _pickle.PickleBuffer(target.toreadonly() if readonly else target)
        else:
            assembly.settle(sink)  # the callable sees the buffers in order
            result, target = _sink_buffer(sink, length, readonly)
            if self._assembly is not assembly or self._end is not None or self.transport.is_closing():
                return  # the callable closed the stream: what arrives is not read
        _, received = self._scanner.take_partial()
        target[:len(received)] = received
        assembly.buffers.append((result, sink))
        assembly.target = target
        assembly.filled = len(received)

    def _assembled(self):
        assembly, self._assembly = self._assembly, None
        self._deliver(assembly, assembly.nbytes)

    # -- for ObjectStream ----------------------------------------------------------

    def _deliver(self, message, nbytes):
        self._frames.append(message)
        self._queued_bytes += nbytes
        if self._queued_bytes > self._read_limit and not self._reading_paused:
            self._reading_paused = True
            self.transport.pause_reading()
        self._wake()

    def _fail(self, exc):
        """A message cannot be received whole: the stream ends with `exc`."""
        self._finish(exc)
        self._assembly = None
        self.transport.abort()

    def _finish(self, exc):
        if self._end is None:
            self._end = exc
        self._wake()

    def _wake(self):
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def next_message(self, sink=None):
        """The next frame payload or complete _OutOfBand message; `sink` is the
        buffers= callable a large buffer arriving meanwhile lands in."""
        while not self._frames:
            if self._end is not None:
                raise self._end
            if self._waiter is not None:
                raise RuntimeError("recv() called while another task is already waiting for a message")
            self._waiter = asyncio.get_running_loop().create_future()
            self._sink = sink
            try:
                await self._waiter
            finally:
                self._waiter = None
                self._sink = None
        message = self._frames.popleft()
        self._queued_bytes -= message.nbytes if type(message) is _OutOfBand else len(message)
        if self._reading_paused and self._queued_bytes <= self._read_limit // 2:
            self._reading_paused = False
            self.transport.resume_reading()
        return message

    async def drain(self):
        if self._write_paused:
            waiter = asyncio.get_running_loop().create_future()
            self._drain_waiters.append(waiter)
            await waiter


class ObjectStream:
    """One connection carrying whole objects; created by open_connection/start_server.

    ``recv()`` raises EOFError at the end of the stream (also in the middle of
    a message: no partial object is returned), UnpicklingError for a refused
    or malformed pickle (the stream stays usable), FrameTooLarge/FrameError for
    a bad length prefix or out-of-band manifest (the connection is aborted).
    ``async for`` stops at a clean end of stream. One task may wait in recv()
    at a time; sends are written one message after another.

    With ``out_of_band=True``, ``send(obj)`` sends the PickleBuffers the
    pickle refers to out of band (PEP 574); only a fastwire peer understands
    that (every fastwire end receives such messages, whatever its setting).
    """

    def __init__(self, protocol, *, trusted=False, allowed=(), out_of_band=False):
        self._protocol = protocol
        self._transport = protocol.transport
        self._allowed = restriction_of(trusted, allowed)
        self._out_of_band = bool(out_of_band)
        self._send_lock = asyncio.Lock()  # an out-of-band message is written in several steps

    @property
    def transport(self):
        return self._transport

    @property
    def out_of_band(self):
        """True if send() sends PickleBuffers out of band."""
        return self._out_of_band

    def get_extra_info(self, name, default=None):
        return self._transport.get_extra_info(name, default)

    def _writable_transport(self):
        if self._transport.is_closing():
            raise ConnectionResetError("the connection is closed")
        return self._transport

    async def send(self, obj):
        """Send one object (pickle protocol 5); waits while the transport is paused.

        With ``out_of_band=True`` each PickleBuffer the pickle refers to goes
        as a frame of its own, written from the caller's memory without a
        copy; send() returns once the transport holds none of it, so the
        caller may change it then (not before). A message that set no buffer
        aside is the ordinary single frame.
        """
        if not self._out_of_band:
            # Pickled straight behind its frame header: one buffer, one write,
            # with no await in between, so it cannot land inside a message
            # another task writes in steps; only then is the lock waited for.
            if self._send_lock.locked():
                async with self._send_lock:
                    _write(self._writable_transport(), dumps_framed((obj,), PREFIX, 5))
            else:
                _write(self._writable_transport(), dumps_framed((obj,), PREFIX, 5))
            await self._protocol.drain()
            return
        set_aside = []
        stream = _pickle.dumps(obj, 5, buffer_callback=set_aside.append)
        raws = []
        try:
            raws += [buffer.raw() for buffer in set_aside]
            async with self._send_lock:
                transport = self._writable_transport()  # pickling may have closed it
                if not raws:
                    _write_all(transport, (PREFIX.header(len(stream)), stream))
                    await self._protocol.drain()
                    return
                head = manifest(raws)
                pieces = [PREFIX.header(len(head) + len(stream)), head, stream]
                for raw in raws:
                    pieces += (PREFIX.header(raw.nbytes), raw)
                try:
                    await self._write_paced(transport, pieces)
                except BaseException:
                    # Part of the message may be written: the stream cannot be resynchronised.
                    transport.abort()
                    raise
        finally:
            # Only the views made here: a PickleBuffer set aside may be the caller's own.
            for raw in raws:
                raw.release()

    async def _write_paced(self, transport, pieces):
        """Write `pieces` in order: runs of small ones joined, large ones in
        SEND_CHUNK pieces, each once the transport is below its high-water
        mark; then wait until the transport holds none of them."""
        small = []
        for piece in pieces:
            size = len(piece)
            if size < COPY_THRESHOLD:
                small.append(piece)
                continue
            if small:
                transport.write(b"".join(small))
                small = []
            piece = memoryview(piece)  # slices of a view copy nothing
            for start in range(0, size, SEND_CHUNK):
                await self._protocol.drain()
                self._writable_transport().write(piece[start:start + SEND_CHUNK])
        if small:
            transport.write(b"".join(small))
        await self._flushed()

    async def _flushed(self):
        """Wait until the transport's buffer is empty (3.12+ transports keep
        views of the caller's memory there)."""
        transport = self._transport
        if not transport.get_write_buffer_size():
            return
        low, high = transport.get_write_buffer_limits()
        # With both marks at 0 the transport pauses the protocol now and resumes
        # it once its buffer is empty: no polling. Nothing else writes meanwhile
        # (the send lock is held).
        transport.set_write_buffer_limits(high=0, low=0)
        try:
            await self._protocol.drain()
        finally:
            transport.set_write_buffer_limits(high=high, low=low)
        if transport.is_closing():  # woken by connection_lost: the bytes may not have gone out
            raise ConnectionResetError("the connection was closed while a message was being sent")

    async def send_many(self, objs):
        """Send every object of `objs` in order, in one transport write (in band)."""
        async with self._send_lock:
            transport = self._writable_transport()
            frames = dumps_framed(objs, PREFIX, 5)  # every pickle behind its header, in one buffer
            if frames:
                _write(transport, frames)
            await self._protocol.drain()

    async def send_bytes(self, data):
        """Send a bytes-like object as one message."""
        async with self._send_lock:
            _write_all(self._writable_transport(), (PREFIX.header(memoryview(data).nbytes), data))
            await self._protocol.drain()

    async def recv(self, *, buffers=None):
        """Receive one object (restricted decoding unless trusted).

        `buffers`, if given, is called as ``buffers(size, readonly)`` once per
        out-of-band buffer of the message, in order, and returns a writable
        bytes-like object of at least `size` bytes: the buffer's bytes land in
        it (directly if this recv() was waiting as they arrived, else copied)
        and the rebuilt object gets exactly it (a memoryview slice of it if it
        is larger). Its exceptions propagate; if the message was still
        arriving, the connection is closed.
        """
        if buffers is not None and not callable(buffers):
            raise TypeError("buffers must be a callable or None")
        message = await self._protocol.next_message(buffers)
        if type(message) is _OutOfBand:
            return message.load(buffers, self._allowed)
        return _pickle.loads(message, allowed=self._allowed)

    async def recv_bytes(self):
        """Receive one message as bytes.

        An out-of-band message (one recv() rebuilds) is consumed and raises
        FrameError; the stream stays usable.
        """
        message = await self._protocol.next_message()
        if type(message) is _OutOfBand:
            raise FrameError("an out-of-band message arrived: recv() receives it, recv_bytes() cannot")
        return message if type(message) is bytes else bytes(message)

    def __aiter__(self):
        return self

    async def __anext__(self):
        try:
            return await self.recv()
        except EOFError as exc:
            if exc.args:  # cut in the middle of a message: an error, not the end
                raise
            raise StopAsyncIteration from None

    def close(self):
        """Close the connection (buffered writes are flushed first)."""
        self._transport.close()

    def is_closing(self):
        return self._transport.is_closing()

    async def wait_closed(self):
        await self._protocol.closed

    async def __aenter__(self):
        return self

    async def __aexit__(self, exc_type, exc_value, exc_tb):
        self.close()
        await self.wait_closed()


async def _handshake(stream, steps):
    """Drive the protocol's handshake steps over a stream (AuthenticationError for
    every failure the peer causes)."""
    reply = None
    try:
        while True:
            out = steps.send(reply)
            if out is RECEIVE:
                reply = await stream.recv_bytes()
            else:
                await stream.send_bytes(out)
                reply = None
    except StopIteration:
        pass
    except HANDSHAKE_FAILURES as exc:
        raise handshake_failure(exc) from exc


async def _authenticate(stream, authkey, *, server, options):
    """Both challenges (the server's first) within handshake_timeout; the stream is
    closed if they fail."""
    scanner = stream._protocol._scanner
    limit = scanner.max_frame_size
    scanner.max_frame_size = MAX_HANDSHAKE_MESSAGE  # an unauthenticated peer gets nothing bigger in
    allow_md5 = options["allow_md5"]
    steps = (challenge_steps(authkey, allow_md5=allow_md5), answer_steps(authkey, allow_md5=allow_md5))
    try:
        async with asyncio.timeout(options["handshake_timeout"]):
            for step in (steps if server else steps[::-1]):
                await _handshake(stream, step)
    except TimeoutError as exc:
        stream.close()
        raise handshake_failure(exc) from exc
    except BaseException:
        stream.close()
        raise
    scanner.max_frame_size = limit


def _write(transport, data):
    """transport.write(data), a large buffer as a byte view of it.

    The selector transports of 3.12+ queue what they cannot send at once and,
    after each partial send, keep ``queued[sent:]``: for bytes that slice copies
    the whole rest, so a large message written while anything else is queued
    (the previous message's tail, below the low-water mark) is copied once per
    socket buffer's worth sent (a 64 MiB message: seconds). A view's slice
    copies nothing, and a byte view's slices count bytes, as the transport does.
    """
    if len(data) < COPY_THRESHOLD:
        transport.write(data)
    else:
        transport.write(memoryview(data).cast("B"))


def _write_all(transport, buffers):
    """Write the buffers in order: runs of small ones joined into one write, large
    ones through _write (no copy on 3.12+, whose transports queue buffers).

    transport.writelines() is avoided on purpose: in 3.12 and 3.13 (before
    3.12.9 / 3.13.2) it never pauses the protocol, so a fast writer fills memory
    without bound (gh-127655); write() applies flow control on every version.
    """
    small = []
    for buf in buffers:
        if len(buf) < COPY_THRESHOLD:
            small.append(buf)
            continue
        if small:
            transport.write(b"".join(small))
            small = []
        _write(transport, buf)
    if small:
        transport.write(b"".join(small))


def _factory(options, on_connect=None):
    return lambda: _FrameProtocol(options["max_frame_size"], options["read_limit"], on_connect,
                                  max_buffers=options["max_buffers"],
                                  max_message_size=options["max_message_size"])


def _bound(value, name):
    bound = operator.index(value)
    if bound < 0:
        raise ValueError(f"{name} must be >= 0")
    return bound


def _options(trusted, allowed, max_frame_size, read_limit, handshake_timeout, allow_md5,
             out_of_band, max_buffers, max_message_size):
    return dict(trusted=trusted, allowed=allowed, max_frame_size=max_frame_size, read_limit=read_limit,
                handshake_timeout=check_handshake_timeout(handshake_timeout), allow_md5=allow_md5,
                out_of_band=out_of_band, max_buffers=_bound(max_buffers, "max_buffers"),
                max_message_size=_bound(max_message_size, "max_message_size"))


def _stream(protocol, options):
    return ObjectStream(protocol, trusted=options["trusted"], allowed=options["allowed"],
                        out_of_band=options["out_of_band"])


async def _connected(connect, factory, options, authkey):
    if authkey is not None:
        check_authkey(authkey)
    _, protocol = await connect(factory)
    stream = _stream(protocol, options)
    if authkey is not None:
        await _authenticate(stream, authkey, server=False, options=options)
    return stream


async def open_connection(host=None, port=None, *, authkey=None, trusted=False, allowed=(),
                          max_frame_size=DEFAULT_MAX_FRAME_SIZE, read_limit=DEFAULT_READ_LIMIT,
                          handshake_timeout=None, allow_md5=True, out_of_band=False,
                          max_buffers=DEFAULT_MAX_BUFFERS, max_message_size=DEFAULT_MAX_MESSAGE_SIZE, **kwds):
    """Connect over TCP; an :class:`ObjectStream`. Extra keywords go to ``loop.create_connection``.

    With `authkey`, runs the multiprocessing challenge handshake first:
    AuthenticationError (the connection closed) on a key mismatch or any other
    failure, including no answer within `handshake_timeout` seconds (None, the
    default: no deadline, as a server may start the handshake late).

    ``out_of_band=True`` makes ``send()`` send PickleBuffers out of band (PEP
    574; turn it on only when the peer is fastwire). Out-of-band messages are
    received whatever the setting, bounded by `max_frame_size` (the manifest
    frame and each buffer), `max_buffers` (buffers per message) and
    `max_message_size` (their total bytes): FrameTooLarge, and the connection
    aborted, past any of them.
    """
    options = _options(trusted, allowed, max_frame_size, read_limit, handshake_timeout, allow_md5,
                       out_of_band, max_buffers, max_message_size)
    loop = asyncio.get_running_loop()
    return await _connected(lambda f: loop.create_connection(f, host, port, **kwds),
                            _factory(options), options, authkey)


async def open_unix_connection(path=None, *, authkey=None, trusted=False, allowed=(),
                               max_frame_size=DEFAULT_MAX_FRAME_SIZE, read_limit=DEFAULT_READ_LIMIT,
                               handshake_timeout=None, allow_md5=True, out_of_band=False,
                               max_buffers=DEFAULT_MAX_BUFFERS, max_message_size=DEFAULT_MAX_MESSAGE_SIZE,
                               **kwds):
    """Connect to a Unix socket; an :class:`ObjectStream` (like :func:`open_connection`)."""
    options = _options(trusted, allowed, max_frame_size, read_limit, handshake_timeout, allow_md5,
                       out_of_band, max_buffers, max_message_size)
    loop = asyncio.get_running_loop()
    return await _connected(lambda f: loop.create_unix_connection(f, path, **kwds),
                            _factory(options), options, authkey)


def _on_connect_calling(client_connected_cb, options, authkey):
    loop = asyncio.get_running_loop()
    if authkey is not None:
        check_authkey(authkey)

    async def serve(stream):
        try:
            await _authenticate(stream, authkey, server=True, options=options)
        except AuthenticationError:
            return  # refused (the stream is closed); the callback never sees this peer
        result = client_connected_cb(stream)
        if asyncio.iscoroutine(result):
            await result

    def on_connect(protocol):
        stream = _stream(protocol, options)
        if authkey is not None:
            result = serve(stream)
        else:
            result = client_connected_cb(stream)
        if asyncio.iscoroutine(result):
            protocol.handler = loop.create_task(result)  # referenced, so it is not collected

    return on_connect


async def start_server(client_connected_cb, host=None, port=None, *, authkey=None, trusted=False,
                       allowed=(), max_frame_size=DEFAULT_MAX_FRAME_SIZE, read_limit=DEFAULT_READ_LIMIT,
                       handshake_timeout=DEFAULT_HANDSHAKE_TIMEOUT, allow_md5=True, out_of_band=False,
                       max_buffers=DEFAULT_MAX_BUFFERS, max_message_size=DEFAULT_MAX_MESSAGE_SIZE, **kwds):
    """Serve over TCP: ``client_connected_cb(stream)`` (a function or coroutine) for each client.

    With `authkey`, each client must pass the challenge handshake first, within
    `handshake_timeout` seconds (None: no limit); a refused or silent client is
    disconnected and never reaches the callback. Returns the
    ``asyncio.Server``. Extra keywords go to ``loop.create_server``.
    `out_of_band`, `max_buffers` and `max_message_size` apply to every
    client's stream as in :func:`open_connection`.
    """
    options = _options(trusted, allowed, max_frame_size, read_limit, handshake_timeout, allow_md5,
                       out_of_band, max_buffers, max_message_size)
    on_connect = _on_connect_calling(client_connected_cb, options, authkey)
    return await asyncio.get_running_loop().create_server(_factory(options, on_connect), host, port, **kwds)


async def start_unix_server(client_connected_cb, path=None, *, authkey=None, trusted=False, allowed=(),
                            max_frame_size=DEFAULT_MAX_FRAME_SIZE, read_limit=DEFAULT_READ_LIMIT,
                            handshake_timeout=DEFAULT_HANDSHAKE_TIMEOUT, allow_md5=True, out_of_band=False,
                       max_buffers=DEFAULT_MAX_BUFFERS, max_message_size=DEFAULT_MAX_MESSAGE_SIZE, **kwds):
    """Serve on a Unix socket: like :func:`start_server`."""
    options = _options(trusted, allowed, max_frame_size, read_limit, handshake_timeout, allow_md5,
                       out_of_band, max_buffers, max_message_size)
    on_connect = _on_connect_calling(client_connected_cb, options, authkey)
    return await asyncio.get_running_loop().create_unix_server(_factory(options, on_connect), path, **kwds)
