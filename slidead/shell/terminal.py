"""The command line's one log handler: the library's records on the terminal, as lines.

Every module logs to ``logging.getLogger(__name__)``, under the ``slidead`` logger; the library
installs no handler, so used as a library it prints nothing but warnings (Python's default).
:func:`to_terminal` is what ``slidead`` does around a command: one handler on ``slidead`` that
writes each record's message, and nothing else, to standard error (the stream of the moment,
so a test's capture sees it), at INFO, or at DEBUG with ``--debug`` / ``SLIDEAD_DEBUG=1``
(debug records say their logger: ``debug slidead.jobs.steps: step train: 12.3 s``). While it is
installed the records stop at ``slidead`` (a handler on the root logger, such as Prefect's
console, would print them twice); afterwards the logger is as it was.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator

LIBRARY = "slidead"


class _Lines(logging.Formatter):
    """A record's message as it is; a debug record says its logger first."""

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        return f"debug {record.name}: {text}" if record.levelno < logging.INFO else text


class _Terminal(logging.Handler):
    """Writes each record to ``sys.stderr`` as it is when the record comes, then flushes."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            stream = sys.stderr
            stream.write(self.format(record) + "\n")
            stream.flush()
        except Exception:  # noqa: BLE001 - logging's own rule: a broken stream never raises here
            self.handleError(record)


@contextlib.contextmanager
def to_terminal(debug: bool = False) -> Iterator[logging.Handler]:
    """The ``slidead`` logger's records on standard error while the block runs (INFO and up; with
    ``debug``, DEBUG too), then the logger as it was."""
    lib = logging.getLogger(LIBRARY)
    handler = _Terminal(logging.DEBUG if debug else logging.INFO)
    handler.setFormatter(_Lines("%(message)s"))
    saved = lib.level, lib.propagate
    lib.addHandler(handler)
    lib.setLevel(handler.level)
    lib.propagate = False
    try:
        yield handler
    finally:
        lib.removeHandler(handler)
        lib.setLevel(saved[0])
        lib.propagate = saved[1]
