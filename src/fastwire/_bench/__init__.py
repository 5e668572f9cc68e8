"""Side-by-side benchmarks of fastwire against the standard library.

Each area of the library contributes one module of :class:`Pair` objects. The
same pairs feed ``python -m fastwire bench`` (interleaved medians, quick) and the
pytest-benchmark suite in ``bench/`` (full statistics and JSON for the
regression gate), so a data set is defined in exactly one place.
"""

from __future__ import annotations

import importlib
import statistics
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

# The modules of each area; each defines ``pairs() -> list[Pair]``.
AREA_MODULES = {
    "struct": ["fastwire._bench.struct_cases"],
    "pickle": ["fastwire._bench.pickle_dumps_cases", "fastwire._bench.pickle_loads_cases"],
    "corpus": ["fastwire._bench.corpus_cases"],
    "frames": ["fastwire._bench.frame_cases"],
    "net": ["fastwire._bench.net_cases"],
    "aio": ["fastwire._bench.aio_cases"],
}


@dataclass(frozen=True)
class Pair:
    """One operation timed twice: the standard library way and the fastwire way.

    ``target`` is the speedup (stdlib time / fastwire time) the project promises
    for this pair; 1.0 means "at least as fast".
    """

    name: str
    area: str
    stdlib: Callable[[], object]
    fastwire: Callable[[], object]
    target: float = 1.0


@dataclass(frozen=True)
class Result:
    name: str
    area: str
    stdlib_seconds: float
    fastwire_seconds: float
    target: float

    @property
    def speedup(self) -> float:
        return self.stdlib_seconds / self.fastwire_seconds

    def as_dict(self) -> dict:
        return {
            "name": self.name,
            "area": self.area,
            "stdlib_seconds": self.stdlib_seconds,
            "fastwire_seconds": self.fastwire_seconds,
            "speedup": self.speedup,
            "target": self.target,
        }


# glibc's malloc serves a request of 128 KiB or more with an mmap of its own,
# unmapped again on free, until the first free of such a block raises that
# threshold to the block's size. Before that, every large buffer costs page
# faults: the stdlib's dumps of 20 strs of 5 KB costs 35 us in a fresh 3.13
# process and 2.6 us after one large free, so a ratio depended on whether an
# earlier pair in the same process had freed a big block (1.1x to 1.8x for
# that pair across gate runs). Measuring starts from the state a long-running
# program is in: one block of this size allocated and freed.
ALLOCATOR_WARMING_BYTES = 16 << 20


def load_pairs(areas: Iterable[str] | None = None) -> list[Pair]:
    warming = bytearray(ALLOCATOR_WARMING_BYTES)
    del warming
    selected = list(AREA_MODULES) if areas is None else list(areas)
    pairs: list[Pair] = []
    for area in selected:
        for module in AREA_MODULES[area]:
            pairs.extend(importlib.import_module(module).pairs())
    return pairs


def _loops_for(fn: Callable[[], object], budget: float, timer: Callable[[], float] = time.perf_counter) -> int:
    """How many calls of ``fn`` fill about ``budget`` seconds (at least one)."""
    loops = 1
    while True:
        start = timer()
        for _ in range(loops):
            fn()
        elapsed = timer() - start
        if elapsed >= budget / 4 or loops >= 1 << 24:
            return max(1, int(loops * budget / max(elapsed, 1e-9)))
        loops *= 4


def _time_per_call(fn: Callable[[], object], loops: int, timer: Callable[[], float] = time.perf_counter) -> float:
    start = timer()
    for _ in range(loops):
        fn()
    return (timer() - start) / loops


def measure(pair: Pair, rounds: int = 7, budget: float = 0.01,
            timer: Callable[[], float] = time.perf_counter) -> Result:
    """Time both sides interleaved (alternating which goes first) and keep medians.

    Interleaving makes both sides see the same machine noise, so the ratio is
    far more stable than either absolute time on a shared machine. ``timer``
    may be ``time.process_time`` where the machine is oversubscribed: CPU time
    does not count the slices other processes take, wall-clock time does.
    """
    loops = _loops_for(pair.stdlib, budget, timer)
    fw_loops = _loops_for(pair.fastwire, budget, timer)
    stdlib_times, fastwire_times = [], []
    for round_index in range(rounds):
        if round_index % 2:
            fastwire_times.append(_time_per_call(pair.fastwire, fw_loops, timer))
            stdlib_times.append(_time_per_call(pair.stdlib, loops, timer))
        else:
            stdlib_times.append(_time_per_call(pair.stdlib, loops, timer))
            fastwire_times.append(_time_per_call(pair.fastwire, fw_loops, timer))
    return Result(
        pair.name,
        pair.area,
        statistics.median(stdlib_times),
        statistics.median(fastwire_times),
        pair.target,
    )


def geometric_mean(values: Iterable[float]) -> float:
    return statistics.geometric_mean(list(values))
