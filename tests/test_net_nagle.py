"""TCP and Nagle's algorithm (docs/net.md, "TCP and Nagle's algorithm").

A TCP connection starts with TCP_NODELAY on, so a request or an answer leaves at
once. A run of sends with no receive between them (a stream) turns it off, so the
kernel gathers small messages into segments; a receive call that may wait, or a
send while another thread is receiving, turns it on again, which sends whatever
was held. The state is read back from the kernel (getsockopt), so each test sees
what the socket really does, not what the connection believes.
"""

import socket
import threading
import time

import pytest

from fastwire import net
from fastwire._fastwire import ConnectionCore
from tests.support.descriptors import Reuse

# The stream length from which sends use Nagle's algorithm (connection.pxi's
# _NAGLE_AFTER_SENDS), restated here so that a change to it is a visible decision.
STREAM = 16


LOOPBACK = {"AF_INET": ("127.0.0.1", 0), "AF_INET6": ("::1", 0)}


def has_ipv6():
    try:
        socket.socket(socket.AF_INET6).close()
    except OSError:
        return False
    return socket.has_ipv6


def nodelay(conn):
    with socket.socket(fileno=socket.dup(conn.fileno())) as sock:
        return sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0


@pytest.fixture
def tcp_pair():
    """(client, server): two fastwire ends of one TCP connection on loopback."""
    pairs = []

    def make(family="AF_INET", **options):
        with net.Listener(LOOPBACK[family], family, **options) as listener:
            accepted = {}
            thread = threading.Thread(target=lambda: accepted.setdefault("conn", listener.accept()))
            thread.start()
            client = net.Client(listener.address, family, **options)
            thread.join(timeout=30)
        pairs.append((client, accepted["conn"]))
        return pairs[-1]

    yield make
    for client, server in pairs:
        client.close()
        server.close()


def stream(conn, count):
    for i in range(count):
        conn.send(i)


def test_both_ends_of_a_tcp_connection_start_with_tcp_nodelay(tcp_pair):
    client, server = tcp_pair()
    assert nodelay(client) and nodelay(server)
    client.send({"a": 1})
    assert server.recv() == {"a": 1}


def test_a_few_sends_in_a_row_keep_tcp_nodelay(tcp_pair):
    """A request of several messages is not a stream: each leaves at once."""
    client, server = tcp_pair()
    stream(client, STREAM - 1)
    assert nodelay(client)
    assert [server.recv() for _ in range(STREAM - 1)] == list(range(STREAM - 1))


@pytest.mark.parametrize("family", [
    "AF_INET",
    pytest.param("AF_INET6", marks=pytest.mark.skipif(not has_ipv6(), reason="no IPv6 on this machine")),
])
def test_a_stream_of_sends_turns_nagle_on(tcp_pair, family):
    client, server = tcp_pair(family)
    stream(client, STREAM)
    assert not nodelay(client)
    assert client._nagle
    stream(client, 1000)
    assert [server.recv() for _ in range(STREAM + 1000)] == list(range(STREAM)) + list(range(1000))
    assert nodelay(server)  # the receiving end never sent: untouched


@pytest.mark.parametrize("receive", ["recv", "recv_bytes", "recv_bytes_into", "poll", "poll_forever", "wait"])
def test_a_receive_that_may_wait_pushes_what_nagle_holds(tcp_pair, receive):
    """After a stream, the call that waits for the answer first turns
    TCP_NODELAY back on (which sends the held segments at once): the answer
    to the last message must not wait for the peer's delayed ACK."""
    client, server = tcp_pair()
    stream(client, STREAM + 4)
    assert not nodelay(client)
    for _ in range(STREAM + 4):
        server.recv()
    server.send("answer")
    if receive == "recv":
        assert client.recv() == "answer"
    elif receive == "recv_bytes":
        assert client.recv_bytes()
    elif receive == "recv_bytes_into":
        assert client.recv_bytes_into(bytearray(100)) > 0
    elif receive == "poll":
        assert client.poll(30)
    elif receive == "poll_forever":
        assert client.poll(None)
    else:
        assert net.wait([client], timeout=30) == [client]
    assert nodelay(client)
    assert not client._nagle


def test_poll_without_a_timeout_leaves_nagle_on(tcp_pair):
    """poll(0) is a look, not a wait: a stream that checks for control messages
    between its sends stays a stream."""
    client, server = tcp_pair()
    stream(client, STREAM)
    assert not client.poll(0)
    assert not nodelay(client)
    assert net.wait([client], timeout=0) == []
    assert not nodelay(client)


def test_a_receive_starts_a_new_run_of_sends(tcp_pair):
    """Request/response: each message is followed by a receive, so no run ever
    reaches a stream however many round trips there are."""
    client, server = tcp_pair()
    for i in range(3 * STREAM):
        client.send(i)
        assert server.recv() == i
        server.send(i)
        assert client.recv() == i
    assert nodelay(client) and nodelay(server)


def test_a_send_while_another_thread_receives_keeps_tcp_nodelay(tcp_pair):
    """The receiving thread may be waiting for the answer to what this thread
    sends: a stream sent meanwhile does not turn Nagle on."""
    client, server = tcp_pair()
    got = []
    receiver = threading.Thread(target=lambda: got.append(client.recv()))
    receiver.start()
    deadline = time.monotonic() + 30
    while not client._recv_lock.locked():  # the receive is under way, holding its lock
        assert time.monotonic() < deadline
        time.sleep(0.001)
    stream(client, 3 * STREAM)
    assert nodelay(client)
    assert [server.recv() for _ in range(3 * STREAM)] == list(range(3 * STREAM))
    server.send("done")
    receiver.join(timeout=30)
    assert got == ["done"]


def test_a_send_while_another_thread_receives_pushes_a_stream_started_before(tcp_pair):
    """A stream had turned Nagle on when another thread started receiving (it
    holds the receive lock, as this test does for it): the next send turns
    TCP_NODELAY back on, which also sends what was held."""
    client, server = tcp_pair()
    stream(client, STREAM)
    assert not nodelay(client)
    with client._recv_lock:
        client.send("while receiving")
        assert nodelay(client)
    assert [server.recv() for _ in range(STREAM + 1)] == list(range(STREAM)) + ["while receiving"]


def test_nodelay_true_keeps_tcp_nodelay_on_for_good(tcp_pair):
    client, server = tcp_pair(nodelay=True)
    stream(client, 3 * STREAM)
    stream(server, 3 * STREAM)
    assert nodelay(client) and nodelay(server)
    assert client._nagle_fd == -1 and server._nagle_fd == -1
    assert [server.recv() for _ in range(3 * STREAM)] == list(range(3 * STREAM))


def test_a_wrapped_tcp_socket_gets_the_same_policy():
    """Connection(sock) on a TCP socket the caller made with Nagle on."""
    listener = socket.create_server(("127.0.0.1", 0))
    raw_client = socket.create_connection(listener.getsockname())
    raw_server, _ = listener.accept()
    listener.close()
    raw_client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 0)
    with net.Connection(raw_client, trusted=True) as client, net.Connection(raw_server, trusted=True) as server:
        assert nodelay(client)
        stream(client, STREAM)
        assert not nodelay(client)
        assert [server.recv() for _ in range(STREAM)] == list(range(STREAM))


def test_a_connection_with_a_timeout_follows_the_policy_too(tcp_pair):
    """A timeout moves I/O to the socket module's methods; the Nagle choice
    does not depend on which primitive writes."""
    client, server = tcp_pair()
    client.settimeout(30)
    stream(client, STREAM)
    assert not nodelay(client)
    assert [server.recv() for _ in range(STREAM)] == list(range(STREAM))
    server.send("answer")
    assert client.recv(timeout=30) == "answer"
    assert nodelay(client)


@pytest.mark.parametrize("family", ["AF_UNIX", "pipe"])
def test_other_transports_have_no_nagle_state(tmp_path, family):
    if family == "pipe":
        a, b = net.Pipe()
    else:
        with net.Listener(str(tmp_path / "s"), "AF_UNIX") as listener:
            accepted = {}
            thread = threading.Thread(target=lambda: accepted.setdefault("conn", listener.accept()))
            thread.start()
            a = net.Client(listener.address, "AF_UNIX")
            thread.join(timeout=30)
            b = accepted["conn"]
    with a, b:
        assert a._nagle_fd == -1 and b._nagle_fd == -1
        stream(a, 3 * STREAM)
        assert [b.recv() for _ in range(3 * STREAM)] == list(range(3 * STREAM))


def test_closing_clears_the_nagle_descriptor(tcp_pair):
    client, _server = tcp_pair()
    assert client._nagle_fd == client.fileno()
    client.close()
    assert client._nagle_fd == -1
    client._push_before_waiting()  # what wait() calls: nothing to touch once closed


class SocketClosingInSetsockopt(socket.socket):
    """A socket whose setsockopt() runs `action` (once) after setting the option."""

    action = None

    def setsockopt(self, *args):
        super().setsockopt(*args)
        action, self.action = self.action, None
        if action is not None:
            action()


def test_init_callout_closes_and_the_descriptor_is_reused():
    """Connection() sets TCP_NODELAY through the socket's own setsockopt(); one
    that closes the connection meanwhile must not leave that number behind for
    later sends and receives to toggle (the next socket opened takes it over)."""
    listener = socket.create_server(("127.0.0.1", 0))
    raw_client = socket.create_connection(listener.getsockname())
    raw_server, _ = listener.accept()
    listener.close()
    sock = SocketClosingInSetsockopt(fileno=raw_client.detach())
    conn = net.Connection.__new__(net.Connection)
    reuse = Reuse()
    sock.action = lambda: reuse(conn)
    conn.__init__(sock, trusted=True)
    assert conn._nagle_fd == -1
    conn._push_before_waiting()
    with pytest.raises(OSError, match="handle is closed"):
        conn.send("lost")
    reuse.assert_untouched()
    raw_server.close()


def test_connection_core_takes_nodelay_as_a_keyword():
    a, b = socket.socketpair()
    with ConnectionCore(a, nodelay=True) as core:
        assert core._nagle_fd == -1
    b.close()
