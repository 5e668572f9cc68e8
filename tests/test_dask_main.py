"""What users have: classes and functions defined in the script they run (``__main__``)
moving through a real Dask cluster in the "fastwire" family.

The script below runs as ``python -c`` in a child interpreter, as a notebook's
code runs: its ``__main__`` has no file, so the cluster's worker processes
(spawned) never run it and can only know its classes from the values they
receive. It starts a LocalCluster (2 worker processes), moves its objects client
to worker, worker to worker and back through ``scatter``, ``submit``, ``map`` and
``gather``, and reports, from the receiving side of each hop, which family
decoded what (``fastwire.dask.decode_counts``). A second fresh interpreter, which
never saw the script either, then loads frames the script wrote.
"""

from __future__ import annotations

import pickle
import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("distributed", reason="fastwire.dask needs Dask distributed (pip install 'fastwire[dask]')")

SCRIPT = textwrap.dedent('''
    import collections, dataclasses, pickle, sys
    import dask
    from distributed import Client, LocalCluster
    import fastwire.dask as fd

    @dataclasses.dataclass
    class Ledger:
        account: int
        amount: float

    class Track:
        def __init__(self, points):
            self.points = points

    OFFSET = 10

    def total(rows):
        return sum(r.amount for r in rows) + OFFSET

    def make_ledger(i):
        return Ledger(i, i * 0.5)

    def make_scaler(k):
        def scaler(x):
            return x * k
        return scaler

    def on_worker(value):
        """Runs where value arrived: what this worker knows of the script."""
        main = sys.modules["__main__"]
        first = value[0] if isinstance(value, list) else value
        return {"script_here": hasattr(main, "Ledger") or hasattr(main, "OFFSET"),
                "type": type(first).__name__, "module": type(first).__module__}

    def delta(before, after):
        changed = collections.Counter(after)
        changed.subtract(before)
        return {name: n for name, n in changed.items() if n}

    with dask.config.set({"distributed.worker.preload": ["fastwire.dask"]}):
        cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                               dashboard_address="127.0.0.1:0", worker_dashboard_address=None)
    report = {}
    with cluster, Client(cluster, serializers=fd.SERIALIZERS, deserializers=fd.SERIALIZERS) as client:
        client.wait_for_workers(2)
        fd.track_decodes()
        client.run(fd.track_decodes)
        w1, w2 = sorted(client.scheduler_info()["workers"])
        rows = fd.whole([Ledger(i, i * 0.5) for i in range(1000)])
        track = Track([(i, i * 0.25, "t") for i in range(1000)])
        scaler, square = make_scaler(3), (lambda x: x * x)

        before = client.run(fd.decode_counts)
        futures = client.scatter([rows, track, scaler, square], workers=[w1], direct=True)
        report["client to w1"] = delta(before[w1], client.run(fd.decode_counts)[w1])

        before = client.run(fd.decode_counts)
        results = [client.submit(total, futures[0], workers=[w2], pure=False),
                   client.submit(on_worker, futures[0], workers=[w2], pure=False),
                   client.submit(lambda t: len(t.points), futures[1], workers=[w2], pure=False),
                   client.submit(lambda f, g: f(2) + g(5), futures[2], futures[3], workers=[w2], pure=False)]
        report["task results"] = client.gather(results, direct=True)
        report["w1 to w2"] = delta(before[w2], client.run(fd.decode_counts)[w2])

        here = fd.decode_counts()
        made = client.gather(client.map(make_ledger, range(20), workers=[w1], pure=False), direct=True)
        report["map results at the client"] = delta(here, fd.decode_counts())
        report["map results"] = [type(m).__name__ == "Ledger" and m.amount == m.account * 0.5 for m in made]
        report["client classes"] = [type(m) is Ledger for m in made]

    header, frames = fd.dumps({"rows": rows[:10], "total": total, "scaler": scaler, "square": square})
    with open(sys.argv[1], "wb") as out:
        pickle.dump({"report": report, "header": header, "frames": [bytes(f) for f in frames]}, out)
''')

ELSEWHERE = textwrap.dedent('''
    import pickle, sys
    import fastwire.dask, fastwire.pickle
    saved = pickle.load(open(sys.argv[1], "rb"))
    frames = saved["frames"]
    for value in (fastwire.dask.loads(saved["header"], frames), pickle.loads(frames[0], buffers=frames[1:])):
        assert not hasattr(sys.modules["__main__"], "Ledger")
        rows = value["rows"]
        print(type(rows[0]).__name__, type(rows[0]).__module__, value["total"](rows),
              value["scaler"](4), value["square"](6))
''')


@pytest.fixture(scope="module")
def script_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("script") / "result.pickle"
    done = subprocess.run([sys.executable, "-c", SCRIPT, str(out)], capture_output=True, timeout=300)
    assert done.returncode == 0, done.stderr.decode()[-4000:]
    with open(out, "rb") as saved:
        return out, pickle.load(saved)


def test_script_objects_decoded_by_the_family_on_the_worker_they_reach(script_run):
    report = script_run[1]["report"]
    # Scatter: four values, each decoded on w1 by the fastwire family.
    assert report["client to w1"] == {"fastwire": 4}
    # Worker to worker: what the four tasks on w2 needed, fetched from w1 in the family.
    assert report["w1 to w2"] == {"fastwire": 4}


def test_worker_that_never_ran_the_script_rebuilds_its_classes_and_functions(script_run):
    total, seen, points, called = script_run[1]["report"]["task results"]
    assert total == sum(i * 0.5 for i in range(1000)) + 10
    assert seen == {"script_here": False, "type": "Ledger", "module": "__main__"}
    assert points == 1000 and called == 2 * 3 + 25


def test_map_results_come_back_to_the_script_in_the_family_as_its_own_class(script_run):
    report = script_run[1]["report"]
    at_client = report["map results at the client"]
    # Twenty results in the family; the map's graph, decoded by the scheduler that
    # LocalCluster runs in the script's process, arrives in Dask's own families.
    assert at_client["fastwire"] == 20 and set(at_client) <= {"fastwire", "pickle"}
    assert report["map results"] == [True] * 20
    # cloudpickle's class tracking: a class sent by value comes home as itself.
    assert report["client classes"] == [True] * 20


def test_fresh_interpreter_without_the_script_loads_its_frames(script_run):
    path = script_run[0]
    done = subprocess.run([sys.executable, "-c", ELSEWHERE, str(path)], capture_output=True, timeout=120)
    assert done.returncode == 0, done.stderr.decode()
    expected = f"Ledger __main__ {sum(i * 0.5 for i in range(10)) + 10} 12 36"
    assert done.stdout.decode().splitlines() == [expected, expected]
