"""Progress reports that do not flood a terminal or a log.

``Progress(label)`` is a callable ``(done, total)`` that emits a line at most every ``step``
percent (and at the end); ``epochs(label)`` does the same for training epochs with their
losses. The lines are INFO records of the ``slidead.progress`` logger unless ``emit`` says
where else they go (see docs/operations.md).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

log = logging.getLogger(__name__)


class Progress:
    def __init__(self, label: str, emit: Callable[[str], None] | None = None, step: float = 20.0, unit: str = "clips"):
        self.label, self.emit, self.step, self.unit = label, emit or log.info, step, unit
        self._next = 0.0
        self._t0 = time.perf_counter()

    def __call__(self, done: int, total: int) -> None:
        if total <= 0:
            return
        pct = 100.0 * done / total
        if pct + 1e-9 >= self._next or done == total:
            rate = done / max(time.perf_counter() - self._t0, 1e-9)
            self.emit(f"{self.label}: {done}/{total} {self.unit} ({pct:.0f}%, {rate:.1f}/s)")
            self._next = (pct // self.step + 1) * self.step
            if done == total:
                self._next = float("inf")


def epochs(
    label: str, emit: Callable[[str], None] | None = None, every: int | None = None
) -> Callable[[int, int, float, float], None]:
    """Report epoch i of n with losses, about ten times per run."""
    emit = emit or log.info

    def report(epoch: int, total: int, train_loss: float, val_loss: float) -> None:
        step = every or max(1, total // 10)
        if epoch == 1 or epoch % step == 0 or epoch == total:
            emit(f"{label}: epoch {epoch}/{total} train loss {train_loss:.4f} val loss {val_loss:.4f}")

    return report
