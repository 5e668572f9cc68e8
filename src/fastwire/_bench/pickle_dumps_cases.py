"""Benchmark pairs for fastwire.pickle.dumps against the stdlib's C pickle.

One pair per data set of :mod:`fastwire._bench.datasets`, both sides at
protocol 5. Each pair's target is 1.0 ("no data set slower"), except for the
memory-copy-bound data set (see datasets.pair_target); the issue's
overall target, a 2.5x geometric mean over these pairs, is reported by
:func:`geometric_mean_speedup`, not per pair.
"""

import pickle as std

from fastwire import pickle as fw

from . import Pair, geometric_mean
from .datasets import pair_target, pickle_datasets

GEOMEAN_TARGET = 2.5


def pairs():
    result = []
    for name, obj in pickle_datasets().items():
        result.append(Pair(
            f"dumps {name}", "pickle",
            lambda obj=obj: std.dumps(obj, 5),
            lambda obj=obj: fw.dumps(obj, 5),
            target=pair_target(name),
        ))
    return result


def geometric_mean_speedup(results) -> float:
    """Geometric mean of the dumps speedups among `results` (bench Results)."""
    return geometric_mean(r.speedup for r in results if r.name.startswith("dumps "))
