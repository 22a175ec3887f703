"""A machine that wears out slowly over several nights, through the real pipeline (MLflow
sqlite, Parquet, DuckDB): its drift alarm comes before its clips are flagged, the healthy
machine beside it raises no drift, and re-running a night changes no alarm."""

from __future__ import annotations

import pytest
from plant import make_plant

from slidead.shell.commands import run_retrain, run_score
from slidead.synth.plant import PlantSpec
from slidead.synth.wear import wear_nights

pytestmark = [pytest.mark.slow, pytest.mark.integration]

SEVERITIES = [0, 0, 0, 0.15, 0.25, 0.35, 0.45, 0.55, 0.65, 0.8, 1.0]  # rail clicks on id 02, night by night
NIGHTS = tuple(f"2026-12-{d:02d}" for d in range(1, len(SEVERITIES) + 1))


@pytest.fixture(scope="module")
def worn_plant(tmp_path_factory):
    settings, svc, _ = make_plant(tmp_path_factory.mktemp("wear"), nights=(), n_train=30)
    # one model version across the nights: the drift reference is per version, and commissioning
    # after the first nights would start it again (commissioning has its own tests)
    settings = settings.model_copy(update={"commission_nights": 0})
    run_retrain(settings, "vae", "slider", epochs=40, use_prefect=False, thresholds="validation")
    spec = PlantSpec(
        machine_type="slider", machine_ids=("00", "02"), nights=NIGHTS, night_normal=20, night_anomaly=0, seed=7
    )
    wear_nights(svc.store.put, spec, "02", SEVERITIES, fault="rail_clicks")
    outs = [run_score(settings, night, "vae", use_prefect=False) for night in NIGHTS]
    return settings, svc, outs


def _alarms(svc):
    _, rows = svc.db.query(
        "SELECT kind, machine_id, CAST(night AS VARCHAR), cleared_night, raised_at FROM alarms ORDER BY night, kind"
    )
    return rows


def test_drift_is_raised_before_the_worn_machines_clips_are_flagged(worn_plant):
    _, svc, outs = worn_plant
    rows = _alarms(svc)
    drift = [r for r in rows if r[0] == "drift" and r[1] == "02"]
    assert len(drift) == 1, rows  # raised once, not every night
    drift_night = drift[0][2]
    assert drift_night > NIGHTS[3]  # after the warm-up nights, while it was still wearing
    flagged = [r[2] for r in rows if r[0] == "flagged" and r[1] == "02"]
    assert all(n > drift_night for n in flagged), rows
    # on the drift night at most k of its 20 clips were flagged (fewer than k before the calibration
    # split changed, k since): the flagged alarm (k of the last n) had not fired by then (above)
    _, [(n_flagged,)] = svc.db.query(
        "SELECT n_flagged FROM machine_nights WHERE machine_id = '02' AND night = ?::DATE", [drift_night]
    )
    assert n_flagged <= svc.alarms.k
    # the run that raised it said so
    raised_by = outs[NIGHTS.index(drift_night)]["alarms"]
    assert any("drifted up" in d and "id 02" in d for d in raised_by)


def test_healthy_machine_raises_no_drift_and_has_a_flat_cusum(worn_plant):
    _, svc, _ = worn_plant
    assert not [r for r in _alarms(svc) if r[0] == "drift" and r[1] == "00"]
    _, rows = svc.db.query("SELECT max(cusum), count(*) FROM machine_nights WHERE machine_id = '00'")
    assert rows[0][0] < svc.alarms.limit and rows[0][1] == len(NIGHTS)


def test_rerunning_a_night_changes_no_alarm(worn_plant):
    settings, svc, _ = worn_plant
    before = _alarms(svc)
    again = run_score(settings, NIGHTS[5], "vae", use_prefect=False)
    assert again["n_scored"] == 0 and again["alarms"] == []
    assert _alarms(svc) == before
