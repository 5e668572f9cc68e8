"""The benchmark gate's verdicts (bench/compare.py): what fails a pair and what only reports it."""

from __future__ import annotations

import importlib.util
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
