"""The authkey handshake against hostile and old peers, over real sockets.

Every way an unauthenticated peer can break a handshake (garbage, short, long
or oversize messages, bad length prefixes, a cut stream, silence, trickling, a
wrong or unknown digest) raises AuthenticationError on both sides (the side
that challenges and the side that answers), blocking and asyncio, so a server
loop that catches AuthenticationError, the usual multiprocessing pattern,
survives them all. A silent peer is dropped after the handshake timeout and its
descriptor released. ``allow_md5=False`` refuses HMAC-MD5 both ways, and the
default stays compatible with real standard-library peers of 3.8 to 3.13.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import socket
import struct
import subprocess
import sys
import threading
import time
from multiprocessing import AuthenticationError, connection as std_connection
from pathlib import Path

import pytest

from fastwire import aio, net

KEY = b"s3cret"
SHORT = 0.5  # handshake timeout of these tests, seconds


def frame(payload):
    return struct.pack("!i", len(payload)) + payload


def read_frame(sock):
    """One whole length-prefixed message from a raw socket (b'' at end of stream)."""
    header = recv_exactly(sock, 4)
    if len(header) < 4:
        return b""
    return recv_exactly(sock, struct.unpack("!i", header)[0])


def recv_exactly(sock, n):
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            break
        data += chunk
    return data


def trickle(sock):
    """A valid-looking 40-byte message, one byte every 0.1 s (longer than SHORT in all)."""
    for byte in frame(b"x" * 40):
        sock.sendall(bytes([byte]))
        time.sleep(0.1)


# What a hostile peer sends in place of its first handshake message. The peer
# plays either role: "answerer" (it reads our challenge first, then sends this as
# its response) or "challenger" (it sends this as its challenge).
HOSTILE = {
    "garbage": frame(b"x" * 40),
    "short": frame(b"ab"),
    "empty": frame(b""),
    "long_300_bytes": frame(b"a" * 300),
    "long_1000_bytes": frame(b"a" * 1000),
    "header_2_gib": b"\x7f\xff\xff\xff",
    "header_64_bit": b"\xff\xff\xff\xff" + struct.pack("!Q", 1 << 40),
    "negative_header": struct.pack("!i", -5),
    "eof_at_once": None,
    "eof_mid_header": b"\x00\x00",
    "eof_mid_message": b"\x00\x00\x00\x30abc",
    "silence": b"",
    "trickle": trickle,
    "unknown_digest": {"answerer": frame(b"{sha1}" + b"\0" * 20),
                       "challenger": frame(b"#CHALLENGE#{sha1}" + b"\0" * 40)},
    "wrong_digest": {"answerer": frame(b"{sha256}" + b"\0" * 32),
                     "challenger": "wrong_key"},
    "wrong_key_md5": {"answerer": frame(b"\0" * 16), "challenger": "wrong_key"},
}
CLOSES_AT_ONCE = {"eof_at_once", "eof_mid_header", "eof_mid_message"}


def play(sock, behaviour, role):
    """Act as the hostile peer on a raw socket, then hold it open until the other side
    closes (bounded: a test never waits on a peer for more than a few seconds)."""
    sock.settimeout(5)
    try:
        what = HOSTILE[behaviour]
        if isinstance(what, dict):
            what = what[role]
        if role == "answerer":
            read_frame(sock)  # our challenge
        if what == "wrong_key":
            # A well-formed peer with another key: its challenge is real, but it
            # refuses our answer (as a stdlib peer with another key does).
            sock.sendall(frame(b"#CHALLENGE#{sha256}" + os.urandom(40)))
            read_frame(sock)
            sock.sendall(frame(b"#FAILURE#"))
        elif callable(what):
            what(sock)
        elif what is not None:
            sock.sendall(what)
        if behaviour in CLOSES_AT_ONCE:
            return
        while sock.recv(4096):
            pass
    except OSError:
        pass
    finally:
        sock.close()


def start_peer(sock, behaviour, role):
    thread = threading.Thread(target=play, args=(sock, behaviour, role), daemon=True)
    thread.start()
    return thread


# -- blocking --------------------------------------------------------------------------


@pytest.mark.parametrize("behaviour", sorted(HOSTILE))
@pytest.mark.parametrize("side", ["deliver_challenge", "answer_challenge"])
def test_every_handshake_failure_raises_authentication_error(side, behaviour):
    ours, theirs = socket.socketpair()
    peer = start_peer(theirs, behaviour, "answerer" if side == "deliver_challenge" else "challenger")
    with net.Connection(ours) as conn:
        started = time.monotonic()
        with pytest.raises(AuthenticationError):
            getattr(net, side)(conn, KEY, timeout=SHORT)
        assert time.monotonic() - started < SHORT + 5  # bounded: never waits on the peer forever
    peer.join(10)
    assert not peer.is_alive()


def test_a_1000_byte_authentication_message_raises_authentication_error():
    # docs/limits.md: authentication messages over 256 bytes are refused.
    ours, theirs = socket.socketpair()
    peer = start_peer(theirs, "long_1000_bytes", "answerer")
    with net.Connection(ours) as conn, pytest.raises(AuthenticationError) as caught:
        net.deliver_challenge(conn, KEY)
    assert isinstance(caught.value.__cause__, OSError)  # the refused length, chained
    peer.join(10)


def tcp_peer(address):
    sock = socket.create_connection(address)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def test_a_server_loop_catching_authentication_error_survives_every_hostile_peer():
    """The multiprocessing pattern: ``except AuthenticationError: continue``. One hostile
    peer after another, then a real client, which is served."""
    behaviours = sorted(HOSTILE)
    served = []
    with net.Listener(("127.0.0.1", 0), authkey=KEY, handshake_timeout=SHORT) as listener:
        def client():
            with net.Client(listener.address, authkey=KEY) as conn:
                conn.send("hello")
                served.append(conn.recv())

        peers = []
        for behaviour in behaviours:
            peers.append(start_peer(tcp_peer(listener.address), behaviour, "answerer"))
            with pytest.raises(AuthenticationError):
                listener.accept()
        good = threading.Thread(target=client, daemon=True)
        good.start()
        with listener.accept() as conn:
            conn.send(conn.recv())
        good.join(10)
    for peer in peers:
        peer.join(10)
    assert served == ["hello"]
    assert not any(peer.is_alive() for peer in peers)  # each one was disconnected


def open_descriptors():
    return len(os.listdir("/proc/self/fd"))


def test_handshake_timeout_an_idle_peer_does_not_block_a_later_client():
    with net.Listener(("127.0.0.1", 0), authkey=KEY, handshake_timeout=SHORT) as listener:
        before = open_descriptors()
        idle = tcp_peer(listener.address)  # connects and says nothing
        idle.settimeout(10)
        result = []
        later = threading.Thread(
            target=lambda: result.append(net.Client(listener.address, authkey=KEY)), daemon=True)
        later.start()
        with pytest.raises(AuthenticationError) as caught:
            listener.accept()
        assert isinstance(caught.value.__cause__, TimeoutError)
        assert read_frame(idle).startswith(b"#CHALLENGE#")
        assert idle.recv(1) == b""  # then the server closed the idle peer's connection
        with listener.accept() as conn:
            later.join(10)
            result[0].send("after")
            assert conn.recv() == "after"
        result[0].close()
        idle.close()
        assert open_descriptors() == before  # nothing of the idle peer is kept


def test_handshake_timeout_bounds_a_trickling_peer_as_a_whole():
    # The deadline is for the whole handshake: a byte every 0.1 s never resets it.
    with net.Listener(("127.0.0.1", 0), authkey=KEY, handshake_timeout=SHORT) as listener:
        peer = start_peer(tcp_peer(listener.address), "trickle", "answerer")
        started = time.monotonic()
        with pytest.raises(AuthenticationError):
            listener.accept()
        elapsed = time.monotonic() - started
        peer.join(10)
    assert elapsed < 4 * 0.1 * 44  # the peer needs 4.4 s to send its 44 bytes


def test_handshake_timeout_default_is_documented_and_configurable():
    assert net.DEFAULT_HANDSHAKE_TIMEOUT == 10.0  # docs/limits.md, docs/net.md
    with net.Listener(("127.0.0.1", 0), authkey=KEY) as listener:
        assert listener._handshake_timeout == net.DEFAULT_HANDSHAKE_TIMEOUT
    with net.Listener(("127.0.0.1", 0), authkey=KEY, handshake_timeout=None) as listener:
        assert listener._handshake_timeout is None
    for bad in (0, -1.0):
        with pytest.raises(ValueError):
            net.Listener(("127.0.0.1", 0), authkey=KEY, handshake_timeout=bad)


def test_client_waits_for_a_server_that_starts_the_handshake_late():
    """A client's handshake has no deadline by default: a server begins it only when it
    calls accept(), which a busy one may do long after the connect."""
    assert inspect.signature(net.Client).parameters["handshake_timeout"].default is None
    with net.Listener(("127.0.0.1", 0), authkey=KEY) as listener:
        result = []
        client = threading.Thread(
            target=lambda: result.append(net.Client(listener.address, authkey=KEY, timeout=30)),
            daemon=True)
        client.start()
        time.sleep(1.5)  # the client is connected and waiting for the challenge
        with listener.accept() as conn:
            client.join(10)
            result[0].send("late")
            assert conn.recv() == "late"
        result[0].close()


def test_client_handshake_timeout_bounds_a_silent_server():
    server = socket.create_server(("127.0.0.1", 0))
    try:
        started = time.monotonic()
        with pytest.raises(AuthenticationError):
            net.Client(server.getsockname(), authkey=KEY, handshake_timeout=SHORT)
        assert time.monotonic() - started < SHORT + 5
    finally:
        server.close()


def test_accepted_connection_blocks_without_timeout_after_the_handshake():
    with net.Listener(("127.0.0.1", 0), authkey=KEY, handshake_timeout=SHORT) as listener:
        thread = threading.Thread(target=lambda: net.Client(listener.address, authkey=KEY).close(),
                                  daemon=True)
        thread.start()
        with listener.accept() as conn:
            assert conn._sock.gettimeout() is None
        thread.join(10)


# -- digest policy ------------------------------------------------------------------------


@pytest.mark.parametrize("allow_md5", [True, False])
def test_allow_md5_false_refuses_a_bare_md5_response(allow_md5):
    ours, theirs = socket.socketpair()
    import hmac

    def legacy_answerer():
        message = read_frame(theirs)[len(b"#CHALLENGE#"):]
        theirs.sendall(frame(hmac.new(KEY, message, "md5").digest()))
        theirs.settimeout(5)
        reply = read_frame(theirs)
        theirs.close()
        replies.append(reply)

    replies = []
    thread = threading.Thread(target=legacy_answerer, daemon=True)
    thread.start()
    with net.Connection(ours) as conn:
        if allow_md5:
            net.deliver_challenge(conn, KEY, timeout=5)
        else:
            with pytest.raises(AuthenticationError, match="MD5"):
                net.deliver_challenge(conn, KEY, allow_md5=False, timeout=5)
    thread.join(10)
    assert replies == [b"#WELCOME#" if allow_md5 else b"#FAILURE#"]


@pytest.mark.parametrize("challenge", [b"\x01" * 20, b"{md5}" + b"\x01" * 40])
def test_allow_md5_false_refuses_to_answer_an_md5_challenge(challenge):
    ours, theirs = socket.socketpair()
    theirs.sendall(frame(b"#CHALLENGE#" + challenge))
    with net.Connection(ours) as conn, pytest.raises(AuthenticationError, match="MD5"):
        net.answer_challenge(conn, KEY, allow_md5=False, timeout=5)
    theirs.settimeout(5)
    assert theirs.recv(100) == b""  # nothing was answered
    theirs.close()


def test_allow_md5_false_refuses_md5_as_the_offered_digest():
    ours, theirs = socket.socketpair()
    with net.Connection(ours) as conn, pytest.raises(ValueError):
        net.deliver_challenge(conn, KEY, "md5", allow_md5=False)
    theirs.close()


def local_pythons():
    """A CPython per minor version 3.8-3.13 installed under ~/.pyenv (each a real,
    separate standard library), plus the running one."""
    found = {}
    for path in sorted(Path.home().glob(".pyenv/versions/3.*/bin/python3")):
        minor = tuple(int(x) for x in path.parent.parent.name.split(".")[:2])
        if (3, 8) <= minor <= (3, 13):
            found[minor] = str(path)
    found[sys.version_info[:2]] = sys.executable
    return sorted(found.items())


PYTHONS = local_pythons()

STD_CLIENT = """
import sys
from multiprocessing.connection import Client
try:
    with Client(("127.0.0.1", int(sys.argv[1])), authkey=b"s3cret") as c:
        c.send(["ping", sys.version_info[:2]])
        print(c.recv())
except Exception as exc:
    print(type(exc).__name__)
"""

STD_LISTENER = """
import sys
from multiprocessing.connection import Listener
with Listener(("127.0.0.1", 0), authkey=b"s3cret") as listener:
    print(listener.address[1], flush=True)
    try:
        with listener.accept() as c:
            c.send(c.recv())
        print("served", flush=True)
    except Exception as exc:
        print(type(exc).__name__, flush=True)
"""


def negotiates_digest(minor):
    return minor >= (3, 12)  # bare HMAC-MD5 before 3.12


@pytest.mark.parametrize("allow_md5", [True, False], ids=["default", "no_md5"])
@pytest.mark.parametrize("minor,python", PYTHONS, ids=[f"{m[0]}.{m[1]}" for m, _ in PYTHONS])
def test_digest_policy_with_stdlib_clients(minor, python, allow_md5):
    accepted = []
    with net.Listener(("127.0.0.1", 0), authkey=KEY, allow_md5=allow_md5,
                      handshake_timeout=30) as listener:
        def serve():
            try:
                with listener.accept() as conn:
                    conn.send(conn.recv())
                accepted.append(True)
            except AuthenticationError:
                accepted.append(False)

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        out = subprocess.run([python, "-c", STD_CLIENT, str(listener.address[1])],
                             capture_output=True, text=True, timeout=60, check=False)
        thread.join(30)
    works = allow_md5 or negotiates_digest(minor)
    assert accepted == [works], out.stderr
    expected = f"['ping', ({minor[0]}, {minor[1]})]" if works else "AuthenticationError"
    assert out.stdout.strip() == expected, out.stderr


@pytest.mark.parametrize("allow_md5", [True, False], ids=["default", "no_md5"])
@pytest.mark.parametrize("minor,python", PYTHONS, ids=[f"{m[0]}.{m[1]}" for m, _ in PYTHONS])
def test_digest_policy_with_stdlib_listeners(minor, python, allow_md5):
    proc = subprocess.Popen([python, "-c", STD_LISTENER], stdout=subprocess.PIPE, text=True)
    try:
        port = int(proc.stdout.readline())
        works = allow_md5 or negotiates_digest(minor)
        if works:
            with net.Client(("127.0.0.1", port), authkey=KEY, allow_md5=allow_md5, timeout=30) as conn:
                conn.send(["ping", 1])
                assert conn.recv() == ["ping", 1]
        else:
            with pytest.raises(AuthenticationError, match="MD5"):
                net.Client(("127.0.0.1", port), authkey=KEY, allow_md5=allow_md5, timeout=30)
        # A refused answer is never sent: the old listener sees the stream end.
        assert proc.stdout.readline().strip() == ("served" if works else "EOFError")
        assert proc.wait(30) == 0
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()


def test_running_stdlib_listener_and_client_in_threads():
    """The running interpreter's own multiprocessing.connection, both directions, default policy."""
    with std_connection.Listener(("127.0.0.1", 0), authkey=KEY) as std_listener:
        thread = threading.Thread(target=lambda: std_listener.accept().send("from-std"), daemon=True)
        thread.start()
        with net.Client(std_listener.address, authkey=KEY, timeout=10) as conn:
            assert conn.recv() == "from-std"
        thread.join(10)
    with net.Listener(("127.0.0.1", 0), authkey=KEY) as listener:
        thread = threading.Thread(
            target=lambda: std_connection.Client(listener.address, authkey=KEY).send("from-std"), daemon=True)
        thread.start()
        with listener.accept() as conn:
            assert conn.recv() == "from-std"
        thread.join(10)


# -- asyncio -----------------------------------------------------------------------------------


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 60))


@pytest.mark.parametrize("behaviour", sorted(HOSTILE))
def test_aio_client_handshake_failure_raises_authentication_error(behaviour):
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(10)

    def accept_one():
        sock, _ = server.accept()
        play(sock, behaviour, "challenger")

    peer = threading.Thread(target=accept_one, daemon=True)
    peer.start()

    async def main():
        with pytest.raises(AuthenticationError):
            await aio.open_connection(*server.getsockname(), authkey=KEY, handshake_timeout=SHORT)

    try:
        run(main())
        peer.join(10)
    finally:
        server.close()


@pytest.mark.parametrize("behaviour", sorted(HOSTILE))
def test_aio_server_survives_every_hostile_peer(behaviour):
    """The callback never sees a hostile peer, the peer is disconnected, and a real
    client is served afterwards."""
    seen = []

    async def handler(stream):
        seen.append(await stream.recv())
        await stream.send("ok")

    async def main():
        server = await aio.start_server(handler, "127.0.0.1", 0, authkey=KEY, handshake_timeout=SHORT)
        address = server.sockets[0].getsockname()
        loop = asyncio.get_running_loop()
        sock = tcp_peer(address)
        await loop.run_in_executor(None, play, sock, behaviour, "answerer")  # returns once we close it
        stream = await aio.open_connection(*address, authkey=KEY)
        await stream.send("good")
        assert await stream.recv() == "ok"
        stream.close()
        server.close()
        await server.wait_closed()

    run(main())
    assert seen == ["good"]


def test_aio_handshake_timeout_releases_an_idle_peer():
    async def main():
        server = await aio.start_server(lambda stream: None, "127.0.0.1", 0, authkey=KEY,
                                        handshake_timeout=SHORT)
        address = server.sockets[0].getsockname()
        before = open_descriptors()
        idle = tcp_peer(address)
        idle.setblocking(False)
        loop = asyncio.get_running_loop()
        first = await asyncio.wait_for(loop.sock_recv(idle, 100), 10)  # our challenge
        assert first.startswith(b"\x00\x00\x00")
        assert await asyncio.wait_for(loop.sock_recv(idle, 100), 10) == b""  # then disconnected
        idle.close()
        await asyncio.sleep(0.05)
        handlers = [t for t in asyncio.all_tasks() if t.get_coro().__name__ == "serve"]
        assert open_descriptors() == before and not handlers  # no task, no descriptor kept
        server.close()
        await server.wait_closed()

    run(main())


@pytest.mark.parametrize("allow_md5", [True, False])
def test_aio_allow_md5_false_refuses_a_legacy_peer(allow_md5):
    """A 3.11-style peer (bare HMAC-MD5) against an aio server, with and without the policy."""
    seen = []

    async def main():
        server = await aio.start_server(lambda stream: seen.append(stream), "127.0.0.1", 0,
                                        authkey=KEY, allow_md5=allow_md5)
        address = server.sockets[0].getsockname()
        loop = asyncio.get_running_loop()

        def legacy_client():
            import hmac
            with tcp_peer(address) as sock:
                sock.settimeout(10)
                challenge = read_frame(sock)[len(b"#CHALLENGE#"):]
                sock.sendall(frame(hmac.new(KEY, challenge, "md5").digest()))
                return read_frame(sock)

        assert await loop.run_in_executor(None, legacy_client) == (
            b"#WELCOME#" if allow_md5 else b"#FAILURE#")
        server.close()
        await server.wait_closed()

    run(main())
