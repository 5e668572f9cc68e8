"""Fuzz fastwire's varint (unsigned LEB128) length prefix decoder and encoder.

Input byte 0 even: decode the rest as a varint-prefixed stream and compare the
header fastwire finds (complete frame, declared length of a partial frame,
incomplete header or FrameError for more than 64 bits) with the reference in
tests/support/frames.py. Odd: encode the next 8 bytes (a uint64) with
``FramePrefix('varint').header`` and compare with the reference encoding, then
decode it back.
"""

import _harness

from tests.support import frames as ref

frames = _harness.import_fastwire_part("frames")

NO_LIMIT = 2**64 - 1


def check_decode(data):
    where = f"varint stream {data[:24]!r}"
    header = ref.decode_varint(data)
    scanner = frames.FrameScanner("varint", max_frame_size=NO_LIMIT)
    try:
        emitted = scanner.feed(data)
    except frames.FrameError as exc:
        if header != ref.OVERLONG or isinstance(exc, frames.FrameTooLarge):
            raise AssertionError(f"{where}: {exc!r}, reference {header!r}") from exc
        return
    if header == ref.OVERLONG:
        if emitted:
            raise AssertionError(f"{where}: frames {emitted!r} from an overlong varint")
        raise AssertionError(f"{where}: overlong varint accepted")
    if header == ref.INCOMPLETE:
        if emitted or scanner.partial_frame_size is not None or scanner.pending != len(data):
            raise AssertionError(f"{where}: incomplete header, fastwire {emitted!r} "
                                 f"partial={scanner.partial_frame_size} pending={scanner.pending}")
        return
    length, size = header
    if len(data) - size >= length:
        if not emitted or bytes(emitted[0]) != data[size:size + length]:
            raise AssertionError(f"{where}: first payload {emitted[:1]!r}, reference length {length}")
    elif emitted or scanner.partial_frame_size != length:
        raise AssertionError(f"{where}: declared {length}, fastwire partial={scanner.partial_frame_size}")


def check_encode(value):
    encoded = frames.FramePrefix("varint").header(value)
    if encoded != ref.encode_varint(value):
        raise AssertionError(f"header({value}) = {encoded!r}, reference {ref.encode_varint(value)!r}")
    scanner = frames.FrameScanner("varint", max_frame_size=NO_LIMIT)
    emitted = scanner.feed(encoded)
    if value == 0:
        if emitted != [b""]:
            raise AssertionError(f"header(0) decoded as {emitted!r}")
    elif emitted or scanner.partial_frame_size != value:
        raise AssertionError(f"header({value}) decoded as {scanner.partial_frame_size}")


def test_one_input(data):
    if not data:
        return
    if data[0] % 2 == 0:
        check_decode(data[1:])
    else:
        check_encode(int.from_bytes(data[1:9].ljust(8, b"\0"), "little"))


if __name__ == "__main__":
    _harness.main(test_one_input)
