"""fastwire.aio over real loopback sockets, against fastwire.net and stdlib peers."""

import array
import asyncio
import collections
import os
import pickle
import socket
import struct
import sys
import tempfile
import threading
import tracemalloc
from asyncio import selector_events
from multiprocessing import AuthenticationError, connection as mpc

import pytest

from fastwire import _protocol, aio, net
from fastwire.frames import FrameTooLarge, encode_frame
from fastwire.pickle import UnpicklingError


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 60))


async def echo_handler(stream):
    async for obj in stream:
        await stream.send(obj)
    stream.close()


OBJECTS = [None, 1, "two", {"three": [3.0, (4, 5)]}, b"x" * 100_000, bytes(range(256)) * 40_000]


@pytest.mark.parametrize("family", ["tcp", "unix"])
def test_round_trip_and_iteration(family):
    async def main():
        if family == "tcp":
            server = await aio.start_server(echo_handler, "127.0.0.1", 0)
            stream = await aio.open_connection(*server.sockets[0].getsockname())
        else:
            path = os.path.join(tempfile.mkdtemp(), "s")
            server = await aio.start_unix_server(echo_handler, path)
            stream = await aio.open_unix_connection(path)
        async with server, stream:
            for obj in OBJECTS:
                await stream.send(obj)
                assert await stream.recv() == obj
            await stream.send_many(OBJECTS)
            got = [await stream.recv() for _ in OBJECTS]
            assert got == OBJECTS
            await stream.send_bytes(pickle.dumps("raw"))
            assert pickle.loads(await stream.recv_bytes()) == "raw"
            stream.transport.write_eof()
            rest = [obj async for obj in stream]
            assert rest == []

    run(main())


def test_talks_to_fastwire_net_and_stdlib_peers():
    for listener_cls in (net.Listener, mpc.Listener):
        with listener_cls(("127.0.0.1", 0)) as listener:
            def serve():
                with listener.accept() as conn:
                    while True:
                        try:
                            conn.send_bytes(conn.recv_bytes())
                        except EOFError:
                            return

            thread = threading.Thread(target=serve)
            thread.start()

            async def main():
                stream = await aio.open_connection(*listener.address)
                async with stream:
                    for obj in OBJECTS:
                        await stream.send(obj)
                        assert await stream.recv() == obj

            run(main())
            thread.join(10)


def test_restricted_by_default_trusted_on_request():
    async def main():
        server = await aio.start_server(echo_handler, "127.0.0.1", 0, trusted=True)
        address = server.sockets[0].getsockname()
        async with server:
            stream = await aio.open_connection(*address)
            async with stream:
                await stream.send(collections.OrderedDict(a=1))
                with pytest.raises(UnpicklingError):
                    await stream.recv()
                await stream.send("after")
                assert await stream.recv() == "after"
            stream = await aio.open_connection(*address, allowed=[collections.OrderedDict])
            async with stream:
                await stream.send(collections.OrderedDict(a=1))
                assert await stream.recv() == collections.OrderedDict(a=1)

    run(main())


def raw_server(script):
    """A plain socket server running `script(conn)` in a thread; its address."""
    listener = socket.create_server(("127.0.0.1", 0))

    def serve():
        conn, _ = listener.accept()
        with conn, listener:
            script(conn)

    threading.Thread(target=serve, daemon=True).start()
    return listener.getsockname()


def test_oversized_frame_aborts():
    address = raw_server(lambda conn: (conn.sendall((10_000).to_bytes(4, "big")), conn.recv(1)))

    async def main():
        stream = await aio.open_connection(*address, max_frame_size=1000)
        with pytest.raises(FrameTooLarge):
            await stream.recv()
        await stream.wait_closed()

    run(main())


def test_eof_mid_message_is_an_error_not_the_end():
    frame = encode_frame(b"\x80\x05K\x01.", _protocol.PREFIX)
    address = raw_server(lambda conn: conn.sendall(frame + frame[:6]))

    async def main():
        stream = await aio.open_connection(*address)
        assert await stream.recv() == 1
        with pytest.raises(EOFError, match="middle"):
            async for _ in stream:
                pass

    run(main())


def test_regression_flow_control_both_ways_gh_127655():
    # On 3.12/3.13 transport.writelines() never pauses the protocol (gh-127655);
    # fastwire's large sends must be held back all the same.
    chunk = os.urandom(1 << 20)
    count = 64

    async def main():
        release = asyncio.Event()
        received = []
        paused_seen = []

        async def slow_reader(stream):
            await release.wait()
            paused_seen.append(stream._protocol._reading_paused)
            async for obj in stream:
                received.append(obj)

        server = await aio.start_server(slow_reader, "127.0.0.1", 0, read_limit=2 << 20)
        async with server:
            stream = await aio.open_connection(*server.sockets[0].getsockname())
            sender = asyncio.ensure_future(_send_all(stream, chunk, count))
            await asyncio.sleep(0.5)
            # The reader is not reading: the sender must be held back, not buffering 64 MiB.
            assert not sender.done()
            assert stream.transport.get_write_buffer_size() <= 2 * len(chunk) + (1 << 20)
            release.set()
            await sender
            stream.close()
            await stream.wait_closed()
            for _ in range(200):
                if len(received) == count:
                    break
                await asyncio.sleep(0.05)
        assert paused_seen == [True]
        assert len(received) == count and all(obj == chunk for obj in received)

    run(main())


@pytest.mark.parametrize("method", ["send", "send_many", "send_bytes"])
def test_regression_a_large_message_queued_behind_another_is_not_copied_as_it_goes_out(method):
    # The selector transports of 3.12+ keep queued[sent:] after each partial
    # send: a bytes message written while the previous one's tail was queued
    # was copied once per socket buffer's worth sent (a 64 MiB message took
    # seconds). Midway through such a message the transport must hold views of
    # it, not a copy of its rest. 3.11's transport copies what it cannot send
    # at once into one bytearray of its own (once, at write): one block there.
    size = 8 << 20
    data = os.urandom(size)
    send = {"send": lambda stream: stream.send(data),
            "send_many": lambda stream: stream.send_many([data]),
            "send_bytes": lambda stream: stream.send_bytes(data)}[method]
    own_copies = 1 if sys.version_info < (3, 12) else 0

    async def main():
        ours, theirs = socket.socketpair()
        view = memoryview(bytearray(3 * size))

        def read(got, upto):
            while got < upto:
                n = theirs.recv_into(view[got:upto])
                if not n:
                    break
                got += n
            return got

        with theirs:
            stream = await aio.open_unix_connection(sock=ours)
            stream.transport.set_write_buffer_limits(high=4 * size)  # both queued, no waiting
            tracemalloc.start()
            try:
                await send(stream)
                await send(stream)
                assert stream.transport.get_write_buffer_size() > size  # the second waits behind the first
                middle = await asyncio.to_thread(read, 0, size + size // 2)
                blocks = tracemalloc.take_snapshot().filter_traces(
                    [tracemalloc.Filter(True, selector_events.__file__)]).traces
            finally:
                tracemalloc.stop()
            large = [trace.size for trace in blocks if trace.size >= size // 4]
            assert len(large) == own_copies, large
            stream.close()
            end = await asyncio.to_thread(read, middle, len(view))
            await stream.wait_closed()
        payloads = []
        rest = view[:end]
        while rest:
            (length,) = struct.unpack("!i", rest[:4])
            payloads.append(bytes(rest[4:4 + length]))
            rest = rest[4 + length:]
        if method != "send_bytes":
            payloads = [pickle.loads(payload) for payload in payloads]
        assert [payload == data for payload in payloads] == [True, True]  # no 8 MiB diff on failure

    run(main())


@pytest.mark.parametrize("wrap", [lambda a: a, memoryview], ids=["array", "memoryview"])
def test_regression_send_bytes_takes_a_large_buffer_of_any_item_size(wrap):
    # Like Connection.send_bytes, any bytes-like object goes. A large one used to
    # reach transport.write() as it was: an array.array was refused, and the
    # 3.12+ transport cut a queued 'd' memoryview in items where it meant bytes.
    data = array.array("d", range(1 << 18))  # 2 MiB, 8-byte items

    async def main():
        ours, theirs = socket.socketpair()
        with mpc.Connection(theirs.detach()) as peer:
            stream = await aio.open_unix_connection(sock=ours)
            stream.transport.set_write_buffer_limits(high=8 * data.itemsize * len(data))  # the second queues
            await stream.send_bytes(wrap(data))
            await stream.send_bytes(wrap(data))
            reading = asyncio.ensure_future(asyncio.to_thread(lambda: [peer.recv_bytes() for _ in range(2)]))
            try:
                got = await asyncio.wait_for(asyncio.shield(reading), 30)
            finally:
                stream.close()
                await stream.wait_closed()  # a peer still waiting for bytes sees the end
                await asyncio.wait([reading])
        assert [payload == data.tobytes() for payload in got] == [True, True]

    run(main())


async def _send_all(stream, chunk, count):
    for _ in range(count):
        await stream.send(chunk)


def test_send_after_close_raises():
    async def main():
        server = await aio.start_server(echo_handler, "127.0.0.1", 0)
        async with server:
            stream = await aio.open_connection(*server.sockets[0].getsockname())
            stream.close()
            with pytest.raises(ConnectionResetError):
                await stream.send(1)
            await stream.wait_closed()

    run(main())


def test_two_concurrent_receivers_are_refused():
    async def main():
        server = await aio.start_server(echo_handler, "127.0.0.1", 0)
        async with server:
            stream = await aio.open_connection(*server.sockets[0].getsockname())
            first = asyncio.ensure_future(stream.recv())
            await asyncio.sleep(0.05)
            with pytest.raises(RuntimeError):
                await stream.recv()
            await stream.send("x")
            assert await first == "x"
            stream.close()
            await stream.wait_closed()

    run(main())


@pytest.mark.parametrize("server_kind", ["aio", "net", "stdlib"])
@pytest.mark.parametrize("key", [b"same", b"other"])
def test_authkey_handshake_with_every_kind_of_server(server_kind, key):
    async def client(address):
        if key != b"same":
            with pytest.raises(AuthenticationError):
                await aio.open_connection(*address, authkey=key)
            return
        stream = await aio.open_connection(*address, authkey=key)
        async with stream:
            await stream.send({"authenticated": True})
            assert await stream.recv() == {"authenticated": True}

    if server_kind == "aio":
        async def main():
            server = await aio.start_server(echo_handler, "127.0.0.1", 0, authkey=b"same")
            async with server:
                await client(server.sockets[0].getsockname())
        run(main())
        return

    listener_cls = net.Listener if server_kind == "net" else mpc.Listener
    with listener_cls(("127.0.0.1", 0), authkey=b"same") as listener:
        errors = []

        def serve():
            try:
                with listener.accept() as conn:
                    conn.send_bytes(conn.recv_bytes())
            except Exception as exc:
                errors.append(exc)

        thread = threading.Thread(target=serve)
        thread.start()
        run(client(listener.address))
        thread.join(10)
    assert [type(e) for e in errors] == ([] if key == b"same" else [AuthenticationError])


@pytest.mark.parametrize("key", [b"same", b"other"])
def test_stdlib_client_against_an_aio_server_with_authkey(key):
    seen = []

    async def handler(stream):
        seen.append("reached")
        await echo_handler(stream)

    async def main():
        server = await aio.start_server(handler, "127.0.0.1", 0, authkey=b"same")
        address = server.sockets[0].getsockname()

        def stdlib_client():
            with mpc.Client(address, authkey=key) as conn:
                conn.send([1, "two"])
                return conn.recv()

        async with server:
            if key == b"same":
                assert await asyncio.to_thread(stdlib_client) == [1, "two"]
            else:
                with pytest.raises(AuthenticationError):
                    await asyncio.to_thread(stdlib_client)

    run(main())
    assert seen == (["reached"] if key == b"same" else [])


def test_handshake_refuses_a_big_message_before_authentication():
    address = raw_server(lambda conn: (conn.sendall((100_000).to_bytes(4, "big")), conn.recv(1)))

    async def main():
        with pytest.raises(AuthenticationError) as caught:
            await aio.open_connection(*address, authkey=b"k")
        assert isinstance(caught.value.__cause__, FrameTooLarge)

    run(main())


def test_benchmark_pairs_run_and_check_their_messages():
    """Each aio bench callable moves real messages and checks them on arrival
    (a round trip that changed a message raises), on both sides of every pair.

    In a child interpreter: the 64 MiB transfers leave the allocator holding
    freed, already paged-in memory, which would change what later tests that
    count page faults (tests/test_net.py) see."""
    import subprocess
    import sys

    import fastwire

    script = """
import asyncio
from fastwire._bench import aio_cases

stdlib = aio_cases._StdlibEnds(asyncio.new_event_loop())
fastwire = aio_cases._FastwireEnds(asyncio.new_event_loop())
try:
    for pair in aio_cases.pairs(stdlib, fastwire):
        pair.stdlib()
        pair.fastwire()
finally:
    stdlib.close()
    fastwire.close()
print("all pairs ran")
"""
    # The child imports the very fastwire this process imports (installed, or src/).
    env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(fastwire.__file__)))
    result = subprocess.run([sys.executable, "-W", "error::ResourceWarning", "-c", script],
                            capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == "all pairs ran"


def test_aio_stands_on_the_protocol_module_not_on_net():
    """fastwire.aio takes the handshake, prefix and limits from fastwire._protocol:
    importing it does not import the blocking transport."""
    import subprocess
    import sys

    import fastwire

    script = "import sys, fastwire.aio; print('fastwire.net' in sys.modules)"
    env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(fastwire.__file__)))
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=60, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == "False"
