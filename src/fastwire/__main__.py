"""``python -m fastwire bench``: fastwire against the standard library, side by side."""

from __future__ import annotations

import argparse
import json
import platform
import sys

from . import _bench


def _machine() -> str:
    import os

    return f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.python_implementation()} {platform.python_version()}"


def _print_table(results: list[_bench.Result]) -> None:
    width = max(len(r.name) for r in results)
    print(f"{'operation':<{width}}  {'stdlib':>11}  {'fastwire':>11}  {'speedup':>8}  target")
    for r in results:
        flag = "" if r.speedup >= r.target else "  (below target)"
        print(
            f"{r.name:<{width}}  {r.stdlib_seconds * 1e6:>9.2f}us  {r.fastwire_seconds * 1e6:>9.2f}us"
            f"  {r.speedup:>7.2f}x  {r.target:.1f}x{flag}"
        )


def bench(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m fastwire bench", description=__doc__)
    parser.add_argument("--json", action="store_true", help="print results as JSON instead of a table")
    parser.add_argument("--area", action="append", choices=sorted(_bench.AREA_MODULES),
                        help="only these areas (repeatable); default: all")
    parser.add_argument("--rounds", type=int, default=7, help="interleaved rounds per pair (median kept)")
    args = parser.parse_args(argv)

    results = [_bench.measure(pair, rounds=args.rounds) for pair in _bench.load_pairs(args.area)]
    if args.json:
        json.dump({"machine": _machine(), "results": [r.as_dict() for r in results]}, sys.stdout, indent=2)
        print()
    else:
        print(f"fastwire bench on {_machine()} (speedup = stdlib time / fastwire time)")
        _print_table(results)
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] != "bench":
        print("usage: python -m fastwire bench [--json] [--area AREA] [--rounds N]", file=sys.stderr)
        return 2
    return bench(argv[1:])


if __name__ == "__main__":
    sys.exit(main())
