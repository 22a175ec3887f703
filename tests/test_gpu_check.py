"""`make gpu-check` on a machine without CUDA: it stops at once with one sentence, and its small
CPU run (``--device cpu --dry``) goes through every step and writes its table, so the script is
not first exercised on a GPU."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "tests" / "bench" / "gpu_check.py"


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the stop without CUDA")
def test_without_cuda_it_stops_with_one_sentence_and_writes_nothing(tmp_path):
    results = tmp_path / "RESULTS.md"
    out = subprocess.run(
        [sys.executable, str(SCRIPT), "--results", str(results), "--work-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 2
    assert out.stdout == ""
    (sentence,) = out.stderr.strip().splitlines()
    assert sentence.startswith("make gpu-check needs a CUDA GPU and ") and sentence.endswith("on the CPU).")
    assert "nothing was run" in sentence
    assert not results.exists() and list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_a_small_cpu_run_goes_through_every_step_and_appends_its_table(tmp_path):
    results = tmp_path / "RESULTS.md"
    results.write_text("# earlier results\n")
    cmd = [sys.executable, str(SCRIPT), "--device", "cpu", "--dry", "--results", str(results)]
    out = subprocess.run(cmd + ["--work-dir", str(tmp_path)], capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    text = results.read_text()
    assert text.startswith("# earlier results\n")  # appended, not overwritten
    section = text.split("\n## GPU check (", 1)[1]
    assert section.startswith(dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d"))
    assert ", dry run)" in section.splitlines()[0] and "`make gpu-check` on CPU, " in section
    rows = {r.split(" | ")[0].lstrip("| "): r.split(" | ")[1:] for r in section.splitlines() if r.startswith("| ")}
    assert rows.pop("what") == ["measured", "target", "met |"]
    training = next(v for k, v in rows.items() if k.startswith("seed's VAE training, 1 epochs on 12 clips"))
    assert training[0].endswith(" s")
    night = next(v for k, v in rows.items() if k.startswith("24-clip VAE night, `slidead score --device cpu`"))
    assert " clips/s (" in night[0]
    batch = rows["largest batch of VAE windows in one scoring pass (fp32)"]
    assert batch[0].startswith("4,096 windows (the search's cap), ")
    tests = next(v for k, v in rows.items() if k.startswith("`gpu` tests"))
    assert ", 0 failed, " in tests[0] and tests[2] == "yes |"  # on the CPU they skip; none fails
    assert not any("failed:" in v[0] for v in rows.values())  # no step failed
    assert section in out.stdout  # the same table was printed
    assert list(tmp_path.iterdir()) == [results]  # the plant's temporary folder is gone
