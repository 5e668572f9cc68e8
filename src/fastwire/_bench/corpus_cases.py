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
from functools import partial

from fastwire import pickle as fw

from . import Pair, geometric_mean
from .corpus import BM_PICKLE_DICT, BM_PICKLE_GROUP, BM_PICKLE_LIST, BM_PICKLE_MICRO_DICT, BM_PICKLE_TUPLE, corpus

DUMPS_GEOMEAN_TARGET = 2.5
LOADS_GEOMEAN_TARGET = 1.3
BM_PICKLE_TARGET = 2.0


def _target(name: str) -> float:
    return BM_PICKLE_TARGET if name.startswith("bm_pickle") else 1.0


def pairs():
    # functools.partial calls dumps/loads directly (vectorcall, no Python
    # frame): a lambda would add its own frame's cost to both sides, which on
    # the smallest objects (bm_pickle's id tuple) is a tenth of a call.
    result = []
    for name, obj in corpus().items():
        blob = std.dumps(obj, 5)
        result.append(Pair(f"corpus dumps {name}", "corpus",
                           partial(std.dumps, obj, 5), partial(fw.dumps, obj, 5), target=_target(name)))
        result.append(Pair(f"corpus loads {name}", "corpus",
                           partial(std.loads, blob), partial(fw.loads, blob), target=_target(name)))
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
    """pyperformance's five bm_pickle cases, each timing one pass of the
    benchmark's inner loop: "pickle" and "unpickle" take the profile dict 20
    times in a row, then the id tuple, then the group of records; the list
    cases take their object 10 times, pickle_dict 5. (The benchmark unrolls
    those repeats so that the loop costs next to nothing beside each call; a
    loop over a flat list of the objects comes close, where one Python call
    per dumps would add its own frame to both sides.)"""
    records = [BM_PICKLE_DICT] * 20 + [BM_PICKLE_TUPLE] * 20 + [BM_PICKLE_GROUP] * 20
    cases = {
        "pickle": (_dumps_each, records),
        "unpickle": (_loads_each, records),
        "pickle_list": (_dumps_each, [BM_PICKLE_LIST] * 10),
        "unpickle_list": (_loads_each, [BM_PICKLE_LIST] * 10),
        "pickle_dict": (_dumps_each, [BM_PICKLE_MICRO_DICT] * 5),
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
