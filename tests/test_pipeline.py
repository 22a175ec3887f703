"""End to end through the library on a small synthetic plant: real MLflow (sqlite), real
DuckDB file, real Parquet stores. No Prefect here (see test_flows.py)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch
import yaml
from plant import NIGHT, make_plant

from slidead.core.models import AE, VAE
from slidead.errors import NoChampionError
from slidead.jobs import nightly
from slidead.jobs import retrain as steps
from slidead.shell.cli import main
from slidead.shell.commands import run_retrain, run_score
from slidead.synth.sounds import machine_build, normal_clip, wav_bytes

SAMPLES = Path(__file__).resolve().parents[2] / "shared" / "samples" / "mimii"

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def plant(tmp_path_factory):
    home = tmp_path_factory.mktemp("home")
    settings, svc, summary = make_plant(home)
    # the AE's quality matters here (a crippled retrain must score below it; its flags must be
    # explained); the VAE only scores nights whose mechanics are asserted, so a few epochs do.
    # The seed's thresholds (score > threshold, "x the threshold" sentences); conformal ones: test_conformal.py
    ae = run_retrain(settings, "ae", "slider", epochs=40, use_prefect=False, thresholds="validation")
    vae = run_retrain(settings, "vae", "slider", epochs=3, use_prefect=False, thresholds="validation")
    return settings, svc, summary, {"ae": ae, "vae": vae}


def test_retrain_registers_champions_with_metrics(plant):
    settings, svc, _, runs = plant
    for family, cls in (("ae", AE), ("vae", VAE)):
        out = runs[family]
        assert out["promoted"] and out["model_version"] == 1
        assert set(out["report"]["per_id"]) == {"00", "02"}
        for row in out["report"]["per_id"].values():
            assert 0.0 <= row["auc"] <= 1.0 and 0.0 <= row["pauc"] <= 1.0
            assert row["n_normal"] == 10 and row["n_anomaly"] == 10
        loaded = svc.tracker.load(f"slidead-slider-{family}")
        assert isinstance(loaded.model, cls) and loaded.version == 1
        assert set(loaded.thresholds.per_id) == {"00", "02"}
        run = mlflow.MlflowClient(settings.tracking_uri).get_run(loaded.run_id)
        assert run.data.params["family"] == family
        assert "mean_auc" in run.data.metrics and "auc_id_00" in run.data.metrics
        history = mlflow.MlflowClient(settings.tracking_uri).get_metric_history(loaded.run_id, "val_loss")
        assert len(history) == out["epochs_run"]
    with svc.db.connect(read_only=True) as con:
        rows = con.execute("SELECT model_name, version, promoted FROM model_versions ORDER BY 1").fetchall()
    assert rows == [("slidead-slider-ae", 1, True), ("slidead-slider-vae", 1, True)]


def test_logged_model_is_code_and_weights_and_predicts_any_batch_size(plant):
    """What MLflow holds of a version: the model's code and three plain files, no pickle;
    ``mlflow.pyfunc.load_model`` rebuilds the network scoring uses, at any batch size."""
    settings, svc, _, _ = plant
    mlflow.set_tracking_uri(settings.tracking_uri)
    local = Path(mlflow.artifacts.download_artifacts("models:/slidead-slider-vae@champion"))
    names = sorted(p.name for p in local.rglob("*") if p.is_file())
    assert {"state_dict.pt", "run_config.json", "thresholds.json", "mlflow_model.py", "MLmodel"} <= set(names)
    assert not [n for n in names if n.endswith((".pkl", ".pth", ".pickle"))], names
    flavors = yaml.safe_load((local / "MLmodel").read_text())["flavors"]
    assert set(flavors) == {"python_function"} and "pytorch" not in flavors
    served = mlflow.pyfunc.load_model("models:/slidead-slider-vae@champion")
    ref = svc.tracker.load("slidead-slider-vae").model
    for n in (1, 7, 1000):
        x = torch.randn(n, 640)
        with torch.no_grad():
            want = ref(x).numpy()
        got = served.predict(x.numpy())
        assert got.shape == (n, 640)
        np.testing.assert_allclose(got, want, atol=1e-5)


def test_score_night_is_idempotent_and_incremental(plant):
    settings, svc, summary, _ = plant
    first = run_score(settings, NIGHT, "vae", use_prefect=False)
    n_night = sum(1 for k in summary["night_truth"])
    assert first["n_clips"] == n_night and first["n_scored"] == n_night and first["n_rejected"] == 0
    with svc.db.connect(read_only=True) as con:
        before = con.execute("SELECT * FROM scores ORDER BY clip_id").fetchall()
        assert con.execute("SELECT count(*) FROM clips WHERE night = ?::DATE", [NIGHT]).fetchone()[0] == n_night
    again = run_score(settings, NIGHT, "vae", use_prefect=False)
    assert again["n_scored"] == 0 and again["n_skipped"] == n_night
    with svc.db.connect(read_only=True) as con:
        assert con.execute("SELECT * FROM scores ORDER BY clip_id").fetchall() == before
    # two new clips and a broken one arrive late: only those are touched
    rng = np.random.default_rng(123)
    build = machine_build("slider", "02", 7)
    for i in range(2):
        svc.store.put(f"drops/{NIGHT}/slider/id_02/late_{i}.wav", wav_bytes(normal_clip(build, rng)))
    svc.store.put(f"drops/{NIGHT}/slider/id_02/late_broken.wav", b"RIFF\x00\x00\x00\x00WAVEjunk")
    third = run_score(settings, NIGHT, "vae", use_prefect=False)
    assert third["n_scored"] == 2 and third["n_skipped"] == n_night and third["n_rejected"] == 1
    with svc.db.connect(read_only=True) as con:
        assert con.execute("SELECT count(*) FROM scores").fetchone()[0] == n_night + 2
        reason = con.execute("SELECT reason FROM rejected WHERE uri LIKE '%late_broken.wav'").fetchone()[0]
        flagged = con.execute("SELECT count(*) FROM anomalies WHERE night = ?::DATE", [NIGHT]).fetchone()[0]
        above = con.execute(
            "SELECT count(*) FROM scores WHERE night = ?::DATE AND score > threshold", [NIGHT]
        ).fetchone()[0]
        runs = con.execute("SELECT count(*) FROM runs WHERE status = 'completed'").fetchone()[0]
    # the anomalies view is exactly the night's scores above their threshold, as the run reported
    assert reason == "unreadable" and flagged == above == third["n_flagged"] and runs == 3


def test_every_flagged_clip_has_a_one_sentence_explanation(plant):
    settings, svc, _, _ = plant
    run_score(settings, NIGHT, "ae", use_prefect=False)
    with svc.db.connect(read_only=True) as con:
        flagged = con.execute(
            "SELECT explanation, ratio, peak_freq_lo_hz, peak_freq_hi_hz FROM anomalies WHERE night = ?::DATE", [NIGHT]
        ).fetchall()
        quiet = con.execute("SELECT count(*), count(explanation) FROM scores WHERE NOT is_anomaly").fetchone()
    assert flagged, "the synthetic night has faults: some clip must be flagged"
    pattern = re.compile(
        r"^error peaks at [\d.]+-[\d.]+ k?Hz (at [\d.]+ s|between [\d.]+ and [\d.]+ s), "
        r"([\d.]+)x the threshold$"
    )
    for text, ratio, lo, hi in flagged:
        m = pattern.match(text or "")
        assert m, text
        assert float(m.group(2)) == pytest.approx(ratio, abs=0.051)
    assert quiet[0] > 0 and quiet[1] == 0  # clips under the threshold get no sentence


def test_scoring_resumes_from_shards_after_a_crash_before_the_load(plant, tmp_path):
    settings, svc, _, _ = plant
    night = "2026-11-24"
    rng = np.random.default_rng(5)
    build = machine_build("slider", "00", 7)
    for i in range(5):
        svc.store.put(f"drops/{night}/slider/id_00/{i:04d}.wav", wav_bytes(normal_clip(build, rng)))
    scored = []

    def crash_before_the_load(name, fn, *args):
        if name == "load":
            raise RuntimeError("the process died before the load")
        scored.append(fn(*args))
        return scored[-1]

    with pytest.raises(RuntimeError, match="died before the load"):
        nightly.run_night(svc, night, "vae", shard_size=2, steps=crash_before_the_load)  # shards written, no load
    crashed = scored[-1]
    assert len(crashed.shards) == 3 and crashed.n_shards_resumed == 0
    with svc.db.connect(read_only=True) as con:
        assert con.execute("SELECT count(*) FROM scores WHERE night = ?::DATE", [night]).fetchone()[0] == 0
    rerun = nightly.run_night(svc, night, "vae", shard_size=2)
    assert rerun.n_shards_resumed == 3
    with svc.db.connect(read_only=True) as con:
        assert con.execute("SELECT count(*) FROM scores WHERE night = ?::DATE", [night]).fetchone()[0] == 5


def test_evaluate_json(plant, capsys, monkeypatch):
    settings, *_ = plant
    monkeypatch.setenv("SLIDEAD_HOME", str(settings.home))
    assert main(["evaluate", "--family", "ae", "--machine-type", "slider", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["family"] == "ae" and out["machine_type"] == "slider" and out["model_version"] == 1
    assert set(out["per_id"]) == {"00", "02"}
    assert set(out["per_id"]["00"]) == {"auc", "pauc", "precision", "recall", "f1", "accuracy", "false_alarm_rate"}
    assert set(out["mean"]) == {"auc", "pauc"}
    assert out["mean"]["auc"] == pytest.approx(np.mean([r["auc"] for r in out["per_id"].values()]))


@pytest.mark.skipif(not SAMPLES.is_dir(), reason="MIMII sample clips not present")
def test_real_mimii_clips_import_and_score(plant, monkeypatch, capsys):
    settings, svc, _, _ = plant
    monkeypatch.setenv("SLIDEAD_HOME", str(settings.home))
    assert main(["import", "mimii", str(SAMPLES), "--night", "2026-11-25"]) == 0
    out = run_score(settings, "2026-11-25", "vae", use_prefect=False)
    assert out["n_clips"] == 8 and out["n_scored"] == 8 and out["n_rejected"] == 0
    with svc.db.connect(read_only=True) as con:
        facts = con.execute(
            "SELECT DISTINCT channels, sample_rate, note FROM clips WHERE night = '2026-11-25'"
        ).fetchall()
    assert facts == [(8, 16000, "channel 0 of 8")]


def test_crippled_retrain_does_not_replace_champion(plant):
    settings, svc, _, runs = plant
    # a deliberately crippled model: one epoch at a learning rate too small to learn anything
    from slidead.core.config import RunConfig

    cfg = RunConfig.default("ae", "slider", epochs=1, lr=1e-7)
    data = steps.ingest_sets(svc, "slider", [cfg.features])
    outcome = steps.train_and_evaluate(cfg, data.rows(cfg.features, "train"), data.rows(cfg.features, "eval"))
    _, version, decision = steps.register(svc, outcome, data.rows(cfg.features, "eval"))
    assert version == 2 and not decision.promoted
    assert int(svc.tracker.champion_version("slidead-slider-ae").version) == 1
    with svc.db.connect(read_only=True) as con:
        row = con.execute(
            "SELECT promoted, champion_auc FROM model_versions WHERE model_name = 'slidead-slider-ae' AND version = 2"
        ).fetchone()
    assert row[0] is False and row[1] == pytest.approx(runs["ae"]["report"]["mean"]["auc"])


def test_no_champion_is_a_clear_error(tmp_path):
    settings, svc, _ = make_plant(
        tmp_path, n_train=2, n_eval_normal=0, n_eval_anomaly=0, night_normal=1, night_anomaly=0, machine_ids=("00",)
    )
    with pytest.raises(NoChampionError, match="retrain"):
        run_score(settings, NIGHT, "vae", use_prefect=False)
