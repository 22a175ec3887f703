"""Tests for slidead.core.alarms (k of n flagged clips, CUSUM drift) and their database table."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pyarrow as pa
import pytest

from slidead.core.alarms import AlarmConfig, ClipRecord, drift, evaluate, flagged_alarms
from slidead.store import alarms as alarm_store
from slidead.store.results import SCORE_COLUMNS, ResultsDB

NAME = "slidead-slider-vae"


def night(k: int) -> str:
    return (dt.date(2026, 12, 1) + dt.timedelta(days=k)).isoformat()


def clips(flags_by_night, mid="00", version=1, scores=None):
    out = []
    for k, flags in enumerate(flags_by_night):
        for i, f in enumerate(flags):
            s = scores[k][i] if scores else (2.0 if f else 1.0)
            out.append(
                ClipRecord(
                    night(k),
                    "slider",
                    mid,
                    NAME,
                    version,
                    f"{mid}-{k}-{i}-v{version}",
                    f"drops/{night(k)}/slider/id_{mid}/{i:04d}.wav",
                    s,
                    bool(f),
                )
            )
    return out


def test_k_of_n_raises_once_at_the_clip_that_completes_k():
    cfg = AlarmConfig(k=3, n=5)
    recs = clips([[0, 1, 0, 1, 0, 1, 1, 1, 0, 1]])
    [a] = flagged_alarms(recs, cfg)
    assert a.kind == "flagged" and a.clip_id == "00-0-5-v1" and a.value == 3 and a.cleared_night is None
    assert "3 of the last 5" in a.detail


def test_below_k_never_raises_and_flags_spread_out_do_not_add_up():
    cfg = AlarmConfig(k=3, n=5)
    assert flagged_alarms(clips([[1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0, 0, 1, 0]]), cfg) == []


def test_alarm_clears_when_a_night_ends_below_k_and_a_later_cluster_raises_a_new_one():
    cfg = AlarmConfig(k=3, n=5)
    recs = clips([[1, 1, 1, 0, 0], [0, 0, 0, 0, 0], [0, 1, 1, 1, 0]])
    first, second = flagged_alarms(recs, cfg)
    assert (first.night, first.cleared_night) == (night(0), night(1))
    assert (second.night, second.cleared_night) == (night(2), None)
    assert first.alarm_id != second.alarm_id


def test_window_runs_across_nights():
    cfg = AlarmConfig(k=3, n=5)
    [a] = flagged_alarms(clips([[0, 0, 0, 1, 1], [1, 0, 0]]), cfg)
    assert a.night == night(1) and a.clip_id == "00-1-0-v1"


def test_newest_model_version_decides_a_clips_flag():
    cfg = AlarmConfig(k=2, n=3)
    old = clips([[1, 1, 1]], version=1)
    new = [
        ClipRecord(r.night, r.machine_type, r.machine_id, r.model_name, 2, r.clip_id, r.uri, 1.0, False) for r in old
    ]
    assert flagged_alarms(old + new, cfg) == []
    assert len(flagged_alarms(old, cfg)) == 1


def _scores(rng, shifts, n=30, sd=1.0):
    return [list(10.0 + shift + rng.normal(0, sd, n)) for shift in shifts]


def test_drift_catches_a_slow_rise_that_flags_no_clip():
    rng = np.random.default_rng(1)
    shifts = [0, 0, 0, 0, 0.2, 0.4, 0.6, 0.8, 1.0, 1.0]  # in clip standard deviations
    scores = _scores(rng, shifts)
    recs = clips([[0] * 30] * len(shifts), scores=scores)  # no clip flagged at all
    nights, alarms = drift(recs, AlarmConfig())
    [a] = alarms
    assert a.kind == "drift" and a.cleared_night is None and a.value > 5.0
    raised = [n.night for n in nights].index(a.night)
    assert 5 <= raised <= 9, [round(n.cusum or 0, 2) for n in nights]
    assert all(n.reference_median is None for n in nights[:3])
    assert nights[3].reference_median == pytest.approx(10.0, abs=0.3)
    assert nights[raised].cusum > 5.0 >= nights[raised - 1].cusum


def test_no_drift_on_a_steady_machine_over_a_season():
    rng = np.random.default_rng(1)
    recs = clips([[0] * 10] * 60, scores=_scores(rng, [0] * 60, n=10))
    nights, alarms = drift(recs, AlarmConfig())
    assert alarms == [] and len(nights) == 60
    assert max(n.cusum for n in nights[3:]) < 5.0


def test_drift_clears_when_the_statistic_returns_to_zero():
    rng = np.random.default_rng(2)
    shifts = [0, 0, 0, 1.5, 1.5, 1.5, -1, -1, -1, -1, -1, -1]
    [a] = drift(clips([[0] * 30] * len(shifts), scores=_scores(rng, shifts)), AlarmConfig())[1]
    assert a.night == night(3) or a.night == night(4)
    assert a.cleared_night is not None and a.cleared_night > a.night


def test_each_model_version_has_its_own_reference():
    rng = np.random.default_rng(3)
    v1 = clips([[0] * 30] * 5, scores=_scores(rng, [0] * 5), version=1)
    # version 2 scores on another scale (x100): judged against its own first nights, no drift
    v2 = clips([[0] * 30] * 5, scores=[[100 * s for s in row] for row in _scores(rng, [0] * 5)], version=2)
    nights, alarms = drift(v1 + v2, AlarmConfig())
    assert alarms == []
    assert {n.model_version for n in nights} == {1, 2}
    assert [n.reference_median for n in nights if n.model_version == 2][3] == pytest.approx(1000, rel=0.05)


def test_bad_config_is_refused():
    for bad in (dict(k=0), dict(k=11, n=10), dict(warmup_nights=0), dict(limit=0), dict(slack=-1)):
        with pytest.raises(ValueError):
            AlarmConfig(**bad)


def _load(db: ResultsDB, recs):
    rows = [
        {
            "clip_id": r.clip_id,
            "model_name": r.model_name,
            "model_version": r.model_version,
            "family": "vae",
            "night": r.night,
            "machine_type": r.machine_type,
            "machine_id": r.machine_id,
            "score": r.score,
            "threshold": 1.5,
            "is_anomaly": r.flagged,
            "run_id": "t",
        }
        for r in recs
    ]
    table = pa.table({c: [row.get(c) for row in rows] for c in SCORE_COLUMNS})
    clip_rows = [
        {
            "clip_id": r.clip_id,
            "uri": r.uri,
            "night": r.night,
            "split": "drop",
            "machine_type": r.machine_type,
            "machine_id": r.machine_id,
        }
        for r in recs
    ]
    db.load_scores([table], clip_rows)


def test_database_alarms_are_recomputed_idempotently_and_keep_raised_at(tmp_path):
    db = ResultsDB(tmp_path / "r.duckdb")
    cfg = AlarmConfig(k=3, n=5)
    first = clips([[1, 1, 1, 0, 0]])
    _load(db, first)
    [raised] = alarm_store.update(db, [NAME], cfg)
    _, before = db.query("SELECT alarm_id, kind, cleared_night, raised_at FROM alarms")
    assert alarm_store.update(db, [NAME], cfg) == []  # nothing new the second time
    _, again = db.query("SELECT alarm_id, kind, cleared_night, raised_at FROM alarms")
    assert again == before and before[0][0] == raised.alarm_id
    # a quiet second night clears it; raised_at stays, the view no longer lists it
    _load(db, clips([[1, 1, 1, 0, 0], [0, 0, 0, 0, 0]])[5:])
    assert alarm_store.update(db, [NAME], cfg) == []
    _, rows = db.query("SELECT cleared_night, raised_at FROM alarms")
    assert rows == [(dt.date.fromisoformat(night(1)), before[0][3])]
    _, active = db.query("SELECT count(*) FROM active_alarms")
    _, nights = db.query("SELECT night, n_clips, n_flagged FROM machine_nights ORDER BY night")
    assert active == [(0,)] and [r[1:] for r in nights] == [(5, 3), (5, 0)]


def test_database_view_lists_an_active_alarm_with_its_clip(tmp_path):
    db = ResultsDB(tmp_path / "r.duckdb")
    _load(db, clips([[0, 1, 1, 1]]))
    [a] = alarm_store.update(db, [NAME], AlarmConfig(k=3, n=4))
    _, rows = db.query("SELECT kind, machine_id, clip_uri, value FROM active_alarms")
    assert rows == [("flagged", "00", "drops/2026-12-01/slider/id_00/0003.wav", 3.0)]


def test_evaluate_returns_both_kinds():
    rng = np.random.default_rng(4)
    shifts = [0, 0, 0, 3, 3, 3]
    scores = _scores(rng, shifts)
    flags = [[s > 12 for s in row] for row in scores]
    _, alarms = evaluate(clips(flags, scores=scores), AlarmConfig())
    assert {a.kind for a in alarms} == {"flagged", "drift"}


def test_machine_alarms_report_lists_what_is_active_on_the_night(tmp_path):
    from slidead.shell.report import run_report

    db = ResultsDB(tmp_path / "r.duckdb")
    cfg = AlarmConfig(k=3, n=5)
    _load(db, clips([[1, 1, 1, 0, 0], [0, 0, 0, 0, 0]]))
    alarm_store.update(db, [NAME], cfg)
    for day, expected in ((night(0), 1), (night(1), 0)):  # raised on the first night, cleared on the second
        [(title, cols, rows)] = run_report(db.path, day, ["machine_alarms"])
        assert title.startswith("Machine alarms active") and len(rows) == expected
        if rows:
            row = dict(zip(cols, rows[0]))
            assert (row["kind"], row["machine_id"], row["n_flagged"]) == ("flagged", "00", 3)


def test_database_computation_equals_the_python_one(tmp_path):
    """SQL reduces the scores to windows and night aggregates; the alarms are the same as the
    plain Python computation over every clip (two machines, two versions, drift and clusters)."""
    rng = np.random.default_rng(5)
    cfg = AlarmConfig(k=3, n=6, warmup_nights=2, slack=0.5, limit=3.0)
    shifts = [0, 0, 0, 0.5, 1.0, 1.5, 0, 0]
    recs = []
    for mid, drift_on in (("00", True), ("02", False)):
        scores = _scores(rng, [s if drift_on else 0 for s in shifts], n=8)
        flags = [[bool(x > 11.0) for x in row] for row in scores]
        recs += clips(flags, mid=mid, scores=scores)
    # a second version re-scores the last two nights of machine 00
    recs += [
        ClipRecord(
            r.night, r.machine_type, r.machine_id, r.model_name, 2, r.clip_id, r.uri, r.score + 0.1, not r.flagged
        )
        for r in recs
        if r.machine_id == "00" and r.night >= night(6)
    ]
    db = ResultsDB(tmp_path / "r.duckdb")
    _load(db, recs)
    nights_db, alarms_db = alarm_store.evaluate_db(db, [NAME], cfg)
    nights_py, alarms_py = evaluate(recs, cfg)
    assert alarms_db == alarms_py and {a.kind for a in alarms_py} == {"flagged", "drift"}
    assert len(nights_db) == len(nights_py)
    for a, b in zip(nights_db, nights_py):
        assert a.__dict__.keys() == b.__dict__.keys()
        for k in a.__dict__:
            va, vb = getattr(a, k), getattr(b, k)
            assert va == pytest.approx(vb) if isinstance(vb, float) else va == vb, k


# --- a plant's false-alarm budget, per machine and week, as a clip rate -----------------------


def test_onset_probability_matches_a_simulated_healthy_machine():
    from slidead.core.alarms import onset_probability

    rng = np.random.default_rng(11)
    for p, k, n in ((0.1, 5, 10), (0.2, 3, 5)):
        flags = rng.random(4_000_000) < p
        fired = np.convolve(flags, np.ones(n, dtype=int), "valid") >= k
        onsets = np.mean(fired[1:] & ~fired[:-1])
        assert onsets == pytest.approx(onset_probability(p, k, n), rel=0.06)


def test_false_alarms_per_week_set_the_threshold_quantile():
    from slidead.core.alarms import clip_rate_for, onset_probability
    from slidead.settings import Settings

    p = clip_rate_for(0.5, 7 * 20, 5, 10)
    assert 7 * 20 * onset_probability(p, 5, 10) == pytest.approx(0.5, rel=1e-6)
    assert clip_rate_for(0.1, 140, 5, 10) < p < clip_rate_for(1.0, 140, 5, 10)
    assert Settings().threshold_quantile() == 0.9
    s = Settings(false_alarms_per_week=0.5, clips_per_night=20, alarm_k=5, alarm_n=10)
    assert s.threshold_quantile() == pytest.approx(1 - p)
    with pytest.raises(ValueError, match="more than k=5 of n=10"):
        clip_rate_for(1000, 140, 5, 10)
