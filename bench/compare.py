"""The benchmark-regression gate: speedup ratios checked against a baseline.

Absolute times are noise on shared machines; the ratio stdlib time / fastwire
time, both measured in the same run, is not. This script reads such ratios,
prints them next to the baseline, and exits 1 when a pair regressed:

* its ratio fell more than ``--tolerance`` (default 15%) below the baseline, or
* fastwire became slower than the standard library (ratio < 1.0) on a pair
  whose target says "at least as fast" (any target >= 1.0).

A ratio below a target above 1.0 is reported but fails only with
``--strict-targets``: the targets are promises still being worked towards.

Usage::

    python bench/compare.py NEW.json                # NEW against bench/baseline.json
    python bench/compare.py OLD.json NEW.json       # NEW against OLD
    python bench/compare.py NEW.json --remeasured AGAIN.json
                                                    # a pair fails only if it fails in both
    python bench/compare.py --quick                 # measure now (the .ci/run gate)
    python bench/compare.py --update-baseline       # run the suite, rewrite bench/baseline.json

NEW/OLD are ``--benchmark-json`` files of ``python -m pytest bench``, output of
``python -m fastwire bench --json``, or a baseline file.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
BASELINE = BENCH_DIR / "baseline.json"
DEFAULT_TOLERANCE = 0.15


@dataclass(frozen=True)
class Ratio:
    """One pair's speedup (stdlib time / fastwire time) and its promised target."""

    name: str
    area: str
    speedup: float
    target: float


# --- reading ratios ----------------------------------------------------------


def ratios_from_json(data: dict) -> dict[str, Ratio]:
    """Ratios from any of the three JSON shapes the project writes."""
    if "benchmarks" in data:  # pytest-benchmark --benchmark-json
        medians: dict[str, dict[str, float]] = {}
        info: dict[str, dict] = {}
        for bench in data["benchmarks"]:
            medians.setdefault(bench["group"], {})[bench["params"]["impl"]] = bench["stats"]["median"]
            info[bench["group"]] = bench.get("extra_info", {})
        return {
            name: Ratio(name, info[name].get("area", ""), sides["stdlib"] / sides["fastwire"],
                        float(info[name].get("target", 1.0)))
            for name, sides in medians.items()
            if {"stdlib", "fastwire"} <= sides.keys()
        }
    if "results" in data:  # python -m fastwire bench --json
        return {r["name"]: Ratio(r["name"], r["area"], r["speedup"], r["target"]) for r in data["results"]}
    if "ratios" in data:  # bench/baseline.json
        return {name: Ratio(name, r["area"], r["speedup"], r["target"]) for name, r in data["ratios"].items()}
    raise ValueError("not a pytest-benchmark, `fastwire bench --json` or baseline file")


def load_ratios(path: Path) -> dict[str, Ratio]:
    with open(path) as f:
        return ratios_from_json(json.load(f))


# --- the verdict (shared by every mode) --------------------------------------


@dataclass
class Verdict:
    """How one pair fares against its floor, its target and its baseline."""

    ratio: Ratio
    baseline: float | None
    tolerance: float
    strict_targets: bool = False
    attempts: list[float] = field(default_factory=list)

    @property
    def floor(self) -> float:
        """The ratio below which the pair fails, whatever the baseline says."""
        target = self.ratio.target
        if self.strict_targets:
            return target
        # A target of at least 1.0 promises "at least as fast as the stdlib".
        return min(target, 1.0)

    @property
    def threshold(self) -> float:
        """The lowest passing ratio: the floor or the tolerated drop, whichever is higher."""
        if self.baseline is None:
            return self.floor
        return max(self.floor, self.baseline * (1.0 - self.tolerance))

    @property
    def problems(self) -> list[str]:
        speedup = self.ratio.speedup
        found = []
        if speedup < self.floor:
            found.append("slower than stdlib" if self.floor == 1.0 else f"below target {self.floor:.2f}x")
        if self.baseline is not None and speedup < self.baseline * (1.0 - self.tolerance):
            found.append(f"regressed >{self.tolerance:.0%}")
        return found

    @property
    def notes(self) -> list[str]:
        found = []
        if not self.strict_targets and self.ratio.speedup < self.ratio.target and self.ratio.target > 1.0:
            found.append(f"below target {self.ratio.target:.1f}x")
        if self.baseline is None:
            found.append("no baseline yet")
        return found

    @property
    def failed(self) -> bool:
        return bool(self.problems)


def judge(current: dict[str, Ratio], baseline: dict[str, Ratio], tolerance: float,
          strict_targets: bool = False) -> list[Verdict]:
    verdicts = []
    for name, ratio in current.items():
        base = baseline.get(name)
        verdicts.append(Verdict(ratio, base.speedup if base else None, tolerance, strict_targets,
                                attempts=[ratio.speedup]))
    return verdicts


def remeasure(verdict: Verdict, speedup: float) -> None:
    """Fold in another measurement of the same code: the pair keeps its best ratio.

    A real regression fails every measurement; a noise spike rarely hits twice.
    """
    verdict.attempts.append(speedup)
    if speedup > verdict.ratio.speedup:
        verdict.ratio = Ratio(verdict.ratio.name, verdict.ratio.area, speedup, verdict.ratio.target)


def print_table(verdicts: list[Verdict], missing: list[str], out=sys.stdout) -> None:
    if not verdicts:
        print("no benchmark pairs measured", file=out)
        return
    width = max(len(v.ratio.name) for v in verdicts)
    print(f"{'pair':<{width}}  {'baseline':>8}  {'now':>7}  {'change':>7}  {'target':>6}  verdict", file=out)
    for v in sorted(verdicts, key=lambda v: (v.ratio.area, v.ratio.name)):
        base = f"{v.baseline:7.2f}x" if v.baseline is not None else f"{'-':>8}"
        change = f"{v.ratio.speedup / v.baseline - 1:+7.1%}" if v.baseline is not None else f"{'':>7}"
        verdict = "FAIL: " + ", ".join(v.problems) if v.failed else "ok"
        if v.notes:
            verdict += " (" + ", ".join(v.notes) + ")"
        if len(v.attempts) > 1:
            verdict += " [measured " + ", ".join(f"{a:.2f}" for a in v.attempts) + "]"
        print(f"{v.ratio.name:<{width}}  {base}  {v.ratio.speedup:6.2f}x  {change}  {v.ratio.target:5.1f}x  {verdict}",
              file=out)
    for name in missing:
        print(f"{name:<{width}}  in the baseline but not measured", file=out)
    failed = [v for v in verdicts if v.failed]
    print(f"{len(verdicts)} pairs, {len(failed)} regressed", file=out)


# --- modes --------------------------------------------------------------------


def run_suite(json_path: Path, extra: list[str] = ()) -> None:
    """Run the pytest-benchmark suite against the fastwire importable here."""
    subprocess.run(
        [sys.executable, "-m", "pytest", str(BENCH_DIR), "-q", "-p", "no:cacheprovider",
         f"--benchmark-json={json_path}", *extra],
        check=True,
    )


def write_baseline(ratios: dict[str, Ratio], path: Path, source: str) -> None:
    import fastwire

    data = {
        "about": "speedup = stdlib median / fastwire median; refresh with "
                 "`python bench/compare.py --update-baseline`",
        "source": source,
        "machine": f"{platform.machine()} {platform.system()}, {os.cpu_count()} CPUs, "
                   f"{platform.processor() or platform.machine()}",
        "python": platform.python_version(),
        "fastwire": fastwire.__version__,
        "date": datetime.date.today().isoformat(),
        "ratios": {
            r.name: {"area": r.area, "speedup": round(r.speedup, 3), "target": r.target}
            for r in sorted(ratios.values(), key=lambda r: (r.area, r.name))
        },
    }
    path.write_text(json.dumps(data, indent=2) + "\n")
    print(f"wrote {len(ratios)} ratios to {path}")


def quick_gate(baseline: dict[str, Ratio], tolerance: float, strict_targets: bool,
               rounds: int, budget: float, retries: int, margin: float) -> list[Verdict]:
    """Measure every pair now (interleaved medians), re-measuring before failing.

    Pairs that fail, or pass by less than ``margin``, are measured again, up
    to ``retries`` times with three times the rounds (a steadier median); they
    fail only if no measurement clears the threshold.
    """
    from fastwire import _bench

    pairs = _bench.load_pairs()
    current = {}
    for pair in pairs:
        result = _bench.measure(pair, rounds=rounds, budget=budget)
        current[pair.name] = Ratio(pair.name, pair.area, result.speedup, pair.target)
    verdicts = judge(current, baseline, tolerance, strict_targets)
    by_name = {pair.name: pair for pair in pairs}
    for verdict in verdicts:
        for _ in range(retries):
            if verdict.ratio.speedup >= verdict.threshold * (1.0 + margin):
                break
            result = _bench.measure(by_name[verdict.ratio.name], rounds=rounds * 3, budget=budget)
            remeasure(verdict, result.speedup)
    return verdicts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("Usage::")[1])
    parser.add_argument("files", nargs="*", type=Path, help="NEW, or OLD NEW")
    parser.add_argument("--remeasured", action="append", type=Path, default=[],
                        help="another measurement of NEW's code; a pair fails only if it fails in all")
    parser.add_argument("--quick", action="store_true", help="measure now instead of reading NEW")
    parser.add_argument("--update-baseline", action="store_true",
                        help="run the pytest-benchmark suite (or read NEW) and rewrite the baseline")
    parser.add_argument("--baseline", type=Path, default=BASELINE, help=f"default: {BASELINE}")
    parser.add_argument("--tolerance", type=float, default=DEFAULT_TOLERANCE,
                        help="allowed drop below the baseline ratio (default %(default)s)")
    parser.add_argument("--strict-targets", action="store_true", help="also fail below each pair's target")
    parser.add_argument("--save", type=Path, help="also write the judged ratios (baseline format) to this file")
    quick = parser.add_argument_group("--quick tuning")
    quick.add_argument("--rounds", type=int, default=9, help="interleaved rounds per pair (median kept)")
    quick.add_argument("--budget", type=float, default=0.004, help="seconds per timed sample")
    quick.add_argument("--retries", type=int, default=2, help="re-measurements of a pair near its threshold")
    quick.add_argument("--margin", type=float, default=0.10,
                       help="re-measure pairs within this fraction above their threshold")
    args = parser.parse_args(argv)

    if args.update_baseline:
        if args.files:
            ratios, source = load_ratios(args.files[-1]), str(args.files[-1])
        else:
            with tempfile.TemporaryDirectory() as tmp:
                run_suite(Path(tmp) / "bench.json")
                ratios = load_ratios(Path(tmp) / "bench.json")
            source = "python -m pytest bench"
        write_baseline(ratios, args.baseline, source)
        return 0

    if args.quick:
        if args.files:
            parser.error("--quick measures now; it takes no files")
        baseline = load_ratios(args.baseline) if args.baseline.exists() else {}
        verdicts = quick_gate(baseline, args.tolerance, args.strict_targets,
                              args.rounds, args.budget, args.retries, args.margin)
    else:
        if len(args.files) not in (1, 2):
            parser.error("give NEW.json, or OLD.json NEW.json (or --quick)")
        baseline = load_ratios(args.files[0] if len(args.files) == 2 else args.baseline)
        verdicts = judge(load_ratios(args.files[-1]), baseline, args.tolerance, args.strict_targets)
        by_name = {v.ratio.name: v for v in verdicts}
        for path in args.remeasured:
            for name, ratio in load_ratios(path).items():
                if name in by_name:
                    remeasure(by_name[name], ratio.speedup)

    if args.save:
        args.save.write_text(json.dumps({"ratios": {
            v.ratio.name: {"area": v.ratio.area, "speedup": v.ratio.speedup, "target": v.ratio.target,
                           "attempts": v.attempts, "failed": v.failed}
            for v in verdicts}}, indent=2) + "\n")
    measured = {v.ratio.name for v in verdicts}
    missing = sorted(set(baseline) - measured)
    print("speedup = stdlib time / fastwire time; "
          f"fails below the baseline by more than {args.tolerance:.0%} or below 1.0x (stdlib speed)")
    print_table(verdicts, missing)
    return 1 if any(v.failed for v in verdicts) else 0


if __name__ == "__main__":
    sys.exit(main())
