"""`mlflow server` on the demo-style store: both families' runs, metrics, plots and registered
versions are visible through its REST API, as the MLflow UI sees them."""

from __future__ import annotations

import json
import urllib.parse
import urllib.request

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _get(base: str, endpoint: str, **params) -> dict:
    url = f"{base}/api/2.0/mlflow/{endpoint}"
    if params:
        url += "?" + urllib.parse.urlencode(params, doseq=True)
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.loads(r.read())


def _post(base: str, path: str, body: dict) -> dict:
    req = urllib.request.Request(
        f"{base}/api/2.0/mlflow/{path}", data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())


def test_mlflow_server_shows_both_families(mlflow_server):
    base = mlflow_server  # the server and the trained store are session fixtures (conftest.py)
    exp = _get(base, "experiments/get-by-name", experiment_name="slidead/slider")["experiment"]
    runs = _post(base, "runs/search", {"experiment_ids": [exp["experiment_id"]]})["runs"]
    families = sorted(next(t["value"] for t in r["data"]["tags"] if t["key"] == "family") for r in runs)
    assert families == ["ae", "vae"]
    for r in runs:
        metrics = {m["key"] for m in r["data"]["metrics"]}
        assert {"mean_auc", "mean_pauc", "auc_id_00", "pauc_id_02", "train_loss", "val_loss"} <= metrics
        params = {p["key"] for p in r["data"]["params"]}
        assert {"train.lr", "features.n_mels", "features.hash", "model.input_dim"} <= params
        files = _get(base, "artifacts/list", run_id=r["info"]["run_id"], path="plots")["files"]
        assert {f["path"] for f in files} >= {
            "plots/loss_curves.png",
            "plots/roc_curves.png",
            "plots/score_distributions.png",
            "plots/reconstruction.png",
        }
        root = {f["path"] for f in _get(base, "artifacts/list", run_id=r["info"]["run_id"])["files"]}
        assert {"thresholds.json", "evaluation.json", "data.json"} <= root
    for family in ("ae", "vae"):
        rm = _get(base, "registered-models/get", name=f"slidead-slider-{family}")["registered_model"]
        assert [a["alias"] for a in rm.get("aliases", [])] == ["champion"]
