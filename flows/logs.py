"""The library's log records into the Prefect run's log.

The library logs to ``logging.getLogger(__name__)`` under the ``slidead`` logger and never
imports prefect. While a flow runs, :func:`to_run_log` makes a handler that sends each of those
records to the run logger of the moment (:func:`prefect.get_run_logger`: the task run's inside a
step, else the flow run's), so it shows on the Prefect console and in the run's log on the
server as the flows' own lines do. The ``slidead`` logger's other handlers (the command line's)
stand aside meanwhile, so a line is not printed twice; a record from a thread outside any run
goes to them instead.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

from prefect import get_run_logger
from prefect.exceptions import MissingContextError

LIBRARY = "slidead"


class _ToRunLogger(logging.Handler):
    def __init__(self, fallback: list[logging.Handler]):
        super().__init__()
        self.fallback = fallback

    def emit(self, record: logging.LogRecord) -> None:
        try:
            run_log = get_run_logger()
        except MissingContextError:
            for h in self.fallback or [logging.lastResort]:
                if h is not None and record.levelno >= h.level:
                    h.handle(record)
            return
        try:
            run_log.log(record.levelno, record.getMessage(), exc_info=record.exc_info)
        except Exception:  # noqa: BLE001 - logging's own rule: a failed handler never raises
            self.handleError(record)


@contextlib.contextmanager
def to_run_log() -> Iterator[None]:
    """The ``slidead`` logger's records (INFO and up) go to the Prefect run logger while the
    block runs; afterwards the logger is as it was."""
    lib = logging.getLogger(LIBRARY)
    saved = lib.handlers[:], lib.level, lib.propagate
    lib.handlers = [_ToRunLogger(saved[0])]
    lib.setLevel(min(logging.INFO, lib.getEffectiveLevel()))
    lib.propagate = False
    try:
        yield
    finally:
        lib.handlers, lib.propagate = saved[0], saved[2]
        lib.setLevel(saved[1])
