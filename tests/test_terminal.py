"""Where the library's log records go: nowhere by itself, to stderr under the command line's one
handler (as plain lines, debug records with their logger), to the saved handlers from a flow's
context when no Prefect run is there to take them."""

from __future__ import annotations

import logging

from slidead.shell.terminal import to_terminal

LIB = logging.getLogger("slidead")


def test_the_library_installs_no_handler():
    import slidead.jobs.steps  # noqa: F401 - the recipes' runner, the progress lines, the command line
    import slidead.progress  # noqa: F401
    import slidead.shell.cli  # noqa: F401

    assert LIB.handlers == [] and LIB.level == logging.NOTSET


def test_the_command_line_prints_the_lines_as_they_are_and_leaves_the_logger_as_it_was(capsys):
    before = (list(LIB.handlers), LIB.level, LIB.propagate)
    with to_terminal():
        logging.getLogger("slidead.jobs.nightly").info("2026-11-23: 3 new scores loaded, 50% rejected")
        logging.getLogger("slidead.jobs.retrain").warning("warning: too few scores")
        logging.getLogger("slidead.jobs.steps").debug("step train: 1.0 s")
        logging.getLogger("other.library").info("not ours")
    err = capsys.readouterr()
    assert err.err == "2026-11-23: 3 new scores loaded, 50% rejected\nwarning: too few scores\n" and err.out == ""
    assert (list(LIB.handlers), LIB.level, LIB.propagate) == before


def test_debug_adds_the_debug_records_with_their_logger(capsys):
    with to_terminal(debug=True):
        logging.getLogger("slidead.jobs.steps").debug("step train: %.1f s", 1.5)
        logging.getLogger("slidead.progress").info("ingest: 4/4 clips")
    assert capsys.readouterr().err == "debug slidead.jobs.steps: step train: 1.5 s\ningest: 4/4 clips\n"


def test_a_flow_sends_the_records_to_the_saved_handlers_where_no_run_takes_them(capsys):
    from flows.logs import to_run_log

    with to_terminal():
        terminal = list(LIB.handlers)
        with to_run_log():
            assert LIB.handlers != terminal and not LIB.propagate  # the run's logger stands in
            logging.getLogger("slidead.jobs.nightly").info("outside any run")
        assert LIB.handlers == terminal
    assert capsys.readouterr().err == "outside any run\n"


def test_run_as_a_module_the_command_line_still_says_its_errors(tmp_path):
    """``python -m slidead.shell.cli``: its own lines (an error's sentence) come out as under ``slidead``."""
    import os
    import subprocess
    import sys

    r = subprocess.run(
        [sys.executable, "-m", "slidead.shell.cli", "score", "--night", "2026-11-2x", "--no-prefect"],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "SLIDEAD_HOME": str(tmp_path)},
    )
    assert r.returncode == 2 and "slidead score: error: night='2026-11-2x'" in r.stderr, r.stderr
