"""The built-in model families' names, without importing them.

The registry (:mod:`slidead.core.models.registry`) is the one list of families, but importing it
imports torch (~1 s, more on a busy machine), and the command line and ``Settings`` check a
family name before anything needs a model (a rerun of a scored night loads no model at all).
:func:`built_in_families` therefore reads the names the files of ``slidead/core/models/``
register (``register(Family("name", ...))``) from their source; a test holds it equal to what the
registry has once those files are imported. A plug-in's family is known only to the registry.
"""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

MODELS = Path(__file__).resolve().parent / "models"


@cache
def built_in_families() -> tuple[str, ...]:
    """The names ``slidead/core/models/*.py`` register, sorted."""
    names = set()
    for path in MODELS.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if _called(node, "register") and node.args and _called(node.args[0], "Family"):
                first = node.args[0].args[0] if node.args[0].args else None
                if isinstance(first, ast.Constant) and isinstance(first.value, str):
                    names.add(first.value)
    return tuple(sorted(names))


def _called(node: ast.AST, name: str) -> bool:
    return isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == name
