"""index_frames / FrameIndex: the lazy frame index.

Three-way differential: for every stream hypothesis makes (every prefix kind,
valid frames followed by arbitrary bytes, any cut, any max_frame_size), the
index's frames, consumed count and errors must equal scan_frames' and those of
a pure-Python loop over struct.unpack_from and slicing, the oracle. The
sequence behaviour is checked against a plain list of the same frames.
"""

import array
import gc
import mmap
import struct
import weakref
from collections.abc import Sequence

import numpy as np
import pytest
from hypothesis import given, strategies as st

from fastwire.frames import (
    DEFAULT_COPY_THRESHOLD,
    FrameError,
    FrameIndex,
    FramePrefix,
    FrameTooLarge,
    encode_frame,
    index_frames,
    scan_frames,
)
from tests.support.frames import NEGATIVE, OVERLONG, TOO_LARGE, encode_header, max_payload, scan

STRUCT_PREFIXES = [">I", "<I", "!H", ">Q", "<Q", "=L", ">i", "<q", "B", "b", "@I", "@N", "!h", "@l"]
ALL_PREFIXES = STRUCT_PREFIXES + ["multiprocessing", "varint"]


# The oracle is tests/support/frames.py's scan: the pure-Python loop everybody
# writes, over struct.unpack_from and slicing. What stops it maps to fastwire's errors:
ORACLE_ERRORS = {NEGATIVE: FrameError, OVERLONG: FrameError, TOO_LARGE: FrameTooLarge}


@st.composite
def streams(draw):
    """A prefix and a stream: valid frames, then maybe arbitrary bytes (bad or partial headers)."""
    prefix = draw(st.sampled_from(ALL_PREFIXES))
    payloads = draw(st.lists(st.binary(max_size=max_payload(prefix)), max_size=12))
    stream = b"".join(encode_header(prefix, len(p)) + p for p in payloads)
    tail = draw(st.one_of(
        st.just(b""),
        st.binary(max_size=24),
        # a header announcing the large multiprocessing form or a long varint
        st.sampled_from([b"\xff\xff\xff\xff", b"\xff\xff\xff\xff\x00\x00\x00\x00\x00\x00\x00\x03abc",
                         b"\xff" * 9 + b"\x01", b"\x80" * 10, b"\xff\xff\xff\xfe"]),
    ))
    return prefix, stream + tail


def outcome(fn, *args, **kwargs):
    """What a call gives: ('ok', frames as bytes, consumed) or ('error', type, message)."""
    try:
        frames, consumed = fn(*args, **kwargs)
    except Exception as exc:
        return "error", type(exc), str(exc)
    return "ok", [bytes(f) for f in frames], consumed


# --- differential ---------------------------------------------------------------

@given(streams(), st.integers(0, 400), st.integers(0, 400), st.data())
def test_index_scan_frames_and_the_python_loop_agree(case, max_frame_size, copy_threshold, data):
    prefix, stream = case
    cut = data.draw(st.integers(0, len(stream)))
    buf = data.draw(st.sampled_from([bytes, bytearray, memoryview]))(stream[:cut])
    expected_frames, expected_consumed, stopped_by = scan(prefix, stream[:cut], max_frame_size)

    index_result = outcome(index_frames, buf, prefix, max_frame_size=max_frame_size,
                           copy_threshold=copy_threshold)
    scan_result = outcome(scan_frames, buf, prefix, max_frame_size=max_frame_size,
                          copy_threshold=copy_threshold)
    assert index_result == scan_result
    if stopped_by is not None and not expected_frames:
        assert index_result[0] == "error"
        assert index_result[1] is ORACLE_ERRORS[stopped_by]
    else:
        assert index_result == ("ok", expected_frames, expected_consumed)


@given(streams(), st.integers(0, 400))
def test_items_are_what_scan_frames_hands_out(case, copy_threshold):
    """Same types, same bytes, same writability, for each copy_threshold."""
    prefix, stream = case
    buf = bytearray(stream)
    try:
        frames, consumed = scan_frames(buf, prefix, copy_threshold=copy_threshold)
    except FrameError:
        return  # the differential test above covers the errors
    index, index_consumed = index_frames(buf, prefix, copy_threshold=copy_threshold)
    assert index_consumed == consumed
    assert len(index) == len(frames)
    for got, want in zip(index, frames):
        assert type(got) is type(want)
        assert got == want
        if isinstance(got, memoryview):
            assert got.obj is buf and not got.readonly and got.format == want.format == "B"
    assert index.copy_threshold == copy_threshold


@given(streams(), st.lists(st.integers(1, 40), min_size=1), st.data())
def test_any_chunking_of_a_stream(case, sizes, data):
    """A consumer that appends chunks to a bytearray, indexes it, takes the frames
    and deletes the consumed bytes gets the same frames as scan_frames and the
    oracle, whatever the chunk sizes."""
    prefix, stream = case
    max_frame_size = data.draw(st.sampled_from([400, 2**64 - 1]))
    expected, _, stopped_by = scan(prefix, stream, max_frame_size)
    buf = bytearray()
    got, pos, i = [], 0, 0
    error = None
    while pos < len(stream) and error is None:
        step = sizes[i % len(sizes)]
        buf += stream[pos:pos + step]
        pos += step
        i += 1
        scan_result = outcome(scan_frames, buf, prefix, max_frame_size=max_frame_size)
        try:
            index, consumed = index_frames(buf, prefix, max_frame_size=max_frame_size)
            with index:  # the with block ends the index's hold on buf, so it can shrink
                frames = [bytes(f) for f in index]
            assert scan_result == ("ok", frames, consumed)
        except FrameError as exc:
            assert scan_result[:2] == ("error", type(exc))
            error = exc
            break
        got += frames
        del buf[:consumed]
    assert got == expected
    if error is not None:
        assert stopped_by is not None


def test_every_prefix_kind_on_a_million_byte_stream():
    """Big enough for the GIL-free scan and several capacity steps of the span arrays."""
    for prefix in ALL_PREFIXES:
        sizes = [(i * 7919) % (max_payload(prefix) + 1) for i in range(20_000)]
        partial = encode_header(prefix, 5) + b"ab"
        stream = b"".join(encode_header(prefix, n) + bytes([n % 256]) * n for n in sizes) + partial
        frames, consumed, _ = scan(prefix, stream, 2**64)
        index, index_consumed = index_frames(stream, prefix)
        assert index_consumed == consumed == len(stream) - len(partial)
        assert len(index) == len(frames) == len(sizes)
        assert index.lengths.tolist() == sizes
        assert [bytes(f) for f in index] == frames


def test_multiprocessing_large_header():
    """-1 then '!Q': the form multiprocessing.connection writes above 2**31-1 bytes."""
    stream = b"\xff\xff\xff\xff" + struct.pack("!Q", 3) + b"abc" + struct.pack("!i", 2) + b"de"
    index, consumed = index_frames(stream, "multiprocessing")
    assert [bytes(f) for f in index] == [b"abc", b"de"] and consumed == len(stream)
    assert index.offsets.tolist() == [12, 19]
    index, consumed = index_frames(stream[:11], "multiprocessing")
    assert len(index) == 0 and consumed == 0


@pytest.mark.parametrize("args, kwargs", [
    ((b"", "nope"), {}),
    ((b"", 4), {}),
    ((b"", ">I"), {"max_frame_size": -1}),
    ((b"", ">I"), {"max_frame_size": "big"}),
    ((b"", ">I"), {"copy_threshold": "x"}),
    ((b"", ">I"), {"copy_threshold": 2**70}),
    (("text", ">I"), {}),
    ((memoryview(b"abcdefgh")[::2], ">I"), {}),
    ((struct.pack(">i", -1), ">i"), {}),
    ((b"\xff" * 9 + b"\x02", "varint"), {}),
    ((struct.pack(">I", 11), ">I"), {"max_frame_size": 10}),
    ((b"", ">I"), {"unknown": 1}),
    ((), {}),
])
def test_errors_are_scan_frames_errors(args, kwargs):
    with pytest.raises(Exception) as from_scan:
        scan_frames(*args, **kwargs)
    with pytest.raises(Exception) as from_index:
        index_frames(*args, **kwargs)
    assert type(from_index.value) is type(from_scan.value)
    if not isinstance(from_scan.value, TypeError):  # TypeErrors name the function
        assert str(from_index.value) == str(from_scan.value)


def test_frames_before_a_bad_header_are_indexed_first():
    stream = encode_frame(b"one", ">i") + encode_frame(b"two", ">i") + struct.pack(">i", -7)
    index, consumed = index_frames(stream, ">i")
    assert [bytes(f) for f in index] == [b"one", b"two"]
    with pytest.raises(FrameError):
        index_frames(stream[consumed:], ">i")


def test_prefix_objects_are_accepted():
    stream = encode_frame(b"abc", "varint")
    index, consumed = index_frames(stream, FramePrefix("varint"))
    assert list(index) == [b"abc"] and consumed == 4


# --- a read-only Sequence, like a list of the same frames ------------------------

def indexed(payloads, copy_threshold=0):
    stream = b"".join(encode_frame(p, "<H") for p in payloads)
    return index_frames(stream, "<H", copy_threshold=copy_threshold)[0]


PAYLOADS = [b"a", b"", b"bc", b"a", b"def", b"a", b"\x00" * 5]


def test_is_a_sequence():
    index = indexed(PAYLOADS)
    assert isinstance(index, Sequence)
    assert not isinstance(index, list)
    with pytest.raises(TypeError):
        FrameIndex()
    with pytest.raises(TypeError):
        index[0] = b"x"


@given(st.lists(st.binary(max_size=5), max_size=12), st.data())
def test_integer_indexing_like_a_list(payloads, data):
    index = indexed(payloads)
    i = data.draw(st.integers(-len(payloads) - 3, len(payloads) + 3))
    if -len(payloads) <= i < len(payloads):
        assert index[i] == payloads[i]
        assert isinstance(index[i], memoryview)
    else:
        with pytest.raises(IndexError):
            payloads[i]
        with pytest.raises(IndexError):
            index[i]


@given(st.lists(st.binary(max_size=5), max_size=12),
       st.one_of(st.none(), st.integers(-15, 15)), st.one_of(st.none(), st.integers(-15, 15)),
       st.one_of(st.none(), st.integers(-4, 4).filter(bool)))
def test_slicing_like_a_list(payloads, start, stop, step):
    index = indexed(payloads, copy_threshold=3)
    part = index[start:stop:step]
    assert isinstance(part, FrameIndex)
    assert list(part) == payloads[start:stop:step]
    assert len(part) == len(payloads[start:stop:step])
    assert part.copy_threshold == 3
    assert part.obj is index.obj
    assert list(part[::-1]) == payloads[start:stop:step][::-1]


def test_slice_step_zero_and_bad_keys_like_a_list():
    index = indexed(PAYLOADS)
    for key in [slice(None, None, 0), "1", 1.0, None, (1,)]:
        with pytest.raises(Exception) as from_list:
            PAYLOADS[key]
        with pytest.raises(Exception) as from_index:
            index[key]
        assert type(from_index.value) is type(from_list.value)
    with pytest.raises(IndexError):
        index[2**70]  # as list: "cannot fit 'int' into an index-sized integer"
    assert index[np.int64(2)] == b"bc"
    assert index[True] == b""


def test_iteration_reversal_membership_index_count_like_a_list():
    index = indexed(PAYLOADS)
    assert list(index) == PAYLOADS
    assert list(reversed(index)) == PAYLOADS[::-1]
    for value in [b"a", b"", b"zz", bytearray(b"bc"), memoryview(b"def"), "a", 97, None]:
        assert (value in index) == (value in PAYLOADS)
        assert index.count(value) == PAYLOADS.count(value)
        for start, stop in [(0, None), (1, None), (-3, None), (1, 4), (5, 2), (0, 100), (-100, -1)]:
            try:
                expected = PAYLOADS.index(value, start, *(() if stop is None else (stop,)))
            except ValueError:
                with pytest.raises(ValueError):
                    index.index(value, start, stop)
            else:
                assert index.index(value, start, stop) == expected
    iterator = iter(index)
    assert iter(iterator) is iterator
    assert list(iterator) == PAYLOADS and list(iterator) == []


def test_membership_compares_as_bytes_whatever_the_buffer_format():
    stream = array.array("b", encode_frame(b"\xff\x80", ">I"))
    index = index_frames(stream)[0]
    assert index[0] == b"\xff\x80" and b"\xff\x80" in index and index.count(b"\xff\x80") == 1


def test_regression_views_of_signed_byte_buffers_compare_as_bytes():
    """scan_frames gave views with the exporter's format: a frame of an
    array('b') or a ctypes c_char array compared unequal to the bytes it held,
    while the same frame copied into bytes (shorter than copy_threshold)
    compared equal. Views are now always format 'B'."""
    import ctypes

    stream = encode_frame(b"\xff\x01", ">I")
    for buf in [array.array("b", stream), (ctypes.c_char * len(stream)).from_buffer_copy(stream)]:
        for copy_threshold in (0, 100):
            frame = scan_frames(buf, copy_threshold=copy_threshold)[0][0]
            assert frame == b"\xff\x01"
            assert index_frames(buf, copy_threshold=copy_threshold)[0][0] == b"\xff\x01"


def test_frames_feed_a_loader():
    import pickle

    objs = [{"i": i, "s": "x" * i} for i in range(50)]
    stream = b"".join(encode_frame(pickle.dumps(o), "multiprocessing") for o in objs)
    index, _ = index_frames(stream, "multiprocessing")
    assert list(map(pickle.loads, index)) == objs


def test_offsets_and_lengths_for_numpy():
    index = indexed(PAYLOADS)
    for column in (index.offsets, index.lengths):
        assert column.format == "q" and column.itemsize == 8 and column.readonly
        assert column.shape == (len(PAYLOADS),) and column.ndim == 1
    assert index.lengths.tolist() == [len(p) for p in PAYLOADS]
    # payload i starts after i+1 two-byte headers and the payloads before it
    assert index.offsets.tolist() == [2 * (i + 1) + sum(map(len, PAYLOADS[:i])) for i in range(len(PAYLOADS))]
    offsets = np.frombuffer(index.offsets, dtype=np.int64)
    lengths = np.asarray(index.lengths)
    assert lengths.dtype == np.int64
    raw = np.frombuffer(index.obj, dtype=np.uint8)
    assert [raw[o:o + n].tobytes() for o, n in zip(offsets, lengths)] == PAYLOADS
    with pytest.raises(ValueError):
        offsets[0] = 1  # read-only
    part = index[1::2]
    assert part.offsets.tolist() == index.offsets.tolist()[1::2]
    empty = indexed([])
    assert empty.offsets.tolist() == [] and np.asarray(empty.lengths).shape == (0,)


def test_repr():
    assert repr(indexed(PAYLOADS)) == "<FrameIndex of 7 frames in bytes>"
    index = indexed(PAYLOADS)
    index.release()
    assert repr(index) == "<released FrameIndex>"


# --- lifetime: the index holds the buffer ------------------------------------------

def test_bytearray_cannot_be_resized_while_an_index_is_alive():
    buf = bytearray(encode_frame(b"abc") * 3)
    view = memoryview(buf)
    with pytest.raises(BufferError):
        buf.append(0)  # what a memoryview does ...
    view.release()
    index, consumed = index_frames(buf)
    with pytest.raises(BufferError):
        buf.append(0)  # ... an index does
    with pytest.raises(BufferError):
        del buf[:consumed]
    buf[4] = ord("z")  # writing in place is allowed, and seen through the frames: no copy
    assert index[0] == b"zbc"
    del index
    buf.append(0)
    del buf[:consumed]
    assert buf == b"\x00"


def test_release_lets_go_of_the_buffer():
    buf = bytearray(encode_frame(b"abc") * 3)
    index, _ = index_frames(buf)
    index.release()
    buf.extend(b"more")
    index.release()  # twice: nothing
    for use in [len, list, lambda i: i[0], lambda i: i[0:1], lambda i: b"abc" in i, lambda i: i.offsets,
                lambda i: i.lengths, lambda i: i.obj, lambda i: i.count(b""),
                lambda i: i.index(b"abc"), reversed, lambda i: i.__enter__()]:
        with pytest.raises(ValueError, match="released"):
            use(index)


def test_with_block_releases():
    buf = bytearray(encode_frame(b"abc"))
    with index_frames(buf)[0] as index:
        assert index[0] == b"abc"
        with pytest.raises(BufferError):
            buf.append(0)
    buf.append(0)


def test_frames_handed_out_keep_their_own_hold():
    buf = bytearray(encode_frame(b"abc") + encode_frame(b"defg"))
    index, _ = index_frames(buf)
    first = index[0]
    rest = list(index[1:])
    index.release()
    with pytest.raises(BufferError):
        buf.append(0)  # the frames still point into buf
    assert first == b"abc" and rest == [b"defg"]
    del first, rest
    buf.append(0)


def test_index_keeps_its_buffer_alive():
    class Buffer(bytearray):
        pass

    buf = Buffer(encode_frame(b"kept"))
    alive = weakref.ref(buf)
    index, _ = index_frames(buf)
    offsets = index.offsets
    del buf
    gc.collect()
    assert alive() is not None and index[0] == b"kept" and index.obj is alive()
    del index
    gc.collect()
    assert alive() is None
    assert offsets.tolist() == [4]  # the columns keep the span arrays, not the buffer


def test_columns_do_not_hold_the_buffer():
    buf = bytearray(encode_frame(b"abc") * 2)
    index, _ = index_frames(buf)
    offsets, lengths = index.offsets, index.lengths
    del index
    buf.append(0)  # resizable: the columns hold only the span arrays
    assert offsets.tolist() == [4, 11] and lengths.tolist() == [3, 3]


def test_iterator_keeps_working_after_the_index_name_is_gone():
    iterator = iter(index_frames(encode_frame(b"a") + encode_frame(b"b"))[0])
    gc.collect()
    assert list(iterator) == [b"a", b"b"]


def test_release_during_iteration_and_comparison():
    index = indexed(PAYLOADS)
    iterator = iter(index)
    next(iterator)
    index.release()
    with pytest.raises(ValueError, match="released"):
        next(iterator)

    class ReleasesOnEq:
        def __eq__(self, other):
            index.release()
            return False
    index = indexed(PAYLOADS)
    with pytest.raises(ValueError, match="released"):
        ReleasesOnEq() in index  # noqa: B015 - the comparison itself is under test


def test_an_mmapped_file(tmp_path):
    payloads = [bytes([i % 256]) * (i * 37 % 500) for i in range(300)]
    path = tmp_path / "frames.bin"
    path.write_bytes(b"".join(encode_frame(p, "varint") for p in payloads) + b"\x05ab")
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
        index, consumed = index_frames(mapped, "varint")
        assert list(index) == payloads and consumed == path.stat().st_size - 3
        assert index[0].readonly and index.obj is mapped
        with pytest.raises(BufferError):
            mapped.close()  # the index holds the mapping
        index.release()


def test_default_copy_threshold_gives_scan_frames_objects():
    payloads = [b"small", b"x" * DEFAULT_COPY_THRESHOLD]
    stream = b"".join(encode_frame(p) for p in payloads)
    index, _ = index_frames(stream, copy_threshold=DEFAULT_COPY_THRESHOLD)
    assert [type(f) for f in index] == [bytes, memoryview]
    assert [type(f) for f in index_frames(stream)[0]] == [memoryview, memoryview]


def test_benchmark_rows_compare_equal_work():
    """The frames bench rows time both sides doing the same work: same frames,
    same consumed count, same sum of lengths (checked on a small stream)."""
    from fastwire._bench import frame_cases

    data = b"".join(encode_frame(bytes(range(n))) for n in range(0, 200, 7)) + b"\x00\x00\x00\x09abc"
    frames, consumed = frame_cases.python_scan(data, data)
    assert (frames, consumed) == scan_frames(data) == scan_frames(data, copy_threshold=0)
    index, index_consumed = index_frames(data)
    assert (list(index), index_consumed) == (frames, consumed)
    total = frame_cases.python_scan_and_touch(data)
    assert total == sum(map(len, frames)) == frame_cases.index_and_iterate(data)
    assert total == frame_cases.index_and_iterate_copies(data)
