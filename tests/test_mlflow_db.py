"""A new home's tracking database is copied from a cached empty one, and MLflow takes the copy
as its own: same schema revision, its Default experiment added, runs and models work."""

from __future__ import annotations

import sqlite3

from slidead.store.mlflow_db import seed_new_sqlite
from slidead.store.tracking import Tracker


def _revision(db) -> list:
    with sqlite3.connect(db) as con:
        return con.execute("SELECT version_num FROM alembic_version").fetchall()


def test_a_new_database_is_the_cached_empty_one_and_mlflow_uses_it(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    first, second = tmp_path / "a" / "mlflow.db", tmp_path / "b" / "mlflow.db"
    assert seed_new_sqlite(f"sqlite:///{first}")  # makes the template, then copies it
    template = next((tmp_path / "cache" / "slidead").glob("mlflow-*-empty.db"))
    with sqlite3.connect(template) as con:
        assert con.execute("SELECT count(*) FROM experiments").fetchone() == (0,)  # nothing of MLflow's own yet
    assert not seed_new_sqlite(f"sqlite:///{first}")  # an existing database is never replaced
    tracker = Tracker(f"sqlite:///{second}", str(tmp_path / "art"))
    assert second.is_file() and _revision(second) == _revision(template) != []
    exp = tracker.experiment_id("slider")
    run = tracker.client.create_run(exp)
    tracker.client.log_metric(run.info.run_id, "auc", 0.9)
    assert tracker.client.get_run(run.info.run_id).data.metrics == {"auc": 0.9}
    assert {e.name for e in tracker.client.search_experiments()} == {"Default", "slidead/slider"}


def test_without_a_usable_cache_mlflow_makes_the_database_itself(tmp_path, monkeypatch):
    (tmp_path / "not-a-folder").write_text("x")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "not-a-folder"))
    db = tmp_path / "home" / "mlflow.db"
    assert not seed_new_sqlite(f"sqlite:///{db}") and not db.exists()
    tracker = Tracker(f"sqlite:///{db}", str(tmp_path / "art"))
    assert tracker.experiment_id("slider") and _revision(db) != []
    assert not seed_new_sqlite("sqlite:///relative.db") and not seed_new_sqlite("http://127.0.0.1:5000")
