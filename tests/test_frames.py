"""Frame scanning and encoding, checked against the standard library's struct
(and, for the multiprocessing header, bytes written by a real
multiprocessing.connection)."""

import socket
import struct
from multiprocessing.connection import Connection as StdConnection

import pytest
from hypothesis import given, strategies as st

from fastwire.frames import (
    DEFAULT_MAX_FRAME_SIZE,
    FrameError,
    FramePrefix,
    FrameScanner,
    FrameTooLarge,
    encode_frame,
    frame_buffers,
    scan_frames,
)
from tests.support.frames import encode_header, max_payload

STRUCT_PREFIXES = [">I", "<I", "!H", ">Q", "<Q", "=L", ">i", "<q", "B", "@I", "@N", "!h", "b"]
ALL_PREFIXES = STRUCT_PREFIXES + ["multiprocessing", "varint"]


def as_bytes(frames):
    return [bytes(f) for f in frames]


@st.composite
def framed_streams(draw):
    prefix = draw(st.sampled_from(ALL_PREFIXES))
    payloads = draw(st.lists(st.binary(max_size=max_payload(prefix)), max_size=12))
    stream = b"".join(encode_header(prefix, len(p)) + p for p in payloads)
    return prefix, payloads, stream


@given(framed_streams(), st.integers(0, 400))
def test_scan_frames_matches_struct_reference(case, copy_threshold):
    prefix, payloads, stream = case
    frames, consumed = scan_frames(stream, prefix, copy_threshold=copy_threshold)
    assert as_bytes(frames) == payloads
    assert consumed == len(stream)
    for frame in frames:
        assert isinstance(frame, bytes if len(frame) < copy_threshold else memoryview)


@given(framed_streams(), st.data())
def test_scan_frames_leaves_partial_tail(case, data):
    prefix, payloads, stream = case
    cut = data.draw(st.integers(0, len(stream)))
    frames, consumed = scan_frames(bytearray(stream[:cut]), prefix)
    # The oracle: the complete frames are exactly those whose last byte is before the cut.
    expected, pos = [], 0
    for p in payloads:
        end = pos + len(encode_header(prefix, len(p))) + len(p)
        if end > cut:
            break
        expected.append(p)
        pos = end
    assert as_bytes(frames) == expected
    assert consumed == pos


@given(framed_streams(), st.lists(st.integers(1, 50), min_size=1), st.booleans())
def test_feed_any_split_gives_the_same_frames(case, sizes, as_bytearray):
    prefix, payloads, stream = case
    scanner = FrameScanner(prefix, copy_threshold=16)
    got, pos, i = [], 0, 0
    while pos < len(stream):
        step = sizes[i % len(sizes)]
        chunk = stream[pos:pos + step]
        got += scanner.feed(bytearray(chunk) if as_bytearray else chunk)
        pos += step
        i += 1
    assert as_bytes(got) == payloads
    assert scanner.pending == 0


@given(framed_streams(), st.lists(st.integers(1, 70_000), min_size=1))
def test_recv_into_path_gives_the_same_frames(case, sizes):
    prefix, payloads, stream = case
    scanner = FrameScanner(prefix, copy_threshold=8)
    got, pos, i = [], 0, 0
    while pos < len(stream):
        buf = scanner.get_buffer()
        n = min(len(buf), sizes[i % len(sizes)], len(stream) - pos)
        buf[:n] = stream[pos:pos + n]
        del buf
        got += scanner.buffer_updated(n)
        pos += n
        i += 1
    assert as_bytes(got) == payloads


@pytest.mark.parametrize("prefix", ALL_PREFIXES)
def test_headers_match_reference(prefix):
    for n in [0, 1, 127, 128, 255, 300, 16383, 16384, 65535, 2**31 - 1, 2**31, 2**32 - 1, 2**40, 2**63]:
        try:
            expected = encode_header(prefix, n)
        except struct.error:
            with pytest.raises(FrameError):
                FramePrefix(prefix).header(n)
            continue
        assert FramePrefix(prefix).header(n) == expected, n


def test_multiprocessing_prefix_is_what_a_real_connection_writes():
    a, b = socket.socketpair()
    with a, b:
        conn = StdConnection(a.detach())
        try:
            for payload in [b"", b"x", b"y" * 20000, bytes(range(256)) * 300]:
                conn.send_bytes(payload)
                wire = b""
                while len(wire) < len(payload) + 4:
                    wire += b.recv(1 << 20)
                assert encode_frame(payload, "multiprocessing") == wire
                assert as_bytes(scan_frames(wire, "multiprocessing")[0]) == [payload]
        finally:
            conn.close()


def test_varint_known_vectors():
    # From the protobuf encoding guide: 1 -> 01, 150 -> 96 01, 300 -> ac 02.
    assert FramePrefix("varint").header(1) == b"\x01"
    assert FramePrefix("varint").header(150) == b"\x96\x01"
    assert FramePrefix("varint").header(300) == b"\xac\x02"
    assert FramePrefix("varint").header(2**64 - 1) == b"\xff" * 9 + b"\x01"
    with pytest.raises(FrameError):
        FramePrefix("varint").header(2**64)


@pytest.mark.parametrize("bad", ["", "f", ">x", "2I", ">>I", "I>", "<n", "proto", "s"])
def test_bad_prefix_format(bad):
    with pytest.raises(ValueError):
        FramePrefix(bad)
    with pytest.raises(ValueError):
        scan_frames(b"", bad)


def test_prefix_type_error():
    with pytest.raises(TypeError):
        scan_frames(b"", 4)


@pytest.mark.parametrize("prefix, header", [
    (">i", struct.pack(">i", -1)),
    ("<q", struct.pack("<q", -5)),
    ("b", struct.pack("b", -128)),
    ("multiprocessing", struct.pack("!i", -2)),
    ("varint", b"\xff" * 9 + b"\x02"),
    ("varint", b"\x80" * 11),
])
def test_bad_length_prefix_raises(prefix, header):
    with pytest.raises(FrameError):
        scan_frames(header + b"payload", prefix)
    scanner = FrameScanner(prefix)
    with pytest.raises(FrameError):
        scanner.feed(header)
    with pytest.raises(FrameError):  # the scanner stays broken
        scanner.feed(b"more")


@pytest.mark.parametrize("prefix, header", [
    (">i", struct.pack(">i", -1)),
    ("<q", struct.pack("<q", -5)),
    ("multiprocessing", struct.pack("!i", -2)),
    ("multiprocessing", struct.pack("!i", -(2**31))),
    ("varint", b"\xff" * 9 + b"\x02"),    # bit 64: a length that would wrap
    ("varint", b"\x80" * 9 + b"\x7f"),
])
def test_malformed_length_is_refused_as_malformed_not_too_large(prefix, header):
    # A negative or over-long length is malformed whatever max_frame_size is;
    # read as unsigned or wrapped it would be a large frame instead (refused
    # only by a small limit, waited for under the largest one).
    limit = 2**64 - 1
    with pytest.raises(FrameError) as refused:
        scan_frames(header + b"payload", prefix, max_frame_size=limit)
    assert not isinstance(refused.value, FrameTooLarge)
    with pytest.raises(FrameError) as refused:
        FrameScanner(prefix, max_frame_size=limit).feed(header)
    assert not isinstance(refused.value, FrameTooLarge)


def test_frames_before_a_bad_header_are_delivered_first():
    stream = encode_frame(b"one", ">i") + encode_frame(b"two", ">i") + struct.pack(">i", -7)
    frames, consumed = scan_frames(stream, ">i")
    assert as_bytes(frames) == [b"one", b"two"]
    with pytest.raises(FrameError):
        scan_frames(stream[consumed:], ">i")
    scanner = FrameScanner(">i")
    assert as_bytes(scanner.feed(stream)) == [b"one", b"two"]
    with pytest.raises(FrameError):
        scanner.feed(b"")


@pytest.mark.parametrize("prefix", ALL_PREFIXES)
def test_oversized_header_raises_at_once(prefix):
    limit = 100
    header = encode_header(prefix, limit + 1)
    with pytest.raises(FrameTooLarge):
        scan_frames(header, prefix, max_frame_size=limit)
    scanner = FrameScanner(prefix, max_frame_size=limit)
    with pytest.raises(FrameTooLarge):
        scanner.feed(header)  # the header alone, no payload byte yet
    assert scan_frames(encode_header(prefix, limit) + b"x" * limit, prefix,
                       max_frame_size=limit)[1] == len(header) + limit


def test_default_max_frame_size():
    assert DEFAULT_MAX_FRAME_SIZE == 128 * 1024 * 1024
    with pytest.raises(FrameTooLarge):
        FrameScanner(">Q").feed(struct.pack(">Q", DEFAULT_MAX_FRAME_SIZE + 1))
    assert FrameScanner(">Q").feed(struct.pack(">Q", DEFAULT_MAX_FRAME_SIZE)) == []


def test_no_buffer_sized_from_a_declared_length():
    # A header claiming 1 GiB (allowed by the limit) with 10 bytes behind it:
    # the receive window offered stays small, it grows only with real bytes.
    scanner = FrameScanner(">Q", max_frame_size=2**31)
    assert scanner.feed(struct.pack(">Q", 2**30) + b"x" * 10) == []
    assert scanner.partial_frame_size == 2**30
    window = scanner.get_buffer()
    assert len(window) <= 128 * 1024


def test_window_grows_with_received_bytes_only():
    scanner = FrameScanner(">Q", max_frame_size=2**31)
    scanner.feed(struct.pack(">Q", 2**30))
    held = 8
    for _ in range(8):
        window = scanner.get_buffer()
        assert len(window) <= max(2 * held, 128 * 1024) + 64 * 1024
        n = len(window)
        window[:] = bytes(n)
        del window
        assert scanner.buffer_updated(n) == []
        held += n
    assert scanner.pending == held


def test_large_frames_are_views_that_survive_compaction():
    payload = bytes(range(256)) * 1024  # 256 KiB, above the copy threshold
    stream = encode_frame(payload) * 3 + encode_frame(b"small")
    scanner = FrameScanner()
    views = []
    for i in range(0, len(stream), 7001):
        views += scanner.feed(bytearray(stream[i:i + 7001]))
        # keep the stream flowing through many compactions
    assert [type(v) for v in views] == [memoryview] * 3 + [bytes]
    more = encode_frame(b"z" * 100_000) * 20
    for i in range(0, len(more), 3000):
        buf = scanner.get_buffer(3000)
        n = min(len(buf), len(more) - i, 3000)
        buf[:n] = more[i:i + n]
        del buf
        scanner.buffer_updated(n)
    assert all(v == payload for v in views[:3])
    assert views[0].readonly
    with pytest.raises(TypeError):
        views[0][0] = 1


def test_scan_frames_views_point_into_the_callers_buffer():
    data = bytearray(encode_frame(b"a" * 100))
    frames, _ = scan_frames(data, copy_threshold=0)
    data[4] = ord("b")
    assert bytes(frames[0][:1]) == b"b"


def test_scan_frames_accepts_any_contiguous_buffer():
    import array

    stream = encode_frame(b"abcd" * 3, "<I") * 2
    arr = array.array("I")
    arr.frombytes(stream)
    frames, consumed = scan_frames(arr, "<I", copy_threshold=0)
    assert as_bytes(frames) == [b"abcd" * 3] * 2 and consumed == len(stream)
    with pytest.raises(TypeError):
        scan_frames("text")
    with pytest.raises((TypeError, BufferError, ValueError)):
        scan_frames(memoryview(stream)[::2])


def test_frame_buffers_for_sendmsg():
    bufs = frame_buffers([b"ab", bytearray(b"cde"), memoryview(b"")], "varint")
    assert [bytes(b) for b in bufs] == [b"\x02", b"ab", b"\x03", b"cde", b"\x00", b""]
    assert as_bytes(scan_frames(b"".join(bytes(b) for b in bufs), "varint")[0]) == [b"ab", b"cde", b""]


def test_buffer_updated_out_of_range():
    scanner = FrameScanner()
    buf = scanner.get_buffer()
    with pytest.raises(ValueError):
        scanner.buffer_updated(len(buf) + 1)
    with pytest.raises(ValueError):
        scanner.buffer_updated(-1)


def test_take_partial_hands_over_the_rest_of_a_frame():
    scanner = FrameScanner()
    assert scanner.feed(encode_frame(b"done") + struct.pack(">I", 10) + b"abc") == [b"done"]
    length, received = scanner.take_partial()
    assert (length, bytes(received)) == (10, b"abc")
    assert scanner.pending == 0
    # The caller read the other 7 payload bytes itself; the stream goes on after them.
    assert scanner.feed(encode_frame(b"next")) == [b"next"]
    with pytest.raises(ValueError):
        FrameScanner().take_partial()


def test_receive_payload_over_a_real_socket():
    import threading

    from fastwire.frames import receive_payload

    for size, head in [(0, b""), (5, b"ab"), (3 << 20, b"h" * 1000), ((1 << 20) + 1, b"")]:
        a, b = socket.socketpair()
        with a, b:
            body = bytes(range(256)) * (size // 256 + 1)
            body = body[:size]
            rest = body[len(head):] if head and body.startswith(head) else body[len(head):]
            expected = head + rest
            sender = threading.Thread(target=a.sendall, args=(rest,))
            sender.start()
            got = receive_payload(b.recv_into, len(expected), head)
            sender.join()
            assert type(got) is bytes and got == expected


def test_receive_payload_eof_and_bad_arguments():
    from fastwire.frames import receive_payload

    a, b = socket.socketpair()
    with a, b:
        a.sendall(b"only this")
        a.close()
        with pytest.raises(EOFError):
            receive_payload(b.recv_into, 1 << 30, b"")  # 1 GiB claimed: nothing near it allocated
    with pytest.raises(ValueError):
        receive_payload(b.recv_into, 2, b"abc")
    with pytest.raises(ValueError):
        receive_payload(b.recv_into, -1)


def test_recv_from_a_real_socket():
    a, b = socket.socketpair()
    with a, b:
        scanner = FrameScanner("varint")
        a.sendall(encode_frame(b"one", "varint") + encode_frame(b"two", "varint")[:2])
        assert scanner.recv_from(b) == [b"one"]
        with pytest.raises(BlockingIOError):
            scanner.recv_from(b, socket.MSG_DONTWAIT)  # nothing more yet; state unchanged
        assert scanner.pending == 2
        a.sendall(b"wo")
        assert scanner.recv_from(b) == [b"two"]
        a.sendall(b"\x05ab")
        a.close()
        assert scanner.recv_from(b) == []
        assert scanner.recv_from(b) is None and scanner.pending == 3


@given(
    st.lists(st.integers(0, 30_000), min_size=1, max_size=25),
    st.lists(st.tuples(st.sampled_from(["feed", "recv_into"]), st.integers(1, 70_000)), min_size=1),
    st.integers(0, 20_000),
)
def test_views_handed_out_never_change(sizes, steps, copy_threshold):
    """However the stream is cut and whichever way it is fed, every frame handed
    out keeps its bytes while the scanner goes on compacting and growing (the
    stream is several times the 64 KiB first buffer)."""
    payloads = [bytes([i % 251]) * n for i, n in enumerate(sizes)]
    stream = b"".join(encode_frame(p, "<H") for p in payloads)
    scanner = FrameScanner("<H", copy_threshold=copy_threshold)
    held, snapshots, pos, i = [], [], 0, 0
    while pos < len(stream):
        how, size = steps[i % len(steps)]
        i += 1
        chunk = stream[pos:pos + size]
        if how == "feed":
            frames = scanner.feed(bytearray(chunk))
        else:
            window = scanner.get_buffer(len(chunk))
            chunk = chunk[:len(window)]
            window[:len(chunk)] = chunk
            window.release()
            frames = scanner.buffer_updated(len(chunk))
        pos += len(chunk)
        held += frames
        snapshots += [bytes(f) for f in frames]
        assert [bytes(f) for f in held] == snapshots
    assert snapshots == payloads


def test_max_frame_size_can_change_between_frames():
    scanner = FrameScanner(max_frame_size=4)
    assert scanner.feed(encode_frame(b"four")) == [b"four"]
    scanner.max_frame_size = 10
    assert scanner.feed(encode_frame(b"ten bytes!")) == [b"ten bytes!"]
    scanner.max_frame_size = 3
    with pytest.raises(FrameTooLarge):
        scanner.feed(encode_frame(b"four"))
    with pytest.raises(ValueError):
        FrameScanner().max_frame_size = -1
