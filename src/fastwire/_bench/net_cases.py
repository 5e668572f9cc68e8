"""Benchmark pairs for fastwire.net against multiprocessing.connection.

All over a local socket pair (socket.socketpair), the way Pipe() connects.
The 64 MiB case is also timed against the raw socket (sendall on one side,
recv_into a preallocated buffer on the other): the bandwidth ceiling. A
receiver that returns a new 64 MiB object also pays for faulting in its fresh
pages, which the preallocated raw buffer does not; on a VM that can cost more
than the transfer itself (on the 2-vCPU Firecracker VM of our figures, ~40 ms
per 64 MiB against ~15 ms for the whole raw transfer), so a second raw row
receives into a new buffer each time: the ceiling for a receiver that hands
over what it received.
"""

import socket
import threading
from multiprocessing import connection as mpc

from fastwire import net
from fastwire.frames import dumps_framed
from fastwire.pickle import loads

from . import Pair

SMALL = {"id": 12345, "name": "fastwire", "score": 3.25, "tags": ["a", "b"]}
BATCH = 100
BIG = 64 * 1024 * 1024


def _round_trip(a, b):
    def run():
        a.send(SMALL)
        b.recv()
    return run


def _round_trip_socket_calls():
    """A round trip through Python's socket methods with nothing else: pickle
    behind a header, one sendall, one recv_into, unpickle; no locks, checks or
    buffering. Connection.send/recv skip the socket methods (their compiled path
    uses the descriptor), which is how they beat this."""
    s1, s2 = socket.socketpair()
    buffer = bytearray(1 << 16)
    view = memoryview(buffer)

    def run():
        s1.sendall(dumps_framed((SMALL,), "multiprocessing", 5))
        n = s2.recv_into(buffer)
        loads(view[4:n])
    return run


def _batch_per_message(a, b):
    batch = [SMALL] * BATCH

    def run():
        for obj in batch:
            a.send(obj)
        for _ in batch:
            b.recv()
    return run


def _batch_send_many(a, b):
    batch = [SMALL] * BATCH

    def run():
        a.send_many(batch)
        for _ in batch:
            b.recv()
    return run


def _with_sender_thread(send, receive):
    """Time one transfer: `send` in a thread, `receive` here (a socket buffer
    is far smaller than 64 MiB, so the two must run concurrently)."""
    def run():
        thread = threading.Thread(target=send)
        thread.start()
        receive()
        thread.join()
    return run


def _raw_socket_transfer(fresh_buffer=False):
    """sendall on one end, recv_into on the other: into one preallocated buffer
    (the bandwidth ceiling), or into a new buffer per message, as a receiver
    that hands each message over must (it pays for faulting in fresh pages)."""
    s1, s2 = socket.socketpair()
    payload = b"x" * BIG
    reused = bytearray(BIG)

    def receive():
        view = memoryview(bytearray(BIG) if fresh_buffer else reused)
        got = 0
        while got < BIG:
            got += s2.recv_into(view[got:])

    return _with_sender_thread(lambda: s1.sendall(payload), receive)


def _connection_transfer_into(a, b):
    payload = b"x" * BIG
    target = bytearray(BIG)
    return _with_sender_thread(lambda: a.send_bytes(payload), lambda: b.recv_bytes_into(target))


def _connection_transfer(a, b):
    payload = b"x" * BIG
    return _with_sender_thread(lambda: a.send(payload), b.recv)


def pairs():
    std_a, std_b = mpc.Pipe()
    fw_a, fw_b = net.Pipe()
    trusted_a, trusted_b = net.Pipe(trusted=True)
    return [
        Pair("send+recv one 4-key dict", "net",
             _round_trip(std_a, std_b), _round_trip(fw_a, fw_b), target=2.5),
        Pair("send+recv one 4-key dict: bare socket methods (sendall, recv_into, dumps, loads)", "net",
             _round_trip(std_a, std_b), _round_trip_socket_calls(), target=1.0),
        Pair(f"{BATCH} dicts: send each (stdlib) / send_many (fastwire), recv each", "net",
             _batch_per_message(std_a, std_b), _batch_send_many(fw_a, fw_b), target=10.0),
        Pair(f"{BATCH} dicts: send each, recv each", "net",
             _batch_per_message(std_a, std_b), _batch_per_message(fw_a, fw_b), target=2.5),
        Pair("64 MiB bytes: raw sendall/recv_into (stdlib column) vs send/recv", "net",
             _raw_socket_transfer(), _connection_transfer(fw_a, fw_b), target=0.7),
        Pair("64 MiB bytes: raw sendall/recv_into (stdlib column) vs send/recv, trusted", "net",
             _raw_socket_transfer(), _connection_transfer(trusted_a, trusted_b), target=0.7),
        Pair("64 MiB bytes: raw sendall/recv_into a new buffer (stdlib column) vs send/recv", "net",
             _raw_socket_transfer(fresh_buffer=True), _connection_transfer(fw_a, fw_b), target=0.7),
        Pair("64 MiB: raw sendall/recv_into (stdlib column) vs send_bytes/recv_bytes_into", "net",
             _raw_socket_transfer(), _connection_transfer_into(fw_a, fw_b), target=0.7),
        Pair("64 MiB bytes: send/recv", "net",
             _connection_transfer(std_a, std_b), _connection_transfer(fw_a, fw_b), target=1.0),
    ]
