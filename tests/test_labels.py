"""Operator verdicts (slidead label): stored in DuckDB, shown with the anomalies, and joined
to the evaluation set of later training runs and evaluations. Real MLflow, DuckDB, Parquet."""

from __future__ import annotations

import pytest
from plant import NIGHT, make_plant

from slidead.errors import LabelError
from slidead.jobs.labels import find_clip, label
from slidead.shell.cli import main
from slidead.shell.commands import evaluate_version, run_retrain, run_score

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def plant(tmp_path_factory):
    settings, svc, summary = make_plant(
        tmp_path_factory.mktemp("labels"),
        n_train=12,
        n_eval_normal=6,
        n_eval_anomaly=6,
        night_normal=4,
        night_anomaly=2,
    )
    # labels joining the evaluation set, not the calibration: the seed's thresholds, one network a run
    first = run_retrain(settings, "ae", "slider", epochs=3, use_prefect=False, thresholds="validation")
    run_score(settings, NIGHT, "ae", use_prefect=False)
    _, rows = svc.db.query("SELECT clip_id, uri, machine_id FROM clips WHERE split = 'drop' ORDER BY uri")
    return settings, svc, first, rows


def test_verdicts_are_stored_replaced_and_shown_with_the_anomalies(plant):
    settings, svc, _, night = plant
    cid, uri, _ = night[0]
    out = label(svc.db, cid[:10], "false_alarm", note="operator heard a forklift", by="ana")
    assert out["clip_id"] == cid and out["eval_label"] == "normal"
    label(svc.db, uri, "maintenance")  # by uri; the latest verdict wins
    _, rows = svc.db.query("SELECT verdict, note, labelled_by FROM labels WHERE clip_id = ?", [cid])
    assert rows == [("maintenance", None, rows[0][2])] and rows[0][2]
    _, flagged = svc.db.query("SELECT clip_id FROM anomalies LIMIT 1")
    if flagged:
        label(svc.db, flagged[0][0], "fault", note="bearing noise confirmed")
        _, shown = svc.db.query("SELECT verdict, verdict_note FROM anomalies WHERE clip_id = ?", [flagged[0][0]])
        assert shown == [("fault", "bearing noise confirmed")]
        svc.db.query("DELETE FROM labels WHERE clip_id = ?", [flagged[0][0]], read_only=False)
    svc.db.query("DELETE FROM labels", read_only=False)


def test_bad_labels_are_refused_with_a_reason_and_nothing_written(plant, capsys, monkeypatch):
    settings, svc, _, night = plant
    with pytest.raises(LabelError, match="no clip"):
        label(svc.db, "f" * 64, "fault")
    with pytest.raises(LabelError, match="at least 8"):
        find_clip(svc.db, night[0][0][:4])
    with pytest.raises(LabelError, match="expected one of"):
        label(svc.db, night[0][0], "broken")
    _, [(train_id,)] = svc.db.query("SELECT clip_id FROM clips WHERE split = 'train' LIMIT 1")
    with pytest.raises(LabelError, match="train clip"):
        label(svc.db, train_id, "fault")
    monkeypatch.setenv("SLIDEAD_HOME", str(settings.home))
    assert main(["label", "0123", "fault"]) == 2
    assert "no clip" in capsys.readouterr().err
    _, [(n,)] = svc.db.query("SELECT count(*) FROM labels")
    assert n == 0


def test_labelled_night_clips_join_the_evaluation_set(plant, capsys, monkeypatch, caplog):
    settings, svc, first, night = plant
    ids00 = [r for r in night if r[2] == "00"]
    monkeypatch.setenv("SLIDEAD_HOME", str(settings.home))
    assert main(["label", ids00[0][0], "fault", "--note", "clicks on every pass"]) == 0
    assert "joins the evaluation set of slider as anomaly" in capsys.readouterr().out
    label(svc.db, ids00[1][0], "fault")
    label(svc.db, ids00[2][0], "false_alarm")
    label(svc.db, ids00[3][0], "maintenance")  # left out
    before = first["report"]["per_id"]["00"]
    again = run_retrain(settings, "ae", "slider", epochs=3, use_prefect=False, thresholds="validation")
    after = again["report"]["per_id"]["00"]
    assert (after["n_anomaly"], after["n_normal"]) == (before["n_anomaly"] + 2, before["n_normal"] + 1)
    assert again["report"]["per_id"]["02"]["n_anomaly"] == first["report"]["per_id"]["02"]["n_anomaly"]
    # the evaluation of a registered version sees them too, and a gone WAV is left out, not fatal
    (svc.store.root / ids00[1][1].split("/store/", 1)[1]).unlink()
    out = evaluate_version(settings, "ae", "slider", 1)
    assert set(out["per_id"]) == {"00", "02"}
    assert "1 labelled plant clips could not be read back" in caplog.text
