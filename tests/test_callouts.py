"""The register of callouts (docs/callouts.md) names only tests that exist.

Each row of the register's tables names a test as ``tests/<file>.py::<name>``;
this module checks that the file defines a test function (or a test class) of that
name, so a renamed or deleted re-entrancy test fails here instead of leaving a
callout unguarded in silence. Every part's table must list at least one row.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
REGISTER = ROOT / "docs" / "callouts.md"
SECTION = re.compile(r"^## (?P<part>.+)$")
ROW = re.compile(r"^\|(?P<call>[^|]+)\|(?P<callout>[^|]+)\|\s*`?(?P<test>tests/[\w/]+\.py::\w+)`?\s*\|$")


def register_rows():
    """(part, call, callout, test) for every row of every table."""
    part = None
    for line in REGISTER.read_text(encoding="utf-8").splitlines():
        if heading := SECTION.match(line):
            part = heading["part"].strip()
        elif row := ROW.match(line.strip()):
            yield part, row["call"].strip(), row["callout"].strip(), row["test"]


def register_parts():
    return [m["part"].strip() for line in REGISTER.read_text(encoding="utf-8").splitlines()
            if (m := SECTION.match(line))]


def defined_tests(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return {node.name for node in ast.walk(tree)
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))}


@pytest.mark.parametrize("part", register_parts())
def test_every_part_lists_its_callouts(part):
    assert any(p == part for p, *_ in register_rows()), f"docs/callouts.md: no rows under {part!r}"


@pytest.mark.parametrize("part,call,callout,test", list(register_rows()))
def test_register_row_names_an_existing_test(part, call, callout, test):
    file, name = test.split("::")
    path = ROOT / file
    assert path.is_file(), f"{call} / {callout}: {file} does not exist"
    assert name in defined_tests(path), f"{call} / {callout}: {file} defines no {name}"
