"""The ID classifier, the Mahalanobis score and fusion through tracking, the CLI and the nightly
scoring: real MLflow (sqlite), real stores, a small synthetic plant."""

from __future__ import annotations

import json

import mlflow
import numpy as np
import pytest
import torch
from plant import NIGHT, make_plant

from slidead.core.config import RunConfig
from slidead.core.models import AE, IDClf
from slidead.core.score import fit_normal_statistics, score_logmels
from slidead.core.thresholds import Fit, Thresholds
from slidead.core.train import FrameWindows
from slidead.shell.cli import main
from slidead.shell.commands import run_retrain, run_score
from slidead.store.tracking import Tracker

pytestmark = pytest.mark.integration


def _report(ids=("00", "02")):
    return {"per_id": {m: {"auc": 0.5, "pauc": 0.5} for m in ids}, "mean": {"auc": 0.5, "pauc": 0.5}}


@pytest.mark.parametrize("family, metric", [("idclf", "mahalanobis"), ("idclf", "logit"), ("ae", "mahalanobis")])
def test_round_trip_through_tracking_rebuilds_the_model_and_its_statistics(tmp_path, family, metric):
    cfg = RunConfig.default(family, "slider", metric=metric, epochs=1).with_classes(["02", "00", "04"])
    torch.manual_seed(0)
    model = cfg.build_model()
    rng = np.random.default_rng(0)
    clips = [rng.normal(-30, 6, (cfg.features.n_mels, 60)).astype(np.float32) for _ in range(6)]
    ids = ["00", "02", "04", "00", "02", "04"]
    windows = FrameWindows(clips, cfg.features.frames, [0, 1, 2, 0, 1, 2], getattr(model, "window_hop", 1))
    fit_normal_statistics(model, windows, ("00", "02", "04"), cfg.score)
    thresholds = Thresholds(0.9, {m: Fit(1.0, 5, "gamma") for m in ("00", "02", "04")}, {"00": {"c1": 0.5}})
    tracker = Tracker(f"sqlite:///{tmp_path}/mlflow.db", str(tmp_path / "artifacts"))
    _, version = tracker.log_training(
        cfg, model, {"train_loss": [1.0], "val_loss": [1.0]}, thresholds, _report(("00", "02", "04")), {}
    )
    loaded = tracker.load(f"slidead-slider-{family}", version)
    assert loaded.config == cfg and loaded.thresholds == thresholds
    assert isinstance(loaded.model, IDClf if family == "idclf" else AE)
    if family == "idclf":
        assert loaded.model.config.classes == ("00", "02", "04") and loaded.model.head.out_features == 3
        torch.testing.assert_close(loaded.model.band_mean, model.band_mean)
    if metric == "mahalanobis":
        assert loaded.model.mahalanobis.ids == ("00", "02", "04")
        torch.testing.assert_close(loaded.model.mahalanobis.precision, model.mahalanobis.precision)
    before = score_logmels(model, clips, cfg.features, cfg.score, machine_ids=ids)
    after = score_logmels(loaded.model, clips, cfg.features, cfg.score, machine_ids=ids)
    np.testing.assert_allclose(after.score, before.score, rtol=1e-5)
    np.testing.assert_array_equal(after.peak_freq_lo_hz, before.peak_freq_lo_hz)


@pytest.fixture(scope="module")
def plant(tmp_path_factory):
    settings, svc, summary = make_plant(tmp_path_factory.mktemp("families"))
    runs = {
        f: run_retrain(settings, f, "slider", epochs=e, use_prefect=False, thresholds="validation")
        for f, e in (("ae", 5), ("vae", 3), ("idclf", 3))
    }
    return settings, svc, summary, runs


def test_idclf_registers_and_evaluates_like_the_seed_families(plant, capsys, monkeypatch):
    settings, svc, _, runs = plant
    out = runs["idclf"]
    assert out["promoted"] and out["model_version"] == 1 and set(out["report"]["per_id"]) == {"00", "02"}
    loaded = svc.tracker.load("slidead-slider-idclf")
    assert isinstance(loaded.model, IDClf) and loaded.config.model.classes == ("00", "02")
    assert loaded.config.score.metric == "mahalanobis"
    assert set(loaded.thresholds.normal_scores) == {"00", "02"}
    run = mlflow.MlflowClient(settings.tracking_uri).get_run(loaded.run_id)
    assert run.data.params["model.classes"] == "['00', '02']" and "mean_auc" in run.data.metrics
    mlflow.set_tracking_uri(settings.tracking_uri)
    served = mlflow.pyfunc.load_model("models:/slidead-slider-idclf@champion")  # logged as code, no pickle
    x = torch.randn(3, 64 * 32)
    with torch.no_grad():
        want = loaded.model(x).numpy()
    assert served.predict(x.numpy()).shape == (3, 2) and np.allclose(served.predict(x.numpy()), want, atol=1e-5)
    monkeypatch.setenv("SLIDEAD_HOME", str(settings.home))
    assert main(["evaluate", "--family", "idclf", "--machine-type", "slider", "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert got["family"] == "idclf" and got["model_version"] == 1 and set(got["per_id"]) == {"00", "02"}
    assert set(got["per_id"]["00"]) == {"auc", "pauc", "precision", "recall", "f1", "accuracy", "false_alarm_rate"}
    assert got["mean"]["auc"] == pytest.approx(out["report"]["mean"]["auc"])
    assert main(["models", "--machine-type", "slider"]) == 0
    assert "slidead-slider-idclf" in capsys.readouterr().out


def test_evaluate_fused_json(plant, capsys, monkeypatch):
    settings, *_ = plant
    monkeypatch.setenv("SLIDEAD_HOME", str(settings.home))
    assert main(["evaluate", "--family", "fused", "--machine-type", "slider", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["family"] == "fused" and out["model_version"] is None
    assert out["members"] == {"ae": 1, "vae": 1, "idclf": 1}
    assert set(out["per_id"]) == {"00", "02"}
    for row in out["per_id"].values():
        assert set(row) == {"auc", "pauc", "precision", "recall", "f1", "accuracy", "false_alarm_rate"}
        assert 0 <= row["auc"] <= 1 and 0 <= row["pauc"] <= 1
    assert out["mean"]["auc"] == pytest.approx(np.mean([r["auc"] for r in out["per_id"].values()]))
    assert main(["evaluate", "--family", "fused", "--machine-type", "slider"]) == 0
    assert "fused AUC" in capsys.readouterr().out
    assert main(["evaluate", "--family", "fused", "--machine-type", "nosuch", "--json"]) == 2
    assert "two or more families" in capsys.readouterr().err


def test_score_a_night_with_the_idclf_champion(plant):
    settings, svc, summary, _ = plant
    out = run_score(settings, NIGHT, "idclf", use_prefect=False)
    n = len(summary["night_truth"])
    assert out["n_scored"] == n and out["n_rejected"] == 0 and out["models"] == {"slidead-slider-idclf": 1}
    with svc.db.connect(read_only=True) as con:
        rows = con.execute(
            "SELECT score, threshold, peak_time_s, peak_freq_lo_hz FROM scores "
            "WHERE model_name = 'slidead-slider-idclf'"
        ).fetchall()
    assert len(rows) == n
    assert all(np.isfinite(s) and t is not None and 0 <= p <= 10 and np.isfinite(f) for s, t, p, f in rows)
