"""``python -m fastwire bench``: the output formats, on one quick area (no timing is checked)."""

import json
import subprocess
import sys

import pytest

from fastwire import _bench


def run_bench(*args):
    out = subprocess.run([sys.executable, "-m", "fastwire", "bench", "--area", "struct", "--rounds", "1", *args],
                         capture_output=True, text=True, timeout=300, check=True)
    return out.stdout


@pytest.fixture(scope="module")
def struct_pair_names():
    return [pair.name for pair in _bench.load_pairs(["struct"])]


def test_json_lists_every_pair(struct_pair_names):
    report = json.loads(run_bench("--json"))
    assert [r["name"] for r in report["results"]] == struct_pair_names
    for r in report["results"]:
        assert r["area"] == "struct" and r["stdlib_seconds"] > 0 and r["fastwire_seconds"] > 0
        assert r["speedup"] == pytest.approx(r["stdlib_seconds"] / r["fastwire_seconds"])


def test_markdown_is_the_performance_page_table(struct_pair_names):
    lines = run_bench("--markdown").splitlines()
    header = lines.index("| area | operation | stdlib | fastwire | speedup | target |")
    assert lines[header + 1] == "| --- | --- | --- | --- | --- | --- |"
    rows = [line.split(" | ") for line in lines[header + 2:] if line]
    assert [row[1] for row in rows] == struct_pair_names
    assert all(row[0] == "| struct" and row[4].startswith("**") for row in rows)


def test_json_and_markdown_exclude_each_other():
    out = subprocess.run([sys.executable, "-m", "fastwire", "bench", "--json", "--markdown"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "not allowed with" in out.stderr
