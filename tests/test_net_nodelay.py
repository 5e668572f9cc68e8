"""TCP connections turn Nagle's algorithm off on both ends (docs/performance.md
says why: a message's tail segment must not wait for the peer's delayed ACK)."""

import socket
import threading

from fastwire import net


def nodelay(conn):
    with socket.socket(fileno=socket.dup(conn.fileno())) as sock:
        return sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)


def test_both_ends_of_a_tcp_connection_set_tcp_nodelay():
    with net.Listener(("127.0.0.1", 0), "AF_INET") as listener:
        accepted = {}
        thread = threading.Thread(target=lambda: accepted.setdefault("conn", listener.accept()))
        thread.start()
        client = net.Client(listener.address, "AF_INET")
        thread.join(timeout=30)
        server = accepted["conn"]
        try:
            assert nodelay(client) != 0
            assert nodelay(server) != 0
            client.send({"a": 1})
            assert server.recv() == {"a": 1}
        finally:
            client.close()
            server.close()
