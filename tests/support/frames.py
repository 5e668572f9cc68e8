"""An independent, deliberately plain model of fastwire's frame formats,
written from their specifications with the standard library's struct.

It is the oracle of the frame tests (tests/test_frames.py,
tests/test_frame_index.py), of the frame and varint fuzz targets, and the
encoder of their seed corpora. Fixed-width prefixes are decoded by the standard library's
struct, the 'multiprocessing' header as multiprocessing.connection reads it
('!i', with -1 announcing a '!Q'), and varints as unsigned LEB128 of at most
64 bits (ten bytes, the tenth holding only bit 63).
"""

import struct

PREFIXES = [">I", "<I", "!H", "B", ">q", "<Q", "=h", "i", "multiprocessing", "varint"]

INCOMPLETE = "incomplete"
NEGATIVE = "negative"
OVERLONG = "overlong"
TOO_LARGE = "too large"


def prefix_limit(prefix):
    if prefix in ("multiprocessing", "varint"):
        return 2**64 - 1
    bits = 8 * struct.calcsize(prefix) - (1 if prefix[-1].islower() else 0)
    return 2**bits - 1


def max_payload(prefix):
    """The largest payload the generated test streams use under prefix: small
    enough to keep streams short, never past what the prefix can announce."""
    return min(300, prefix_limit(prefix))


def encode_varint(value):
    """Unsigned LEB128, as the protobuf encoding spec writes it."""
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def decode_varint(data, pos=0):
    """(value, size), INCOMPLETE or OVERLONG for the varint at data[pos:]."""
    value = 0
    for i in range(10):
        if pos + i >= len(data):
            return INCOMPLETE
        byte = data[pos + i]
        if i == 9 and byte > 1:
            return OVERLONG
        value |= (byte & 0x7F) << (7 * i)
        if not byte & 0x80:
            return value, i + 1
    return OVERLONG  # unreachable: the tenth byte either ends or is > 1


def encode_header(prefix, length):
    # 'multiprocessing' as multiprocessing.connection._send_bytes writes it.
    if prefix == "varint":
        return encode_varint(length)
    if prefix == "multiprocessing":
        if length <= 0x7FFFFFFF:
            return struct.pack("!i", length)
        return struct.pack("!iQ", -1, length)
    return struct.pack(prefix, length)


def encode_frame(prefix, payload):
    return encode_header(prefix, len(payload)) + bytes(payload)


def decode_header(prefix, data, pos):
    """(length, header_size), INCOMPLETE, NEGATIVE or OVERLONG."""
    avail = len(data) - pos
    if prefix == "varint":
        return decode_varint(data, pos)
    if prefix == "multiprocessing":
        if avail < 4:
            return INCOMPLETE
        (size,) = struct.unpack_from("!i", data, pos)
        if size == -1:
            if avail < 12:
                return INCOMPLETE
            return struct.unpack_from("!Q", data, pos + 4)[0], 12
        return (size, 4) if size >= 0 else NEGATIVE
    width = struct.calcsize(prefix)
    if avail < width:
        return INCOMPLETE
    (size,) = struct.unpack_from(prefix, data, pos)
    return (size, width) if size >= 0 else NEGATIVE


def scan(prefix, data, max_frame_size):
    """(payloads, consumed, error) for a whole stream; error is None, NEGATIVE,
    OVERLONG or TOO_LARGE for the first header that cannot be honoured."""
    payloads = []
    pos = 0
    while pos < len(data):
        header = decode_header(prefix, data, pos)
        if header == INCOMPLETE:
            break
        if header in (NEGATIVE, OVERLONG):
            return payloads, pos, header
        length, header_size = header
        if length > max_frame_size:
            return payloads, pos, TOO_LARGE
        if len(data) - pos - header_size < length:
            break
        payloads.append(bytes(data[pos + header_size:pos + header_size + length]))
        pos += header_size + length
    return payloads, pos, None
