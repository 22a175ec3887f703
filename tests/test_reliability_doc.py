"""docs/reliability.md lists every reliability case with the test that proves it: those tests exist."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "reliability.md"


def _tests_in(path: Path) -> set[str]:
    return {n.name for n in ast.walk(ast.parse(path.read_text())) if isinstance(n, ast.FunctionDef)}


def test_every_test_the_table_names_exists():
    text = DOC.read_text()
    refs = re.findall(r"`(tests/\w+\.py)::(\w+)`", text)
    assert len(refs) >= 40
    current = None
    for line in text.splitlines():
        for m in re.finditer(r"`(tests/\w+\.py)::(\w+)`|`::(\w+)`", line):
            if m.group(1):
                current = m.group(1)
                name = m.group(2)
            else:
                name = m.group(3)
            assert current, line
            assert name in _tests_in(ROOT / current), f"{current}::{name} named in {DOC.name} does not exist"


def test_readme_links_the_reliability_table():
    assert "docs/reliability.md" in (ROOT / "README.md").read_text()
