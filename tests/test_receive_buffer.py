"""receive_buffer(): the memory out-of-band buffers are received into.

Bytes arrive over real AF_UNIX socketpairs from a sender thread; every
allocation strategy of large blocks (heap, remapped, reserved, huge pages,
populated) runs the same tests, since each has its own growth path.
"""

from __future__ import annotations

import gc
import io
import pickle
import socket
import sys
import threading

import pytest

from fastwire._fastwire import (
    EOF_IN_MESSAGE,
    ReceiveBuffer,
    _receive_buffer_strategy,
    receive_buffer,
    receive_buffer_pool,
)

MiB = 1024 * 1024
STRATEGIES = ["heap", "remap", "reserve", "huge", "populate", "huge_populate"]


@pytest.fixture(params=range(len(STRATEGIES)), ids=STRATEGIES)
def strategy(request):
    before = _receive_buffer_strategy()
    _receive_buffer_strategy(request.param)
    yield request.param
    _receive_buffer_strategy(before)


def pattern(n: int) -> bytes:
    """n bytes that differ at every offset modulo 251 (a prime): misplaced
    chunks show."""
    return (bytes(range(251)) * (n // 251 + 1))[:n]


def receive_over_socket(data: bytes, head: int, readonly: bool = False):
    """receive_buffer() of `data`, whose first `head` bytes already arrived and
    whose rest comes from a sender thread over an AF_UNIX socketpair."""
    a, b = socket.socketpair(socket.AF_UNIX)
    with a, b:
        sender = threading.Thread(target=a.sendall, args=(data[head:],))
        sender.start()
        try:
            return receive_buffer(b.recv_into, len(data), data[:head], readonly)
        finally:
            sender.join(timeout=60)


@pytest.mark.parametrize("size,head", [
    (0, 0), (1, 0), (1, 1), (100, 40), (MiB - 1, 0), (MiB, 17), (MiB + 1, MiB),
    (3 * MiB + 3, 5000), (9 * MiB + 4097, 0),
])
def test_receives_exactly_the_bytes_sent(strategy, size, head):
    data = pattern(size)
    got = receive_over_socket(data, head)
    assert type(got) is ReceiveBuffer
    assert len(got) == size
    assert bytes(got) == data
    assert memoryview(got).tobytes() == data


def test_writable_unless_readonly(strategy):
    data = pattern(2 * MiB)
    writable = receive_over_socket(data, 10, readonly=False)
    view = memoryview(writable)
    assert not view.readonly and not writable.readonly
    view[0] = 255
    assert bytes(writable)[0] == 255
    del view
    readonly = receive_over_socket(data, 10, readonly=True)
    assert memoryview(readonly).readonly and readonly.readonly
    with pytest.raises(TypeError):  # asks for a writable buffer (PyBUF_WRITABLE)
        io.BytesIO(b"x").readinto(readonly)
    with pytest.raises(TypeError):
        memoryview(readonly)[0] = 1
    assert bytes(readonly) == data


def test_numpy_arrays_built_on_it_share_its_memory(strategy):
    numpy = pytest.importorskip("numpy")
    values = numpy.arange(300_000, dtype=numpy.float64)
    got = receive_over_socket(values.tobytes(), 8)
    array = numpy.frombuffer(got, dtype=numpy.float64)
    assert array.flags.writeable
    assert numpy.array_equal(array, values)
    array[1] = -1.0
    assert memoryview(got).cast("d")[1] == -1.0
    del got
    gc.collect()
    assert array[1] == -1.0 and array[-1] == values[-1]  # the array keeps the memory alive
    frozen = numpy.frombuffer(receive_over_socket(values.tobytes(), 0, readonly=True), numpy.float64)
    assert not frozen.flags.writeable
    assert numpy.array_equal(frozen, values)


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
@pytest.mark.parametrize("readonly", [False, True])
def test_pickles_as_the_bytes_like_it_holds(protocol, readonly):
    data = pattern(1000)
    got = receive_over_socket(data, 3, readonly)
    back = pickle.loads(pickle.dumps(got, protocol=protocol))
    assert type(back) is (bytes if readonly else bytearray)
    assert back == data


def test_pickles_out_of_band_without_a_copy():
    got = receive_over_socket(pattern(5000), 0, readonly=False)
    buffers = []
    stream = pickle.dumps(got, protocol=5, buffer_callback=buffers.append)
    assert len(buffers) == 1 and len(stream) < 100
    assert memoryview(buffers[0]).obj is got
    assert pickle.loads(stream, buffers=buffers) == pattern(5000)


def test_cannot_be_made_directly():
    with pytest.raises(TypeError):
        ReceiveBuffer()


def test_peer_closing_mid_buffer_raises_eof(strategy):
    a, b = socket.socketpair(socket.AF_UNIX)

    def send_and_close():
        with a:
            a.sendall(pattern(3 * MiB))

    sender = threading.Thread(target=send_and_close)
    sender.start()
    with b, pytest.raises(EOFError, match=EOF_IN_MESSAGE):
        receive_buffer(b.recv_into, 8 * MiB, b"head", False)
    sender.join(timeout=60)


def test_zero_read_is_eof():
    with pytest.raises(EOFError) as raised:
        receive_buffer(lambda view: 0, 10, b"abc", False)
    assert str(raised.value) == EOF_IN_MESSAGE


def test_bad_arguments():
    with pytest.raises(ValueError):
        receive_buffer(None, -1, b"", False)
    with pytest.raises(ValueError):
        receive_buffer(None, 2, b"abc", False)
    with pytest.raises(TypeError):
        receive_buffer(None, 2, "ab", False)
    with pytest.raises(TypeError):
        receive_buffer(None, 2, None, False)


def test_complete_head_needs_no_read():
    got = receive_buffer(None, 3, bytearray(b"abc"), True)
    assert bytes(got) == b"abc" and got.readonly


def test_memory_grows_with_what_arrived_not_with_the_claim(strategy, empty_receive_pool):
    """A peer claims 1 TiB and sends 3 MiB: each window offered to recv_into
    ends within twice what had arrived (at least 1 MiB, rounded to a page).
    (A pooled block is memory already committed; the pool is empty here.)"""
    receive_buffer_pool(max_blocks=0)
    offered = []
    source = io.BytesIO(pattern(3 * MiB))

    def recv_into(view):
        offered.append((arrived[0], len(view)))
        n = source.readinto(view[:65536])
        arrived[0] += n
        return n

    arrived = [0]
    with pytest.raises(EOFError):
        receive_buffer(recv_into, 1 << 40, b"", False)
    assert arrived[0] == 3 * MiB
    for before, window in offered:
        assert before + window <= max(2 * before, MiB) + 4096


@pytest.mark.parametrize("size", [10, 3 * MiB])
def test_growth_doubles_in_few_steps(strategy, size):
    calls = []

    def recv_into(view):
        calls.append(len(view))
        view[:] = b"\x07" * len(view)
        return len(view)

    got = receive_buffer(recv_into, size, b"", False)
    assert bytes(got) == b"\x07" * size
    assert len(calls) <= 3


def address(buffer) -> int:
    numpy = pytest.importorskip("numpy")
    return numpy.frombuffer(buffer, dtype=numpy.uint8).__array_interface__["data"][0]


def test_a_dropped_large_buffer_is_received_into_again(strategy, empty_receive_pool):
    first = receive_over_socket(pattern(8 * MiB), 0)
    where = address(first)
    del first
    assert receive_buffer_pool()["blocks"] == 1
    second = receive_over_socket(pattern(8 * MiB)[::-1], 100)
    assert address(second) == where
    assert bytes(second) == pattern(8 * MiB)[::-1]
    assert receive_buffer_pool()["blocks"] == 0
    del second
    third = receive_over_socket(pattern(9 * MiB + 5), 7)  # grows the pooled block
    assert bytes(third) == pattern(9 * MiB + 5)
    del third
    fourth = receive_over_socket(pattern(5 * MiB), 0)  # trims it
    assert bytes(fourth) == pattern(5 * MiB)


def test_a_buffer_still_referenced_is_never_reused(strategy, empty_receive_pool):
    first = receive_over_socket(pattern(4 * MiB), 0)
    view = memoryview(first)
    array_base = address(first)
    del first
    second = receive_over_socket(pattern(4 * MiB)[::-1], 0)
    assert address(second) != array_base
    assert view.tobytes() == pattern(4 * MiB)


def test_small_buffers_are_not_pooled(empty_receive_pool):
    for _ in range(3):
        receive_over_socket(pattern(MiB - 1), 0)
    assert receive_buffer_pool()["blocks"] == 0


def test_a_much_larger_pooled_block_is_left_for_a_larger_buffer(empty_receive_pool):
    large = receive_over_socket(pattern(16 * MiB), 0)
    where = address(large)
    del large
    small = receive_over_socket(pattern(2 * MiB), 0)
    assert address(small) != where
    assert receive_buffer_pool()["blocks"] == 1


def test_pool_bounds_in_blocks_and_bytes(empty_receive_pool):
    receive_buffer_pool(max_blocks=2)
    held = [receive_over_socket(pattern(2 * MiB), 0) for _ in range(5)]
    held.clear()
    state = receive_buffer_pool()
    assert state["blocks"] == 2 and state["bytes"] == 4 * MiB
    receive_buffer_pool(max_bytes=3 * MiB)
    state = receive_buffer_pool()
    assert state["blocks"] == 1 and state["bytes"] == 2 * MiB
    big = receive_over_socket(pattern(4 * MiB), 0)  # larger than the pool may hold: freed
    del big
    assert receive_buffer_pool()["bytes"] <= 3 * MiB
    receive_buffer_pool(max_blocks=0)
    assert receive_buffer_pool()["blocks"] == 0 and receive_buffer_pool()["bytes"] == 0
    receive_buffer_pool(max_blocks=1000)
    assert receive_buffer_pool()["max_blocks"] == 64
    with pytest.raises(ValueError):
        receive_buffer_pool(max_blocks=-1)
    with pytest.raises(ValueError):
        receive_buffer_pool(max_bytes=-1)


def test_pool_in_a_forked_child(empty_receive_pool):
    """A child forked while blocks are pooled uses its copy of them."""
    import os
    receive_over_socket(pattern(2 * MiB), 0)
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports through its exit status
        ok = bytes(receive_over_socket(pattern(2 * MiB), 3)) == pattern(2 * MiB)
        os._exit(0 if ok and receive_buffer_pool()["blocks"] == 1 else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


# -- recv_into doing its worst (docs/callouts.md) --------------------------------


def feeding(data: bytes, act):
    """A recv_into that writes the next bytes of `data` (at most 64 KiB) and
    then runs act(view, n), whose result (if not None) it returns instead of n."""
    position = [0]

    def recv_into(view):
        chunk = data[position[0]:position[0] + min(len(view), 65536)]
        view[:len(chunk)] = chunk
        position[0] += len(chunk)
        result = act(view, len(chunk))
        return len(chunk) if result is None else result

    return recv_into


def test_recv_into_keeping_the_view(strategy):
    """The callee keeps every view (and views of views, a NumPy array) it was
    given: they stay valid, writing through them later never reaches the
    buffer returned, and the buffer holds exactly the bytes received."""
    numpy = pytest.importorskip("numpy")
    data = pattern(5 * MiB + 3)
    kept = []

    def act(view, n):
        kept.append(view)
        kept.append(view[:n])
        kept.append(numpy.frombuffer(view, dtype=numpy.uint8))

    got = receive_buffer(feeding(data, act), len(data), b"", False)
    assert bytes(got) == data
    for item in kept:
        if isinstance(item, memoryview):
            try:
                item[:1] = b"\xff"
            except ValueError:  # the view itself was released after the call
                continue
        else:
            item[:1] = 0xFF
    assert bytes(got) == data
    kept.clear()
    gc.collect()
    assert bytes(got) == data


def test_recv_into_raising_propagates_and_keeps_nothing(strategy):
    data = pattern(3 * MiB)
    calls = [0]

    def act(view, n):
        calls[0] += 1
        if calls[0] == 20:
            raise ConnectionResetError("peer went away")

    for _ in range(3):
        calls[0] = 0
        with pytest.raises(ConnectionResetError):
            receive_buffer(feeding(data, act), len(data), b"", False)


@pytest.mark.parametrize("bogus,error", [
    (-1, ValueError), (2**70, OverflowError), ("5", TypeError), ([], TypeError), (1.0, TypeError),
])
def test_recv_into_returning_a_bogus_count(bogus, error):
    with pytest.raises(error):
        receive_buffer(feeding(pattern(10), lambda view, n: bogus), 10, b"", False)


def test_recv_into_returning_more_than_it_was_offered(strategy):
    with pytest.raises(ValueError):
        receive_buffer(feeding(pattern(3 * MiB), lambda view, n: len(view) + 1), 3 * MiB, b"", False)


def test_recv_into_releasing_the_view(strategy):
    """The callee releases the memoryview (and a view of it) before returning:
    receiving goes on; no export is left behind."""
    data = pattern(2 * MiB)

    def act(view, n):
        view[:2].release()
        view.release()

    got = receive_buffer(feeding(data, act), len(data), b"", False)
    assert bytes(got) == data


def test_recv_into_count_whose_index_exports_the_window(strategy):
    """The count returned converts through __index__, which tries to export the
    window again from a view it kept: refused or harmless, never a pointer
    into memory that then moves."""
    data = pattern(3 * MiB)
    kept = []

    class Count:
        def __init__(self, n, view):
            self.n, self.view = n, view

        def __index__(self):
            try:
                kept.append(memoryview(self.view))
            except ValueError:
                pass
            return self.n

    got = receive_buffer(feeding(data, lambda view, n: Count(n, view)), len(data), b"", False)
    assert bytes(got) == data
    for view in kept:
        view[:1] = b"\xff"
    assert bytes(got) == data


def test_recv_into_reentering_receive_buffer(strategy):
    data = pattern(2 * MiB)
    inner = []

    def act(view, n):
        if len(inner) < 3:
            inner.append(receive_buffer(feeding(data, lambda v, k: None), len(data), b"", True))

    got = receive_buffer(feeding(data, act), len(data), b"", False)
    assert bytes(got) == data
    assert all(bytes(b) == data for b in inner)


def test_threads_receiving_and_dropping_at_once(strategy):
    data = pattern(3 * MiB + 1)
    errors = []

    def worker():
        try:
            for _ in range(4):
                got = receive_buffer(feeding(data, lambda v, n: None), len(data), b"", False)
                if bytes(got) != data:
                    errors.append("mismatch")
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert errors == []


def anon_huge_kib() -> int:
    import re
    with open("/proc/self/smaps_rollup") as smaps:
        return int(re.search(r"AnonHugePages:\s+(\d+)", smaps.read())[1])


def thp_allowed() -> bool:
    try:
        with open("/sys/kernel/mm/transparent_hugepage/enabled") as setting:
            return "[never]" not in setting.read()
    except OSError:
        return False


@pytest.mark.skipif(not (sys.platform.startswith("linux") and thp_allowed()),
                    reason="transparent huge pages are a Linux feature, here switched off")
def test_large_buffers_get_huge_pages_by_default(empty_receive_pool):
    """docs/net.md, Receive memory: on Linux a large buffer lives in a 2 MiB-aligned
    mapping advised MADV_HUGEPAGE (the kernel may still fall back to 4 KiB pages
    when it has no free huge page, so this asserts only that some were used)."""
    receive_buffer_pool(max_blocks=0)
    assert _receive_buffer_strategy() == STRATEGIES.index("huge")
    before = anon_huge_kib()
    got = receive_over_socket(pattern(32 * MiB), 0)
    assert address(got) % (2 * MiB) == 0
    assert anon_huge_kib() > before
    assert bytes(got) == pattern(32 * MiB)


PEAK_RECEIVER = """
import socket, sys
from fastwire._fastwire import receive_buffer

def status(field):
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith(field))

sock = socket.socket(fileno=int(sys.argv[1]))
length = int(sys.argv[2])
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # resets the peak resident size to the current one
before = status("VmRSS:")
got = receive_buffer(sock.recv_into, length, b"", False)
print(status("VmHWM:") - before, bytes(memoryview(got)[-4:]).hex())
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")
def test_peak_memory_of_a_64_mib_receive_is_at_most_1_1x():
    """Goal: peak receiver memory at most 1.1x the payload, in a fresh process
    fed over AF_UNIX by this one (its resident peak, reset before receiving)."""
    import os
    import subprocess
    length = 64 * MiB
    here, there = socket.socketpair(socket.AF_UNIX)
    with here:
        child = subprocess.Popen(
            [sys.executable, "-c", PEAK_RECEIVER, str(there.fileno()), str(length)],
            pass_fds=[there.fileno()], stdout=subprocess.PIPE, text=True,
            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
        there.close()
        chunk = pattern(MiB)
        for _ in range(64):
            here.sendall(chunk)
        out, _ = child.communicate(timeout=120)
    assert child.returncode == 0
    peak, tail = out.split()
    assert tail == chunk[-4:].hex()
    assert int(peak) <= 1.1 * length, f"peak {int(peak) / length:.3f}x the payload"
