"""The "fastwire" Dask serialization family, in one process, through Dask's own
protocol functions (serialize/deserialize and the message layer dumps/loads)."""

from __future__ import annotations

import decimal
import fractions
import pickle
import sys
import threading

import pytest

pytest.importorskip("distributed", reason="fastwire.dask needs Dask distributed (pip install 'fastwire[dask]')")
np = pytest.importorskip("numpy", reason="the buffer tests use NumPy arrays")

import distributed.protocol as dask_protocol  # noqa: E402
from distributed.protocol.serialize import Serialize, deserialize, serialize  # noqa: E402

import fastwire.dask as fd  # noqa: E402

RECORDS = [{"id": i, "name": f"user{i}", "score": i * 1.5, "tags": ["a", f"t{i % 7}"], "active": i % 2 == 0}
           for i in range(200)]


def data_address(buffer) -> int:
    """Address of the first byte of any buffer (frames are views, arrays own memory)."""
    return np.frombuffer(buffer, dtype=np.uint8).ctypes.data


@pytest.fixture
def restricted_family():
    """Yield fd.register; put the unrestricted default back afterwards."""
    yield fd.register
    fd.register()


def test_registered_on_import():
    from distributed.protocol.serialize import families

    assert fd.FAMILY == "fastwire"
    assert families["fastwire"][:2] == (fd.dumps, fd.loads)
    assert fd.SERIALIZERS[0] == "fastwire" and "pickle" in fd.SERIALIZERS


def test_import_fastwire_does_not_import_dask():
    import subprocess

    code = "import fastwire.pickle, sys; print('distributed' in sys.modules, 'dask' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


@pytest.mark.parametrize("value", [
    RECORDS,
    {"floats": [[i * 0.5 for i in range(50)] for _ in range(20)]},
    [(i, str(i)) for i in range(500)],
    fractions.Fraction(3, 7),
    decimal.Decimal("1.25"),
    {1, 2, 3},
])
def test_round_trip_through_dask_serialize(value):
    header, frames = serialize(value, serializers=fd.SERIALIZERS, iterate_collection=False)
    assert header["serializer"] == "fastwire"
    # The stdlib is the oracle: frame 0 is a pickle the standard library loads.
    assert pickle.loads(frames[0], buffers=frames[1:]) == value
    assert deserialize(header, frames) == value


def test_frame_zero_is_pickle_and_each_buffer_its_own_frame_without_copy():
    first = np.arange(100_000, dtype=np.float64)
    second = pickle.PickleBuffer(bytearray(b"x" * 4096))
    header, frames = fd.dumps({"a": first, "b": second, "c": 7})
    assert len(frames) == 3
    assert header["writeable"] == (True, True)
    assert data_address(frames[1]) == first.ctypes.data
    assert data_address(frames[2]) == data_address(second)
    result = fd.loads(header, frames)
    # Writable frames arrive as they are: the rebuilt array is a view of frame 1.
    assert np.shares_memory(result["a"], first)
    assert np.array_equal(result["a"], first) and bytes(result["b"]) == bytes(second) and result["c"] == 7


@pytest.mark.parametrize("value", [b"b" * 100_000, bytearray(b"a" * 100_000), memoryview(b"m" * 100_000)])
def test_top_level_bytes_like_go_to_dasks_zero_copy_family(value):
    with pytest.raises(NotImplementedError):
        fd.dumps(value)
    header, frames = serialize(value, serializers=fd.SERIALIZERS)
    assert header["serializer"] == "dask"
    assert data_address(frames[0]) == data_address(value)
    assert bytes(deserialize(header, frames)) == bytes(value)


def test_nested_bytes_stay_in_band_as_in_the_stdlib():
    value = {"blob": bytearray(b"n" * 1000), "raw": b"r" * 1000}
    header, frames = fd.dumps(value)
    assert len(frames) == 1 and frames[0] == pickle.dumps(value, protocol=5)
    assert fd.loads(header, frames) == value


def test_message_layer_keeps_the_array_zero_copy_both_ways():
    array = np.arange(1 << 18, dtype=np.int64)
    frames = dask_protocol.dumps({"op": "x", "data": dask_protocol.to_serialize(array)},
                                 serializers=fd.SERIALIZERS)
    assert any(data_address(f) == array.ctypes.data for f in frames if memoryview(f).nbytes == array.nbytes)
    # What a socket would deliver: one writable buffer per frame.
    received = [memoryview(bytearray(f)) for f in frames]
    message = dask_protocol.loads(received, deserializers=fd.SERIALIZERS)
    out = message["data"]
    assert np.array_equal(out, array)
    assert any(data_address(f) == out.ctypes.data for f in received if f.nbytes == array.nbytes)


def test_writability_restored_like_dasks_pickle_family():
    writable = np.arange(10.0)
    readonly = np.arange(10.0)
    readonly.setflags(write=False)
    for array in (writable, readonly):
        header, frames = fd.dumps(array)
        # A transport may hand back read-only memory (bytes) or writable memory.
        for delivered in ([frames[0], bytes(frames[1])], [frames[0], bytearray(frames[1])]):
            out = fd.loads(header, delivered)
            assert out.flags.writeable == array.flags.writeable
            assert np.array_equal(out, array)
            # Dask's own pickle family makes the same choice for the same input.
            dheader, dframes = serialize(array, serializers=["pickle"])
            dask_out = deserialize(dheader, [dframes[0], type(delivered[1])(dframes[1])])
            assert dask_out.flags.writeable == out.flags.writeable


def _main_module_class():
    class MainRecord:
        def __init__(self, value):
            self.value = value

        def __eq__(self, other):
            return type(other).__name__ == "MainRecord" and other.value == self.value

    MainRecord.__module__ = "__main__"
    MainRecord.__qualname__ = "MainRecord"
    setattr(sys.modules["__main__"], "MainRecord", MainRecord)
    return MainRecord


def _local_class():
    class Local:
        pass

    return Local()


@pytest.mark.parametrize("make", [
    lambda: (lambda x: x + 1),
    lambda: _main_module_class()(5),
    _local_class,
])
def test_what_needs_cloudpickle_falls_through_to_dasks_pickle(make):
    value = make()
    with pytest.raises(NotImplementedError):
        fd.dumps(value)
    header, frames = serialize(value, serializers=fd.SERIALIZERS)
    assert header["serializer"] == "pickle"
    out = deserialize(header, frames)
    assert type(out).__name__ == type(value).__name__


def test_unserializable_value_raises_what_dask_raises():
    lock = threading.Lock()
    errors = []
    for serializers in (None, fd.SERIALIZERS):
        with pytest.raises(Exception) as info:
            serialize(lock, serializers=serializers, on_error="raise")
        errors.append((type(info.value), info.value.args[0]))
    assert errors[0] == errors[1] == (TypeError, "Could not serialize object of type lock")


def test_restricted_decoding_refuses_globals_not_allowed(restricted_family):
    header, frames = fd.dumps([fractions.Fraction(1, 3), decimal.Decimal("2")])
    restricted_family(allowed=["fractions.Fraction"])
    with pytest.raises(pickle.UnpicklingError, match="decimal.Decimal"):
        fd.loads(header, frames)
    restricted_family(allowed=[fractions.Fraction, "decimal.Decimal"])
    assert fd.loads(header, frames) == [fractions.Fraction(1, 3), decimal.Decimal("2")]


def test_restricted_decoding_always_allows_whole_containers(restricted_family):
    restricted_family(allowed=[])
    header, frames = fd.dumps(fd.whole([1, 2, 3]))
    assert fd.loads(header, frames) == [1, 2, 3]


def test_header_that_does_not_match_the_frames_is_refused():
    header, frames = fd.dumps(np.arange(4))
    with pytest.raises(ValueError, match="buffers"):
        fd.loads({"writeable": ()}, frames)
    with pytest.raises(ValueError, match="buffers"):
        fd.loads({}, frames)
    with pytest.raises(ValueError, match="no pickle frame"):
        fd.loads(header, [])
    with pytest.raises(pickle.UnpicklingError):
        fd.loads({"writeable": ()}, [b"\x80\x05garbage"])


def test_older_negotiated_protocol_keeps_buffers_in_band():
    header, frames = fd.dumps(np.arange(4), context={"pickle-protocol": 4})
    assert len(frames) == 1 and header["writeable"] == ()
    assert np.array_equal(fd.loads(header, frames), np.arange(4))


def test_whole_containers_travel_as_one_frame():
    records = fd.whole(RECORDS)
    assert isinstance(records, list) and records == RECORDS
    per_element_header, per_element_frames = serialize(Serialize(RECORDS), serializers=fd.SERIALIZERS)
    assert per_element_header.get("is-collection") and len(per_element_frames) == len(RECORDS)
    header, frames = serialize(Serialize(records), serializers=fd.SERIALIZERS)
    assert header["serializer"] == "fastwire" and len(frames) == 1
    out = deserialize(header, frames)
    assert type(out) is fd.WholeList and out == RECORDS
    for plain in ((1, 2), {"a": 1}, {1, 2}):
        wrapped = fd.whole(plain)
        assert wrapped == plain and isinstance(wrapped, type(plain)) and fd.whole(wrapped) is wrapped
    with pytest.raises(TypeError, match="list, tuple, dict or set"):
        fd.whole("not a container")


def test_pickle_path_opt_in_is_reversible_and_wire_compatible():
    import distributed.protocol.pickle as dask_pickle

    assert not fd.fastwire_pickle_in_use()
    plain = dask_pickle.dumps(RECORDS)
    try:
        assert fd.use_fastwire_pickle() is True
        assert fd.fastwire_pickle_in_use()
        before = fd.decode_counts().get(fd.DASK_PICKLE_PATH, 0)
        patched = dask_pickle.dumps(RECORDS)
        assert patched == plain  # byte-compatible with the standard library's pickle
        assert dask_pickle.loads(plain) == RECORDS
        assert fd.decode_counts()[fd.DASK_PICKLE_PATH] == before + 1
        # Dask's cloudpickle fallback still applies on the patched path.
        assert dask_pickle.loads(dask_pickle.dumps(lambda x: x * 2))(4) == 8
    finally:
        assert fd.use_fastwire_pickle(False) is False
    assert not fd.fastwire_pickle_in_use()
