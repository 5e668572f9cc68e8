"""Benchmark pairs for the broad pickle corpus (:mod:`fastwire._bench.corpus`).

One dumps pair and one loads pair per corpus entry, against the C pickle at
protocol 5. Each pair promises 1.0x (no family slower); pyperformance's
bm_pickle shapes promise 2.0x. The corpus-wide promises are geometric means:
dumps 2.5x, loads 1.3x (:func:`geomeans`).
"""

import pickle as std

from fastwire import pickle as fw

from . import Pair, geometric_mean
from .corpus import corpus

DUMPS_GEOMEAN_TARGET = 2.5
LOADS_GEOMEAN_TARGET = 1.3
BM_PICKLE_TARGET = 2.0


def _target(name: str) -> float:
    return BM_PICKLE_TARGET if name.startswith("bm_pickle") else 1.0


def pairs():
    result = []
    for name, obj in corpus().items():
        blob = std.dumps(obj, 5)
        result.append(Pair(f"corpus dumps {name}", "corpus",
                           lambda obj=obj: std.dumps(obj, 5), lambda obj=obj: fw.dumps(obj, 5),
                           target=_target(name)))
        result.append(Pair(f"corpus loads {name}", "corpus",
                           lambda b=blob: std.loads(b), lambda b=blob: fw.loads(b),
                           target=_target(name)))
    return result


def geomeans(results) -> dict[str, float]:
    """Geometric mean speedup of the corpus's dumps pairs and of its loads pairs."""
    return {
        direction: geometric_mean(r.speedup for r in results if r.name.startswith(f"corpus {direction} "))
        for direction in ("dumps", "loads")
    }
