"""fastwire.pickle.dump (the module function) against Pickler(file).dump and the stdlib.

dump() encodes straight to the file without building a Pickler; what it writes
must be what a fresh Pickler writes, and its argument errors the stdlib's.
"""

import io
import pickle as std

import pytest

from fastwire import pickle as fw

OBJECTS = [
    {"id": 1, "name": "x", "tags": ["a", "b"], "score": 2.5},
    [b"x" * 200_000, "y" * 100_000, list(range(30_000))],    # several 64 KiB frames
    [[1, 2]] * 3,
]


@pytest.mark.parametrize("proto", range(0, std.HIGHEST_PROTOCOL + 1))
@pytest.mark.parametrize("obj", OBJECTS, ids=["small dict", "multi-frame", "shared"])
def test_dump_writes_what_a_fresh_pickler_writes(obj, proto):
    by_function, by_pickler = io.BytesIO(), io.BytesIO()
    fw.dump(obj, by_function, proto)
    fw.Pickler(by_pickler, proto).dump(obj)
    assert by_function.getvalue() == by_pickler.getvalue()
    assert std.loads(by_function.getvalue()) == obj
    if proto < 2:
        assert by_function.getvalue() == std.dumps(obj, proto)


def test_dump_back_to_back_loads_one_per_call():
    f = io.BytesIO()
    for i in range(3):
        fw.dump({"i": i}, f, 5)
    f.seek(0)
    assert [std.load(f) for _ in range(3)] == [{"i": 0}, {"i": 1}, {"i": 2}]


def test_dump_argument_errors_match_stdlib():
    for args, kwargs in (((1, object()), {}), ((1, io.BytesIO(), 4), {"buffer_callback": list}),
                         ((1, io.BytesIO(), 6), {}), ((1, object(), 6), {})):
        with pytest.raises(Exception) as expected:
            std.dump(*args, **kwargs)
        with pytest.raises(expected.type):
            fw.dump(*args, **kwargs)


def test_regression_dump_without_write_and_a_buffer_callback_below_protocol_5():
    """Two argument errors at once: the stdlib looks write up first and
    raises TypeError; fastwire checked buffer_callback first (ValueError)."""
    with pytest.raises(TypeError, match="write"):
        std.dump(1, object(), 4, buffer_callback=list)
    with pytest.raises(TypeError, match="write"):
        fw.dump(1, object(), 4, buffer_callback=list)


def test_dump_propagates_write_errors():
    class Broken:
        def write(self, data):
            raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        fw.dump([1, 2, 3], Broken(), 5)


def test_dump_write_that_reenters_dump():
    """file.write is user code: it may call dump() again on the same file while the
    outer dump's output is being handed over. Each pickle still arrives whole."""
    class Reentrant(io.BytesIO):
        depth = 0

        def write(self, data):
            if self.depth == 0:
                self.depth += 1
                fw.dump(["inner"], self, 5)
            return super().write(data)

    f = Reentrant()
    fw.dump({"outer": list(range(100))}, f, 5)
    f.seek(0)
    assert std.load(f) == ["inner"]
    assert std.load(f) == {"outer": list(range(100))}
