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
"""

from __future__ import annotations

import asyncio
import collections
from multiprocessing import AuthenticationError

from . import pickle as _pickle
from ._protocol import (
    COPY_THRESHOLD,
    DEFAULT_HANDSHAKE_TIMEOUT,
    EOF_IN_MESSAGE,
    HANDSHAKE_FAILURES,
    MAX_HANDSHAKE_MESSAGE,
    PREFIX,
    RECEIVE,
    answer_steps,
    challenge_steps,
    check_authkey,
    check_handshake_timeout,
    handshake_failure,
    restriction_of,
)
from .frames import DEFAULT_MAX_FRAME_SIZE, FrameScanner, dumps_framed

__all__ = [
    "ObjectStream",
    "open_connection",
    "open_unix_connection",
    "start_server",
    "start_unix_server",
]

DEFAULT_READ_LIMIT = 4 * 1024 * 1024


class _FrameProtocol(asyncio.BufferedProtocol):
    """Receives straight into a FrameScanner and queues the complete frames."""

    def __init__(self, max_frame_size, read_limit, on_connect=None):
        self._scanner = FrameScanner(PREFIX, max_frame_size=max_frame_size,
                                     copy_threshold=COPY_THRESHOLD)
        self._frames = collections.deque()
        self._queued_bytes = 0
        self._read_limit = read_limit
        self._reading_paused = False
        self._waiter = None          # a recv() waiting for a frame
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
        return self._scanner.get_buffer(sizehint)

    def buffer_updated(self, nbytes):
        try:
            frames = self._scanner.buffer_updated(nbytes)
        except ValueError as exc:  # FrameError / FrameTooLarge: the stream is unusable
            self._finish(exc)
            self.transport.abort()
            return
        if frames:
            self._frames.extend(frames)
            for frame in frames:
                self._queued_bytes += len(frame)
            if self._queued_bytes > self._read_limit and not self._reading_paused:
                self._reading_paused = True
                self.transport.pause_reading()
            self._wake()

    def eof_received(self):
        if self._scanner.pending:
            self._finish(EOFError(EOF_IN_MESSAGE))
        else:
            self._finish(EOFError())
        return False

    def connection_lost(self, exc):
        self._finish(exc if exc is not None else EOFError())
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

    # -- for ObjectStream ----------------------------------------------------------

    def _finish(self, exc):
        if self._end is None:
            self._end = exc
        self._wake()

    def _wake(self):
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def next_frame(self):
        while not self._frames:
            if self._end is not None:
                raise self._end
            if self._waiter is not None:
                raise RuntimeError("recv() called while another task is already waiting for a message")
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        frame = self._frames.popleft()
        self._queued_bytes -= len(frame)
        if self._reading_paused and self._queued_bytes <= self._read_limit // 2:
            self._reading_paused = False
            self.transport.resume_reading()
        return frame

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
    a bad length prefix (the connection is aborted). ``async for`` stops at a
    clean end of stream. One task may wait in recv() at a time.
    """

    def __init__(self, protocol, *, trusted=False, allowed=()):
        self._protocol = protocol
        self._transport = protocol.transport
        self._allowed = restriction_of(trusted, allowed)

    @property
    def transport(self):
        return self._transport

    def get_extra_info(self, name, default=None):
        return self._transport.get_extra_info(name, default)

    def _writable_transport(self):
        if self._transport.is_closing():
            raise ConnectionResetError("the connection is closed")
        return self._transport

    async def send(self, obj):
        """Send one object (pickle protocol 5); waits while the transport is paused."""
        # Pickled straight behind its frame header: one buffer, one write.
        self._writable_transport().write(dumps_framed((obj,), PREFIX, 5))
        await self._protocol.drain()

    async def send_many(self, objs):
        """Send every object of `objs` in order, in one transport write."""
        transport = self._writable_transport()
        frames = dumps_framed(objs, PREFIX, 5)  # every pickle behind its header, in one buffer
        if frames:
            transport.write(frames)
        await self._protocol.drain()

    async def send_bytes(self, data):
        """Send a bytes-like object as one message."""
        _write_all(self._writable_transport(), (PREFIX.header(memoryview(data).nbytes), data))
        await self._protocol.drain()

    async def recv(self):
        """Receive one object (restricted decoding unless trusted)."""
        frame = await self._protocol.next_frame()
        return _pickle.loads(frame, allowed=self._allowed)

    async def recv_bytes(self):
        """Receive one message as bytes."""
        frame = await self._protocol.next_frame()
        return frame if type(frame) is bytes else bytes(frame)

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


def _write_all(transport, buffers):
    """Write the buffers in order: runs of small ones joined into one write, large
    ones passed as they are (no copy on 3.12+, whose transports queue buffers).

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
        transport.write(buf)
    if small:
        transport.write(b"".join(small))


def _factory(options, on_connect=None):
    return lambda: _FrameProtocol(options["max_frame_size"], options["read_limit"], on_connect)


def _options(trusted, allowed, max_frame_size, read_limit, handshake_timeout, allow_md5):
    return dict(trusted=trusted, allowed=allowed, max_frame_size=max_frame_size, read_limit=read_limit,
                handshake_timeout=check_handshake_timeout(handshake_timeout), allow_md5=allow_md5)


async def _connected(connect, factory, options, authkey):
    if authkey is not None:
        check_authkey(authkey)
    _, protocol = await connect(factory)
    stream = ObjectStream(protocol, trusted=options["trusted"], allowed=options["allowed"])
    if authkey is not None:
        await _authenticate(stream, authkey, server=False, options=options)
    return stream


async def open_connection(host=None, port=None, *, authkey=None, trusted=False, allowed=(),
                          max_frame_size=DEFAULT_MAX_FRAME_SIZE, read_limit=DEFAULT_READ_LIMIT,
                          handshake_timeout=None, allow_md5=True, **kwds):
    """Connect over TCP; an :class:`ObjectStream`. Extra keywords go to ``loop.create_connection``.

    With `authkey`, runs the multiprocessing challenge handshake first:
    AuthenticationError (the connection closed) on a key mismatch or any other
    failure, including no answer within `handshake_timeout` seconds (None, the
    default: no deadline, as a server may start the handshake late).
    """
    options = _options(trusted, allowed, max_frame_size, read_limit, handshake_timeout, allow_md5)
    loop = asyncio.get_running_loop()
    return await _connected(lambda f: loop.create_connection(f, host, port, **kwds),
                            _factory(options), options, authkey)


async def open_unix_connection(path=None, *, authkey=None, trusted=False, allowed=(),
                               max_frame_size=DEFAULT_MAX_FRAME_SIZE, read_limit=DEFAULT_READ_LIMIT,
                               handshake_timeout=None, allow_md5=True, **kwds):
    """Connect to a Unix socket; an :class:`ObjectStream` (like :func:`open_connection`)."""
    options = _options(trusted, allowed, max_frame_size, read_limit, handshake_timeout, allow_md5)
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
        stream = ObjectStream(protocol, trusted=options["trusted"], allowed=options["allowed"])
        if authkey is not None:
            result = serve(stream)
        else:
            result = client_connected_cb(stream)
        if asyncio.iscoroutine(result):
            protocol.handler = loop.create_task(result)  # referenced, so it is not collected

    return on_connect


async def start_server(client_connected_cb, host=None, port=None, *, authkey=None, trusted=False,
                       allowed=(), max_frame_size=DEFAULT_MAX_FRAME_SIZE, read_limit=DEFAULT_READ_LIMIT,
                       handshake_timeout=DEFAULT_HANDSHAKE_TIMEOUT, allow_md5=True, **kwds):
    """Serve over TCP: ``client_connected_cb(stream)`` (a function or coroutine) for each client.

    With `authkey`, each client must pass the challenge handshake first, within
    `handshake_timeout` seconds (None: no limit); a refused or silent client is
    disconnected and never reaches the callback. Returns the
    ``asyncio.Server``. Extra keywords go to ``loop.create_server``.
    """
    options = _options(trusted, allowed, max_frame_size, read_limit, handshake_timeout, allow_md5)
    on_connect = _on_connect_calling(client_connected_cb, options, authkey)
    return await asyncio.get_running_loop().create_server(_factory(options, on_connect), host, port, **kwds)


async def start_unix_server(client_connected_cb, path=None, *, authkey=None, trusted=False, allowed=(),
                            max_frame_size=DEFAULT_MAX_FRAME_SIZE, read_limit=DEFAULT_READ_LIMIT,
                            handshake_timeout=DEFAULT_HANDSHAKE_TIMEOUT, allow_md5=True, **kwds):
    """Serve on a Unix socket: like :func:`start_server`."""
    options = _options(trusted, allowed, max_frame_size, read_limit, handshake_timeout, allow_md5)
    on_connect = _on_connect_calling(client_connected_cb, options, authkey)
    return await asyncio.get_running_loop().create_unix_server(_factory(options, on_connect), path, **kwds)
