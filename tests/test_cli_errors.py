"""Errors reach a person as one sentence: the command line as users run it (a subprocess)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from faultkit import clip, make_registry

SLIDEAD = [sys.executable, "-m", "slidead.shell.cli"]


def _run(args, home: Path, **env):
    drop = home / "store" / "drops" / "2026-11-23" / "slider" / "id_00" / "a.wav"  # a night to score
    drop.parent.mkdir(parents=True, exist_ok=True)
    drop.write_bytes(clip(1.0, 1))
    e = {k: v for k, v in os.environ.items() if not k.startswith(("SLIDEAD_", "PREFECT_API_URL"))}
    e.update(SLIDEAD_HOME=str(home), **env)
    return subprocess.run(SLIDEAD + args, capture_output=True, text=True, env=e, timeout=300)


def _lines(text: str) -> list[str]:
    return [ln for ln in text.splitlines() if ln.strip()]


@pytest.mark.slow
def test_no_champion_is_one_sentence_with_the_fix_and_the_traceback_goes_to_a_log(tmp_path):
    r = _run(["score", "--night", "2026-11-23"], tmp_path)
    assert r.returncode == 2, r.stderr
    lines = _lines(r.stderr)
    assert len(lines) <= 3, r.stderr
    error = next(ln for ln in lines if "error" in ln)
    assert "no champion" in error and "slidead train --family vae" in error, error
    assert "Traceback" not in r.stderr
    logs = list((tmp_path / "logs").glob("score-*.log"))
    assert len(logs) == 1 and "NoChampionError" in logs[0].read_text()
    assert str(logs[0]) in r.stderr

    debug = _run(["score", "--night", "2026-11-23", "--debug"], tmp_path)
    assert debug.returncode == 2 and "Traceback" in debug.stderr and "NoChampionError" in debug.stderr


@pytest.mark.slow
def test_no_champion_names_the_families_that_have_one(tmp_path):
    reg = tmp_path / "registry"
    reg.mkdir()
    uri = make_registry(reg)  # an AE champion for slider
    r = _run(["score", "--night", "2026-11-23", "--family", "vae"], tmp_path, SLIDEAD_MLFLOW_URI=uri)
    assert r.returncode == 2, r.stderr
    assert len(_lines(r.stderr)) <= 3, r.stderr
    assert "Champions exist for: ae; use --family ae" in r.stderr, r.stderr


def test_bad_settings_are_one_line(tmp_path):
    r = _run(["models"], tmp_path, SLIDEAD_DEVICE="tpu")
    assert r.returncode == 2
    lines = _lines(r.stderr)
    assert len(lines) <= 2 and "SLIDEAD_DEVICE" in lines[0], r.stderr


def test_prefect_console_lines_lose_their_traceback_but_other_handlers_keep_it(monkeypatch):
    import io
    import logging

    from slidead.shell.commands import quiet_tracebacks

    monkeypatch.delenv("SLIDEAD_DEBUG", raising=False)
    log = logging.getLogger("prefect.flow_runs")
    console, other = io.StringIO(), io.StringIO()
    h1, h2 = logging.StreamHandler(console), logging.StreamHandler(other)
    log.addHandler(h1)
    quiet_tracebacks()
    log.addHandler(h2)  # a later handler (the API's) sees the record whole
    try:
        try:
            raise RuntimeError("boom")
        except RuntimeError:
            log.error("Encountered exception during execution", exc_info=True)
    finally:
        log.removeHandler(h1)
        log.removeHandler(h2)
    assert console.getvalue().strip() == "Encountered exception during execution"
    assert "Traceback" in other.getvalue() and "RuntimeError: boom" in other.getvalue()
