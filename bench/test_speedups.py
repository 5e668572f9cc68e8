"""pytest-benchmark suite: every pair of ``fastwire._bench`` timed both ways.

The pairs are defined once, in ``src/fastwire/_bench/*_cases.py``; this module
only turns each pair into two benchmarks in one group (``impl=stdlib`` and
``impl=fastwire``), run back to back so they see the same machine. The JSON
written by ``--benchmark-json`` is what ``bench/compare.py`` turns into
speedup ratios (stdlib median / fastwire median) and checks against the
baseline.

    python -m pytest bench/test_speedups.py --benchmark-json=bench.json \
        --benchmark-timer=time.process_time --benchmark-min-time=0.0005
    python bench/compare.py bench.json

CPU time keeps other processes' time slices out of both halves; 0.5 ms rounds
keep the CPU clock's own cost (~0.7 us a read) out of the ratio. With the
defaults (wall clock, 5 us rounds) this suite gave ratios from 0.6x to 51x on
a busy 2-vCPU machine; with these options, within a few percent of the baseline.
"""

import pytest

from fastwire import _bench

PAIRS = {pair.name: pair for pair in _bench.load_pairs()}
IMPLS = ("stdlib", "fastwire")


@pytest.mark.parametrize(
    ("pair", "impl"),
    # stdlib and fastwire of one pair adjacent, so the two halves of a ratio
    # are measured seconds apart rather than minutes.
    [(name, impl) for name in PAIRS for impl in IMPLS],
)
def test_speedup(benchmark, pair, impl):
    case = PAIRS[pair]
    benchmark.group = case.name
    benchmark.extra_info.update(area=case.area, target=case.target)
    benchmark(getattr(case, impl))
