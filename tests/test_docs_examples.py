"""Every Python code block in the README and in docs/ runs, page by page.

The blocks of one page run in order in one fresh interpreter (a subprocess, so
servers, threads and patched modules of one page cannot leak into another), as
``__main__``: classes an example defines can be pickled and loaded by name, as
in a script. A page fails if any block raises; the message names the block's
first line. Shell blocks (```sh) are not run: they install or start programs.

A block is left out only when the line before its fence is a MyST comment
``% docs-test: skip <reason>`` (``<!-- docs-test: skip <reason> -->`` in the
README, which GitHub renders); the reason is printed with the page's result.
Nothing else is left out: a page whose examples import a fastwire module that
fails to import fails like any other error.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

FENCE = re.compile(r"^(?P<indent> *)(?P<fence>`{3,}|~{3,})(?P<info>[^\n`]*)$")
SKIP = re.compile(r"^(?:% docs-test: skip (?P<reason>\S.*)|<!-- docs-test: skip (?P<html>\S.*) -->)$")


def code_blocks(path: Path):
    """Yield (first_line_number, language, code, skip_reason) for each fenced block."""
    lines = path.read_text(encoding="utf-8").splitlines()
    i = 0
    while i < len(lines):
        opening = FENCE.match(lines[i])
        if not opening:
            i += 1
            continue
        fence = opening["fence"]
        language = opening["info"].strip().split(" ")[0].strip("{}")
        skip = SKIP.match(lines[i - 1]) if i else None
        start = i + 1
        i = start
        while i < len(lines) and not lines[i].strip().startswith(fence):
            i += 1
        indent = len(opening["indent"])
        code = "\n".join(line[indent:] for line in lines[start:i])
        yield start + 1, language, code, (skip["reason"] or skip["html"]) if skip else None
        i += 1


# Runs in the child: each block compiled with its page and line for tracebacks,
# executed in __main__'s namespace.
RUNNER = r"""
import json, sys, traceback
blocks = json.load(sys.stdin)
namespace = sys.modules["__main__"].__dict__
for where, code in blocks:
    try:
        exec(compile(code, where, "exec"), namespace)
    except BaseException:
        sys.stdout.flush()
        print(f"\n*** the example at {where} failed:", file=sys.stderr)
        traceback.print_exc()
        sys.exit(1)
"""


# Pages with at least one Python block (index.md, changelog.md ... have none).
PAGES = [page for page in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
         if any(language in ("python", "py") for _, language, _, _ in code_blocks(page))]


def page_id(path: Path) -> str:
    return str(path.relative_to(ROOT))


def run_blocks(blocks, cwd):
    """Run (where, code) blocks in order in one fresh interpreter, as __main__.

    The child imports the very fastwire this process imports (installed, or
    src/ when PYTHONPATH says so); it runs in a scratch directory so examples
    that write files or Unix sockets leave nothing behind."""
    import fastwire

    env = os.environ.copy()
    env["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(Path(fastwire.__file__).resolve().parent.parent), env.get("PYTHONPATH")]))
    return subprocess.run(
        [sys.executable, "-c", RUNNER], input=json.dumps(blocks), text=True,
        capture_output=True, cwd=cwd, timeout=300, env=env,
    )


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_every_python_example_on_the_page_runs(page, tmp_path):
    blocks = []
    skipped = []
    for line, language, code, skip in code_blocks(page):
        if language not in ("python", "py"):
            continue
        if skip:
            skipped.append(f"{page_id(page)}:{line}: {skip}")
            continue
        blocks.append((f"{page_id(page)}:{line}", code))
    if not blocks:
        pytest.skip("; ".join(skipped))
    result = run_blocks(blocks, tmp_path)
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr}"
    for reason in skipped:  # recorded, visible with -rs only through the report below
        print("not run:", reason)


def test_an_example_whose_fastwire_import_fails_fails_its_page(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("# A page\n\n```python\nfrom fastwire import no_such_part\n```\n", encoding="utf-8")
    blocks = [(f"page.md:{line}", code) for line, _, code, _ in code_blocks(page)]
    result = run_blocks(blocks, tmp_path)
    assert result.returncode != 0
    assert "no_such_part" in result.stderr
