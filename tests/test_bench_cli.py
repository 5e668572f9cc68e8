"""``python -m fastwire bench``: the output formats, on one quick area, and the
cross-process area's machinery (no timing is checked)."""

import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time

import pytest

from fastwire import _bench
from fastwire._bench import xproc


def run_bench(*args):
    out = subprocess.run([sys.executable, "-m", "fastwire", "bench", "--area", "struct", "--rounds", "1", *args],
                         capture_output=True, text=True, timeout=300, check=True)
    return out.stdout


@pytest.fixture(scope="module")
def struct_pair_names():
    return [pair.name for pair in _bench.load_pairs(["struct"])]


def test_json_lists_every_pair(struct_pair_names):
    report = json.loads(run_bench("--json"))
    assert [r["name"] for r in report["results"]] == struct_pair_names
    for r in report["results"]:
        assert r["area"] == "struct" and r["stdlib_seconds"] > 0 and r["fastwire_seconds"] > 0
        assert r["speedup"] == pytest.approx(r["stdlib_seconds"] / r["fastwire_seconds"])


def test_markdown_is_the_performance_page_table(struct_pair_names):
    lines = run_bench("--markdown").splitlines()
    header = lines.index("| area | operation | stdlib | fastwire | speedup | target |")
    assert lines[header + 1] == "| --- | --- | --- | --- | --- | --- |"
    rows = [line.split(" | ") for line in lines[header + 2:] if line]
    assert [row[1] for row in rows] == struct_pair_names
    assert all(row[0] == "| struct" and row[4].startswith("**") for row in rows)


def test_json_and_markdown_exclude_each_other():
    out = subprocess.run([sys.executable, "-m", "fastwire", "bench", "--json", "--markdown"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "not allowed with" in out.stderr


# --- the cross-process area's own machinery (real processes; no figure is checked) ---

needs_zmq = pytest.mark.skipif(importlib.util.find_spec("zmq") is None, reason="pyzmq is not installed")


@needs_zmq
def test_pyzmq_sender_keeps_its_socket_until_a_lagging_receiver_is_done():
    """Regression: the pyzmq row's sender closed its socket as soon as it had
    sent; a receiver lagging behind then lost a few hundred messages over ipc
    (libzmq #4660) and the docs run stopped on zmq.error.Again. The sender now
    waits for the receiver's "done" (its stdin closed)."""
    import zmq
    count = 5000
    with tempfile.TemporaryDirectory() as directory:
        ctx = zmq.Context()
        pull = ctx.socket(zmq.PULL)
        pull.setsockopt(zmq.RCVTIMEO, 20_000)
        endpoint = f"ipc://{directory}/z"
        pull.bind(endpoint)
        child = xproc._spawn("pyzmq", "AF_UNIX", endpoint, count, "single")
        try:
            for i in range(count):
                assert pull.recv_pyobj() == xproc.MESSAGE
                if i % 5 == 0:
                    time.sleep(0.001)    # slower than the sender: a backlog when it has sent all
            assert child.poll() is None  # still waiting for "done"
            assert float(xproc._child_output(child)[0]) > 0
        finally:
            if child.poll() is None:
                child.kill()
                child.communicate()
            pull.close(linger=0)
            ctx.term()


@needs_zmq
def test_pyzmq_receiver_raises_when_its_sender_dies():
    """A dead pyzmq peer ends a row with an error within seconds, not a hang:
    pyzmq has no end of stream."""
    import zmq
    ctx = zmq.Context()
    pull = ctx.socket(zmq.PULL)
    try:
        with tempfile.TemporaryDirectory() as directory:
            endpoint = xproc._zmq_bind(pull, "AF_UNIX", directory)
            child = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
            child.wait(timeout=60)
            with pytest.raises(RuntimeError, match=r"exited \(status 3\)"):
                xproc._zmq_receive(pull, pull.recv_pyobj, 1, child)
            assert endpoint.startswith("ipc://")
    finally:
        pull.close(linger=0)
        ctx.term()


PAUSING_SENDER = """
import sys, time, zmq
push = zmq.Context().socket(zmq.PUSH)
push.connect(sys.argv[1])
for i in range(4):
    push.send_pyobj(i)
    if i == 1:
        time.sleep(2.5)
sys.stdin.read()
push.close(linger=-1)
"""


@needs_zmq
def test_pyzmq_receiver_takes_every_message_across_a_pause():
    """A pause longer than the receiver's one-second wait loses no message and
    skips none: the receive that timed out is still due."""
    import zmq
    ctx = zmq.Context()
    pull = ctx.socket(zmq.PULL)
    try:
        with tempfile.TemporaryDirectory() as directory:
            endpoint = xproc._zmq_bind(pull, "AF_UNIX", directory)
            child = subprocess.Popen([sys.executable, "-c", PAUSING_SENDER, endpoint], stdin=subprocess.PIPE)
            try:
                got = []
                xproc._zmq_receive(pull, lambda: got.append(pull.recv_pyobj()), 3, child)
                assert got == [0, 1, 2]
                assert pull.recv_pyobj() == 3
            finally:
                child.communicate(timeout=60)
    finally:
        pull.close(linger=0)
        ctx.term()


needs_numpy = pytest.mark.skipif(importlib.util.find_spec("numpy") is None, reason="numpy is not installed")


@needs_numpy
@pytest.mark.parametrize("impl", ["fastwire", "mp.connection", xproc.CEILING])
def test_an_array_row_delivers_the_array_and_measures_the_receiver(impl):
    """One 64 MiB row end to end, two messages: the child checks the first
    array it rebuilt (else it exits non-zero and the row raises)."""
    rate, peak = xproc.array_rate(impl, "AF_UNIX", "array", 2)
    assert rate > 0
    if impl == xproc.CEILING:
        assert peak is None or peak < 0.5     # its buffer was filled before the measure began
    elif peak is not None:
        assert peak >= 0.95                   # the receiver holds the array at least once


@needs_numpy
@pytest.mark.skipif(not xproc.out_of_band_available(), reason="fastwire.net has no out_of_band option")
@pytest.mark.parametrize("kind", ["array", "dict", "bytearray", "memoryview"])
def test_out_of_band_rows_deliver_what_was_sent(kind):
    rate, _ = xproc.array_rate(xproc.OUT_OF_BAND, "AF_UNIX", kind, 2)
    assert rate > 0


@needs_numpy
@needs_zmq
def test_the_pyzmq_zero_copy_row_delivers_the_dict_of_arrays():
    rate, _ = xproc.array_rate(xproc.ZERO_COPY, "AF_INET", "dict", 2)
    assert rate > 0


@needs_numpy
@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="counts threads in Linux /proc")
def test_a_receiving_child_imports_numpy_without_a_blas_thread_pool():
    # Its spinning threads' CPU seconds would count as the receiver's.
    code = "import os, numpy; print(len(os.listdir('/proc/self/task')))"
    out = subprocess.run([sys.executable, "-c", code], env=xproc._child_env("receive dict"),
                         capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "1"


@needs_numpy
def test_the_receiving_check_refuses_something_else():
    import numpy as np
    with pytest.raises(AssertionError, match="something else"):
        xproc._check("array", np.zeros(xproc.ARRAY_BYTES // 8))
    with pytest.raises(AssertionError, match="something else"):
        xproc._check("memoryview", bytearray(xproc._payload("memoryview", "fastwire")))
    xproc._check("memoryview", xproc._payload("memoryview", "fastwire"))


def test_bm_pickle_group_is_the_benchmarks_mutation_of_its_dict():
    """bm_pickle builds DICT_GROUP by copying DICT three times and giving every
    key, in order, type(key)(random_source.random() * sys.maxsize) from one
    random.Random(5): replayed here step by step, as the benchmark writes it."""
    import random

    from fastwire._bench import corpus

    source = random.Random(5)
    expected = []
    for _ in range(3):
        copy = dict(corpus.BM_PICKLE_DICT)
        for key in copy:
            copy[key] = type(key)(source.random() * sys.maxsize)
        expected.append(copy)
    assert expected == corpus.BM_PICKLE_GROUP
    assert len(corpus.BM_PICKLE_TUPLE[0]) == 20 and len(corpus.BM_PICKLE_DICT) == 33


def test_the_five_bm_pickle_cases_run_on_both_sides():
    from fastwire._bench import corpus_cases

    pairs = corpus_cases.bm_pickle_pairs()
    assert [p.name.rsplit(": ", 1)[1] for p in pairs] == [
        "pickle", "unpickle", "pickle_list", "unpickle_list", "pickle_dict"]
    for pair in pairs:
        assert pair.target == corpus_cases.BM_PICKLE_TARGET
        assert pair.stdlib() is None and pair.fastwire() is None


needs_affinity = pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="CPU affinity is Linux's")


@needs_affinity
def test_a_child_given_a_cpu_runs_on_that_cpu_alone():
    cpu = max(os.sched_getaffinity(0))
    env = dict(os.environ, **{xproc._CPU_VARIABLE: str(cpu)})
    code = "import os; from fastwire._bench import xproc; xproc._pin_from_env(); print(sorted(os.sched_getaffinity(0)))"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120,
                         check=True)
    assert out.stdout.strip() == f"[{cpu}]"


@needs_numpy
@needs_affinity
@pytest.mark.skipif(not xproc.out_of_band_available(), reason="fastwire.net has no out_of_band option")
def test_an_array_row_with_cpus_delivers_and_gives_this_process_its_cpus_back():
    own = os.sched_getaffinity(0)
    cpu = min(own)
    rate, _ = xproc.array_rate(xproc.OUT_OF_BAND, "AF_UNIX", "dict", 2, cpus=(cpu, cpu))
    assert rate > 0
    assert os.sched_getaffinity(0) == own
