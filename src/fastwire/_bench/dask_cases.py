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
#: Data whose classes and functions a script defines (in ``__main__``): what most
#: Dask users send, by value in the fastwire family, through cloudpickle in Dask's.
SCRIPT_DEFINED = ("list of 100000 script dataclasses", "dict of 20000 script dataclasses",
                  "script class holding 200000 tuples", "1000 tasks of script functions",
                  "one script task function")

# Defined in the running program's real ``__main__`` module (see script_namespace),
# as a user's script or notebook defines them.
SCRIPT_SOURCE = """
import dataclasses as _fastwire_bench_dataclasses


@_fastwire_bench_dataclasses.dataclass
class FastwireBenchLedger:
    account: int
    name: str
    amount: float
    cleared: bool


class FastwireBenchTrack:
    def __init__(self, points):
        self.points = points


FASTWIRE_BENCH_RATE = 1.5


def fastwire_bench_score(row, weight=1.0):
    return row.amount * weight * FASTWIRE_BENCH_RATE


def fastwire_bench_label(row):
    return f"{row.name}:{fastwire_bench_score(row):.2f}"


def fastwire_bench_scaler(factor):
    def scale(row):
        return row.amount * factor
    return scale
"""


def script_namespace() -> dict:
    """The namespace of ``__main__`` after running SCRIPT_SOURCE in it (once).

    The classes must really live in ``__main__``: Dask's pickle family pickles them
    by name first and only then, finding ``__main__`` in the bytes, again with
    cloudpickle; a stand-in module would take a cheaper path through it."""
    import sys

    namespace = sys.modules["__main__"].__dict__
    if "FastwireBenchLedger" not in namespace:
        exec(compile(SCRIPT_SOURCE, "<fastwire bench script>", "exec"), namespace)
    return namespace


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


def script_datasets() -> dict[str, object]:
    script = script_namespace()
    ledger, track = script["FastwireBenchLedger"], script["FastwireBenchTrack"]
    score, label, scaler = script["fastwire_bench_score"], script["fastwire_bench_label"], \
        script["fastwire_bench_scaler"]

    def row(i):
        return ledger(i, f"user{i}", i * 0.5, i % 2 == 0)

    scale = scaler(2.0)
    return {
        "list of 100000 script dataclasses": [row(i) for i in range(100_000)],
        "dict of 20000 script dataclasses": {f"k{i}": row(i) for i in range(20_000)},
        "script class holding 200000 tuples": track([(i, i * 0.5, "t") for i in range(200_000)]),
        # A graph's worth of tasks: three script functions (one a closure), many calls.
        "1000 tasks of script functions": [((score, label, scale)[i % 3], row(i), {"weight": 1.0} if i % 3 == 0 else {})
                                           for i in range(1000)],
        "one script task function": score,
    }


def datasets() -> dict[str, object]:
    import numpy as np

    return {
        **script_datasets(),
        "100000 records": records(100_000),
        "1000 lists of 100 floats": {f"k{i}": [i + j * 0.25 for j in range(100)] for i in range(1000)},
        "200000 small tuples": [(i, i * 0.5, "t") for i in range(200_000)],
        ARRAY: np.arange((64 << 20) // 8, dtype=np.float64),
    }


def _collect_young(value):
    """Run the collector's youngest generation while ``value`` is still alive.

    A received value stays in memory while the program goes on (in a worker's
    data), so the collector examines it at least once; a family that defers that
    work (fastwire pauses the collector while unpickling, and the pass then comes
    at the next allocation) must pay it inside its own timing, not in whatever
    the benchmark runs next. For a family that did not defer it the youngest
    generation holds at most a few hundred objects here: a negligible cost.
    """
    import gc

    gc.collect(0)
    return value


def _round_trip(value, serializers, expect=None):
    """serialize + deserialize with Dask's ``serializers`` list; checks that family
    ``expect`` (default: the first listed) was the one used, so that no pair
    silently measures another family."""
    from distributed.protocol import deserialize, serialize

    expect = expect or serializers[0]

    def run():
        header, frames = serialize(value, serializers=serializers, on_error="raise")
        assert header["serializer"] == expect, header["serializer"]
        return _collect_young(deserialize(header, frames))

    return run


def pairs() -> list[Pair]:
    """serialize + deserialize round trips: Dask's "pickle" family vs fastwire's.

    The array is Dask's own NumPy serializer's either way (the "dask" family, first
    in Dask's default list; fastwire's family defers to it): that pair compares
    Dask's default list with fastwire's, i.e. the cost of the family declining."""
    import fastwire.dask

    out = []
    for name, value in datasets().items():
        if name == ARRAY:
            sides = (_round_trip(value, ["dask", "pickle"]),
                     _round_trip(value, list(fastwire.dask.SERIALIZERS), expect="dask"))
        else:
            sides = (_round_trip(value, ["pickle"]), _round_trip(value, ["fastwire"]))
        target = 2.0 if name in OBJECT_HEAVY + SCRIPT_DEFINED else 1.0
        out.append(Pair(f"dask round trip: {name}", "dask", *sides, target))
    return out


def print_summary(results, zero_copy: bool) -> None:
    """The geometric means the targets are stated in, per group of data sets."""
    from . import geometric_mean

    def speedups(group):
        return [r.speedup for r in results if r.name.split(": ", 1)[1] in group]

    script, heavy = speedups(SCRIPT_DEFINED), speedups(OBJECT_HEAVY)
    print(f"geometric mean, classes and functions defined in __main__: {geometric_mean(script):.2f}x "
          f"(target 2.0x, none under 1.2x; lowest {min(script):.2f}x)")
    print(f"geometric mean, importable data: {geometric_mean(heavy):.2f}x (target 2.0x); "
          f"64 MiB array (Dask's own serializer either way) zero-copy both ways: "
          f"{'yes' if zero_copy else 'NO'}")


def array_is_zero_copy() -> bool:
    """Whether fastwire's serializer list (whose family leaves arrays to Dask's own
    serializer) hands the 64 MiB array's own memory to Dask and rebuilds it on the
    received memory (no copy either way)."""
    import numpy as np
    from distributed.protocol import deserialize, serialize

    import fastwire.dask

    array = np.arange((64 << 20) // 8, dtype=np.float64)
    header, frames = serialize(array, serializers=list(fastwire.dask.SERIALIZERS))
    sent = np.frombuffer(frames[-1], dtype=np.uint8).ctypes.data == array.ctypes.data
    received = [*frames[:-1], memoryview(bytearray(frames[-1]))]  # what a socket delivers
    out = deserialize(header, received)
    return sent and np.frombuffer(received[-1], dtype=np.uint8).ctypes.data == out.ctypes.data


def _seconds(fn, reps: int) -> list[float]:
    out = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return out


def round_trip_breakdown(reps: int = 5) -> dict:
    """Where each family's round trip goes, per object-heavy data set (medians of
    ``reps``, interleaved): the whole serialize + deserialize, and the codec alone
    (dumps + loads of the same value, the cyclic GC on as Dask runs it, and for
    fastwire also paused as its family runs it; each then collects the youngest
    generation, see _collect_young). Family minus codec is the time in Dask's
    serialize/deserialize and in the family functions' own code."""
    import gc
    import pickle

    import fastwire.dask  # noqa: F401  (registers the family)
    from fastwire import pickle as fw_pickle
    from fastwire.dask import _gc_pause

    def codec(module, value, pause):
        # "Paused" is the family's own policy (threshold, counted pause), not a
        # copy of it, so the column measures what the family does.
        def run():
            data = module.dumps(value, protocol=5)
            out = _gc_pause.loads_paused(module.loads, data) if pause else module.loads(data)
            return _collect_young(out)
        return run

    out = {}
    for name, value in datasets().items():
        if name not in OBJECT_HEAVY:
            continue
        columns = {
            "pickle family": _round_trip(value, ["pickle"]),
            "stdlib codec, GC on": codec(pickle, value, False),
            "fastwire family": _round_trip(value, ["fastwire"]),
            "fastwire codec, GC on": codec(fw_pickle, value, False),
            "fastwire codec, GC paused": codec(fw_pickle, value, True),
        }
        times: dict[str, list[float]] = {column: [] for column in columns}
        for _ in range(reps):
            for column, fn in columns.items():
                # Each call starts from the same collector state (a full collection,
                # untimed) so that no column pays a collection another one made due.
                gc.collect()
                times[column].extend(_seconds(fn, 1))
        out[name] = {column: statistics.median(t) for column, t in times.items()}
    return out


def print_round_trip_breakdown(breakdown: dict) -> None:
    print("\nWhere the round trip goes (ms, medians; outside = family minus its codec: Dask's "
          "serialize/deserialize and the family functions):")
    print(f"  {'data set':<26} {'pickle fam':>10} {'stdlib codec':>12} {'outside':>8}   "
          f"{'fastwire fam':>12} {'fw codec GC on':>14} {'fw codec GC paused':>18} {'outside':>8}")
    for name, t in breakdown.items():
        ms = {k: v * 1e3 for k, v in t.items()}
        print(f"  {name:<26} {ms['pickle family']:>10.1f} {ms['stdlib codec, GC on']:>12.1f} "
              f"{ms['pickle family'] - ms['stdlib codec, GC on']:>8.1f}   {ms['fastwire family']:>12.1f} "
              f"{ms['fastwire codec, GC on']:>14.1f} {ms['fastwire codec, GC paused']:>18.1f} "
              f"{ms['fastwire family'] - ms['fastwire codec, GC paused']:>8.1f}")


def family_seconds_per_record(family: str, calls: int = 20_000) -> float:
    """One record through ``family``'s own dumps and loads (no Dask around it):
    what the family costs per element when Dask serializes a list element by
    element. Median of 3 runs of ``calls`` calls."""
    from distributed.protocol.serialize import families

    import fastwire.dask  # noqa: F401  (registers the family)

    encode, decode, wants_context = families[family]
    record = records(1)[0]

    def run():
        for _ in range(calls):
            header, frames = encode(record, context=None) if wants_context else encode(record)
            decode(header, frames)

    return statistics.median(_seconds(run, 3)) / calls


def _timed(fn, spent: list):
    """fn, adding the seconds each call takes to spent[0]."""
    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            spent[0] += time.perf_counter() - start
    return wrapper


def message_split(family: str, serializers, value, reps: int = 3) -> tuple[float, float]:
    """``value`` sent through Dask's message layer (dumps + loads, what one get_data
    does), in this process: (median total seconds, seconds inside ``family``'s own
    dumps and loads). The total is timed without the instrumentation."""
    from distributed.protocol import dumps as message_dumps, loads as message_loads, to_serialize
    from distributed.protocol.serialize import families

    def send():
        message_loads(message_dumps({"data": to_serialize(value)}, serializers=serializers),
                      deserializers=serializers)

    total = statistics.median(_seconds(send, reps))
    spent = [0.0]

    original = families[family]
    encode, decode, wants_context = original
    families[family] = (_timed(encode, spent), _timed(decode, spent), wants_context)
    try:
        send()
    finally:
        families[family] = original
    return total, spent[0]


# ---- end to end on a real cluster -------------------------------------------------

def make_records(n, wrap):
    import fastwire.dask

    made = records(n)
    return fastwire.dask.whole(made) if wrap else made


def make_small_ints(n, wrap):
    """A list of n small ints: each element costs any family next to nothing, so
    moving it as a plain list measures Dask's per-element machinery alone."""
    import fastwire.dask

    made = list(range(n))
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


def _transfer_seconds(client, n: int, wrap: bool, make=make_records) -> float:
    """Make n records (or what ``make`` makes) on one worker, then time a task on
    the other worker that needs them."""
    w1, w2 = sorted(client.scheduler_info()["workers"])
    source = client.submit(make, n, wrap, workers=[w1], pure=False)
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

    dask_pickle.dumps, dask_pickle.loads = _timed(dumps, spent), _timed(loads, spent)
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
    from distributed.protocol import dumps as message_dumps, loads as message_loads, to_serialize

    plain_records = records(n)
    report: dict = {"records": n, "reps": reps, "round_trip_breakdown": round_trip_breakdown(reps)}
    with _clusters() as (default_client, fw_client):
        variants = {
            "Dask default, plain list": (default_client, False, make_records),
            "Dask default, whole(list)": (default_client, True, make_records),
            "fastwire, plain list": (fw_client, False, make_records),
            "fastwire, whole(list)": (fw_client, True, make_records),
            # The same number of elements, each next to free for any family.
            "fastwire, plain list of ints": (fw_client, False, make_small_ints),
        }
        times: dict[str, list[float]] = {name: [] for name in variants}
        for _ in range(reps):
            for name, (client, wrap, make) in variants.items():
                times[name].append(_transfer_seconds(client, n, wrap, make))
        report["worker_to_worker_seconds"] = {name: statistics.median(t) for name, t in times.items()}
        report["pickle_round_trip_seconds"] = statistics.median(_pickle_seconds(plain_records) for _ in range(reps))

        # A plain list in one message, in this process: time in the family that
        # encodes the elements vs everything else (Dask's per-element machinery).
        import fastwire.dask as fd

        report["family_seconds_per_record"] = {
            "Dask default": family_seconds_per_record("pickle"),
            "fastwire": family_seconds_per_record("fastwire"),
        }
        report["plain_list_message"] = {
            "Dask default": message_split("pickle", None, plain_records),
            "fastwire": message_split("fastwire", list(fd.SERIALIZERS), plain_records),
        }

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
    print_round_trip_breakdown(report["round_trip_breakdown"])
    moves = report["worker_to_worker_seconds"]
    base = moves["Dask default, plain list"]
    print(f"\nMoving {report['records']:,} records from one worker to a task on the other "
          f"(median of {report['reps']}, 2 workers x 1 thread):")
    for name, seconds in moves.items():
        print(f"  {name:<28} {seconds * 1e3:9.1f} ms   {base / seconds:6.2f}x vs Dask default")
    n = report["records"]
    per_record = report["family_seconds_per_record"]
    fw_plain = moves["fastwire, plain list"]
    print(f"  plain list: {base / n * 1e6:.1f} us per record (Dask default), {fw_plain / n * 1e6:.1f} us (fastwire); "
          f"the families' own dumps+loads of one record: {per_record['Dask default'] * 1e6:.2f} us (pickle), "
          f"{per_record['fastwire'] * 1e6:.2f} us (fastwire)")
    print(f"  so a family that cost nothing would still leave {(fw_plain / n - per_record['fastwire']) * 1e6:.1f} us "
          f"per record: {base / (fw_plain - n * per_record['fastwire']):.2f}x at most on a plain list; "
          f"small ints, next to free for any family, move at "
          f"{moves['fastwire, plain list of ints'] / n * 1e6:.1f} us per element")
    fw = moves["fastwire, whole(list)"]
    target = "meets" if base / fw >= 1.3 else "below"
    print(f"  fastwire setup vs Dask's default setup: {base / fw:.2f}x ({target} the 1.3x target); "
          f"codec alone (whole(list) both sides): {moves['Dask default, whole(list)'] / fw:.2f}x")
    print(f"  pickle.dumps + pickle.loads of the same list: {report['pickle_round_trip_seconds'] * 1e3:.1f} ms")
    print("\nOne message carrying the plain list through Dask's message layer in this process "
          "(median of 3), per element:")
    split = report["plain_list_message"]
    for name, (total, in_family) in split.items():
        print(f"  {name:<13} {total / n * 1e6:6.2f} us total, {in_family / n * 1e6:5.2f} us in the family's "
              f"dumps+loads (with the collections triggered there), "
              f"{(total - in_family) / n * 1e6:6.2f} us in Dask around it")
    default_total = split["Dask default"][0]
    fw_total, fw_family = split["fastwire"]
    print(f"  ratio {default_total / fw_total:.2f}x; with a family that took no time at all: "
          f"{default_total / (fw_total - fw_family):.2f}x at most")
    print("\nWhere a plain list's transfer goes (one get_data message, this process, by own time):")
    print(report["plain_list_message_profile"])
    m = report["map"]
    share = (m["pickle_seconds_client_and_scheduler"] + m["pickle_seconds_workers"]) / m["wall_seconds"]
    print(f"\nclient.map over {m['tasks']:,} tasks: {m['wall_seconds']:.2f} s wall; Dask's pickle path "
          f"{m['pickle_seconds_client_and_scheduler'] * 1e3:.1f} ms in client+scheduler, "
          f"{m['pickle_seconds_workers'] * 1e3:.1f} ms in workers = {share:.2%} of the wall time")
    print("Scheduler event-loop thread during the map (cProfile, by own time; profiling slows it):")
    print(m["profile_scheduler_thread"])
