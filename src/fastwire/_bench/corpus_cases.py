"""Benchmark pairs for the broad pickle corpus (:mod:`fastwire._bench.corpus`).

One dumps pair and one loads pair per corpus entry, against the C pickle at
protocol 5. Each pair promises 1.0x (no family slower); each of
pyperformance's bm_pickle objects promises 2.0x on its own. The corpus-wide
promises are geometric means: dumps 2.5x, loads 1.3x (:func:`geomeans`).

pyperformance's five bm_pickle cases are pairs of their own
(:func:`bm_pickle_pairs`), timed as the benchmark times them, each promising
2.0x.
"""

import pickle as std

from fastwire import pickle as fw

from . import Pair, geometric_mean
from .corpus import BM_PICKLE_DICT, BM_PICKLE_GROUP, BM_PICKLE_LIST, BM_PICKLE_MICRO_DICT, BM_PICKLE_TUPLE, corpus

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
    return result + bm_pickle_pairs()


def _dumps_each(module, objs):
    dumps = module.dumps

    def run():
        for obj in objs:
            dumps(obj, 5)
    return run


def _loads_each(module, objs):
    """Loads of `module`'s own pickles of `objs`, as bm_pickle's unpickle cases do."""
    loads, blobs = module.loads, [module.dumps(obj, 5) for obj in objs]

    def run():
        for blob in blobs:
            loads(blob)
    return run


def bm_pickle_pairs():
    """pyperformance's five bm_pickle cases, each timing what one of the
    benchmark's inner loops does: "pickle" and "unpickle" go through the
    profile dict, the id tuple and the group of records in turn."""
    records = (BM_PICKLE_DICT, BM_PICKLE_TUPLE, BM_PICKLE_GROUP)
    cases = {
        "pickle": (_dumps_each, records),
        "unpickle": (_loads_each, records),
        "pickle_list": (_dumps_each, (BM_PICKLE_LIST,)),
        "unpickle_list": (_loads_each, (BM_PICKLE_LIST,)),
        "pickle_dict": (_dumps_each, (BM_PICKLE_MICRO_DICT,)),
    }
    return [Pair(f"pyperformance bm_pickle: {case}", "corpus", make(std, objs), make(fw, objs),
                 target=BM_PICKLE_TARGET)
            for case, (make, objs) in cases.items()]


def geomeans(results) -> dict[str, float]:
    """Geometric mean speedup of the corpus's dumps pairs and of its loads pairs."""
    return {
        direction: geometric_mean(r.speedup for r in results if r.name.startswith(f"corpus {direction} "))
        for direction in ("dumps", "loads")
    }
