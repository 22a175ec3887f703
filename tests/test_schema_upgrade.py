"""A results database made before explanations, alarms and labels existed opens, keeps its
rows, and gains the new columns, tables and views."""

from __future__ import annotations

import duckdb

from slidead.store.results import ResultsDB

OLD_SCORES = """
CREATE TABLE scores (
    clip_id VARCHAR NOT NULL, model_name VARCHAR NOT NULL, model_version INTEGER NOT NULL,
    family VARCHAR NOT NULL, night DATE, machine_type VARCHAR NOT NULL, machine_id VARCHAR NOT NULL,
    score DOUBLE NOT NULL, threshold DOUBLE, is_anomaly BOOLEAN, peak_time_s DOUBLE,
    peak_freq_lo_hz DOUBLE, peak_freq_hi_hz DOUBLE, run_id VARCHAR,
    scored_at TIMESTAMP DEFAULT current_timestamp, PRIMARY KEY (clip_id, model_name, model_version));
INSERT INTO scores VALUES ('c1', 'slidead-slider-vae', 1, 'vae', DATE '2026-11-23', 'slider', '00',
                           2.0, 1.0, true, 1.5, 1000, 1100, 'r', now());
"""


def test_old_database_upgrades_in_place(tmp_path):
    path = tmp_path / "old.duckdb"
    con = duckdb.connect(str(path))
    con.execute(OLD_SCORES)
    con.close()
    db = ResultsDB(path)
    with db.connect() as con:  # a writing connection applies the schema
        rows = con.execute("SELECT clip_id, ratio, explanation, verdict FROM anomalies").fetchall()
        tables = {r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()}
    assert rows == [("c1", 2.0, None, None)]
    assert {"alarms", "machine_nights", "labels", "active_alarms", "anomalies"} <= tables
