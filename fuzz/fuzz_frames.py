"""Fuzz fastwire.frames.FrameScanner with streams split at fuzzed points.

Input: prefix index, a case byte (max_frame_size, copy_threshold, feed() or
get_buffer()/buffer_updated()), the number of split points and the points,
then the stream. The oracle is tests/support/frames.py (the stdlib's struct
for fixed prefixes, multiprocessing.connection's header rule, plain LEB128):
the scanner must emit exactly the reference's payloads in order, raise
FrameTooLarge / FrameError exactly when the reference finds a bad header
(after the frames before it), keep every view it handed out unchanged, agree
with scan_frames() on the whole stream, and never size its buffer from a
declared length. index_frames() must agree too.
"""

import _harness

from tests.support import frames as ref

frames = _harness.import_fastwire_part("frames")

MAX_FRAME_SIZES = [0, 7, 300, 2**62]
COPY_THRESHOLDS = [0, 16, 64 * 1024]
WINDOW_SLACK = 64 * 1024


def split(stream, points):
    cuts = sorted({p * len(stream) // 256 for p in points} | {0, len(stream)})
    return [stream[a:b] for a, b in zip(cuts, cuts[1:])] or [b""]


def feed_all(scanner, pieces, use_buffer_protocol):
    """All payloads emitted and the exception that stopped the stream, if any."""
    emitted = []
    try:
        for piece in pieces:
            if use_buffer_protocol:
                while piece:
                    window = scanner.get_buffer(len(piece))
                    # Geometric growth over a 64 KiB minimum window: a constant
                    # factor of what is held, never the declared frame length.
                    if len(window) > 2 * (WINDOW_SLACK + scanner.pending + len(piece)):
                        raise AssertionError(f"get_buffer() offered {len(window)} bytes with "
                                             f"{scanner.pending} pending")
                    n = min(len(window), len(piece))
                    window[:n] = piece[:n]
                    window.release()
                    emitted += scanner.buffer_updated(n)
                    piece = piece[n:]
            else:
                emitted += scanner.feed(piece)
        emitted += scanner.feed(b"")  # surfaces an error deferred behind frames
    except frames.FrameError as exc:
        return emitted, exc
    return emitted, None


def check_error(where, reference_error, exc):
    if reference_error is None:
        if exc is not None:
            raise AssertionError(f"{where}: unexpected {exc!r}")
        return
    if exc is None:
        raise AssertionError(f"{where}: no error for a {reference_error} header")
    if (reference_error == ref.TOO_LARGE) != isinstance(exc, frames.FrameTooLarge):
        raise AssertionError(f"{where}: {exc!r} for a {reference_error} header")


def test_one_input(data):
    inp = _harness.Input(data)
    prefix = ref.PREFIXES[inp.byte() % len(ref.PREFIXES)]
    case = inp.byte()
    max_frame_size = MAX_FRAME_SIZES[case % 4]
    copy_threshold = COPY_THRESHOLDS[(case >> 2) % 3]
    use_buffer_protocol = bool(case & 0x40)
    points = inp.take(inp.byte() % 9)
    stream = inp.rest()
    where = f"prefix={prefix} max={max_frame_size} copy={copy_threshold} stream={stream[:48]!r}"

    expected, consumed, reference_error = ref.scan(prefix, stream, max_frame_size)

    scanner = frames.FrameScanner(prefix, max_frame_size=max_frame_size, copy_threshold=copy_threshold)
    emitted, exc = feed_all(scanner, split(stream, points), use_buffer_protocol)
    snapshots = [bytes(p) for p in emitted]
    if snapshots != expected:
        raise AssertionError(f"{where}: payloads {snapshots!r}, reference {expected!r}")
    check_error(where, reference_error, exc)
    for payload in emitted:
        if isinstance(payload, memoryview):
            if not payload.readonly:
                raise AssertionError(f"{where}: a writable view was handed out")
        elif len(payload) >= copy_threshold:
            raise AssertionError(f"{where}: {len(payload)}-byte payload copied (threshold {copy_threshold})")
    if exc is None:
        if scanner.pending != len(stream) - consumed:
            raise AssertionError(f"{where}: pending {scanner.pending}, reference {len(stream) - consumed}")
        try:
            scanner.feed(stream[:7])  # more bytes must not disturb views handed out
        except frames.FrameError:
            pass  # those bytes may well form a bad header; only the views matter here
    if [bytes(p) for p in emitted] != snapshots:
        raise AssertionError(f"{where}: a payload view changed after later feeds")

    # scan_frames, and index_frames (frames made on access): the same frames,
    # consumed count and errors as the reference.
    for scan in (frames.scan_frames, frames.index_frames):
        name = scan.__name__
        try:
            found, found_consumed = scan(stream, prefix, max_frame_size=max_frame_size,
                                         copy_threshold=copy_threshold)
        except frames.FrameError as exc:
            if expected:
                raise AssertionError(f"{where}: {name} raised {exc!r} before returning frames") from exc
            check_error(f"{where} ({name})", reference_error, exc)
            continue
        if [bytes(p) for p in found] != expected or found_consumed != consumed:
            raise AssertionError(f"{where}: {name} gave {list(found)!r}, {found_consumed}")
        if reference_error is not None and not expected:
            raise AssertionError(f"{where}: {name} accepted a {reference_error} header")
        if scan is frames.index_frames and (list(found.lengths) != [len(p) for p in expected]
                                            or [bytes(p) for p in reversed(found)] != expected[::-1]):
            raise AssertionError(f"{where}: index_frames' lengths or reversed() disagree with its frames")

if __name__ == "__main__":
    _harness.main(test_one_input)
