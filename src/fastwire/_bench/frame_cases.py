"""Benchmark pairs for frame scanning: fastwire.frames against the pure-Python
loop everybody writes (struct.unpack_from + slicing)."""

import struct

from fastwire.frames import scan_frames

from . import Pair

COUNT = 1_000_000
PAYLOAD = 64


def _stream():
    return (struct.pack(">I", PAYLOAD) + bytes(range(PAYLOAD))) * COUNT


def python_scan(data, slicer):
    """The stdlib way: unpack each header, slice each payload, stop at a partial frame."""
    unpack_from = struct.unpack_from
    frames = []
    append = frames.append
    pos, end = 0, len(data)
    while pos + 4 <= end:
        (length,) = unpack_from(">I", data, pos)
        stop = pos + 4 + length
        if stop > end:
            break
        append(slicer[pos + 4:stop])
        pos = stop
    return frames, pos


def pairs():
    data = _stream()
    view = memoryview(data)
    return [
        Pair(f"scan {COUNT:,} frames of {PAYLOAD} B (bytes out)", "frames",
             lambda: python_scan(data, data), lambda: scan_frames(data), target=10.0),
        Pair(f"scan {COUNT:,} frames of {PAYLOAD} B (memoryviews out, copy_threshold=0)", "frames",
             lambda: python_scan(data, view), lambda: scan_frames(data, copy_threshold=0), target=1.0),
    ]
