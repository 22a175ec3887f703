"""A results file written by an earlier version (one DuckDB file) moves into the results lake once,
on first use: every row, counts checked, the old file kept under another name, said in one line;
one made before explanations, alarms and labels existed gains them on the way."""

from __future__ import annotations

from pathlib import Path

import duckdb

from slidead.store.results import SCHEMA_FILE, ResultsDB

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

PREVIOUS = """
INSERT INTO clips (clip_id, uri, night, split, machine_type, machine_id)
    SELECT 'c' || i, 'drops/2026-11-23/slider/id_00/' || i || '.wav', DATE '2026-11-23', 'drop', 'slider', '00'
    FROM range(40) t(i);
INSERT INTO drops (night, uri, version, clip_id, fate, machine_type, machine_id)
    SELECT night, uri, 1, clip_id, 'scored', machine_type, machine_id FROM clips;
INSERT INTO scores (clip_id, model_name, model_version, family, night, machine_type, machine_id, score, threshold, is_anomaly)
    SELECT clip_id, 'slidead-slider-ae', 1, 'ae', night, machine_type, machine_id, 1.0, 2.0, false FROM clips;
INSERT INTO runs (run_id, flow, night, status) VALUES ('r1', 'score', DATE '2026-11-23', 'completed');
INSERT INTO labels (clip_id, verdict, labelled_by) VALUES ('c3', 'fault', 'op');
"""


def _old_file(path: Path, sql: str) -> None:
    con = duckdb.connect(str(path))
    con.execute(sql)
    con.close()


def _counts(db) -> dict[str, int]:
    return {t: db.query(f"SELECT count(*) FROM {t}")[1][0][0] for t in ("clips", "drops", "scores", "runs", "labels")}


def test_previous_versions_file_moves_into_the_lake_once(tmp_path, capfd):
    path = tmp_path / "slidead.duckdb"
    _old_file(path, SCHEMA_FILE.read_text() + PREVIOUS)  # what the previous version wrote
    db = ResultsDB(path)
    assert _counts(db) == {"clips": 40, "drops": 40, "scores": 40, "runs": 1, "labels": 1}
    err = capfd.readouterr().err
    assert err.count("\n") == 1 and "moved 122 rows in 11 tables" in err and "counts checked" in err, err
    assert not path.exists() and Path(f"{path}.moved").exists()  # kept, under a name no shell mistakes
    # a second process finds it moved: nothing said, nothing moved twice
    again = ResultsDB(path)
    assert _counts(again) == _counts(db) and capfd.readouterr().err == ""
    # and the lake keeps the keys the file kept
    again.add_clips(
        [{"clip_id": "c1", "uri": "elsewhere", "split": "drop", "machine_type": "slider", "machine_id": "00"}]
    )
    assert again.query("SELECT uri FROM clips WHERE clip_id = 'c1'")[1] == [("drops/2026-11-23/slider/id_00/1.wav",)]


def test_oldest_file_gains_columns_tables_and_views(tmp_path):
    path = tmp_path / "old.duckdb"
    _old_file(path, OLD_SCORES)
    db = ResultsDB(path)
    with db.connect() as con:
        rows = con.execute("SELECT clip_id, ratio, explanation, verdict FROM anomalies").fetchall()
        tables = {r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()}
    assert rows == [("c1", 2.0, None, None)]
    assert {"alarms", "machine_nights", "labels", "active_alarms", "anomalies"} <= tables
