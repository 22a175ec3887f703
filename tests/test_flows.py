"""The Prefect flows, run for real under Prefect's test harness (a temporary local API)."""

from __future__ import annotations

import logging

import pytest
from plant import NIGHT, make_plant
from prefect.client.orchestration import get_client
from prefect.testing.utilities import prefect_test_harness

pytestmark = pytest.mark.integration

# the flows' wiring is asserted here, not what the model learns: 8 training clips per ID will do
SMALL = dict(n_train=8, n_eval_normal=3, n_eval_anomaly=3)


@pytest.fixture(scope="module")
def harness():
    with prefect_test_harness(server_startup_timeout=120):
        yield


class _Kept(logging.Handler):
    def __init__(self):
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_retrain_then_score_flows(harness, tmp_path, monkeypatch):
    monkeypatch.setenv("SLIDEAD_HOME", str(tmp_path))
    settings, svc, summary = make_plant(tmp_path, **SMALL)
    from flows.retrain import retrain
    from flows.score import score

    # on the task runs' logger itself: once Prefect has set up its logging (another module of the
    # same worker may have), its loggers no longer propagate to the root logger pytest watches
    kept, task_runs = _Kept(), logging.getLogger("prefect.task_runs")
    task_runs.addHandler(kept)
    try:
        state = retrain(family="ae", machine_type="slider", epochs=2, return_state=True)
    finally:
        task_runs.removeHandler(kept)
    assert state.is_completed()
    out = state.result()
    assert out["promoted"] and out["model_version"] == 1 and set(out["report"]["per_id"]) == {"00", "02"}
    # the library's log lines reach the run's log (each step's task run), not just a terminal
    assert any("clips under train/slider/" in r.getMessage() for r in kept.records)

    night = score(night=NIGHT, family="ae")
    n = len(summary["night_truth"])
    assert night["n_scored"] == n and night["models"] == {"slidead-slider-ae": 1}
    with svc.db.connect(read_only=True) as con:
        assert con.execute("SELECT count(*) FROM scores WHERE night = ?::DATE", [NIGHT]).fetchone()[0] == n
        status = con.execute("SELECT status, n_scored FROM runs WHERE flow = 'score'").fetchall()
    assert status == [("completed", n)]

    import anyio

    async def artifacts():
        async with get_client() as client:
            return await client.read_artifacts()

    found = {a.key: a for a in anyio.run(artifacts)}
    assert f"flagged-{NIGHT}" in found and f"night-{NIGHT}" in found and "retrain-slider-ae" in found
    # the night's page for people, in the store and linked from the flow run
    assert night["report"].endswith(f"reports/night-{NIGHT}.html") and svc.store.exists(f"reports/night-{NIGHT}.html")
    assert f"reports/night-{NIGHT}.html)" in found[f"night-report-{NIGHT}"].data  # a markdown link


def test_score_flow_without_champion_fails_with_advice(harness, tmp_path, monkeypatch):
    monkeypatch.setenv("SLIDEAD_HOME", str(tmp_path))
    make_plant(
        tmp_path, n_train=2, n_eval_normal=0, n_eval_anomaly=0, machine_ids=("00",), night_normal=1, night_anomaly=0
    )
    from flows.score import score

    state = score(night=NIGHT, family="vae", return_state=True)
    assert state.is_failed()
    with pytest.raises(Exception, match="retrain"):
        state.result()
    from slidead.settings import Settings
    from slidead.store.services import Services

    db = Services.from_settings(Settings()).db
    _, rows = db.query("SELECT count(*) FROM scores")
    assert rows == [(0,)]
    _, runs = db.query("SELECT status, detail FROM runs WHERE flow = 'score'")
    assert runs[0][0] == "failed" and "NoChampionError" in runs[0][1]


def test_retrain_flow_takes_metric_and_stream(harness, tmp_path, monkeypatch):
    monkeypatch.setenv("SLIDEAD_HOME", str(tmp_path))
    settings, svc, _ = make_plant(tmp_path, nights=(), **SMALL)
    from flows.retrain import retrain

    out = retrain(
        family="ae", machine_type="slider", epochs=2, metric="mahalanobis", stream="parquet", thresholds="oof"
    )
    loaded = svc.tracker.load("slidead-slider-ae", out["model_version"])
    assert loaded.config.score.metric == "mahalanobis" and loaded.config.train.stream == "parquet"
    # out-of-fold thresholds need the clips in memory: streamed, the validation split sets them
    assert loaded.config.train.threshold_scheme == "oof"
    assert {f.source for f in loaded.thresholds.per_id.values()} <= {"validation", "validation+train"}
    assert loaded.model.mahalanobis.ids == ("00", "02")  # fitted per machine ID, not just present
