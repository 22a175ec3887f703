"""The built-in model families' names, without importing them.

The registry (:mod:`slidead.core.models.registry`) is the one list of families, but importing it
imports torch (~1 s, more on a busy machine), and the command line and ``Settings`` check a
family name before anything needs a model (a rerun of a scored night loads no model at all).
:func:`built_in_families` therefore reads the names the files of ``slidead/core/models/``
register (``register(Family("name", ...))``) from their text; a test holds it equal to what the
registry has once those files are imported. A plug-in's family is known only to the registry.

A pattern, not :func:`ast.parse`: Python 3.11's parser is not safe beside other threads that
compile (a Prefect flow run's do), and failed there with "AST constructor recursion depth
mismatch" as a flow built its ``Settings``.
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

MODELS = Path(__file__).resolve().parent / "models"
_REGISTERED = re.compile(r"\bregister\(\s*Family\(\s*(?:name\s*=\s*)?[\"']([A-Za-z0-9_.-]+)[\"']")


@cache
def built_in_families() -> tuple[str, ...]:
    """The names ``slidead/core/models/*.py`` register, sorted."""
    found = set()
    for path in MODELS.glob("*.py"):
        found.update(_REGISTERED.findall(path.read_text(encoding="utf-8")))
    return tuple(sorted(found))
