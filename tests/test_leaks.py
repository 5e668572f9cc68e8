"""Reference and memory leaks: every public entry point, success and error
paths, run thousands of times; nothing may accumulate.

Each case is a factory returning ``(call, inputs)``: ``call()`` runs the entry
point once (an expected exception is caught inside it) and ``inputs`` are the
objects it is handed, whose reference counts must come back exactly. Across a
run the test also watches the number of GC-tracked objects and the memory
tracemalloc sees (Python allocators, which include PyMem_Malloc'd struct
formats); test_process_memory_is_flat watches the process's resident memory
for what tracemalloc cannot see (libc malloc, e.g. frame arenas).
The whole file takes a few seconds; under scripts/sanitize-run it takes longer
but runs the same way.
"""

import collections
import gc
import io
import os
import struct as std_struct
import sys
import tracemalloc

import pytest

import fastwire
from fastwire import frames, pickle as fw_pickle, struct as fw_struct

# FASTWIRE_LEAK_ITERATIONS lowers the count under valgrind (scripts/valgrind-tests).
ITERATIONS = int(os.environ.get("FASTWIRE_LEAK_ITERATIONS", "1000"))
WARMUP = 50


def raising(exc_type, fn, *args, **kwargs):
    """A call that must fail with exc_type every time (an error path)."""
    def call():
        try:
            fn(*args, **kwargs)
        except exc_type:
            return
        raise AssertionError(f"{fn!r} did not raise {exc_type.__name__}")
    return call


class Index:
    def __init__(self, value):
        self.value = value

    def __index__(self):
        return self.value


class BadIndex:
    def __index__(self):
        raise ValueError("no index")


# --- struct -------------------------------------------------------------------

def struct_cases():
    S = fw_struct.Struct
    record = S("<iHd4sq?e")
    values = (-5, 7, 2.5, b"abcd", 2**40, True, 1.5)
    packed = record.pack(*values)
    many = packed * 16
    rows = [values] * 16
    target = bytearray(64)
    big_int = 2**70
    index = Index(3)
    bad_index = BadIndex()
    fmt_str, fmt_bytes = "<iHd4sq?e", b">3h"
    error = fw_struct.error
    return {
        "pack": (lambda: fw_struct.pack(fmt_str, *values), [fmt_str, *values]),
        "pack bytes format": (lambda: fw_struct.pack(fmt_bytes, 1, index, 3), [fmt_bytes, index]),
        "Struct.pack": (lambda: record.pack(*values), [record, *values]),
        "unpack": (lambda: fw_struct.unpack(fmt_str, packed), [fmt_str, packed]),
        "Struct.unpack memoryview": (lambda: record.unpack(memoryview(packed)), [record, packed]),
        "unpack_from": (lambda: fw_struct.unpack_from(fmt_bytes, target, 4), [fmt_bytes, target]),
        "pack_into": (lambda: fw_struct.pack_into(fmt_str, target, 2, *values), [target, *values]),
        "Struct.pack_into negative offset": (lambda: record.pack_into(target, -40, *values), [target]),
        "iter_unpack": (lambda: list(fw_struct.iter_unpack(fmt_str, many)), [fmt_str, many]),
        "iter_unpack abandoned": (lambda: next(record.iter_unpack(many)), [record, many]),
        "calcsize": (lambda: fw_struct.calcsize(fmt_bytes), [fmt_bytes]),
        "Struct()": (lambda: S(fmt_str), [fmt_str]),
        "pack_many": (lambda: record.pack_many(rows), [rows, record]),
        "unpack_many": (lambda: record.unpack_many(many), [many, record]),
        # Error paths.
        "Struct() bad char": (raising(error, S, "<iZ"), []),
        "Struct() size overflow": (raising(error, S, "9" * 30 + "q"), []),
        "Struct() wrong type": (raising(TypeError, S, 3.5), []),
        "pack wrong count": (raising(error, record.pack, 1, 2), [record]),
        "pack out of range": (raising(error, fw_struct.pack, "<h", big_int), [big_int]),
        "pack not an int": (raising(error, fw_struct.pack, "<i", "x"), []),
        "pack __index__ raises": (raising(ValueError, fw_struct.pack, "<i", bad_index), [bad_index]),
        "pack half overflow": (raising(OverflowError, fw_struct.pack, "<e", 1e10), []),
        "pack int overflow in half": (raising(error, fw_struct.pack, "<e", big_int), [big_int]),
        "pack bad bytes": (raising(error, fw_struct.pack, "4s", 5), []),
        "unpack short": (raising(error, record.unpack, packed[:-1]), [record, packed]),
        "unpack not a buffer": (raising(TypeError, record.unpack, "text"), [record]),
        "unpack_from short": (raising(error, fw_struct.unpack_from, fmt_str, packed, 3), [packed]),
        "pack_into read-only": (raising(TypeError, record.pack_into, packed, 0, *values), [packed]),
        "pack_into short": (raising(error, record.pack_into, bytearray(3), 0, *values), [record]),
        "pack_into bad value keeps buffer": (raising(error, record.pack_into, target, 0, *values[:-1], "x"),
                                             [target]),
        "iter_unpack bad length": (raising(error, fw_struct.iter_unpack, fmt_str, packed[:-1]), [packed]),
        "iter_unpack zero size": (raising(error, fw_struct.iter_unpack, "", packed), [packed]),
        "pack_many bad row": (raising(error, record.pack_many, [values, (1,)]), [record]),
        "unpack_many bad length": (raising(error, record.unpack_many, many[:-1]), [record]),
    }


# --- pickle ---------------------------------------------------------------------

# An allowed tuple subclass: calls whose argument tuple is one must be checked
# like calls with a plain tuple.
Pair = collections.namedtuple("Pair", "first second")


class ReenteringUnpickler(fw_pickle.Unpickler):
    def persistent_load(self, pid):
        return self.load()


def restricted_refusals():
    """Error paths of restricted mode's structure and call checks."""
    pair = b"c" + Pair.__module__.encode() + b"\nPair\n"
    deep = b"\x80\x02" + b"]" * 5000 + b"a" * 4999 + b"."
    dag = b"\x80\x02K\x01" + b"q\x00h\x00\x86" * 20 + b"q\x010cbuiltins\nstr\nh\x01\x85R."
    # str(*Pair(b"a", "idna")): the codec check must see through the subclass.
    str_with_pair_args = b"\x80\x02cbuiltins\nstr\n" + pair + b"C\x01aX\x04\x00\x00\x00idna\x86RR."
    reentrant = b"\x80\x02K\x01Q."
    error = fw_pickle.UnpicklingError
    return {
        "allowed= refuses eval passed as an object": (raising(ValueError, fw_pickle.loads, b"N.", allowed=[eval]), []),
        "Unpickler re-entered from persistent_load": (
            raising(RuntimeError, lambda: ReenteringUnpickler(io.BytesIO(reentrant)).load()), [reentrant]),
        "restricted nesting past max_depth": (raising(error, fw_pickle.loads, deep, allowed=()), [deep]),
        "restricted str() of a memo DAG": (raising(error, fw_pickle.loads, dag, allowed=()), [dag]),
        "restricted call with namedtuple arguments": (
            raising(error, fw_pickle.loads, str_with_pair_args, allowed=[Pair]), [str_with_pair_args]),
    }


class Reinit:
    """__reduce__ re-initialises the pickler running it: refused."""
    target = None

    def __reduce__(self):
        Reinit.target.__init__(io.BytesIO(), 4)
        return (int, (1,))


class Setstate:
    """__setstate__ clears the memo of the unpickler running it: refused."""
    target = None

    def __setstate__(self, state):
        Setstate.target.memo.clear()


def pickle_cases():
    value = {"a": [1, 2.5, None, True], "b": (b"x" * 100, "y" * 100), "c": {1, 2}, "d": bytearray(b"z")}
    data = {p: fw_pickle.dumps(value, protocol=p) for p in range(fw_pickle.HIGHEST_PROTOCOL + 1)}
    stream = data[5] + data[4] + data[3]
    forbidden = fw_pickle.dumps(io.BytesIO, protocol=4)
    truncated = data[4][:-5]
    error = fw_pickle.UnpicklingError

    def load_stream():
        unpickler = fw_pickle.Unpickler(io.BytesIO(stream), allowed=())
        for _ in range(3):
            unpickler.load()

    def reinit_pickler():
        Reinit.target = fw_pickle.Pickler(io.BytesIO(), 4)
        try:
            Reinit.target.dump([Reinit(), value])
        finally:
            Reinit.target = None

    setstate = Setstate()
    setstate.state = 1   # an instance with state, so BUILD calls __setstate__
    setstate_data = fw_pickle.dumps([setstate], 4)

    def reinit_unpickler():
        Setstate.target = fw_pickle.Unpickler(io.BytesIO(setstate_data))
        try:
            Setstate.target.load()
        finally:
            Setstate.target = None

    class NestedLoads:
        def __iter__(self):
            fw_pickle.loads(data[2])
            return iter(())
    nested = NestedLoads()

    class KeepsViews(io.BytesIO):
        def readinto(self, b):
            self.kept = memoryview(b)
            return super().readinto(b)
    large = fw_pickle.dumps(b"L" * ((1 << 20) + 7), protocol=4)

    return {
        "dumps": (lambda: fw_pickle.dumps(value, protocol=5), [value]),
        "dumps protocol 0": (lambda: fw_pickle.dumps(value, protocol=0), [value]),
        "dump to file": (lambda: fw_pickle.dump(value, io.BytesIO()), [value]),
        "loads": (lambda: fw_pickle.loads(data[5]), [data[5]]),
        "loads allowed=()": (lambda: fw_pickle.loads(data[4], allowed=()), [data[4]]),
        "loads protocol 0 bytes encoding": (lambda: fw_pickle.loads(data[0], encoding="bytes"), [data[0]]),
        "Unpickler stream": (load_stream, [stream]),
        "load from file": (lambda: fw_pickle.load(io.BytesIO(data[3])), [data[3]]),
        "loads forbidden global": (raising(error, fw_pickle.loads, forbidden, allowed=()), [forbidden]),
        "loads truncated": (raising(fw_pickle.UnpicklingError, fw_pickle.loads, truncated), [truncated]),
        "loads empty": (raising(EOFError, fw_pickle.loads, b""), []),
        "loads garbage": (raising(fw_pickle.UnpicklingError, fw_pickle.loads, b"\xff\x00garbage"), []),
        "dumps unpicklable": (raising((TypeError, AttributeError, fw_pickle.PicklingError),
                                      fw_pickle.dumps, lambda: None), []),
        **restricted_refusals(),
        "Pickler re-initialised mid-dump": (raising(RuntimeError, reinit_pickler), [value]),
        "Unpickler memo cleared mid-load": (raising(RuntimeError, reinit_unpickler), [setstate_data]),
        "loads nested in buffers= iteration": (
            lambda: fw_pickle.loads(data[2], encoding="latin1", buffers=nested), [data[2], nested]),
        "load with readinto keeping its view": (lambda: fw_pickle.load(KeepsViews(large)), [large]),
    }


# --- frames ---------------------------------------------------------------------

def frames_cases():
    small = frames.encode_frame(b"x" * 40)
    large_payload = b"L" * (80 * 1024)
    large = frames.encode_frame(large_payload)
    stream = small * 8 + large
    half = len(stream) // 2
    bad = b"\xff\xff\xff\xff" + b"x" * 8
    payloads = [b"a" * 10, b"b" * 100]

    def feed_split():
        scanner = frames.FrameScanner(">I")
        scanner.feed(stream[:half])
        scanner.feed(stream[half:])

    def recv_into():
        scanner = frames.FrameScanner(">I")
        for i in range(0, len(stream), 8192):
            piece = stream[i:i + 8192]
            window = scanner.get_buffer(len(piece))
            window[:len(piece)] = piece
            window.release()
            scanner.buffer_updated(len(piece))

    def take_partial():
        scanner = frames.FrameScanner(">I")
        scanner.feed(large[:1000])
        scanner.take_partial()

    def broken_scanner():
        scanner = frames.FrameScanner(">I", max_frame_size=1024)
        for _ in range(2):
            try:
                scanner.feed(small + bad)
                scanner.feed(b"")
            except frames.FrameTooLarge:
                pass

    def index_everything():
        data = bytearray(stream)
        index, _ = frames.index_frames(data, copy_threshold=64)
        list(index)
        list(reversed(index[1::2]))
        b"x" * 40 in index  # noqa: B015 - the search itself is measured
        index.count(b"nothing")
        index.offsets.tolist()
        index.lengths.tolist()
        index[-1]
        with index:
            pass
        data.append(0)  # the index let go of it

    return {
        "index_frames": (index_everything, [stream]),
        "index_frames too large": (raising(frames.FrameTooLarge, frames.index_frames, bad, max_frame_size=10),
                                   [bad]),
        "scan_frames": (lambda: frames.scan_frames(stream), [stream]),
        "scan_frames varint": (lambda: frames.scan_frames(b"\x03abc\x01z", "varint"), []),
        "FrameScanner.feed split": (feed_split, [stream]),
        "FrameScanner get_buffer/buffer_updated": (recv_into, [stream]),
        "FrameScanner.take_partial": (take_partial, [large]),
        "encode_frame": (lambda: frames.encode_frame(large_payload), [large_payload]),
        "frame_buffers": (lambda: frames.frame_buffers(payloads), [payloads]),
        "FramePrefix.header": (lambda: frames.FramePrefix("multiprocessing").header(2**40), []),
        "scan_frames too large": (raising(frames.FrameTooLarge, frames.scan_frames, bad, max_frame_size=10), [bad]),
        "FrameScanner broken": (broken_scanner, [bad, small]),
        "FramePrefix bad": (raising(ValueError, frames.FramePrefix, ">Z"), []),
        "header too big": (raising(frames.FrameError, frames.FramePrefix(">H").header, 70000), []),
    }


CASES = [pytest.param("struct", name, id=f"struct: {name}") for name in struct_cases()]
CASES += [pytest.param("pickle", name, id=f"pickle: {name}") for name in pickle_cases()]
FRAME_CASE_NAMES = ["index_frames", "index_frames too large", "scan_frames", "scan_frames varint",
                    "FrameScanner.feed split", "FrameScanner get_buffer/buffer_updated", "FrameScanner.take_partial",
                    "encode_frame", "frame_buffers", "FramePrefix.header", "scan_frames too large",
                    "FrameScanner broken", "FramePrefix bad", "header too big"]
CASES += [pytest.param("frames", name, id=f"frames: {name}") for name in FRAME_CASE_NAMES]
FACTORIES = {"struct": struct_cases, "pickle": pickle_cases, "frames": frames_cases}


def run(call, times):
    for _ in range(times):
        call()


@pytest.mark.parametrize("area,name", CASES)
def test_entry_point_leaks_nothing(area, name):
    call, inputs = FACTORIES[area]()[name]
    run(call, WARMUP)  # fills caches (compiled formats, interned names) once
    gc.collect()
    # Shared objects (small ints, True, interned strings; immortal on 3.12+)
    # are referenced from everywhere, so only the inputs this test owns count.
    inputs = [obj for obj in inputs if sys.getrefcount(obj) < 1000]
    refcounts = [sys.getrefcount(obj) for obj in inputs]
    tracked = len(gc.get_objects())
    tracemalloc.start()
    try:
        # Two equal windows: one-time costs (caches, free lists, allocator
        # bookkeeping) land in the first; a leak grows in both.
        run(call, ITERATIONS)
        gc.collect()
        before = tracemalloc.get_traced_memory()[0]
        run(call, ITERATIONS)
        gc.collect()
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    gc.collect()
    assert [sys.getrefcount(obj) for obj in inputs] == refcounts, "an input's reference count changed"
    # 2 * ITERATIONS calls happened since the object count was taken.
    # A leak of one object per call would show as ITERATIONS objects / bytes;
    # the slack covers the bookkeeping of this loop itself.
    # The floors keep a short run (FASTWIRE_LEAK_ITERATIONS=100 under valgrind)
    # above the loop's own noise; there memcheck is the leak detector.
    assert len(gc.get_objects()) - tracked < max(ITERATIONS // 20, 20)
    assert grown < max(16 * ITERATIONS, 8192), f"{grown} bytes still allocated after {ITERATIONS} calls"


def test_module_format_cache_is_bounded():
    fw_struct._clearcache()
    fw_struct.calcsize("<i")
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i in range(5000):
            fw_struct.calcsize(f"<{i}x")
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
        fw_struct._clearcache()
    assert grown < 256 * 1024, f"{grown} bytes kept for 5000 one-off formats"


def resident_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="needs /proc (Linux)")
@pytest.mark.skipif(bool(os.environ.get("FASTWIRE_SANITIZER_BUILD") or os.environ.get("FASTWIRE_UNDER_VALGRIND")),
                    reason="ASan and valgrind hold freed memory back by design; resident size says nothing there")
def test_process_memory_is_flat():
    """Large inputs through every area, 100 times: a leak of one buffer per call
    is hundreds of MB; the allowed drift is a few MB of allocator noise."""
    record = fw_struct.Struct("<qd")
    rows = [(i, i / 2) for i in range(20_000)]
    packed = record.pack_many(rows)
    blob = {"rows": rows[:2000], "bytes": b"b" * 200_000}
    pickled = fw_pickle.dumps(blob, protocol=5)
    calls = [
        lambda: record.unpack_many(packed),
        lambda: record.pack_many(rows),
        lambda: list(record.iter_unpack(packed)),
        lambda: fw_pickle.loads(pickled, allowed=()),
        lambda: fw_pickle.dumps(blob, protocol=5),
    ]
    if frames is not None:
        stream = frames.encode_frame(b"F" * 300_000) * 3

        def scan():
            scanner = frames.FrameScanner(">I")
            for i in range(0, len(stream), 65536):
                scanner.feed(stream[i:i + 65536])
        calls.append(scan)
    for call in calls:
        run(call, 5)
    gc.collect()
    before = resident_bytes()
    for call in calls:
        run(call, 100)
    gc.collect()
    grown = resident_bytes() - before
    assert grown < 16 * 1024 * 1024, f"resident memory grew by {grown / 2**20:.1f} MiB"


def test_fastwire_error_is_the_stdlib_class_after_all_that():
    # Guards the module state the loops above hammered.
    assert fastwire.error is std_struct.error
