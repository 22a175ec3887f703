"""Every ``from slidead... import name`` in the package and the flows names something that
exists, also the imports inside functions (which only fail when that function runs: the demo's
did, after a module moved)."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_every_first_party_import_resolves():
    checked, missing = 0, []
    for path in sorted(
        [*(ROOT / "slidead").rglob("*.py"), *(ROOT / "flows").rglob("*.py"), *(ROOT / "deployments").rglob("*.py")]
    ):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.ImportFrom) or node.level or not node.module:
                continue
            if node.module.split(".")[0] not in ("slidead", "flows", "deployments"):
                continue
            module = importlib.import_module(node.module)
            for alias in node.names:
                checked += 1
                if not hasattr(module, alias.name):
                    try:
                        importlib.import_module(f"{node.module}.{alias.name}")
                    except ImportError:
                        missing.append(f"{path.relative_to(ROOT)}:{node.lineno}: {node.module}.{alias.name}")
    assert checked > 100 and not missing, missing
