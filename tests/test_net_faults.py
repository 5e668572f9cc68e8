"""Socket fault injection: real loopback sockets driven by a
misbehaving peer. Every case ends in complete delivery or a documented
exception; never a partial object, a lost or reordered message, or memory
sized by what the peer claims."""

import os
import pickle
import socket
import struct
import threading
import time

import pytest

from fastwire import _protocol, net
from fastwire.frames import FrameTooLarge


def frame(payload):
    return struct.pack("!i", len(payload)) + payload


def msg(obj):
    return frame(pickle.dumps(obj, protocol=5))


@pytest.fixture
def tcp_pair():
    """(raw peer socket, fastwire Connection) over TCP loopback."""
    listener = socket.create_server(("127.0.0.1", 0))
    peer = socket.create_connection(listener.getsockname())
    peer.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    accepted, _ = listener.accept()
    listener.close()
    conn = net.Connection(accepted)
    yield peer, conn
    peer.close()
    conn.close()


def current_rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def test_one_byte_at_a_time(tcp_pair):
    peer, conn = tcp_pair
    objs = [{"k": list(range(50))}, "second", b"z" * 3000]
    wire = b"".join(msg(o) for o in objs)

    def trickle():
        for i in range(len(wire)):
            peer.send(wire[i:i + 1])

    thread = threading.Thread(target=trickle)
    thread.start()
    assert [conn.recv() for _ in objs] == objs
    thread.join()


def test_stall_mid_frame_times_out_then_completes(tcp_pair):
    peer, conn = tcp_pair
    wire = msg(["complete", "later"]) + msg("next")
    conn.settimeout(0.2)
    peer.sendall(wire[:7])  # header and a little payload, then nothing
    with pytest.raises(TimeoutError):
        conn.recv()
    with pytest.raises(TimeoutError):  # still nothing: still no partial object
        conn.recv()
    peer.sendall(wire[7:])
    assert conn.recv() == ["complete", "later"]
    assert conn.recv() == "next"


@pytest.mark.parametrize("cut", [1, 3, 4, 10])
def test_close_mid_header_or_payload_is_eof(tcp_pair, cut):
    peer, conn = tcp_pair
    wire = msg("first") + msg({"never": "whole"})
    peer.sendall(wire[:len(msg("first")) + cut])
    peer.close()
    assert conn.recv() == "first"
    with pytest.raises(EOFError, match="middle"):
        conn.recv()
    assert conn.closed


def test_clean_close_between_messages_is_plain_eof(tcp_pair):
    peer, conn = tcp_pair
    peer.sendall(msg(1))
    peer.close()
    assert conn.recv() == 1
    with pytest.raises(EOFError) as info:
        conn.recv()
    assert not info.value.args


@pytest.mark.parametrize("trusted", [False, True])
def test_close_mid_payload_of_a_large_message_is_eof(trusted):
    a, b = socket.socketpair()
    conn = net.Connection(b, trusted=trusted)
    big = msg(b"q" * (8 << 20))

    def send_part():
        a.sendall(big[:3 << 20])
        a.close()

    thread = threading.Thread(target=send_part)
    thread.start()
    with pytest.raises(EOFError):
        conn.recv()
    thread.join()
    assert conn.closed


@pytest.mark.parametrize("header", [
    struct.pack("!i", 0x7FFFFFFF),
    struct.pack("!i", -1) + struct.pack("!Q", 2**63),
    struct.pack("!i", -1) + struct.pack("!Q", 2**64 - 1),
])
def test_hostile_length_prefix_is_refused_at_once(tcp_pair, header):
    peer, conn = tcp_pair
    peer.sendall(header)  # no payload byte follows
    conn.settimeout(5)
    with pytest.raises(FrameTooLarge):
        conn.recv()
    assert conn.closed


@pytest.mark.parametrize("trusted", [False, True])
@pytest.mark.parametrize("call, wire", [
    # 120 MiB claimed by the frame (the limit is 128 MiB), 100 bytes sent, then a stall.
    ("recv_bytes", struct.pack("!i", 120 << 20) + b"\x80\x05" + b"\x00" * 98),
    # The frame's pickle claims one 119 MiB bytes object: recv() decodes while
    # reading, and must grow the object with what arrived.
    ("recv", struct.pack("!i", 120 << 20) + b"\x80\x05\x8e" + struct.pack("<Q", 119 << 20) + b"z" * 1000),
    # ... and one that is a lone bytes object (received like recv_bytes).
    ("recv", struct.pack("!i", 120 << 20) + b"\x80\x05\x8e" + struct.pack("<Q", (120 << 20) - 13) + b"z" * 1000),
])
def test_claimed_length_within_the_limit_allocates_nothing_up_front(trusted, call, wire):
    a, b = socket.socketpair()
    conn = net.Connection(b, trusted=trusted)
    conn.settimeout(0.3)
    before = current_rss()
    a.sendall(wire)
    with pytest.raises(TimeoutError):
        getattr(conn, call)()
    grown = current_rss() - before
    assert grown < 8 << 20, grown
    # Cut in the middle of a message over 1 MiB: documented to close the connection.
    assert conn.closed
    a.close()


def test_connection_reset_by_peer(tcp_pair):
    peer, conn = tcp_pair
    peer.sendall(msg("before reset") + msg("cut")[:5])
    # SO_LINGER 0: close() sends RST instead of FIN.
    peer.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    peer.close()
    time.sleep(0.1)
    try:
        first = conn.recv()
    except ConnectionResetError:
        first = None  # the RST may discard bytes not yet read: an error, never a partial object
    assert first in ("before reset", None)
    with pytest.raises((ConnectionResetError, EOFError)):
        conn.recv()


def test_slow_reader_while_the_writer_sends_a_lot():
    a, b = net.Pipe()
    count = 2000
    payload = os.urandom(50_000)
    done = threading.Event()

    def writer():
        for i in range(count):
            a.send((i, payload))
        done.set()

    thread = threading.Thread(target=writer)
    thread.start()
    time.sleep(0.3)
    assert not done.is_set()  # the socket buffer is full: the writer waits, nothing is dropped
    for i in range(count):
        index, data = b.recv()
        assert index == i and data == payload
        if i % 200 == 0:
            time.sleep(0.01)
    thread.join(60)
    assert done.is_set()
    a.close()
    b.close()


def test_writer_timeout_closes_the_connection():
    a, b = net.Pipe()
    a.settimeout(0.2)
    with pytest.raises(TimeoutError):
        for _ in range(1000):
            a.send(b"w" * 1_000_000)  # nobody reads: the socket buffer fills
    assert a.closed  # a message may be half written: the stream is not reusable
    b.close()


def test_streamed_message_with_an_unimportable_global_is_skipped_whole():
    a, b = net.Pipe(trusted=True)
    blob = os.urandom(3 << 20)
    poisoned = b"\x80\x04cno_such_module_fastwire\nthing\n" + pickle.dumps(blob, protocol=4)[2:]

    def send():
        a.send_bytes(poisoned)
        a.send("next")

    thread = threading.Thread(target=send)
    thread.start()
    with pytest.raises(ModuleNotFoundError):
        b.recv()
    assert b.recv() == "next"
    thread.join()


@pytest.mark.parametrize("trusted", [False, True])
def test_bytes_after_the_pickle_stop_are_ignored_like_the_stdlib(trusted):
    from multiprocessing import connection as mpc

    payload = pickle.dumps(b"s" * (2 << 20), protocol=5) + b"trailing junk"
    a, b = net.Pipe(trusted=trusted)
    sa, sb = mpc.Pipe()
    for sender, receiver in ((a, b), (sa, sb)):
        thread = threading.Thread(target=lambda: (sender.send_bytes(payload), sender.send("next")))
        thread.start()
        assert receiver.recv() == b"s" * (2 << 20)
        assert receiver.recv() == "next"
        thread.join()


def test_regression_frame_views_collected_in_a_cycle_n1():
    """Fuzz finding N1 (fuzz/crashes/frames/): the collector cleared a frame
    view's exporter before the view released it, and the release wrote through
    None (a segfault at exit, a heap write under ASan). Replays the reproducer
    in a child interpreter so a crash is a failure, not a dead test run."""
    import os
    import subprocess
    import sys

    root = os.path.join(os.path.dirname(__file__), os.pardir)
    target = os.path.join(root, "fuzz", "fuzz_frames.py")
    crashes = os.path.join(root, "fuzz", "crashes", "frames")
    result = subprocess.run([sys.executable, target, "--replay", crashes],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "all passed" in result.stdout


# -- whole-call deadlines --------------------------------------------------------------------


def trickle_frame(sock, data, interval, stop):
    """Send `data` one byte every `interval` seconds until done or `stop` is set."""
    try:
        for byte in data:
            if stop.wait(interval):
                return
            sock.sendall(bytes([byte]))
    except OSError:
        pass


@pytest.mark.parametrize("call", ["recv", "recv_bytes", "recv_bytes_into"])
def test_recv_timeout_is_a_deadline_for_the_whole_call_against_a_trickling_peer(tcp_pair, call):
    """settimeout() bounds each read: a byte every 0.1 s keeps a read-bounded call alive
    for ever. timeout= bounds the call: it raises TimeoutError with the message unfinished."""
    peer, conn = tcp_pair
    stop = threading.Event()
    data = msg("x" * 200)
    thread = threading.Thread(target=trickle_frame, args=(peer, data, 0.1, stop))
    thread.start()
    try:
        conn.settimeout(1.0)  # each read gets a byte within 0.1 s: this alone never fires
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            if call == "recv_bytes_into":
                conn.recv_bytes_into(bytearray(1000), timeout=0.5)
            else:
                getattr(conn, call)(timeout=0.5)
        elapsed = time.monotonic() - started
    finally:
        stop.set()
        thread.join(10)
    # The whole message needs 0.1 s per byte, 21 s in all; the call gave up long before.
    assert elapsed < len(data) * 0.1 / 2


def test_recv_timeout_keeps_the_bytes_received_so_far(tcp_pair):
    peer, conn = tcp_pair
    data = msg({"k": list(range(50))})
    peer.sendall(data[:10])
    with pytest.raises(TimeoutError):
        conn.recv(timeout=0.2)
    peer.sendall(data[10:])
    assert conn.recv(timeout=5) == {"k": list(range(50))}


def test_recv_timeout_mid_message_over_1_mib_closes_the_connection(tcp_pair):
    peer, conn = tcp_pair
    data = msg(b"b" * (3 << 20))
    peer.sendall(data[:len(data) // 2])
    with pytest.raises(TimeoutError):
        conn.recv(timeout=0.3)
    assert conn.closed  # the frame is cut: the stream cannot be resynchronised


def test_recv_timeout_does_not_bound_decoding_a_frame_that_has_arrived(tcp_pair):
    # docs/security.md: a timeout bounds waiting for bytes, not decoding.
    peer, conn = tcp_pair
    value = [{"k": i, "v": str(i)} for i in range(20_000)]
    data = msg(value)
    assert len(data) < net.STREAM_THRESHOLD
    peer.sendall(data)
    while not conn.poll(5):
        pass
    assert conn.recv(timeout=1e-9) == value  # a deadline already over when decoding starts


@pytest.mark.parametrize("timeout", [0, -1.0])
def test_recv_timeout_must_be_positive(tcp_pair, timeout):
    _peer, conn = tcp_pair
    with pytest.raises(ValueError):
        conn.recv(timeout=timeout)


# -- large protocol-0 frames -------------------------------------------------------------------


class CountingSocket(socket.socket):
    """A real socket that counts the reads made through the socket module."""

    reads = 0

    def recv_into(self, *args, **kwargs):
        CountingSocket.reads += 1
        return super().recv_into(*args, **kwargs)


def counting_pair():
    a, b = socket.socketpair()
    counted = CountingSocket(a.family, a.type, fileno=a.detach())
    CountingSocket.reads = 0
    return counted, b


TEXT_FRAMES = {
    "one_long_string": lambda: pickle.dumps("a" * (4 << 20), protocol=0),
    "str_opcode": lambda: b"S'" + b"a" * (4 << 20) + b"'\n.",
    "many_short_lines": lambda: pickle.dumps(list(range(300_000)), protocol=0),
    "text_keys_and_floats": lambda: pickle.dumps({f"key{i}": i / 7 for i in range(60_000)}, protocol=0),
    "protocol_1_with_long_ints": lambda: pickle.dumps([10**40 + i for i in range(80_000)], protocol=1),
}


@pytest.mark.parametrize("name", sorted(TEXT_FRAMES))
def test_large_text_frame_is_read_in_chunks_not_a_byte_at_a_time(name):
    """A frame over 1 MiB is decoded while it arrives; its text lines must be read in
    chunks. Bounded by the count of reads (a byte at a time made one per byte), and
    the result checked against pickle.loads of the same bytes."""
    payload = TEXT_FRAMES[name]()
    assert len(payload) > net.STREAM_THRESHOLD
    counted, peer = counting_pair()
    conn = net.Connection(counted, trusted=True)
    sender = threading.Thread(target=peer.sendall, args=(frame(payload),))
    sender.start()
    try:
        got = conn.recv()
    finally:
        sender.join(30)
        conn.close()
        peer.close()
    assert got == pickle.loads(payload)
    assert CountingSocket.reads <= len(payload) // 16384 + 20  # a byte at a time: millions


@pytest.mark.parametrize("size", ["small", "large"])
@pytest.mark.parametrize("call", ["recv", "recv_timeout", "recv_bytes", "recv_bytes_into"])
def test_every_receive_path_reports_a_cut_message_alike(tcp_pair, call, size):
    """The descriptor read, the deadline read and the large-frame reads all end a
    stream cut inside a frame with the protocol's one EOFError message."""
    peer, conn = tcp_pair
    payload = pickle.dumps(list(range(300_000)) if size == "large" else "small", protocol=5)
    assert (len(payload) >= net.STREAM_THRESHOLD) == (size == "large")
    wire = frame(payload)
    sender = threading.Thread(target=lambda: (peer.sendall(wire[:len(wire) // 2]), peer.close()))
    sender.start()
    with pytest.raises(EOFError) as info:
        if call == "recv":
            conn.recv()
        elif call == "recv_timeout":
            conn.recv(timeout=10)
        elif call == "recv_bytes":
            conn.recv_bytes()
        else:
            conn.recv_bytes_into(bytearray(len(payload)))
    sender.join()
    assert info.value.args == (_protocol.EOF_IN_MESSAGE,)
    assert "middle of a message" in _protocol.EOF_IN_MESSAGE
    assert conn.closed
