"""Benchmark pairs for fastwire.aio against the asyncio code a user writes by hand.

The standard-library side is asyncio streams carrying multiprocessing.connection
framing (a '!i' length header) and stdlib pickle, written the obvious way:

    writer.write(header + payload); await writer.drain()
    n, = unpack("!i", await reader.readexactly(4)); pickle.loads(await reader.readexactly(n))

Both sides run over a real TCP connection on 127.0.0.1, client and server
ends in one event loop, one loop per side. Each timed call runs one coroutine
to completion with loop.run_until_complete, so both columns include that
driver's cost (a task and a turn of the loop, a few microseconds).
fastwire's recv() decodes in the restricted mode (its default), the stdlib
side with plain pickle.loads.
"""

import asyncio
import pickle
import struct

from fastwire import aio

from . import Pair

SMALL = {"id": 12345, "name": "fastwire", "score": 3.25, "tags": ["a", "b"]}
BATCH = 100
BIG = 64 * 1024 * 1024
_HEADER = struct.Struct("!i")


class _StdlibEnds:
    """Both ends of one asyncio streams connection, framed like multiprocessing.connection."""

    def __init__(self, loop):
        self.loop = loop
        accepted = loop.create_future()

        def on_client(reader, writer):
            accepted.set_result((reader, writer))

        async def connect():
            server = await asyncio.start_server(on_client, "127.0.0.1", 0)
            port = server.sockets[0].getsockname()[1]
            client = await asyncio.open_connection("127.0.0.1", port)
            return server, client, await accepted

        self.server, (self.client_reader, self.client_writer), (self.reader, self.writer) = \
            loop.run_until_complete(connect())

    def close(self):
        async def close():
            for writer in (self.client_writer, self.writer):
                writer.close()
                await writer.wait_closed()
            self.server.close()
            await self.server.wait_closed()
        self.loop.run_until_complete(close())
        self.loop.close()

    async def send(self, obj):
        payload = pickle.dumps(obj, protocol=5)
        self.client_writer.write(_HEADER.pack(len(payload)) + payload)
        await self.client_writer.drain()

    async def recv(self):
        (size,) = _HEADER.unpack(await self.reader.readexactly(4))
        return pickle.loads(await self.reader.readexactly(size))


class _FastwireEnds:
    """Both ends of one fastwire.aio connection."""

    def __init__(self, loop):
        self.loop = loop
        accepted = loop.create_future()

        async def connect():
            server = await aio.start_server(accepted.set_result, "127.0.0.1", 0)
            port = server.sockets[0].getsockname()[1]
            client = await aio.open_connection("127.0.0.1", port)
            return server, client, await accepted

        self.server, self.client, self.peer = loop.run_until_complete(connect())

    def close(self):
        async def close():
            for stream in (self.client, self.peer):
                stream.close()
                await stream.wait_closed()
            self.server.close()
            await self.server.wait_closed()
        self.loop.run_until_complete(close())
        self.loop.close()

    async def send(self, obj):
        await self.client.send(obj)

    async def send_many(self, objs):
        await self.client.send_many(objs)

    async def recv(self):
        return await self.peer.recv()


def _round_trip(ends):
    async def one():
        await ends.send(SMALL)
        if await ends.recv() != SMALL:  # both sides pay for this check
            raise AssertionError("round trip changed the message")
    return lambda: ends.loop.run_until_complete(one())


def _batch(ends, *, use_send_many=False):
    batch = [SMALL] * BATCH

    async def sends_then_receives():
        if use_send_many:
            await ends.send_many(batch)
        else:
            for obj in batch:
                await ends.send(obj)
        for obj in batch:
            if await ends.recv() != obj:
                raise AssertionError("batch changed a message")
    return lambda: ends.loop.run_until_complete(sends_then_receives())


def _transfer(ends):
    payload = b"x" * BIG

    async def one():
        # The socket buffer is far smaller than 64 MiB: send and receive concurrently.
        sent = asyncio.ensure_future(ends.send(payload))
        received = await ends.recv()
        await sent
        if len(received) != BIG:
            raise AssertionError("64 MiB transfer lost bytes")
    return lambda: ends.loop.run_until_complete(one())


def pairs(stdlib=None, fastwire=None):
    """The pairs, over new connections unless given (_StdlibEnds, _FastwireEnds)."""
    stdlib = stdlib or _StdlibEnds(asyncio.new_event_loop())
    fastwire = fastwire or _FastwireEnds(asyncio.new_event_loop())
    return [
        Pair("aio: send+recv one 4-key dict", "aio", _round_trip(stdlib), _round_trip(fastwire), target=1.0),
        Pair(f"aio: {BATCH} dicts: send each, then recv each", "aio",
             _batch(stdlib), _batch(fastwire), target=1.0),
        Pair(f"aio: {BATCH} dicts: send each (stdlib) / send_many (fastwire), then recv each", "aio",
             _batch(stdlib), _batch(fastwire, use_send_many=True), target=1.0),
        Pair("aio: 64 MiB bytes: send/recv", "aio", _transfer(stdlib), _transfer(fastwire), target=1.0),
    ]
