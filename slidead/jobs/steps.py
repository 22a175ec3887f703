"""How a recipe runs its steps: ``steps(name, fn, *args, **kwargs)`` returns ``fn``'s result.

The library's recipes (:func:`slidead.jobs.nightly.run_night`, :func:`slidead.jobs.retrain.retrain`)
call each step through ``steps``; :func:`inline` calls it, and the Prefect flows pass one that
runs it as a task with retries (``flows/tasks.py``). The recipe is the same either way.

A recipe's progress lines go to a ``log`` callable (:data:`Log`); :func:`quiet`, the default,
drops them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

Steps = Callable[..., Any]
Log = Callable[[str], None]  # where a recipe's progress lines go (the command line: print them)


def quiet(_msg: str) -> None:
    """A :data:`Log` that drops every line (the recipes' default)."""


def inline(name: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run step ``name``: call it."""
    return fn(*args, **kwargs)
