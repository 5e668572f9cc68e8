"""``python -m fastwire bench``: fastwire against the standard library, side by side."""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time

from . import _bench


def _machine() -> str:
    import os

    return (f"{_cpu_model()}, {platform.machine()}, {os.cpu_count()} CPUs, "
            f"{platform.python_implementation()} {platform.python_version()}")


def _cpu_model() -> str:
    """The CPU's marketing name where the OS tells it (Linux), else what platform knows."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def _print_table(results: list[_bench.Result]) -> None:
    width = max(len(r.name) for r in results)
    print(f"{'operation':<{width}}  {'stdlib':>11}  {'fastwire':>11}  {'speedup':>8}  target")
    for r in results:
        flag = "" if r.speedup >= r.target else "  (below target)"
        print(
            f"{r.name:<{width}}  {r.stdlib_seconds * 1e6:>9.2f}us  {r.fastwire_seconds * 1e6:>9.2f}us"
            f"  {r.speedup:>7.2f}x  {r.target:.1f}x{flag}"
        )


def _markdown_lines(results: list[_bench.Result]) -> list[str]:
    """The table as docs/performance.md shows it."""
    lines = ["| area | operation | stdlib | fastwire | speedup | target |", "| --- | --- | --- | --- | --- | --- |"]
    for r in results:
        flag = "" if r.speedup >= r.target else " (below)"
        lines.append(f"| {r.area} | {r.name} | {r.stdlib_seconds * 1e6:.2f} µs | {r.fastwire_seconds * 1e6:.2f} µs "
                     f"| **{r.speedup:.2f}x**{flag} | {r.target:.1f}x |")
    return lines


def _print_markdown(results: list[_bench.Result]) -> None:
    print("\n".join(_markdown_lines(results)))


def bench(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m fastwire bench", description=__doc__)
    output = parser.add_mutually_exclusive_group()
    output.add_argument("--json", action="store_true", help="print results as JSON instead of a table")
    output.add_argument("--markdown", action="store_true",
                        help="print the table in Markdown, as docs/performance.md shows it")
    parser.add_argument("--area", action="append", choices=sorted(_bench.AREA_MODULES),
                        help="only these areas (repeatable); default: all")
    parser.add_argument("--rounds", type=int, default=7, help="interleaved rounds per pair (median kept)")
    parser.add_argument("--dask", action="store_true",
                        help="Dask distributed instead: the fastwire family against Dask's pickle family, "
                             "then end to end on a 2-worker LocalCluster (needs fastwire[dask])")
    parser.add_argument("--timer", choices=("wall", "process"), default="wall",
                        help="wall-clock time, or process CPU time: steadier on a busy machine "
                             "(other processes' time slices are not counted)")
    parser.add_argument("--xproc", action="store_true",
                        help="across processes instead: two fresh interpreters streaming one way (TCP and "
                             "AF_UNIX) and request/response round trips, against multiprocessing.connection, "
                             "raw sockets + pickle and pyzmq when installed")
    parser.add_argument("--messages", type=int, default=100_000,
                        help="--xproc: messages per stream (round trips: a tenth of it)")
    parser.add_argument("--plot", metavar="FILE.png",
                        help="also draw the speedup chart to FILE.png (needs the `bench` extra: matplotlib)")
    args = parser.parse_args(argv)
    if args.dask:
        return _bench_dask(args)
    if args.xproc:
        return _bench_xproc(args)
    if args.plot:
        try:
            import matplotlib  # noqa: F401  (checked before minutes of measuring, not after)
        except ImportError:
            print("--plot needs matplotlib: python -m pip install 'fastwire[bench]'", file=sys.stderr)
            return 2

    timer = time.process_time if args.timer == "process" else time.perf_counter
    results = [_bench.measure(pair, rounds=args.rounds, timer=timer) for pair in _bench.load_pairs(args.area)]
    if args.json:
        json.dump({"machine": _machine(), "results": [r.as_dict() for r in results]}, sys.stdout, indent=2)
        print()
    elif args.markdown:
        print(f"fastwire bench on {_machine()}, {args.timer} time, medians of {args.rounds} rounds\n")
        _print_markdown(results)
    else:
        print(f"fastwire bench on {_machine()} (speedup = stdlib time / fastwire time)")
        _print_table(results)
    if not args.json:
        _print_corpus_summary(results)
    if args.plot:
        import datetime

        _plot(results, args.plot, f"medians of {args.rounds} interleaved rounds, {args.timer} time, "
                                  f"{datetime.date.today().isoformat()}")
        print(f"chart written to {args.plot}", file=sys.stderr)
    return 0


def _print_corpus_summary(results: list[_bench.Result]) -> None:
    summary = _corpus_summary(results)
    if summary:
        print("\n" + summary)


def _corpus_summary(results: list[_bench.Result]) -> str | None:
    """The broad corpus's promises: geometric means per direction, and the cases below 1.0x."""
    from ._bench import corpus_cases

    corpus = [r for r in results if r.area == "corpus"]
    if not corpus:
        return None
    means = corpus_cases.geomeans(corpus)
    slower = [r.name for r in corpus if r.speedup < 1.0]
    return (f"corpus geometric mean: dumps {means['dumps']:.2f}x (target {corpus_cases.DUMPS_GEOMEAN_TARGET}x), "
            f"loads {means['loads']:.2f}x (target {corpus_cases.LOADS_GEOMEAN_TARGET}x); "
            f"{len(slower)} of {len(corpus)} cases below 1.0x" + (": " + ", ".join(slower) if slower else ""))


def _bench_xproc(args) -> int:
    from ._bench import xproc

    rows = xproc.rows(count=args.messages, runs=max(1, min(args.rounds, 3)))
    if args.json:
        json.dump({"machine": _machine(), "xproc": [{"name": n, "value": v, "unit": u} for n, v, u in rows]},
                  sys.stdout, indent=2)
        print()
        return 0
    print(f"fastwire bench --xproc on {_machine()}, {args.messages} messages of {xproc.MESSAGE!r}, "
          f"median of {max(1, min(args.rounds, 3))} fresh process pairs\n")
    print("\n".join(xproc.markdown(rows)))
    return 0


def _bench_dask(args) -> int:
    from ._bench import dask_cases

    reason = dask_cases.missing()
    if reason:
        print(reason, file=sys.stderr)
        return 1
    timer = time.process_time if args.timer == "process" else time.perf_counter
    results = [_bench.measure(pair, rounds=args.rounds, timer=timer) for pair in dask_cases.pairs()]
    zero_copy = dask_cases.array_is_zero_copy()
    report = dask_cases.cluster_report()
    if args.json:
        json.dump({"machine": _machine(), "results": [r.as_dict() for r in results],
                   "array_zero_copy": zero_copy, "cluster": report}, sys.stdout, indent=2)
        print()
        return 0
    print(f"fastwire bench --dask on {_machine()}, {args.timer} time "
          f"(speedup = Dask pickle family time / fastwire family time)")
    _print_table(results)
    dask_cases.print_summary(results, zero_copy)
    dask_cases.print_cluster_report(report)
    return 0


def _plot(results: list[_bench.Result], path: str, note: str) -> None:
    """Horizontal bars of speedup per pair, grouped by area, with 1x and each target marked."""
    import matplotlib

    matplotlib.use("Agg")  # files only; no display needed
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    from . import __version__

    ordered = sorted(results, key=lambda r: (r.area, r.name), reverse=True)
    areas = sorted({r.area for r in ordered})
    colors = dict(zip(areas, plt.get_cmap("tab10").colors))
    label_inches = 0.065 * max(len(r.name) for r in ordered)  # room for the longest pair name
    fig, ax = plt.subplots(figsize=(7 + label_inches, 0.28 * len(ordered) + 1.6))
    rows = range(len(ordered))
    # Bars grow from 1x: right of the line fastwire is faster, left of it slower.
    ax.barh(rows, [r.speedup - 1.0 for r in ordered], left=1.0, color=[colors[r.area] for r in ordered])
    ax.scatter([r.target for r in ordered], rows, marker="|", s=120, color="black", zorder=3, label="target")
    ax.axvline(1.0, color="grey", linestyle="--", linewidth=1, label="stdlib speed (1x)")
    ax.set_yticks(list(rows), [r.name for r in ordered], fontsize=8)
    for row, r in zip(rows, ordered):
        ax.annotate(f"{r.speedup:.2f}x", (max(r.speedup, r.target, 1.0), row), xytext=(4, 0),
                    textcoords="offset points", va="center", fontsize=7)
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:g}x"))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.margins(x=0.1)
    ax.set_xlim(left=min(0.8, 0.9 * min(r.speedup for r in ordered)))  # keep the 1x line inside the frame
    ax.set_xlabel("speedup over the standard library (stdlib time / fastwire time, log scale)")
    ax.set_title(f"fastwire {__version__}: {_machine()}\n{note}", fontsize=9)
    handles = [plt.Rectangle((0, 0), 1, 1, color=colors[a]) for a in areas]
    line_handles, line_labels = ax.get_legend_handles_labels()
    ax.legend(handles + line_handles, areas + line_labels, loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] != "bench":
        print("usage: python -m fastwire bench [--json] [--area AREA] [--rounds N] [--plot FILE.png]"
              " [--dask] [--xproc]", file=sys.stderr)
        return 2
    return bench(argv[1:])


if __name__ == "__main__":
    sys.exit(main())
