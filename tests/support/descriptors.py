"""A closed connection's descriptor number taken over by a new socket: the
state every test of a callout that closes a connection sets up."""

import socket

import pytest


class Reuse:
    """Close `conn`, then open a socket pair that takes over its descriptor number."""

    def __init__(self):
        self.pair = None
        self.fd = None

    def __call__(self, conn):
        self.fd = conn.fileno()
        conn.close()
        self.pair = socket.socketpair()
        assert self.fd in (self.pair[0].fileno(), self.pair[1].fileno()), "descriptor not reused"
        # Bytes waiting on the socket that owns the number now: a stale read would take them.
        self.other(self.fd).sendall(b"not yours")

    def mine(self):
        return self.pair[0] if self.pair[0].fileno() == self.fd else self.pair[1]

    def other(self, fd):
        return self.pair[1] if self.pair[0].fileno() == fd else self.pair[0]

    def assert_untouched(self):
        """Nothing was written to the reused descriptor, nothing read from it."""
        mine, other = self.mine(), self.other(self.fd)
        for sock in (mine, other):
            sock.setblocking(False)
        assert mine.recv(100) == b"not yours"
        with pytest.raises(BlockingIOError):
            other.recv(100)  # no frame reached the new socket
        for sock in self.pair:
            sock.close()
