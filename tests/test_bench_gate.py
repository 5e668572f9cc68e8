"""The benchmark gate's verdicts (bench/compare.py): what fails a pair and what only reports it."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

COMPARE = Path(__file__).resolve().parent.parent / "bench" / "compare.py"


@pytest.fixture(scope="module")
def compare():
    spec = importlib.util.spec_from_file_location("bench_compare", COMPARE)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        del sys.modules[spec.name]


def verdict(compare, area, speedup, baseline=None, target=1.0, **settings):
    return compare.Verdict(f"{area} pair", area, target, baseline, [speedup], **settings)


def test_a_pair_slower_than_the_stdlib_fails(compare):
    assert verdict(compare, "pickle", 0.95).failed
    assert not verdict(compare, "pickle", 0.98).failed  # inside the 3% a measurement resolves


def test_a_pair_that_regressed_against_its_baseline_fails(compare):
    assert verdict(compare, "pickle", 2.0, baseline=2.5).failed
    assert not verdict(compare, "pickle", 2.2, baseline=2.5).failed


@pytest.mark.parametrize("area", ["corpus"])
def test_an_area_still_reaching_its_targets_reports_a_slow_pair_without_failing(compare, area):
    assert area in compare.AREAS_STILL_REACHING_TARGETS
    slow = verdict(compare, area, 0.94)
    assert not slow.failed
    assert "below target 1.0x" in slow.notes


def test_an_area_still_reaching_its_targets_still_fails_on_regression(compare):
    assert verdict(compare, "corpus", 0.80, baseline=1.0).failed


def test_strict_targets_hold_every_area_to_its_target(compare):
    assert verdict(compare, "corpus", 0.94, strict_targets=True).failed


def saved_run(path, attempts):
    """A file as `compare.py --quick --save` writes it."""
    path.write_text(json.dumps({"ratios": {
        name: {"area": "pickle", "speedup": sorted(tries)[len(tries) // 2], "target": 1.0,
               "attempts": tries, "failed": False}
        for name, tries in attempts.items()}}))
    return path


def test_a_baseline_from_several_runs_keeps_each_pairs_lowest_measurement(compare, tmp_path):
    """A pair that swings between processes (the frame index: 19x-30x) gets the
    worst this machine has shown, re-measurements included, so that a later
    run no slower than the earlier ones does not fail."""
    first = saved_run(tmp_path / "one.json", {"index": [30.3, 24.0, 27.9], "dumps": [2.5]})
    second = saved_run(tmp_path / "two.json", {"index": [19.1], "dumps": [2.6, 2.7]})
    lowest = compare.lowest_of([first, second])
    assert {name: r.speedup for name, r in lowest.items()} == {"index": 19.1, "dumps": 2.5}
    assert compare.main(["--update-baseline", "--lowest", str(first), str(second),
                         "--baseline", str(tmp_path / "baseline.json")]) == 0
    written = json.loads((tmp_path / "baseline.json").read_text())["ratios"]
    assert written["index"]["speedup"] == 19.1


@pytest.mark.parametrize("version", [(3, 11), (3, 12), (3, 13)])
def test_every_supported_version_is_gated_against_its_own_baseline(compare, version):
    own = compare.baseline_for(version)
    assert own.name == f"baseline-{version[0]}.{version[1]}.json"
    data = json.loads(own.read_text())
    assert f"CPython {version[0]}.{version[1]}." in data["machine"]
    ci = (COMPARE.parent.parent / ".ci" / "run").read_text()
    # The gate runs in the venv of every interpreter the suite ran on.
    assert 'for other in "${others[@]}"; do\n    gate ' in ci


def test_a_refresh_moves_only_the_pairs_that_gained_or_fell_below_their_baseline(compare, tmp_path):
    """--refresh moves a pair whose lowest new measurement is the factor above
    its baseline, or below it, to that lowest, and leaves a pair that merely
    measured a bit higher where it was; a pair new to the runs is added."""
    baseline = tmp_path / "baseline.json"
    baseline.write_text(json.dumps({"source": "earlier runs", "ratios": {
        "gained": {"area": "corpus", "speedup": 1.1, "target": 1.0},
        "lucky": {"area": "corpus", "speedup": 2.0, "target": 1.0},
        "slipped": {"area": "corpus", "speedup": 3.0, "target": 1.0},
        "unmeasured": {"area": "net", "speedup": 5.0, "target": 1.0}}}))
    first = saved_run(tmp_path / "one.json", {"gained": [1.7, 1.6], "lucky": [2.3], "slipped": [2.8],
                                               "new": [4.0]})
    second = saved_run(tmp_path / "two.json", {"gained": [1.5], "lucky": [2.2], "slipped": [2.9], "new": [3.5]})
    assert compare.main(["--update-baseline", "--lowest", "--refresh", "1.2", str(first), str(second),
                         "--baseline", str(baseline)]) == 0
    written = json.loads(baseline.read_text())
    assert {name: r["speedup"] for name, r in written["ratios"].items()} == {
        "gained": 1.5, "lucky": 2.0, "slipped": 2.8, "unmeasured": 5.0, "new": 3.5}
    assert written["source"].startswith("earlier runs; then each pair whose lowest")
