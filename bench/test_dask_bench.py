"""pytest-benchmark: Dask serialize + deserialize round trips, Dask's "pickle" family
against fastwire's, grouped per data set (``pytest bench/test_dask_bench.py``).

The same pairs feed ``python -m fastwire bench --dask``, which also runs the
end-to-end cluster measurements.
"""

import pytest

pytest.importorskip("distributed", reason="the Dask benchmarks need fastwire[dask]")
pytest.importorskip("numpy", reason="the Dask benchmarks use a NumPy array")

from fastwire._bench import dask_cases  # noqa: E402

PAIRS = dask_cases.pairs()


@pytest.mark.parametrize("side", ["stdlib", "fastwire"])
@pytest.mark.parametrize("pair", PAIRS, ids=[p.name.split(": ", 1)[1] for p in PAIRS])
def test_dask_round_trip(benchmark, pair, side):
    # "stdlib" here is Dask's own pickle family (standard-library pickle).
    benchmark.group = pair.name
    benchmark.pedantic(getattr(pair, side), rounds=5, iterations=1, warmup_rounds=1)
