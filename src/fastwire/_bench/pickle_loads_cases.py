"""Benchmark pairs for fastwire.pickle.loads against the standard library.

The inputs are what the stdlib itself writes (``pickle.dumps(obj, 5)``), so the
pairs time decoding only, on the data sets shared with the dumps pairs.
"""

import pickle as std

from fastwire import pickle as fw

from . import Pair
from .datasets import pair_target, pickle_datasets


def pairs():
    result = []
    for name, obj in pickle_datasets().items():
        blob = std.dumps(obj, 5)
        result.append(
            Pair(f"loads {name}", "pickle",
                 lambda b=blob: std.loads(b),
                 lambda b=blob: fw.loads(b),
                 target=pair_target(name))
        )
    return result
