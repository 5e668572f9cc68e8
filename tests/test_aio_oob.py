"""Out-of-band (PEP 574) messages over fastwire.aio: real loopback TCP and Unix
sockets, aio on both ends, hand-written peers that follow the documented wire
format, a standard-library peer and a second process."""

import asyncio
import contextlib
import os
import pickle
import socket
import struct
import sys
import tempfile
import threading
from multiprocessing import connection as mpc

import numpy as np
import pytest

from fastwire import aio
from fastwire.frames import FrameError, FrameTooLarge
from fastwire.pickle import UnpicklingError

MiB = 1 << 20


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 60))


@contextlib.asynccontextmanager
async def served(handler, family="unix", **options):
    """An aio server running `handler`; yields a function that opens a client stream."""
    if family == "tcp":
        server = await aio.start_server(handler, "127.0.0.1", 0, **options)
        address = server.sockets[0].getsockname()

        def connect(**kw):
            return aio.open_connection(*address, **kw)
    else:
        path = os.path.join(tempfile.mkdtemp(), "s")
        server = await aio.start_unix_server(handler, path, **options)

        def connect(**kw):
            return aio.open_unix_connection(path, **kw)
    async with server:
        yield connect


async def echo(stream):
    async for obj in stream:
        await stream.send(obj)
    stream.close()


# -- the wire format, written by hand from docs/aio.md -----------------------------

def frame(payload):
    return struct.pack("!i", len(payload)) + bytes(payload)


def out_of_band_message(stream, buffers):
    """The frames of an out-of-band message: `buffers` are (bytes, readonly)."""
    head = struct.pack("!4sBI", b"\xf5FWB", 1, len(buffers))
    head += b"".join(struct.pack("!BQ", 1 if readonly else 0, len(data)) for data, readonly in buffers)
    return frame(head + stream) + b"".join(frame(data) for data, _ in buffers)


def raw_peer(script):
    """A plain Unix-socket server running `script(conn)` in a thread; its path."""
    path = os.path.join(tempfile.mkdtemp(), "raw")
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(path)
    listener.listen()

    def serve():
        conn, _ = listener.accept()
        with conn, listener, contextlib.suppress(OSError):
            script(conn)

    threading.Thread(target=serve, daemon=True).start()
    return path


def read_exactly(conn, n):
    data = bytearray()
    while len(data) < n:
        chunk = conn.recv(n - len(data))
        if not chunk:
            raise EOFError
        data += chunk
    return bytes(data)


def read_frame(conn):
    (length,) = struct.unpack("!i", read_exactly(conn, 4))
    return read_exactly(conn, length)


def read_message_by_hand(conn):
    """One message as the docs describe it: (pickle stream, [(bytes, readonly)]) or (frame, None)."""
    first = read_frame(conn)
    if first[:4] != b"\xf5FWB":
        return first, None
    magic, version, count = struct.unpack_from("!4sBI", first)
    assert version == 1
    entries = [struct.unpack_from("!BQ", first, 9 + 9 * i) for i in range(count)]
    stream = first[9 + 9 * count:]
    buffers = []
    for flags, size in entries:
        data = read_frame(conn)
        assert len(data) == size
        buffers.append((data, bool(flags & 1)))
    return stream, buffers


def arrays():
    c = np.arange(3 * MiB // 8, dtype=np.float64).reshape(-1, 8)
    f = np.asfortranarray(np.arange(60_000, dtype=np.int32).reshape(300, 200))
    readonly = np.arange(2 * MiB, dtype=np.uint8)
    readonly.flags.writeable = False
    small = np.array([1.5, 2.5])
    return [c, f, readonly, small]


def check_same_array(got, sent):
    assert type(got) is np.ndarray
    assert got.dtype == sent.dtype and got.shape == sent.shape
    assert np.array_equal(got, sent)
    assert got.flags.writeable == sent.flags.writeable
    assert got.flags.c_contiguous == sent.flags.c_contiguous
    assert got.flags.f_contiguous == sent.flags.f_contiguous


# -- round trips -----------------------------------------------------------------------

@pytest.mark.parametrize("family", ["tcp", "unix"])
def test_arrays_and_buffers_round_trip(family):
    async def main():
        async with served(echo, family, trusted=True, out_of_band=True) as connect:
            stream = await connect(trusted=True, out_of_band=True)
            async with stream:
                for sent in arrays():
                    await stream.send(sent)
                    check_same_array(await stream.recv(), sent)
                writable = bytearray(os.urandom(3 * MiB))
                await stream.send(pickle.PickleBuffer(writable))
                got = await stream.recv()
                assert type(got) is pickle.PickleBuffer
                assert bytes(got) == writable and not memoryview(got).readonly
                await stream.send(pickle.PickleBuffer(b"read-only"))
                got = await stream.recv()
                assert bytes(got) == b"read-only" and memoryview(got).readonly
                nested = {"a": arrays(), "b": [pickle.PickleBuffer(bytearray(b"x" * 100))] * 2, "n": 7,
                          "empty": pickle.PickleBuffer(bytearray())}
                await stream.send(nested)
                got = await stream.recv()
                for g, s in zip(got["a"], nested["a"]):
                    check_same_array(g, s)
                assert [bytes(b) for b in got["b"]] == [b"x" * 100] * 2 and got["n"] == 7
                assert bytes(got["empty"]) == b""
                # The sender's PickleBuffer is its own: still usable after the send.
                assert bytes(pickle.PickleBuffer(writable)) == writable

    run(main())


def test_a_message_without_buffers_is_the_ordinary_frame():
    captured = {}

    def capture(name):
        def script(conn):
            data = bytearray()
            while chunk := conn.recv(65536):
                data += chunk
            captured[name] = bytes(data)
        return script

    objects = [{"a": [1, 2.0, "three"]}, b"x" * (3 * MiB), bytearray(b"y" * 1000)]

    async def send_all(path, out_of_band):
        stream = await aio.open_unix_connection(path, out_of_band=out_of_band)
        for obj in objects:
            await stream.send(obj)
        stream.close()
        await stream.wait_closed()

    async def main():
        await send_all(raw_peer(capture("off")), False)
        await send_all(raw_peer(capture("on")), True)
        for _ in range(200):
            if len(captured) == 2:
                break
            await asyncio.sleep(0.05)

    run(main())
    assert captured["on"] == captured["off"]
    assert captured["off"][4:].startswith(b"\x80\x05")


def test_the_wire_format_is_the_documented_one():
    got = []
    array = np.arange(MiB // 4, dtype=np.int32)
    array.flags.writeable = False
    sent = {"array": array, "buffer": pickle.PickleBuffer(bytearray(b"abc")), "plain": "text"}

    def script(conn):
        got.append(read_message_by_hand(conn))

    async def main():
        stream = await aio.open_unix_connection(raw_peer(script), out_of_band=True)
        await stream.send(sent)
        stream.close()
        await stream.wait_closed()
        for _ in range(200):
            if got:
                break
            await asyncio.sleep(0.05)

    run(main())
    stream, buffers = got[0]
    assert [(len(data), readonly) for data, readonly in buffers] == [(array.nbytes, True), (3, False)]
    # The standard library's pickle rebuilds the message from those frames.
    rebuilt = pickle.loads(stream, buffers=[data if ro else bytearray(data) for data, ro in buffers])
    assert np.array_equal(rebuilt["array"], array) and bytes(rebuilt["buffer"]) == b"abc"
    assert rebuilt["plain"] == "text"


def test_receives_hand_written_out_of_band_frames():
    big = np.arange(3 * MiB // 8, dtype=np.float64)
    small = np.arange(10, dtype=np.int16)
    small.flags.writeable = False
    raws = []
    stream = pickle.dumps([big, small, pickle.PickleBuffer(b"ro")], 5,
                          buffer_callback=lambda b: raws.append(b.raw()))
    wire = out_of_band_message(stream, [(bytes(r), r.readonly) for r in raws])
    path = raw_peer(lambda conn: (conn.sendall(wire + frame(pickle.dumps("after", 5))), conn.recv(1)))

    async def main():
        stream = await aio.open_unix_connection(path, trusted=True)
        async with stream:
            got = await stream.recv()
            check_same_array(got[0], big)
            check_same_array(got[1], small)
            assert bytes(got[2]) == b"ro" and memoryview(got[2]).readonly
            assert await stream.recv() == "after"

    run(main())


def test_aio_in_another_process():
    child = r"""
import asyncio, sys
import numpy as np
from fastwire import aio

async def main():
    stream = await aio.open_unix_connection(sys.argv[1], out_of_band=True, trusted=True)
    for i in range(3):
        array = np.full(5 * 2**20 // 8, float(i))
        await stream.send(array)
        assert np.array_equal(await stream.recv(), array[::-1])
    stream.close()
    await stream.wait_closed()

asyncio.run(main())
"""

    async def reverse(stream):
        async for array in stream:
            await stream.send(array[::-1].copy())
        stream.close()

    async def main():
        path = os.path.join(tempfile.mkdtemp(), "s")
        server = await aio.start_unix_server(reverse, path, trusted=True, out_of_band=True)
        async with server:
            env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
            process = await asyncio.create_subprocess_exec(sys.executable, "-c", child, path, env=env)
            assert await asyncio.wait_for(process.wait(), 50) == 0

    run(main())


# -- the standard library on the other end ------------------------------------------

def stdlib_receiver(listener, results):
    def serve():
        with listener.accept() as conn:
            try:
                results.append(conn.recv())
            except Exception as exc:  # noqa: BLE001 - the test inspects it
                results.append(exc)
    thread = threading.Thread(target=serve)
    thread.start()
    return thread


@pytest.mark.parametrize("out_of_band", [False, True])
def test_stdlib_peer(out_of_band):
    array = np.arange(2 * MiB // 8, dtype=np.float64)
    results = []
    with mpc.Listener(("127.0.0.1", 0)) as listener:
        thread = stdlib_receiver(listener, results)

        async def main():
            stream = await aio.open_connection(*listener.address, out_of_band=out_of_band)
            # A standard-library peer that refuses the manifest closes: the send may fail then.
            with contextlib.suppress(ConnectionError) if out_of_band else contextlib.nullcontext():
                async with stream:
                    await stream.send(array)

        run(main())
        thread.join(30)
    if out_of_band:
        # Out of band is for fastwire peers: a standard-library peer fails loudly.
        assert isinstance(results[0], pickle.UnpicklingError)
    else:
        assert np.array_equal(results[0], array)


def test_send_many_and_send_bytes_stay_in_band():
    results = []
    with mpc.Listener(("127.0.0.1", 0)) as listener:
        def serve():
            with listener.accept() as conn:
                results.append(conn.recv())
                results.append(conn.recv_bytes())
        thread = threading.Thread(target=serve)
        thread.start()

        async def main():
            stream = await aio.open_connection(*listener.address, out_of_band=True)
            async with stream:
                await stream.send_many([pickle.PickleBuffer(bytearray(b"abc"))])
                await stream.send_bytes(b"raw")

        run(main())
        thread.join(30)
    assert results == [bytearray(b"abc"), b"raw"]


# -- restricted mode -------------------------------------------------------------------

def test_restricted_mode_applies_to_the_reconstruction():
    async def main():
        async with served(echo, trusted=True, out_of_band=True) as connect:
            stream = await connect(out_of_band=True)
            async with stream:
                await stream.send(np.arange(MiB, dtype=np.uint8))
                with pytest.raises(UnpicklingError):
                    await stream.recv()
                # Refused after every frame was consumed: the stream stays usable.
                await stream.send([pickle.PickleBuffer(bytearray(2 * MiB)), "next"])
                got = await stream.recv()
                assert bytes(got[0]) == bytes(2 * MiB) and got[1] == "next"

    run(main())


# -- bounds ----------------------------------------------------------------------------

def test_max_buffers_and_max_message_size_at_and_past_the_limit():
    refused = []

    async def guarded_echo(stream):
        try:
            await echo(stream)
        except FrameTooLarge as exc:
            refused.append(str(exc))

    async def main():
        async with served(guarded_echo, out_of_band=True, max_buffers=2, max_message_size=100) as connect:
            stream = await connect(out_of_band=True)
            async with stream:
                two = [pickle.PickleBuffer(bytearray(50)), pickle.PickleBuffer(bytearray(50))]
                await stream.send(two)
                assert [bytes(b) for b in await stream.recv()] == [bytes(50)] * 2
            stream = await connect(out_of_band=True, max_buffers=2, max_message_size=100)
            async with stream:
                await stream.send([pickle.PickleBuffer(bytearray(1))] * 3)
                with pytest.raises((EOFError, ConnectionError)):
                    await stream.recv()  # the server refused it and closed
            stream = await connect(out_of_band=True)
            async with stream:
                await stream.send([pickle.PickleBuffer(bytearray(50)), pickle.PickleBuffer(bytearray(51))])
                with pytest.raises((EOFError, ConnectionError)):
                    await stream.recv()

    run(main())
    assert len(refused) == 2
    assert "max_buffers=2" in refused[0] and "max_message_size=100" in refused[1]


def test_options_are_checked():
    async def main():
        for options in ({"max_buffers": -1}, {"max_message_size": -1}, {"max_buffers": 1.5}):
            with pytest.raises((ValueError, TypeError)):
                await aio.open_unix_connection("/nonexistent", **options)

    run(main())


HOSTILE = {
    "too many buffers": (out_of_band_message(b"", [(b"", False)] * 5)[:4 + 9 + 45], FrameTooLarge),
    "a buffer over max_frame_size": (frame(struct.pack("!4sBIBQ", b"\xf5FWB", 1, 1, 0, 2**60)), FrameTooLarge),
    "more than max_message_size": (frame(struct.pack("!4sBIBQBQ", b"\xf5FWB", 1, 2, 0, 600, 0, 600)),
                                   FrameTooLarge),
    "a count larger than the manifest": (frame(struct.pack("!4sBI", b"\xf5FWB", 1, 2**32 - 1)), FrameTooLarge),
    "an unknown version": (frame(struct.pack("!4sBI", b"\xf5FWB", 9, 0)), FrameError),
    "unknown flags": (frame(struct.pack("!4sBIBQ", b"\xf5FWB", 1, 1, 0x80, 1)), FrameError),
    "a cut manifest": (frame(struct.pack("!4sBIB", b"\xf5FWB", 1, 3, 0)), FrameError),
    "a buffer frame of the wrong size": (out_of_band_message(b"", [(b"x" * 10, False)])[:-14] + frame(b"y" * 11),
                                         FrameError),
    "a large buffer frame of the wrong size": (frame(struct.pack("!4sBIBQ", b"\xf5FWB", 1, 1, 0, 4 * MiB))
                                               + struct.pack("!i", 4 * MiB + 1) + bytes(MiB), FrameError),
    "cut in a small buffer": (out_of_band_message(b"", [(b"x" * 1000, False)])[:-10], EOFError),
    "cut in a large buffer": (out_of_band_message(b"", [(bytes(3 * MiB), False)])[:-MiB], EOFError),
    "cut between buffers": (out_of_band_message(b"", [(b"x" * 10, False), (b"y", False)])[:-5], EOFError),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_peer(case):
    wire, error = HOSTILE[case]
    path = raw_peer(lambda conn: conn.sendall(wire))

    async def main():
        stream = await aio.open_unix_connection(path, max_buffers=4, max_frame_size=256 * MiB,
                                                max_message_size=1000 if "max_message" in case else 64 * MiB)
        with pytest.raises(error) as info:
            await stream.recv()
        if error is EOFError:
            assert info.value.args  # an error in a message, not the end of the stream
        await stream.wait_closed()
        assert stream.is_closing()
        with pytest.raises(error):
            await stream.recv()  # nothing partial, ever

    run(main())


def _resident_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="needs Linux's /proc to read resident memory")
def test_a_claimed_buffer_commits_only_what_arrived():
    claimed = 1 << 30
    sent_enough = threading.Event()
    finish = threading.Event()

    def script(conn):
        conn.sendall(frame(struct.pack("!4sBIBQ", b"\xf5FWB", 1, 1, 0, claimed)) + struct.pack("!i", claimed)
                     + bytes(2 * MiB))
        sent_enough.set()
        finish.wait(30)

    path = raw_peer(script)

    async def main():
        stream = await aio.open_unix_connection(path, max_frame_size=claimed, max_message_size=claimed)
        before = _resident_bytes()
        receiving = asyncio.ensure_future(stream.recv())
        await asyncio.get_running_loop().run_in_executor(None, sent_enough.wait, 30)
        await asyncio.sleep(0.3)
        grown = _resident_bytes() - before
        finish.set()
        with pytest.raises(EOFError):
            await receiving
        # A 1 GiB claim with 2 MiB behind it: far less than the claim is resident.
        assert grown < 64 * MiB

    run(main())


# -- recv(buffers=) ----------------------------------------------------------------------

def test_buffers_callable_receives_in_order_into_caller_memory():
    calls = []
    memory = []

    def buffers(size, readonly):
        calls.append((size, readonly))
        memory.append(bytearray(size + 8))  # larger: the object gets a slice of it
        return memory[-1]

    async def main():
        async with served(echo, trusted=True, out_of_band=True) as connect:
            stream = await connect(trusted=True, out_of_band=True)
            async with stream:
                first, second = arrays()[:2]
                await stream.send([first, second])
                got = await stream.recv(buffers=buffers)
        assert calls == [(first.nbytes, False), (second.nbytes, False)]
        for array, held in zip(got, memory):
            assert np.shares_memory(array, np.frombuffer(held, np.uint8))
        check_same_array(got[0], first)

    run(main())


def test_a_waiting_recv_lands_a_large_buffer_in_caller_memory_as_it_arrives():
    size = 8 * MiB
    payload = os.urandom(size)
    stream_bytes = pickle.dumps(pickle.PickleBuffer(bytearray(payload)), 5, buffer_callback=lambda b: False)
    head = out_of_band_message(stream_bytes, [(payload, False)])[:-size]
    waiting = threading.Event()
    called = threading.Event()
    checked = threading.Event()

    def script(conn):
        waiting.wait(30)
        conn.sendall(head + payload[:MiB])
        called.wait(30)  # the callable was asked for memory before most bytes were sent
        conn.sendall(payload[MiB:-1])
        checked.wait(30)
        conn.sendall(payload[-1:])
        conn.recv(1)

    held = []

    def buffers(size, readonly):
        held.append(bytearray(size))
        called.set()
        return held[-1]

    async def main():
        stream = await aio.open_unix_connection(raw_peer(script))
        async with stream:
            receiving = asyncio.ensure_future(stream.recv(buffers=buffers))
            await asyncio.sleep(0.05)
            waiting.set()
            for _ in range(600):
                if held and held[0][:-1] == payload[:-1]:
                    break
                await asyncio.sleep(0.02)
            # The bytes are already in the caller's memory while the message is incomplete.
            assert not receiving.done()
            assert held[0][:-1] == payload[:-1]
            checked.set()
            got = await receiving
            assert got is held[0] and got == payload

    run(main())


class Close:
    pass


BAD_BUFFERS = {
    "raises": (lambda stream: (_ for _ in ()).throw(LookupError("no memory")), LookupError),
    "returns a read-only buffer": (lambda stream: bytes(4 * MiB), TypeError),
    "returns too small a buffer": (lambda stream: bytearray(10), ValueError),
    "returns no buffer": (lambda stream: None, TypeError),
    "closes the stream": (lambda stream: (stream.close(), bytearray(4 * MiB))[1], (EOFError, ConnectionError)),
    "aborts the transport": (lambda stream: (stream.transport.abort(), bytearray(4 * MiB))[1],
                             (EOFError, ConnectionError)),
}


@pytest.mark.parametrize("case", sorted(BAD_BUFFERS))
def test_buffers_callable_worst_cases_while_the_message_arrives(case):
    make, error = BAD_BUFFERS[case]
    started = threading.Event()

    def script(conn):
        started.wait(30)
        conn.sendall(out_of_band_message(pickle.dumps(pickle.PickleBuffer(bytearray(4 * MiB)), 5,
                                                      buffer_callback=lambda b: False),
                                         [(bytes(4 * MiB), False)]))
        conn.recv(1)

    async def main():
        stream = await aio.open_unix_connection(raw_peer(script))
        receiving = asyncio.ensure_future(stream.recv(buffers=lambda size, readonly: make(stream)))
        await asyncio.sleep(0.05)
        started.set()
        with pytest.raises(error):
            await receiving
        # The message was cut short on this side: the connection is closed, nothing partial.
        await stream.wait_closed()
        with pytest.raises((EOFError, ConnectionError, type(stream._protocol._end))):
            await stream.recv()

    run(main())


def test_buffers_callable_that_reenters_recv_or_returns_one_buffer_twice():
    one = bytearray(2 * MiB)
    tasks = []

    def buffers(size, readonly):
        tasks.append(asyncio.ensure_future(stream.recv()))  # a second receiver: refused
        return one

    async def main():
        nonlocal stream
        async with served(echo, out_of_band=True) as connect:
            stream = await connect(out_of_band=True)
            async with stream:
                first, second = bytearray(os.urandom(2 * MiB)), bytearray(os.urandom(2 * MiB))
                await stream.send([pickle.PickleBuffer(first), pickle.PickleBuffer(second)])
                got = await stream.recv(buffers=buffers)
                # Both buffers were given the same memory: the later bytes win, no crash.
                assert got[0] is one and got[1] is one and bytes(one) == second
                for task in tasks:
                    with pytest.raises(RuntimeError):
                        await task
                await stream.send("after")
                assert await stream.recv() == "after"

    stream = None
    run(main())


def test_buffers_callable_failing_after_the_message_arrived_leaves_the_stream_usable():
    async def main():
        async with served(echo, out_of_band=True) as connect:
            stream = await connect(out_of_band=True)
            async with stream:
                await stream.send([pickle.PickleBuffer(bytearray(3 * MiB)), pickle.PickleBuffer(bytearray(5))])
                await stream.send("after")
                await asyncio.sleep(0.3)  # both messages arrive before recv() is called
                with pytest.raises(ValueError):
                    await stream.recv(buffers=lambda size, readonly: bytearray(1))
                assert await stream.recv() == "after"
                with pytest.raises(TypeError):
                    await stream.recv(buffers=42)

    run(main())


def test_recv_bytes_refuses_an_out_of_band_message_and_stays_usable():
    async def main():
        async with served(echo, out_of_band=True) as connect:
            stream = await connect(out_of_band=True)
            async with stream:
                await stream.send(pickle.PickleBuffer(bytearray(10)))
                await stream.send("after")
                with pytest.raises(FrameError):
                    await stream.recv_bytes()
                assert await stream.recv() == "after"

    run(main())


# -- the protocol's callbacks --------------------------------------------------------------

def test_stream_closed_by_another_task_while_a_large_buffer_lands():
    release = threading.Event()

    def script(conn):
        wire = out_of_band_message(pickle.dumps(pickle.PickleBuffer(bytearray(8 * MiB)), 5,
                                                buffer_callback=lambda b: False), [(bytes(8 * MiB), False)])
        conn.sendall(wire[:4 * MiB])
        release.wait(30)

    async def main():
        stream = await aio.open_unix_connection(raw_peer(script))
        receiving = asyncio.ensure_future(stream.recv())
        for _ in range(500):
            assembly = stream._protocol._assembly
            if assembly is not None and assembly.filled > MiB:
                break
            await asyncio.sleep(0.01)
        stream.close()
        release.set()
        with pytest.raises(EOFError, match="middle"):
            await receiving
        await stream.wait_closed()

    run(main())


# -- sending ----------------------------------------------------------------------------------

def slow_raw_reader(release, got):
    """A raw peer that reads nothing until `release` is set, then one message by hand
    (or the EOFError of a cut one) into `got`; the kernel's buffers fill meanwhile."""
    def script(conn):
        release.wait(30)
        try:
            got.append(read_message_by_hand(conn))
        except EOFError as exc:
            got.append(exc)
    return raw_peer(script)


async def wait_for(condition):
    for _ in range(600):
        if condition():
            return
        await asyncio.sleep(0.05)


def test_flow_control_bounds_the_transport_buffer_during_a_64_mib_send():
    array = np.arange(64 * MiB // 8, dtype=np.float64)
    release = threading.Event()
    got = []
    path = slow_raw_reader(release, got)

    async def main():
        stream = await aio.open_unix_connection(path, out_of_band=True)
        sizes = []
        sending = asyncio.ensure_future(stream.send(array))
        for _ in range(50):
            sizes.append(stream.transport.get_write_buffer_size())
            await asyncio.sleep(0.01)
        assert not sending.done()  # the peer is not reading: the sender waits
        release.set()
        while not sending.done():
            sizes.append(stream.transport.get_write_buffer_size())
            await asyncio.sleep(0)
        await sending
        high = stream.transport.get_write_buffer_limits()[1]
        assert max(sizes) <= high + aio.SEND_CHUNK
        assert stream.transport.get_write_buffer_limits() == (high // 4, high)  # as they were
        stream.close()
        await stream.wait_closed()
        await wait_for(lambda: got)

    run(main())
    stream, buffers = got[0]
    assert pickle.loads(stream, buffers=[data for data, _ in buffers]).tobytes() == array.tobytes()


def test_the_caller_may_change_its_buffer_once_send_returns():
    array = np.zeros(16 * MiB, dtype=np.uint8)
    release = threading.Event()
    got = []
    path = slow_raw_reader(release, got)

    async def main():
        stream = await aio.open_unix_connection(path, out_of_band=True)
        sending = asyncio.ensure_future(stream.send(array))
        await asyncio.sleep(0.2)
        release.set()
        await sending
        array[:] = 1  # the last bytes sent are the ones a transport would still hold
        stream.close()
        await stream.wait_closed()
        await wait_for(lambda: got)

    run(main())
    (data, _), = got[0][1]
    assert data == bytes(16 * MiB)


def test_a_send_cancelled_mid_message_closes_the_connection():
    release = threading.Event()
    got = []
    path = slow_raw_reader(release, got)

    async def main():
        stream = await aio.open_unix_connection(path, out_of_band=True)
        sending = asyncio.ensure_future(stream.send(np.zeros(64 * MiB, dtype=np.uint8)))
        await asyncio.sleep(0.2)
        assert not sending.done()
        sending.cancel()
        with pytest.raises(asyncio.CancelledError):
            await sending
        assert stream.is_closing()
        release.set()
        await stream.wait_closed()
        await wait_for(lambda: got)

    run(main())
    assert isinstance(got[0], EOFError)  # the peer saw a cut message


class ClosesTheStream:
    def __init__(self, stream):
        self.stream = stream

    def __reduce__(self):
        self.stream.close()
        return (bytearray, (b"x",))


def test_reduce_closing_the_stream_while_pickling():
    got = []

    def script(conn):
        data = bytearray()
        while chunk := conn.recv(65536):
            data += chunk
        got.append(bytes(data))

    async def main():
        stream = await aio.open_unix_connection(raw_peer(script), out_of_band=True)
        with pytest.raises(ConnectionResetError):
            await stream.send([pickle.PickleBuffer(bytearray(2 * MiB)), ClosesTheStream(stream)])
        await stream.wait_closed()
        for _ in range(200):
            if got:
                break
            await asyncio.sleep(0.05)

    run(main())
    assert got == [b""]  # nothing of the message was written


def test_concurrent_sends_are_written_one_after_another():
    async def main():
        async with served(echo, trusted=True, out_of_band=True) as connect:
            stream = await connect(trusted=True, out_of_band=True)
            async with stream:
                arrays_sent = [np.full(3 * MiB, i, dtype=np.uint8) for i in range(4)]
                await asyncio.gather(*(stream.send(a) for a in arrays_sent), stream.send_bytes(pickle.dumps("b")),
                                     stream.send_many(["m1", "m2"]))
                got = [await stream.recv() for _ in range(7)]
        arrays_got = [g for g in got if isinstance(g, np.ndarray)]
        assert sorted(int(a[0]) for a in arrays_got) == [0, 1, 2, 3]
        assert all(np.array_equal(a, np.full(3 * MiB, a[0], dtype=np.uint8)) for a in arrays_got)
        assert sorted(g for g in got if isinstance(g, str)) == ["b", "m1", "m2"]

    run(main())


def test_non_contiguous_buffers_follow_pep_574():
    strided = np.arange(2 * MiB, dtype=np.uint8)[::2]

    async def main():
        async with served(echo, trusted=True, out_of_band=True) as connect:
            stream = await connect(trusted=True, out_of_band=True)
            async with stream:
                await stream.send(strided)  # NumPy pickles it in band
                check_same_array(await stream.recv(), np.ascontiguousarray(strided))
                with pytest.raises(pickle.PicklingError):
                    await stream.send(pickle.PickleBuffer(memoryview(bytearray(100))[::2]))
                await stream.send("after")
                assert await stream.recv() == "after"

    run(main())
