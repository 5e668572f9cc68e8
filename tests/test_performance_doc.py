"""bench/performance_doc.py: the generated part of docs/performance.md says
plainly where fastwire is not ahead, and only that part carries figures
(no timing is measured here: results are made up)."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

import pytest

from fastwire._bench import Result, xproc

ROOT = Path(__file__).resolve().parent.parent
PAGE = ROOT / "docs" / "performance.md"


@pytest.fixture(scope="module")
def doc():
    spec = importlib.util.spec_from_file_location("performance_doc", ROOT / "bench" / "performance_doc.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        del sys.modules[spec.name]


def result(name, area, speedup, target=1.0):
    return Result(name, area, stdlib_seconds=speedup * 1e-6, fastwire_seconds=1e-6, target=target)


ROWS = [
    ("TCP one-way, one message per send: fastwire", 300e3, "msg/s"),
    ("TCP one-way, one message per send: mp.connection", 200e3, "msg/s"),
    ("TCP one-way, one message per send: pyzmq", 400e3, "msg/s"),
    ("AF_UNIX one-way, one message per send: fastwire", 900e3, "msg/s"),
    ("AF_UNIX one-way, one message per send: mp.connection", 200e3, "msg/s"),
    ("TCP makefile program (dump+flush / load): pickle", 400e3, "msg/s"),
    ("TCP makefile program (dump+flush / load): fastwire.pickle", 500e3, "msg/s"),
    ("TCP request/response round trip: fastwire", 10.0, "us"),
    ("TCP request/response round trip: mp.connection", 30.0, "us"),
]


def test_the_cross_process_targets_are_judged_from_the_rows():
    verdicts = {v.what: (round(v.figure, 2), v.met) for v in xproc.verdicts(ROWS)}
    assert verdicts == {
        "TCP single messages: fastwire / mp.connection": (1.5, False),
        "TCP single messages: fastwire / pyzmq send_pyobj": (0.75, False),
        "AF_UNIX single messages: fastwire / mp.connection": (4.5, True),
        "makefile program: fastwire.pickle / pickle": (1.25, True),
        "TCP round trip: mp.connection latency / fastwire latency": (3.0, True),
    }


def test_the_generated_part_names_every_shortfall(doc):
    results = [result("dumps fast", "pickle", 2.0), result("corpus loads slow", "corpus", 0.9),
               result("corpus dumps bm shape", "corpus", 1.5, target=2.0)]
    text = "\n".join(doc.section(results, ROWS, "header", "speedup.png"))
    shortfalls = text.split("### Where fastwire is not ahead in this run")[1].split("### Across processes")[0]
    assert "corpus: corpus loads slow: **0.90x**" in shortfalls
    assert "corpus: corpus dumps bm shape: **1.50x**, target 2.0x" in shortfalls
    assert "Corpus geometric mean: dumps 1.50x (target 2.5x), loads 0.90x (target 1.3x)" in shortfalls
    assert "dumps fast" not in shortfalls
    assert "TCP single messages: fastwire / mp.connection: **1.50x**, target 2.0x" in shortfalls
    assert "TCP single messages: fastwire / pyzmq send_pyobj: **0.75x**" in shortfalls
    assert "AF_UNIX" not in shortfalls


def test_rewriting_touches_only_the_generated_part(doc, tmp_path):
    page = tmp_path / "page.md"
    page.write_text(f"intro\n{doc.BEGIN}\nold figures\n{doc.END}\noutro\n")
    doc.rewrite(page, [doc.BEGIN, "new figures", doc.END])
    assert page.read_text() == f"intro\n{doc.BEGIN}\nnew figures\n{doc.END}\noutro\n"


def test_the_performance_page_quotes_figures_only_in_its_generated_part(doc):
    text = PAGE.read_text(encoding="utf-8")
    before, rest = text.split(doc.BEGIN)
    generated, after = rest.split(doc.END)
    assert "One run of `python bench/performance_doc.py`" in generated
    figure = re.compile(r"\d+(\.\d+)?x\b|\d+k msg/s")
    assert not figure.search(before + after)


ARRAY = "AF_UNIX one-way, one 64 MiB float64 array per send"
DICT = "one-way, dict of 100 float64 arrays of 64 KiB per send"
SMALL = "one-way, one message per send (no buffers)"
ARRAY_ROWS = [
    (f"{ARRAY}: fastwire out_of_band", 3.1e9, "GB/s"),
    (f"{ARRAY}: fastwire out_of_band: peak receiver memory", 1.2, "x payload"),
    (f"{ARRAY}: fastwire", 1.0e9, "GB/s"),
    (f"AF_UNIX {DICT}: fastwire out_of_band", 4.0e9, "GB/s"),
    (f"AF_UNIX {DICT}: fastwire", 1.0e9, "GB/s"),
    (f"TCP {DICT}: fastwire out_of_band", 2.0e9, "GB/s"),
    (f"TCP {DICT}: fastwire", 1.0e9, "GB/s"),
    (f"AF_UNIX {SMALL}: fastwire out_of_band", 960e3, "msg/s"),
    (f"AF_UNIX {SMALL}: fastwire", 1000e3, "msg/s"),
    (f"TCP {SMALL}: fastwire out_of_band", None, "n/a (out_of_band unavailable)"),
    (f"TCP {SMALL}: fastwire", 300e3, "msg/s"),
]


def test_the_array_targets_are_judged_from_the_rows():
    verdicts = {v.what: (None if v.figure is None else round(v.figure, 2), v.met) for v in xproc.verdicts(ARRAY_ROWS)}
    assert verdicts == {
        "AF_UNIX 64 MiB float64 array: out_of_band, send to usable array": (3.1e9, True),
        "AF_UNIX 64 MiB float64 array: out_of_band peak receiver memory / payload": (1.2, False),
        "AF_UNIX dict of 100 arrays: out_of_band / in-band": (4.0, True),
        "TCP dict of 100 arrays: out_of_band / in-band": (2.0, False),
        "AF_UNIX small messages: out_of_band / default": (0.96, True),
        "TCP small messages: out_of_band / default": (None, None),
    }


def test_array_rows_and_their_shortfalls_are_written_with_their_units(doc):
    text = "\n".join(doc.section([], ARRAY_ROWS, "header", "speedup.png"))
    shortfalls = text.split("### Where fastwire is not ahead in this run")[1].split("### Across processes")[0]
    assert ("AF_UNIX 64 MiB float64 array: out_of_band peak receiver memory / payload: **1.20x**, "
            "target at most 1.1x") in shortfalls
    assert "TCP dict of 100 arrays: out_of_band / in-band: **2.00x**, target 3.0x" in shortfalls
    assert "not measured in this run" in shortfalls and "- TCP small messages: out_of_band / default" in shortfalls
    assert "Every cross-process target is met" not in shortfalls
    table = text.split("### Across processes")[1]
    assert f"| {ARRAY}: fastwire out_of_band | 3.10 GB/s |" in table
    assert f"| {ARRAY}: fastwire out_of_band: peak receiver memory | 1.20x payload |" in table
    assert f"| TCP {SMALL}: fastwire out_of_band | n/a (out_of_band unavailable) |" in table
    assert ("| AF_UNIX 64 MiB float64 array: out_of_band, send to usable array | **3.10 GB/s** | 2.5 GB/s | yes |"
            in table)
    assert "| AF_UNIX small messages: out_of_band / default | **0.96x** | 0.95x | yes |" in table
    assert "| TCP small messages: out_of_band / default | n/a | 0.95x | not measured |" in table


def test_a_miss_is_never_rounded_onto_its_target():
    """Regression: the makefile row's 1.1996x read "**1.20x** | 1.2x | **no**"."""
    rows = [("TCP makefile program (dump+flush / load): pickle", 1000.0, "msg/s"),
            ("TCP makefile program (dump+flush / load): fastwire.pickle", 1199.6, "msg/s")]
    assert "| makefile program: fastwire.pickle / pickle | **1.19x** | 1.2x | **no** |" in xproc.markdown(rows)
    rows[1] = (rows[1][0], 1203.0, "msg/s")
    assert "| makefile program: fastwire.pickle / pickle | **1.20x** | 1.2x | yes |" in xproc.markdown(rows)
