"""Every point where fastwire.frames calls Python, each with a callback doing the worst.

The callouts (docs/callouts.md, section "frames"): a buffer's ``__buffer__``
(3.12+), which may hand out another buffer of another size on every call;
``recv_into`` of the socket given to ``FrameScanner.recv_from``; finalizers
run by the collector while frame objects are made; and the caller itself,
between ``get_buffer()`` and ``buffer_updated()``. A scanner call refuses
re-entry (RuntimeError); an index and the frames of one scan always come from
the one export they were found in.
"""

from __future__ import annotations

import gc
import socket
import sys

import pytest

from fastwire.frames import (
    FrameScanner,
    FrameTooLarge,
    encode_frame,
    index_frames,
    scan_frames,
)

needs_buffer_protocol = pytest.mark.skipif(sys.version_info < (3, 12), reason="__buffer__ is Python 3.12+")

PAYLOADS = [b"first payload", b"second", b"third payload, longer than the others"]
STREAM = b"".join(encode_frame(p) for p in PAYLOADS)


class ShrinkingExporter:
    """Exports the whole stream the first time, then ever shorter buffers."""

    def __init__(self):
        self.calls = 0

    def __buffer__(self, flags):
        self.calls += 1
        if self.calls == 1:
            return memoryview(bytearray(STREAM))
        return memoryview(bytearray(b"\xff" * 3))


@needs_buffer_protocol
@pytest.mark.parametrize("copy_threshold", [0, 10, 1 << 20])
def test_index_frames_over_an_exporter_of_changing_size(copy_threshold):
    source = ShrinkingExporter()
    index, consumed = index_frames(source, copy_threshold=copy_threshold)
    assert consumed == len(STREAM)
    assert [bytes(f) for f in index] == PAYLOADS
    part = index[1:]  # re-held by the slice: must be the same bytes
    assert [bytes(f) for f in part] == PAYLOADS[1:]
    assert PAYLOADS[2] in part and part.index(PAYLOADS[2]) == 1
    assert index.obj is source and part.obj is source
    assert source.calls == 1


@needs_buffer_protocol
@pytest.mark.parametrize("copy_threshold", [0, 10, 1 << 20])
def test_scan_frames_over_an_exporter_of_changing_size(copy_threshold):
    source = ShrinkingExporter()
    frames, consumed = scan_frames(source, copy_threshold=copy_threshold)
    assert (consumed, [bytes(f) for f in frames]) == (len(STREAM), PAYLOADS)
    assert source.calls == 1


@needs_buffer_protocol
def test_feed_from_a_buffer_export_that_feeds_the_same_scanner():
    scanner = FrameScanner(copy_threshold=0)
    refused = []

    class Reentrant:
        def __buffer__(self, flags):
            try:
                scanner.feed(encode_frame(b"sneaked in"))
            except RuntimeError:
                refused.append(True)
            return memoryview(STREAM)

    assert [bytes(f) for f in scanner.feed(Reentrant())] == PAYLOADS
    assert refused == [True]


def test_recv_into_that_feeds_or_resizes_the_same_scanner():
    """recv_from() hands its window to recv_into; user code there feeding the
    scanner would move the arena the window points into."""
    left, right = socket.socketpair()
    scanner = FrameScanner(copy_threshold=0)
    attempts = []

    class HookedSocket(socket.socket):
        def recv_into(self, buffer, *args):
            for call in (lambda: scanner.feed(b"\x00" * 70_000), lambda: scanner.get_buffer(1 << 20),
                         lambda: scanner.buffer_updated(0), lambda: scanner.take_partial(),
                         lambda: scanner.recv_from(self)):
                try:
                    call()
                    attempts.append("ran")
                except RuntimeError:
                    attempts.append("refused")
            return super().recv_into(buffer, *args)

    hooked = HookedSocket(fileno=right.detach())
    try:
        left.sendall(STREAM)
        left.settimeout(30)
        hooked.settimeout(30)
        assert [bytes(f) for f in scanner.recv_from(hooked)] == PAYLOADS
        assert attempts == ["refused"] * 5
        assert scanner.pending == 0
    finally:
        left.close()
        hooked.close()


class Garbage:
    def __init__(self, action):
        self.action, self.cycle = action, self

    def __del__(self):
        self.action()


def test_finalizer_feeding_the_scanner_while_it_makes_frames():
    """Making frame objects can run the collector; a finalizer feeding the same
    scanner then would move the arena the scan reads through a raw pointer."""
    scanner = FrameScanner(copy_threshold=0)
    outcomes = []

    def feed_again():
        try:
            scanner.feed(b"\x00" * 200_000)
            outcomes.append("ran")
        except RuntimeError:
            outcomes.append("refused")

    many = [bytes([i % 256]) * 40 for i in range(2000)]
    stream = b"".join(encode_frame(p) for p in many)
    scanner.feed(stream[:5])  # buffered, so the rest is scanned in the arena
    gc.collect()
    threshold = gc.get_threshold()
    try:
        for _ in range(50):
            Garbage(feed_again)
        gc.set_threshold(1)
        frames = scanner.feed(stream[5:])
        during = list(outcomes)
    finally:
        gc.set_threshold(*threshold)
    gc.collect()
    assert [bytes(f) for f in frames] == many
    if sys.version_info < (3, 12):
        # 3.12+ runs the collector only between bytecodes, never inside the scan.
        assert during and set(during) == {"refused"}


def test_feed_between_get_buffer_and_buffer_updated():
    """Bytes written into a window the scanner has since moved away from are
    not counted: buffer_updated() raises instead of reading stale memory."""
    scanner = FrameScanner(copy_threshold=0)
    window = scanner.get_buffer()
    frame = encode_frame(b"into the window")
    window[:len(frame)] = frame
    assert scanner.feed(bytearray(encode_frame(b"fed"))) == [b"fed"]  # copied in: the window moves
    with pytest.raises(ValueError, match="changed since get_buffer"):
        scanner.buffer_updated(len(frame))
    window.release()
    window = scanner.get_buffer()
    window[:len(frame)] = frame
    assert [bytes(f) for f in scanner.buffer_updated(len(frame))] == [b"into the window"]


def test_bytearray_source_cannot_be_resized_under_frames():
    data = bytearray(STREAM)
    frames, _ = scan_frames(data, copy_threshold=0)
    index, _ = index_frames(data)
    with pytest.raises(BufferError):
        data.extend(b"more")
    del frames
    index.release()
    data.extend(b"more")  # nothing holds it any more
    assert len(data) == len(STREAM) + 4


def test_frame_too_large_leaves_the_scanner_refusing_later_calls():
    """docs/limits.md: FrameTooLarge as soon as the header is complete; the
    scanner then refuses every later call."""
    scanner = FrameScanner(max_frame_size=100)
    with pytest.raises(FrameTooLarge):
        scanner.feed(b"\x00\x00\x00\x65")  # declares 101 bytes
    left, right = socket.socketpair()
    try:
        left.sendall(encode_frame(b"fine"))
        for call in (lambda: scanner.feed(encode_frame(b"fine")), lambda: scanner.feed(b""),
                     lambda: scanner.get_buffer(), lambda: scanner.buffer_updated(0),
                     lambda: scanner.recv_from(right), lambda: scanner.take_partial()):
            with pytest.raises(FrameTooLarge):
                call()
        scanner.max_frame_size = 1 << 20  # raising the limit does not repair it
        with pytest.raises(FrameTooLarge):
            scanner.feed(encode_frame(b"fine"))
    finally:
        left.close()
        right.close()
