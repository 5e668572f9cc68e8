"""Run the fuzz targets with fixed seeds and fixed run counts, and say what ran.

    python fuzz/run.py                       # every target, against the fastwire on sys.path
    python fuzz/run.py --sanitized           # under scripts/sanitize-run --fuzz (ASan+UBSan build)
    python fuzz/run.py --runs 200000 struct  # longer, one target

Each target first replays its reproducers in fuzz/crashes/<target>/, then
fuzzes from its seed corpus (fuzz/corpus/<target>/, never written to: new
inputs go to a scratch directory) for --runs inputs with -seed=--seed, capped
by --max-time seconds. A finding leaves its input in fuzz/artifacts/ and makes
the exit status non-zero. Run it with nice -n 19 on a shared machine.
"""

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
TARGETS = ["struct", "pickle_loads", "pickle_unpickler", "pickle_structure", "frames", "varint"]


def run_target(name, args):
    script = os.path.join(HERE, f"fuzz_{name}.py")
    prefix = [os.path.join(ROOT, "scripts", "sanitize-run"), "--fuzz"] if args.sanitized else []
    python = prefix + [sys.executable, script]

    crashes = os.path.join(HERE, "crashes", name)
    if os.path.isdir(crashes):
        replay = subprocess.run(python + ["--replay", crashes], capture_output=True, text=True)
        if replay.returncode != 0:
            return "FAILED", f"a reproducer in {crashes} fails again:\n{replay.stderr[-3000:]}"

    artifacts = os.path.join(HERE, "artifacts") + os.sep
    os.makedirs(artifacts, exist_ok=True)
    scratch = tempfile.mkdtemp(prefix=f"fastwire-fuzz-{name}-")
    # A target that ends the process itself (a work-budget watchdog, a crash
    # libFuzzer cannot catch) leaves its input here.
    last_input = os.path.join(artifacts, f"last-input-{name}")
    env = dict(os.environ, FASTWIRE_FUZZ_LAST_INPUT=last_input)
    try:
        proc = subprocess.run(
            python + [scratch, os.path.join(HERE, "corpus", name), f"-runs={args.runs}",
                      f"-seed={args.seed}", f"-max_total_time={args.max_time}", "-timeout=30",
                      "-rss_limit_mb=2048", "-print_final_stats=1", f"-artifact_prefix={artifacts}"],
            capture_output=True, text=True, env=env)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    output = proc.stdout + proc.stderr
    executed = re.search(r"stat::number_of_executed_units: (\d+)", output)
    count = executed.group(1) if executed else "?"
    if proc.returncode != 0:
        return "FAILED", f"{count} inputs, exit {proc.returncode} (last input: {last_input}):\n{output[-6000:]}"
    if os.path.exists(last_input):
        os.unlink(last_input)
    return "ok", f"{count} inputs"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("targets", nargs="*", choices=TARGETS + [[]], default=[])
    parser.add_argument("--runs", type=int, default=5000, help="inputs per target (default 5000)")
    parser.add_argument("--seed", type=int, default=6, help="libFuzzer -seed (default 6)")
    parser.add_argument("--max-time", type=int, default=25, help="cap in seconds per target (default 25)")
    parser.add_argument("--sanitized", action="store_true", help="run under scripts/sanitize-run --fuzz")
    args = parser.parse_args()
    build = "ASan+UBSan fuzz build" if args.sanitized else "the fastwire on sys.path"
    failed = False
    for name in args.targets or TARGETS:
        status, detail = run_target(name, args)
        print(f"fuzz {name:<17} {status:<6} {detail} ({build}, seed {args.seed})", flush=True)
        failed |= status == "FAILED"
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
