"""Behaviour of the additions: the ID classifier, the AE's Mahalanobis score and the fused
scores, trained briefly on the synthetic plant of test_behaviour.py (the shared
``behaviour_plant``, whose AE and ID classifier are trained once for both modules), detect its faults."""

from __future__ import annotations

from dataclasses import replace

import pytest

from slidead.core.config import RunConfig
from slidead.core.score import ScoreConfig
from slidead.jobs import retrain as steps
from slidead.jobs.fusion import evaluate_fused

pytestmark = [pytest.mark.slow, pytest.mark.integration]


def _floor(report, auc, pauc, per_id):
    mean = report["mean"]
    assert mean["auc"] >= auc, report
    assert mean["pauc"] >= pauc, report
    assert all(r["auc"] >= per_id for r in report["per_id"].values()), report


def test_idclf_auc_floor(behaviour_plant):
    out = behaviour_plant.retrain("idclf", 10)
    # measured at 0.93 mean AUC (pAUC 0.86; per ID 0.97 and 0.89) on this plant; chance is 0.5
    _floor(out["report"], 0.85, 0.70, 0.8)


def test_ae_mahalanobis_auc_floor_and_gain_over_mse(behaviour_plant):
    svc = behaviour_plant.svc
    cfg = RunConfig.default("ae", "slider", metric="mahalanobis", epochs=40, threshold_scheme="validation")
    data = steps.ingest_sets(svc, "slider", [cfg.features])
    rows = data.rows(cfg.features, "eval")
    out = steps.train_and_evaluate(cfg, data.rows(cfg.features, "train"), rows)
    # the same trained AE scored by its mean squared error instead
    mse, _ = steps.evaluate(out.model, replace(out.config, score=ScoreConfig()), rows, out.thresholds)
    # measured at 0.84 mean AUC (pAUC 0.66) against 0.69 (0.65) by MSE
    _floor(out.report, 0.75, 0.55, 0.65)
    assert out.report["mean"]["auc"] > mse["mean"]["auc"] + 0.05, (out.report["mean"], mse["mean"])


def test_fused_auc_floor(behaviour_plant):
    # the AE of test_behaviour.py's floor and the ID classifier above: each trained once, whoever asks first
    ae = behaviour_plant.retrain("ae", 40)
    idclf = behaviour_plant.retrain("idclf", 10)
    out = evaluate_fused(behaviour_plant.svc, "slider", ("ae", "idclf"))
    assert out["members"] == {"ae": ae["model_version"], "idclf": idclf["model_version"]} and out["method"] == "tail"
    # measured at 0.92 mean AUC (pAUC 0.80; AE alone 0.69, idclf alone 0.93); the bounded
    # rank normalisation gives 0.72 here (docs/models.md)
    _floor(out, 0.85, 0.65, 0.8)
