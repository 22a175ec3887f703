"""A DCASE 2020 Task 2 folder through the command line: import, train, evaluate --json."""

from __future__ import annotations

import json

import numpy as np
import pytest

from slidead.shell.cli import main
from slidead.synth.sounds import FAULTS, anomalous_clip, machine_build, normal_clip, wav_bytes

pytestmark = pytest.mark.integration


def _dcase_folder(root, ids=("00", "04"), n_train=10, n_test=5):
    rng = np.random.default_rng(1)
    for sub in ("train", "test"):
        (root / "slider" / sub).mkdir(parents=True)
    for mid in ids:
        b = machine_build("slider", mid, 1)
        for i in range(n_train):
            (root / "slider/train" / f"normal_id_{mid}_{i:08d}.wav").write_bytes(wav_bytes(normal_clip(b, rng)))
        for i in range(n_test):
            (root / "slider/test" / f"normal_id_{mid}_{i:08d}.wav").write_bytes(wav_bytes(normal_clip(b, rng)))
            x = anomalous_clip(b, rng, FAULTS[i % len(FAULTS)], 0.9)
            (root / "slider/test" / f"anomaly_id_{mid}_{i:08d}.wav").write_bytes(wav_bytes(x))


def test_import_train_evaluate_json(tmp_path, monkeypatch, capsys):
    _dcase_folder(tmp_path / "dev_data")
    monkeypatch.setenv("SLIDEAD_HOME", str(tmp_path / "home"))
    assert main(["import", "dcase2020", str(tmp_path / "dev_data")]) == 0
    assert main(["train", "--family", "vae", "--machine-type", "slider", "--epochs", "3", "--no-prefect"]) == 0
    table = capsys.readouterr().out
    assert "machine_id" in table and "mean" in table
    assert main(["evaluate", "--family", "vae", "--machine-type", "slider", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["model_version"] == 1 and set(out["per_id"]) == {"00", "04"}
    for row in out["per_id"].values():
        assert set(row) == {"auc", "pauc", "precision", "recall", "f1", "accuracy", "false_alarm_rate"}
    assert main(["evaluate", "--family", "ae", "--machine-type", "slider", "--json"]) == 2
    assert "no champion" in capsys.readouterr().err


def test_idclf_and_fused_through_the_cli(tmp_path, monkeypatch, capsys):
    _dcase_folder(tmp_path / "dev_data")
    monkeypatch.setenv("SLIDEAD_HOME", str(tmp_path / "home"))
    assert main(["import", "dcase2020", str(tmp_path / "dev_data")]) == 0
    # the command line's plumbing for idclf and fused, not their calibration (test_conformal covers
    # the default's fold models): the seed's thresholds train one network per family, not six
    for family in ("idclf", "ae"):
        args = ["--family", family, "--machine-type", "slider", "--epochs", "2", "--thresholds", "validation"]
        assert main(["train", *args, "--no-prefect"]) == 0
    capsys.readouterr()
    for family in ("idclf", "fused"):
        assert main(["evaluate", "--family", family, "--machine-type", "slider", "--json"]) == 0
        out = json.loads(capsys.readouterr().out)
        assert out["family"] == family and set(out["per_id"]) == {"00", "04"}
        for row in out["per_id"].values():
            assert set(row) == {"auc", "pauc", "precision", "recall", "f1", "accuracy", "false_alarm_rate"}
        assert set(out["mean"]) == {"auc", "pauc"}
    assert out["members"] == {"ae": 1, "idclf": 1} and out["model_version"] is None
