"""Dask benchmarks: the "fastwire" family against Dask's "pickle" family, and end to
end on a 2-worker LocalCluster (``python -m fastwire bench --dask``).

Needs ``distributed`` (the ``dask`` extra) and NumPy; callers check
:func:`missing` first.
"""

from __future__ import annotations

import contextlib
import cProfile
import io
import pstats
import statistics
import time

from . import Pair

OBJECT_HEAVY = ("100000 records", "1000 lists of 100 floats", "200000 small tuples")
ARRAY = "64 MiB float64 array"


def missing() -> str | None:
    """Why the Dask benchmarks cannot run here, or None if they can."""
    try:
        import distributed  # noqa: F401
        import numpy  # noqa: F401
    except ImportError as exc:
        return (f"Dask benchmarks need Dask distributed and NumPy ({exc.name} is not installed): "
                "python -m pip install 'fastwire[dask]' numpy")
    return None


def records(n: int) -> list[dict]:
    """n records of the pickle data sets' shape (id, name, score, tags, active)."""
    return [{"id": i, "name": f"user{i}", "score": i * 1.5, "tags": ["a", f"t{i % 7}"], "active": i % 2 == 0}
            for i in range(n)]


def datasets() -> dict[str, object]:
    import numpy as np

    return {
        "100000 records": records(100_000),
        "1000 lists of 100 floats": {f"k{i}": [i + j * 0.25 for j in range(100)] for i in range(1000)},
        "200000 small tuples": [(i, i * 0.5, "t") for i in range(200_000)],
        ARRAY: np.arange((64 << 20) // 8, dtype=np.float64),
    }


def _round_trip(value, family: str):
    from distributed.protocol import deserialize, serialize

    def run():
        header, frames = serialize(value, serializers=[family], on_error="raise")
        return deserialize(header, frames)

    return run


def pairs() -> list[Pair]:
    """serialize + deserialize round trips: Dask's "pickle" family vs fastwire's."""
    import fastwire.dask  # noqa: F401  (registers the family)

    out = []
    for name, value in datasets().items():
        target = 2.0 if name in OBJECT_HEAVY else 1.0
        out.append(Pair(f"dask round trip: {name}", "dask", _round_trip(value, "pickle"),
                        _round_trip(value, "fastwire"), target))
    return out


def array_is_zero_copy() -> bool:
    """Whether the fastwire family hands the 64 MiB array's own memory to Dask and
    rebuilds it on the received memory (no copy either way)."""
    import numpy as np
    from distributed.protocol import deserialize, serialize

    array = np.arange((64 << 20) // 8, dtype=np.float64)
    header, frames = serialize(array, serializers=["fastwire"])
    sent = np.frombuffer(frames[1], dtype=np.uint8).ctypes.data == array.ctypes.data
    received = [frames[0], memoryview(bytearray(frames[1]))]  # what a socket delivers
    out = deserialize(header, received)
    return sent and np.frombuffer(received[1], dtype=np.uint8).ctypes.data == out.ctypes.data


# ---- end to end on a real cluster -------------------------------------------------

def make_records(n, wrap):
    import fastwire.dask

    made = records(n)
    return fastwire.dask.whole(made) if wrap else made


def count(values):
    return len(values)


def inc(x):
    return x + 1


@contextlib.contextmanager
def _clusters():
    """Two 2-worker x 1-thread clusters on 127.0.0.1: Dask's defaults, and fastwire
    (worker preload + client families)."""
    import dask
    from distributed import Client, LocalCluster

    import fastwire.dask as fd

    options = dict(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                   dashboard_address="127.0.0.1:0", worker_dashboard_address=None)
    with LocalCluster(**options) as plain:
        with dask.config.set({"distributed.worker.preload": ["fastwire.dask"]}):
            fast = LocalCluster(**options)
        with fast, Client(plain) as default_client, \
                Client(fast, serializers=fd.SERIALIZERS, deserializers=fd.SERIALIZERS) as fw_client:
            default_client.wait_for_workers(2)
            fw_client.wait_for_workers(2)
            yield default_client, fw_client


def _transfer_seconds(client, n: int, wrap: bool) -> float:
    """Make n records on one worker, then time a task on the other worker that needs them."""
    w1, w2 = sorted(client.scheduler_info()["workers"])
    source = client.submit(make_records, n, wrap, workers=[w1], pure=False)
    client.gather(client.submit(count, source, workers=[w1], pure=False))  # made, not moved yet
    start = time.perf_counter()
    moved = client.submit(count, source, workers=[w2], pure=False).result()
    elapsed = time.perf_counter() - start
    assert moved == n
    client.cancel(source)
    return elapsed


def _pickle_seconds(value) -> float:
    import pickle

    start = time.perf_counter()
    pickle.loads(pickle.dumps(value, protocol=5))
    return time.perf_counter() - start


@contextlib.contextmanager
def _timed_dask_pickle():
    """Accumulate the seconds this process spends in Dask's pickle path."""
    import distributed.protocol.pickle as dask_pickle

    spent = [0.0]
    dumps, loads = dask_pickle.dumps, dask_pickle.loads

    def timed(fn):
        def wrapper(*args, **kwargs):
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                spent[0] += time.perf_counter() - start
        return wrapper

    dask_pickle.dumps, dask_pickle.loads = timed(dumps), timed(loads)
    try:
        yield spent
    finally:
        dask_pickle.dumps, dask_pickle.loads = dumps, loads


def _worker_pickle_timer(dask_worker, action):
    """Run on a worker: start or stop timing its Dask pickle path; stop returns seconds."""
    if action == "start":
        dask_worker._fastwire_bench_timer = _timed_dask_pickle()
        dask_worker._fastwire_bench_spent = dask_worker._fastwire_bench_timer.__enter__()
        return 0.0
    dask_worker._fastwire_bench_timer.__exit__(None, None, None)
    return dask_worker._fastwire_bench_spent[0]


def _scheduler_profile(dask_scheduler, action):
    """Run on the scheduler (in its event-loop thread): start, or stop and report, a cProfile."""
    if action == "start":
        dask_scheduler._fastwire_bench_profile = cProfile.Profile()
        dask_scheduler._fastwire_bench_profile.enable()
        return ""
    profile = dask_scheduler._fastwire_bench_profile
    profile.disable()
    return _profile_text(profile)


def _profile_text(profile: cProfile.Profile, limit: int = 12) -> str:
    out = io.StringIO()
    pstats.Stats(profile, stream=out).sort_stats("tottime").print_stats(limit)
    lines = [line for line in out.getvalue().splitlines() if line.strip()]
    start = next(i for i, line in enumerate(lines) if line.lstrip().startswith("ncalls"))
    return "\n".join(lines[start:start + limit + 1])


def cluster_report(reps: int = 5, n: int = 100_000, tasks: int = 20_000) -> dict:
    """End-to-end figures on two 2-worker LocalClusters; medians of ``reps`` (interleaved)."""
    from distributed.protocol import dumps as message_dumps
    from distributed.protocol import loads as message_loads
    from distributed.protocol import to_serialize

    plain_records = records(n)
    report: dict = {"records": n, "reps": reps}
    with _clusters() as (default_client, fw_client):
        variants = {
            "Dask default, plain list": (default_client, False),
            "Dask default, whole(list)": (default_client, True),
            "fastwire, plain list": (fw_client, False),
            "fastwire, whole(list)": (fw_client, True),
        }
        times: dict[str, list[float]] = {name: [] for name in variants}
        for _ in range(reps):
            for name, (client, wrap) in variants.items():
                times[name].append(_transfer_seconds(client, n, wrap))
        report["worker_to_worker_seconds"] = {name: statistics.median(t) for name, t in times.items()}
        report["pickle_round_trip_seconds"] = statistics.median(_pickle_seconds(plain_records) for _ in range(reps))

        # What one get_data does to a plain list, profiled in this process.
        profile = cProfile.Profile()
        profile.enable()
        message_loads(message_dumps({"data": to_serialize(plain_records)}))
        profile.disable()
        report["plain_list_message_profile"] = _profile_text(profile)

        # A 20,000-task map: how much of it is pickle, in every process. The
        # scheduler (LocalCluster runs it in this process) works in its event-loop
        # thread, so that thread is the one profiled.
        default_client.run(_worker_pickle_timer, action="start")
        with _timed_dask_pickle() as here:
            default_client.run_on_scheduler(_scheduler_profile, action="start")
            start = time.perf_counter()
            results = default_client.gather(default_client.map(inc, range(tasks), pure=False))
            wall = time.perf_counter() - start
            scheduler_profile = default_client.run_on_scheduler(_scheduler_profile, action="stop")
        workers = default_client.run(_worker_pickle_timer, action="stop")
        assert results == list(range(1, tasks + 1))
        report["map"] = {
            "tasks": tasks,
            "wall_seconds": wall,
            "pickle_seconds_client_and_scheduler": here[0],
            "pickle_seconds_workers": sum(workers.values()),
            "profile_scheduler_thread": scheduler_profile,
        }
    return report


def print_cluster_report(report: dict) -> None:
    moves = report["worker_to_worker_seconds"]
    base = moves["Dask default, plain list"]
    print(f"\nMoving {report['records']:,} records from one worker to a task on the other "
          f"(median of {report['reps']}, 2 workers x 1 thread):")
    for name, seconds in moves.items():
        print(f"  {name:<28} {seconds * 1e3:9.1f} ms   {base / seconds:6.2f}x vs Dask default")
    fw = moves["fastwire, whole(list)"]
    target = "meets" if base / fw >= 1.3 else "below"
    print(f"  fastwire setup vs Dask's default setup: {base / fw:.2f}x ({target} the 1.3x target); "
          f"codec alone (whole(list) both sides): {moves['Dask default, whole(list)'] / fw:.2f}x")
    print(f"  pickle.dumps + pickle.loads of the same list: {report['pickle_round_trip_seconds'] * 1e3:.1f} ms")
    print("\nWhere a plain list's transfer goes (one get_data message, this process, by own time):")
    print(report["plain_list_message_profile"])
    m = report["map"]
    share = (m["pickle_seconds_client_and_scheduler"] + m["pickle_seconds_workers"]) / m["wall_seconds"]
    print(f"\nclient.map over {m['tasks']:,} tasks: {m['wall_seconds']:.2f} s wall; Dask's pickle path "
          f"{m['pickle_seconds_client_and_scheduler'] * 1e3:.1f} ms in client+scheduler, "
          f"{m['pickle_seconds_workers'] * 1e3:.1f} ms in workers = {share:.2%} of the wall time")
    print("Scheduler event-loop thread during the map (cProfile, by own time; profiling slows it):")
    print(m["profile_scheduler_thread"])
