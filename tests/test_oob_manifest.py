"""The out-of-band manifest (fastwire._protocol): its layout, and the bounds
it enforces before anything is allocated from what a peer claims."""

import pickle
import struct

import pytest

from fastwire import _protocol
from fastwire.frames import FrameError, FrameTooLarge


def _pickled_with_buffers(obj):
    buffers = []
    data = pickle.dumps(obj, protocol=5, buffer_callback=buffers.append)
    return data, [b.raw() for b in buffers]


def test_manifest_layout_is_the_documented_one():
    data, raws = _pickled_with_buffers([pickle.PickleBuffer(bytearray(b"abc")),
                                        pickle.PickleBuffer(b"hello")])
    frame = _protocol.manifest(raws) + data
    # Written out by hand from docs/net.md's table: magic, version, count, then (flags, size) per buffer.
    assert frame[:18 + 9] == (b"\xf5FWB" + b"\x01" + b"\x00\x00\x00\x02"
                              + b"\x00" + (3).to_bytes(8, "big")
                              + b"\x01" + (5).to_bytes(8, "big"))
    sizes, readonly, offset = _protocol.parse_manifest(frame)
    assert (sizes, readonly) == ([3, 5], [False, True])
    assert frame[offset:] == data
    assert pickle.loads(frame[offset:], buffers=[b"abc", b"hello"])[1] == b"hello"


def test_a_plain_pickle_is_never_a_manifest():
    for protocol in range(pickle.HIGHEST_PROTOCOL + 1):
        assert not _protocol.is_out_of_band(pickle.dumps({"a": [1, 2]}, protocol=protocol))


def test_a_stdlib_peer_refuses_a_manifest_loudly():
    data, raws = _pickled_with_buffers(pickle.PickleBuffer(bytearray(4)))
    with pytest.raises(pickle.UnpicklingError, match="invalid load key"):
        pickle.loads(_protocol.manifest(raws) + data)


@pytest.mark.parametrize("frame", [b"", b"\xf5FW", b"\xf5FWB\x01\x00\x00\x00\x01" + b"\x00" * 8,
                                   b"\x80FWB\x01\x00\x00\x00\x00"])
def test_a_malformed_manifest_is_a_frame_error(frame):
    with pytest.raises(FrameError):
        _protocol.parse_manifest(frame)


def test_an_unknown_version_or_flag_is_refused():
    with pytest.raises(FrameError, match="version 2"):
        _protocol.parse_manifest(b"\xf5FWB\x02\x00\x00\x00\x00")
    with pytest.raises(FrameError, match="flags"):
        _protocol.parse_manifest(b"\xf5FWB\x01\x00\x00\x00\x01" + b"\x02" + bytes(8))


def _claiming(*sizes):
    return b"".join([struct.pack("!4sBI", b"\xf5FWB", 1, len(sizes))]
                    + [struct.pack("!BQ", 0, size) for size in sizes])


def test_the_buffer_count_is_bounded_before_the_entries_are_read():
    # The count claims 2**32-1 entries but none follow: refused on the count alone.
    with pytest.raises(FrameTooLarge, match="max_buffers=1024"):
        _protocol.parse_manifest(struct.pack("!4sBI", b"\xf5FWB", 1, 2**32 - 1))
    with pytest.raises(FrameTooLarge, match="max_buffers=2"):
        _protocol.parse_manifest(_claiming(1, 1, 1), max_buffers=2)
    assert _protocol.parse_manifest(_claiming(1, 1), max_buffers=2)[0] == [1, 1]


def test_each_buffer_and_the_total_are_bounded():
    with pytest.raises(FrameTooLarge, match="max_frame_size=10"):
        _protocol.parse_manifest(_claiming(5, 11), max_frame_size=10)
    with pytest.raises(FrameTooLarge, match="max_message_size=15"):
        _protocol.parse_manifest(_claiming(10, 6), max_frame_size=10, max_message_size=15)
    with pytest.raises(FrameTooLarge):
        _protocol.parse_manifest(_claiming(2**64 - 1))
    assert _protocol.parse_manifest(_claiming(10, 5), max_frame_size=10, max_message_size=15)[0] == [10, 5]
