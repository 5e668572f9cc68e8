"""Every point where fastwire.struct calls Python, each with a callback doing the worst.

The callouts (docs/callouts.md, section "struct") are: a value's ``__index__``,
``__float__`` and ``__bool__`` while packing; the offset's ``__index__`` in
``pack_into``/``unpack_from``; a buffer's ``__buffer__`` (3.12+); iterating the
rows of ``pack_many`` and each row; finalizers run by the collector while a
call or ``__init__`` allocates; the module-level format cache; another thread.
At each, the callback re-initialises the Struct to a bigger or smaller format,
re-enters it, clears the module cache, or mutates or resizes the target buffer.
The call must then give the stdlib's result for the format it started with (a
running call owns its compiled format), or a clean exception; re-initialising
a Struct while one of its calls runs raises RuntimeError, as the stdlib's fix
for gh-143379 does (CPython 3.11-3.13 crash there instead).
"""

from __future__ import annotations

import gc
import struct as std
import sys
import threading

import pytest

from fastwire import struct as fw

needs_buffer_protocol = pytest.mark.skipif(sys.version_info < (3, 12), reason="__buffer__ is Python 3.12+")


class Callback:
    """A value or offset whose conversion runs `action` once, then returns `value`.

    Every conversion a struct code can use is answered the same way, so the
    same object serves '?', 'i', 'd' and offsets.
    """

    def __init__(self, value, action):
        self.value, self.action, self.outcomes = value, action, []

    def _run(self):
        try:
            self.outcomes.append(("ok", self.action()))
        except Exception as exc:  # noqa: BLE001 - recorded: the test asserts on it
            self.outcomes.append(("raise", type(exc)))

    def __index__(self):
        self._run()
        return int(self.value)

    def __float__(self):
        self._run()
        return float(self.value)

    def __bool__(self):
        self._run()
        return bool(self.value)


def reinit(s, fmt):
    return lambda: s.__init__(fmt)


# (format, a different format to re-initialise to, plain values)
REINIT_CASES = [
    ("<i", "<i200?", (7,)),                        # to a bigger format: more items, more bytes
    ("<50i", "<h", tuple(range(50))),              # to a smaller one
    ("<?3d", "<300s", (True, 1.5, 2.5, 3.5)),      # __bool__ and __float__ callouts
    ("<2q", "", (1, 2)),
]


@pytest.mark.parametrize("fmt,other,values", REINIT_CASES)
@pytest.mark.parametrize("position", [0, -1])
def test_pack_value_conversion_reinit_is_refused(fmt, other, values, position):
    s = fw.Struct(fmt)
    evil = Callback(values[position], reinit(s, other))
    args = list(values)
    args[position] = evil
    assert s.pack(*args) == std.pack(fmt, *values)
    assert evil.outcomes == [("raise", RuntimeError)]
    assert (s.format, s.size) == (fmt, std.calcsize(fmt))


@pytest.mark.parametrize("fmt,other,values", REINIT_CASES)
def test_pack_into_value_conversion_reinit_is_refused(fmt, other, values):
    s = fw.Struct(fmt)
    evil = Callback(values[-1], reinit(s, other))
    target, expected = bytearray(b"\xaa" * 1024), bytearray(b"\xaa" * 1024)
    s.pack_into(target, 3, *values[:-1], evil)
    std.pack_into(fmt, expected, 3, *values)
    assert target == expected
    assert evil.outcomes == [("raise", RuntimeError)]


def test_regression_pack_into_offset_reinit_to_a_bigger_format():
    """The offset's __index__ re-initialised the Struct to 'i200?' after the
    item count was checked: pack_into then read 200 argument pointers past the
    caller's array (segfault). Run in a child so a crash fails only this test."""
    from test_struct_api import run_in_child
    out = run_in_child("""
from fastwire.struct import Struct
s = Struct('i')
class Evil:
    def __index__(self):
        try:
            s.__init__('i200?')
        except RuntimeError:
            print('refused')
        return 0
b = bytearray(1024)
s.pack_into(b, Evil(), 7)
assert bytes(b[:4]) == (7).to_bytes(4, 'little') and s.format == 'i', (bytes(b[:8]), s.format)
""")
    assert out == "refused\n"


@pytest.mark.parametrize("other", ["<i200?", "<h", ""])
def test_pack_into_offset_reinit_is_refused(other):
    s = fw.Struct("<2i")
    offset = Callback(4, reinit(s, other))
    target = bytearray(16)
    s.pack_into(target, offset, 1, 2)
    assert bytes(target) == bytes(4) + std.pack("<2i", 1, 2) + bytes(4)
    assert offset.outcomes == [("raise", RuntimeError)]


@pytest.mark.parametrize("other", ["<i200?", "<b", ""])
def test_unpack_from_offset_reinit_is_refused(other):
    s = fw.Struct("<2i")
    data = bytes(range(16))
    offset = Callback(4, reinit(s, other))
    assert s.unpack_from(data, offset) == std.unpack_from("<2i", data, 4)
    assert offset.outcomes == [("raise", RuntimeError)]


@pytest.mark.parametrize("call", ["pack_into", "unpack_from"])
def test_offset_conversion_cannot_resize_the_exported_buffer(call):
    """The buffer is held before the offset is converted: resizing it from the
    offset's __index__ fails (BufferError), so the bounds checked after it hold."""
    buffer = bytearray(16)
    offset = Callback(12, lambda: buffer.clear())
    for module in (fw, std):
        if call == "pack_into":
            module.pack_into("<i", buffer, offset, 5)
        else:
            assert module.unpack_from("<i", buffer, offset) == (0,)
    assert offset.outcomes == [("raise", BufferError)] * 2
    assert len(buffer) == 16


def test_value_conversion_resizing_or_writing_the_target():
    """A value's __index__ may write into the target (outside the record: the
    stdlib's result) but never resize it while it is exported."""
    def run(module):
        target = bytearray(12)

        def act():
            target[0] = 0x55
            target.extend(b"more")

        module.pack_into("<2i", target, 4, 1, Callback(2, act))
        return bytes(target)

    assert run(fw) == run(std) == b"\x55" + bytes(3) + std.pack("<2i", 1, 2)


def test_reentering_the_same_struct_from_a_callout():
    """A nested call on the same Struct (pack, pack_into, unpack) works and
    the outer call still packs its own values."""
    s = fw.Struct("<3h")
    inner = []

    def reenter():
        inner.append(s.pack(4, 5, 6))
        buffer = bytearray(6)
        s.pack_into(buffer, 0, 7, 8, 9)
        inner.append(s.unpack(buffer))
        inner.append(s.pack_many([(1, 1, 1)]))

    assert s.pack(1, Callback(2, reenter), 3) == std.pack("<3h", 1, 2, 3)
    assert inner == [std.pack("<3h", 4, 5, 6), (7, 8, 9), std.pack("<3h", 1, 1, 1)]
    s.__init__("<q")  # no call is running any more
    assert s.pack(1) == std.pack("<q", 1)


def test_another_thread_reinitialising_during_a_callout():
    s = fw.Struct("<4i")
    seen = []

    def from_thread():
        def work():
            try:
                s.__init__("<i200?")
                seen.append("reinitialised")
            except RuntimeError:
                seen.append("refused")
        worker = threading.Thread(target=work)
        worker.start()
        worker.join(60)

    assert s.pack(1, 2, Callback(3, from_thread), 4) == std.pack("<4i", 1, 2, 3, 4)
    assert seen == ["refused"]


@needs_buffer_protocol
@pytest.mark.parametrize("call", ["pack_into", "unpack_from", "unpack", "iter_unpack", "unpack_many"])
def test_buffer_export_reinit_is_refused(call):
    s = fw.Struct("<2i")
    outcomes = []

    class Exporter:
        def __init__(self):
            self.data = bytearray(std.pack("<2i", 1, 2))

        def __buffer__(self, flags):
            try:
                s.__init__("<i200?")
                outcomes.append("reinitialised")
            except RuntimeError:
                outcomes.append("refused")
            return memoryview(self.data)

    exporter = Exporter()
    if call == "pack_into":
        s.pack_into(exporter, 0, 3, 4)
        assert exporter.data == std.pack("<2i", 3, 4)
    elif call == "iter_unpack":
        assert list(s.iter_unpack(exporter)) == [(1, 2)]
    else:
        assert getattr(s, call)(exporter) == ((1, 2) if call != "unpack_many" else [(1, 2)])
    assert outcomes == ["refused"]


@needs_buffer_protocol
@pytest.mark.parametrize("call", ["pack_into", "unpack_from"])
def test_buffer_export_of_another_size_each_time(call):
    """__buffer__ may hand out views of different sizes on successive calls;
    each call checks bounds against the view it holds."""
    class Shrinking:
        def __init__(self):
            self.sizes = [16, 2, 16, 2]

        def __buffer__(self, flags):
            return memoryview(bytearray(self.sizes.pop(0)))

    for module in (fw, std):
        source = Shrinking()
        for expect_ok in (True, False, True, False):
            try:
                if call == "pack_into":
                    module.pack_into("<i", source, 0, 1)
                else:
                    module.unpack_from("<i", source, 0)
                assert expect_ok
            except std.error:
                assert not expect_ok


def test_pack_many_row_iteration_reinit_is_refused():
    s = fw.Struct("<2h")
    outcomes = []

    def rows():
        yield (1, 2)
        try:
            s.__init__("<i200?")
        except RuntimeError:
            outcomes.append("refused")
        yield (3, 4)
        outcomes.append(s.pack_many([(5, 6)]))  # re-entered from the iteration

    assert s.pack_many(rows()) == std.pack("<4h", 1, 2, 3, 4)
    assert outcomes == ["refused", std.pack("<2h", 5, 6)]


def test_pack_many_row_conversion_reinit_is_refused():
    s = fw.Struct("<2h")
    row = Callback(9, reinit(s, "<b"))
    assert s.pack_many([(1, 2), [row, 3]]) == std.pack("<4h", 1, 2, 9, 3)
    assert row.outcomes == [("raise", RuntimeError)]


def test_iter_unpack_keeps_its_format_when_the_struct_is_reinitialised():
    s = fw.Struct("<h")
    records = s.iter_unpack(std.pack("<4h", 1, 2, 3, 4))
    assert next(records) == (1,)
    s.__init__("<i200?")  # between items: the Struct is not busy
    assert list(records) == [(2,), (3,), (4,)]


class Garbage:
    """A reference cycle whose finalizer runs `action` when the collector frees it."""

    def __init__(self, action):
        self.action, self.cycle = action, self

    def __del__(self):
        self.action()


@pytest.fixture
def collector_on_every_allocation():
    gc.collect()
    threshold = gc.get_threshold()
    gc.set_threshold(1)
    yield
    gc.set_threshold(*threshold)
    gc.collect()


def test_finalizers_churning_the_module_cache(collector_on_every_allocation):
    """Module-level calls while finalizers run pack/calcsize with other formats
    and clear the cache: each call packs with its own format's codes."""
    formats = [f"<{n}h" for n in range(1, 8)] + [f"<{n}q" for n in range(1, 8)]

    def churn():
        for fmt in formats[::3]:
            fw.calcsize(fmt)
        fw._clearcache()

    for round_ in range(300):
        Garbage(churn)
        fmt = formats[round_ % len(formats)]
        values = tuple(range(std.calcsize(fmt) // (2 if "h" in fmt else 8)))
        assert fw.pack(fmt, *values) == std.pack(fmt, *values)
        assert fw.unpack(fmt, std.pack(fmt, *values)) == values


def test_finalizer_reinitialising_during_init(collector_on_every_allocation):
    """__init__ compiles before it publishes: a finalizer that re-initialises
    the same Struct meanwhile leaves format, size and codes of one format."""
    s = fw.Struct("<i")
    for _round in range(200):
        Garbage(lambda: s.__init__("<200?"))
        s.__init__("<2h")
        fmt = s.format
        assert fmt in ("<2h", "<200?")
        values = (1, 2) if fmt == "<2h" else (True,) * 200
        assert (s.size, s.pack(*values)) == (std.calcsize(fmt), std.pack(fmt, *values))


def test_cache_lookup_runs_no_user_code():
    """A str subclass with its own __hash__/__eq__ is compiled from its
    characters, never looked up: nothing user-defined runs in the cache."""
    calls = []

    class Format(str):
        def __hash__(self):
            calls.append("hash")
            fw._clearcache()
            return hash("<h")

        def __eq__(self, other):
            calls.append("eq")
            return True

    fw.pack("<q", 1)
    assert fw.pack(Format("<i"), 5) == std.pack("<i", 5)
    assert fw.calcsize(Format("<i")) == 4
    assert calls == []


def test_threads_reinitialising_a_shared_struct():
    """One thread re-initialises while others pack and unpack: every result is
    the stdlib's for one of the two formats, every refusal a RuntimeError."""
    s = fw.Struct("<2i")
    formats = {"<2i": (1, 2), "<3h": (1, 2, 3)}
    errors = []
    stop = threading.Event()

    def reinitialiser():
        while not stop.is_set():
            for fmt in formats:
                try:
                    s.__init__(fmt)
                except RuntimeError:
                    pass

    def user():
        for _ in range(3000):
            try:
                packed = s.pack(*formats["<2i"])
                assert packed == std.pack("<2i", 1, 2)
            except std.error:
                pass  # re-initialised to '<3h' between the calls: wrong count
            except AssertionError as exc:
                errors.append(exc)

    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        workers = [threading.Thread(target=reinitialiser)] + [threading.Thread(target=user) for _ in range(3)]
        for worker in workers:
            worker.start()
        for worker in workers[1:]:
            worker.join(120)
        stop.set()
        workers[0].join(60)
    finally:
        sys.setswitchinterval(old)
    assert errors == []
