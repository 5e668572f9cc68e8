"""Frame headers written from the specifications, with the standard library's
struct: the reference the frame tests check fastwire.frames against."""

import struct


def reference_varint(n):
    """Unsigned LEB128, written from the protobuf encoding spec."""
    out = bytearray()
    while True:
        low = n & 0x7F
        n >>= 7
        if n:
            out.append(low | 0x80)
        else:
            out.append(low)
            return bytes(out)


def reference_header(prefix, n):
    if prefix == "varint":
        return reference_varint(n)
    if prefix == "multiprocessing":
        # multiprocessing.connection._send_bytes
        return struct.pack("!i", n) if n <= 0x7FFFFFFF else struct.pack("!i", -1) + struct.pack("!Q", n)
    return struct.pack(prefix, n)


def max_payload(prefix):
    if prefix in ("varint", "multiprocessing"):
        return 300
    return min(300, 2 ** (8 * struct.calcsize(prefix) - (1 if prefix[-1].islower() else 0)) - 1)
