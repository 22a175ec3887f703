"""How a recipe runs its steps: ``steps(name, fn, *args, **kwargs)`` returns ``fn``'s result.

The library's recipes (:func:`slidead.jobs.nightly.run_night`, :func:`slidead.jobs.retrain.retrain`)
call each step through ``steps``; :func:`inline` calls it, and the Prefect flows pass one that
runs it as a task with retries (``flows/tasks.py``). The recipe is the same either way.

A recipe's progress lines are records of the standard :mod:`logging` module, each module's
under the ``slidead`` logger (``logging.getLogger(__name__)``); nothing shows them until
someone installs a handler: the command line prints them (:mod:`slidead.shell.terminal`), the
flows send them to the Prefect run's log (``flows/logs.py``). See docs/operations.md.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

Steps = Callable[..., Any]

log = logging.getLogger(__name__)


def inline(name: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run step ``name``: call it (its time is a debug record)."""
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    log.debug("step %s: %.1f s", name, time.perf_counter() - t0)
    return out
