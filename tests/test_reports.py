"""The reporting queries in sql/ and slidead.shell.report, on a small hand-built results database.

Data (machine_type 'slider', model 'slidead-slider-ae'):
  nights 2026-10-01 (outside the 30-night window), 11-21, 11-22, 11-23 (the latest);
  v1 scores every night's clips, v2 re-scores the 11-23 clips (the same 8 clips as v1);
  on 11-23 id_02's scores sit far above its training baseline (drifted), id_00's do not;
  id_04 has only rejected inputs on 11-23.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pytest

from slidead.shell.report import REPORTS, format_table, run_report
from slidead.shell.sql import init_script
from slidead.store.results import SCORE_COLUMNS, SQL_DIR, ResultsDB

MT = "slider"
MODEL = "slidead-slider-ae"
LATEST = "2026-11-23"
DUCKDB_CLI = Path(sys.executable).parent / "duckdb"
SQL_FILES = sorted(p for p in SQL_DIR.glob("*.sql") if p.name != "schema.sql")

# (night, machine_id, model_version, scores, threshold); a clip is flagged when score > threshold
BATCHES = [
    ("2026-10-01", "id_00", 1, [0.9], 2.0),
    ("2026-11-21", "id_00", 1, [1.0, 1.1, 2.2], 2.0),  # one flagged, on an earlier night
    ("2026-11-21", "id_02", 1, [1.0, 1.2], 3.0),
    ("2026-11-22", "id_00", 1, [1.0, 1.05], 2.0),
    ("2026-11-22", "id_02", 1, [1.6, 1.7], 3.0),
    ("2026-11-23", "id_00", 1, [1.0, 1.1, 1.2, 1.3], 2.0),
    ("2026-11-23", "id_02", 1, [2.5, 2.6, 2.7, 4.0], 3.0),  # 4.0 flagged, ratio 1.333
    ("2026-11-23", "id_00", 2, [1.0, 1.1, 1.2, 2.6], 2.5),  # same clips: 2.6 flagged, ratio 1.04
    ("2026-11-23", "id_02", 2, [2.4, 2.6, 2.8, 4.5], 3.5),  # 4.5 flagged, ratio 1.286
]
BASELINES = {
    1: {"id_00": {"median": 1.0, "p90": 1.5}, "id_02": {"median": 1.0, "p90": 1.5}},
    2: {"id_00": {"median": 1.0, "p90": 1.4}, "id_02": {"median": 1.2, "p90": 1.6}},
}
REJECTED = [
    ("s3://drops/2026-11-22/slider/id_00/cut.wav", "2026-11-22", "id_00", "truncated"),
    ("s3://drops/2026-11-23/slider/id_02/quiet_0.wav", "2026-11-23", "id_02", "silent"),
    ("s3://drops/2026-11-23/slider/id_02/quiet_1.wav", "2026-11-23", "id_02", "silent"),
    ("s3://drops/2026-11-23/slider/id_04/zero.wav", "2026-11-23", "id_04", "empty"),
]


def _uri(night: str, mid: str, i: int) -> str:
    return f"s3://drops/{night}/{MT}/{mid}/clip_{i:02d}.wav"


def _clip_id(night: str, mid: str, i: int) -> str:
    return hashlib.sha256(_uri(night, mid, i).encode()).hexdigest()


@pytest.fixture(scope="module")
def db_path(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("reports") / "slidead.duckdb"
    db = ResultsDB(path)
    for version, baseline in BASELINES.items():
        db.record_model_version(
            {
                "model_name": MODEL,
                "version": version,
                "family": "ae",
                "machine_type": MT,
                "mean_auc": 0.9,
                "mean_pauc": 0.7,
                "promoted": version == 1,
                "decision": "test",
                "thresholds": json.dumps({"id_00": 2.0, "id_02": 3.0}),
                "baseline": json.dumps(baseline),
            }
        )
    # a version with no usable baseline must not break score_drift
    db.record_model_version(
        {"model_name": "slidead-slider-vae", "version": 1, "family": "vae", "machine_type": MT, "baseline": "not json"}
    )
    clips, rows = {}, []
    for night, mid, version, scores, threshold in BATCHES:
        for i, score in enumerate(scores):
            cid = _clip_id(night, mid, i)
            clips[cid] = {
                "clip_id": cid,
                "uri": _uri(night, mid, i),
                "night": night,
                "split": "drop",
                "machine_type": MT,
                "machine_id": mid,
                "sample_rate": 16000,
                "channels": 1,
                "duration_s": 10.0,
            }
            rows.append(
                {
                    "clip_id": cid,
                    "model_name": MODEL,
                    "model_version": version,
                    "family": "ae",
                    "night": night,
                    "machine_type": MT,
                    "machine_id": mid,
                    "score": score,
                    "threshold": threshold,
                    "is_anomaly": score > threshold,
                    "peak_time_s": 3.25 + i,
                    "peak_freq_lo_hz": 1000.0 + 100 * i,
                    "peak_freq_hi_hz": 1100.0 + 100 * i,
                    "run_id": f"run-{night}-v{version}",
                }
            )
    # a training clip's score (night NULL) must stay out of every nightly report
    clips["train0"] = {
        "clip_id": "train0",
        "uri": "s3://train/id_00/normal_0.wav",
        "split": "train",
        "machine_type": MT,
        "machine_id": "id_00",
        "label": "normal",
    }
    rows.append(
        {
            "clip_id": "train0",
            "model_name": MODEL,
            "model_version": 1,
            "family": "ae",
            "night": None,
            "machine_type": MT,
            "machine_id": "id_00",
            "score": 9.0,
            "threshold": 2.0,
            "is_anomaly": True,
            "run_id": "train",
        }
    )
    table = pa.table({c: [r.get(c) for r in rows] for c in SCORE_COLUMNS})
    assert db.load_scores([table], clips.values()) == len(rows)
    db.add_rejected(
        {
            "uri": u,
            "night": n,
            "machine_type": MT,
            "machine_id": m,
            "reason": r,
            "detail": "test",
            "run_id": f"run-{n}-v1",
        }
        for u, n, m, r in REJECTED
    )
    db.record_run(
        {
            "run_id": "run-2026-11-23-v1",
            "flow": "score",
            "night": LATEST,
            "machine_type": MT,
            "family": "ae",
            "model_name": MODEL,
            "model_version": 1,
            "status": "completed",
            "n_clips": 11,
            "n_scored": 8,
            "n_skipped": 0,
            "n_rejected": 3,
            "n_flagged": 1,
        }
    )
    return path


def _by_name(results):
    return {name: (cols, rows) for name, (_, cols, rows) in zip(REPORTS, results)}


def _dicts(cols, rows):
    return [dict(zip(cols, r)) for r in rows]


def _report(db_path, name, night=None):
    [(title, cols, rows)] = run_report(str(db_path), night=night, names=[name])
    return title, _dicts(cols, rows)


# -- the duckdb CLI, as an engineer runs the files -------------------------------------------


@pytest.fixture(scope="module")
def attach_script(db_path, tmp_path_factory) -> Path:
    """What `slidead sql --print-init` writes, for the plain duckdb shell."""
    path = tmp_path_factory.mktemp("attach") / "attach.sql"
    path.write_text(init_script(ResultsDB(db_path)))
    return path


def _cli(attach_script: Path, sql_file: Path, night: str | None = None, mode: str = "-csv") -> str:
    text = sql_file.read_text()
    if night is not None:
        text = f"SET VARIABLE night = DATE '{night}';\n" + text
    args = [str(DUCKDB_CLI)] + ([mode] if mode else []) + ["-init", str(attach_script)]
    proc = subprocess.run(args, input=text, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, f"{sql_file.name}: {proc.stderr}"
    assert "Error" not in proc.stderr, proc.stderr
    return proc.stdout


def test_every_sql_file_has_a_header():
    assert {p.stem for p in SQL_FILES} == set(REPORTS)
    for p in SQL_FILES:
        head = p.read_text().lstrip().splitlines()
        assert head[0].startswith("--"), p.name
        header = "\n".join(line for line in head if line.startswith("--"))
        assert "Variables:" in header and "duckdb" in header, p.name


@pytest.mark.parametrize("sql_file", SQL_FILES, ids=lambda p: p.stem)
@pytest.mark.parametrize("night", [None, LATEST, "2026-11-22"])
def test_cli_runs_every_file(attach_script, sql_file, night):
    out = _cli(attach_script, sql_file, night, mode="")  # the default duckbox output, as typed by hand
    assert out.strip()


def test_cli_nightly_summary(attach_script):
    f = SQL_DIR / "nightly_summary.sql"
    for night in (None, LATEST):
        lines = _cli(attach_script, f, night).splitlines()
        assert lines[0].startswith("night,machine_type,machine_id,model,arrivals,scored,duplicates,rejected,flagged")
        # no ledger rows in this database (made row by row): arrivals = scored + rejected
        assert f"{LATEST},{MT},id_02,{MODEL}:1,6,4,0,2,1,0.25," in "\n".join(lines)
        assert f"{LATEST},{MT},id_04,NULL,1,0,0,1,0,NULL,NULL,NULL" in lines
        assert len(lines) == 1 + 5
    out = _cli(attach_script, f, "2026-11-22")
    assert f"2026-11-22,{MT},id_00,{MODEL}:1,3,2,0,1,0,0.0," in out
    assert LATEST not in out


def test_cli_flagged_anomalies(attach_script):
    f = SQL_DIR / "flagged_anomalies.sql"
    for night in (None, LATEST):
        lines = _cli(attach_script, f, night).splitlines()
        assert len(lines) == 1 + 3
        assert _uri(LATEST, "id_02", 3) in lines[1] and f"{MODEL}:1" in lines[1]  # ratio 1.333 first
        assert _uri(LATEST, "id_00", 3) in lines[3]
    out = _cli(attach_script, f, "2026-11-21")
    assert _uri("2026-11-21", "id_00", 2) in out and LATEST not in out


def test_cli_other_files(attach_script):
    out = _cli(attach_script, SQL_DIR / "rejected_by_reason.sql")
    assert "silent,2," in out and "truncated,1," in out and "empty,1," in out
    out = _cli(attach_script, SQL_DIR / "rejected_by_reason.sql", LATEST)
    assert "silent,2," in out and "truncated" not in out
    out = _cli(attach_script, SQL_DIR / "score_drift.sql")
    assert f"{LATEST},{MT},id_02,{MODEL}:1" in out and ",true,drifted" in out and ",false,ok" in out
    out = _cli(attach_script, SQL_DIR / "trend_30_nights.sql")
    assert "2026-11-21" in out and "2026-10-01" not in out
    out = _cli(attach_script, SQL_DIR / "model_comparison.sql")
    assert f"{MODEL}:1,{MODEL}:2,8," in out


def test_cli_model_comparison_variables(attach_script):
    f = SQL_DIR / "model_comparison.sql"
    text = f"SET VARIABLE model_a = '{MODEL}:2';\nSET VARIABLE model_b = '{MODEL}:1';\n" + f.read_text()
    proc = subprocess.run(
        [str(DUCKDB_CLI), "-csv", "-init", str(attach_script)], input=text, capture_output=True, text=True, timeout=30
    )
    assert proc.returncode == 0, proc.stderr
    assert f"{MODEL}:2,{MODEL}:1,8," in proc.stdout
    # only one of the two set: a clear error, not a silent default
    text = f"SET VARIABLE model_a = '{MODEL}:2';\n" + f.read_text()
    proc = subprocess.run(
        [str(DUCKDB_CLI), "-csv", "-init", str(attach_script)], input=text, capture_output=True, text=True, timeout=30
    )
    assert proc.returncode != 0 and "model_b" in proc.stderr


# -- run_report ----------------------------------------------------------------------------


def test_run_report_all(db_path):
    results = run_report(str(db_path))
    assert len(results) == len(REPORTS)
    for title, cols, rows in results:
        assert isinstance(title, str) and title and cols
    assert LATEST in results[0][0]


def test_nightly_summary_rows(db_path):
    for night in (None, LATEST):
        _, rows = _report(db_path, "nightly_summary", night)
        got = {(r["machine_id"], r["model"]): (r["scored"], r["flagged"], r["rejected"]) for r in rows}
        assert got == {
            ("id_00", f"{MODEL}:1"): (4, 0, 0),
            ("id_00", f"{MODEL}:2"): (4, 1, 0),
            ("id_02", f"{MODEL}:1"): (4, 1, 2),
            ("id_02", f"{MODEL}:2"): (4, 1, 2),
            ("id_04", None): (0, 0, 1),
        }
        r = next(r for r in rows if r["machine_id"] == "id_02" and r["model"] == f"{MODEL}:1")
        assert r["anomaly_rate"] == 0.25 and r["median_score"] == pytest.approx(2.65)
        assert all(str(r["night"]) == LATEST for r in rows)
    _, rows = _report(db_path, "nightly_summary", "2026-11-21")
    got = {r["machine_id"]: (r["scored"], r["flagged"], r["rejected"]) for r in rows}
    assert got == {"id_00": (3, 1, 0), "id_02": (2, 0, 0)}


def test_flagged_anomalies_rows(db_path):
    _, rows = _report(db_path, "flagged_anomalies")
    assert [(r["uri"], r["model"]) for r in rows] == [
        (_uri(LATEST, "id_02", 3), f"{MODEL}:1"),
        (_uri(LATEST, "id_02", 3), f"{MODEL}:2"),
        (_uri(LATEST, "id_00", 3), f"{MODEL}:2"),
    ]
    top = rows[0]
    assert top["score"] == 4.0 and top["threshold"] == 3.0
    assert top["margin"] == pytest.approx(1.0) and top["ratio"] == pytest.approx(4 / 3)
    assert top["peak_time_s"] == 6.25 and (top["peak_freq_lo_hz"], top["peak_freq_hi_hz"]) == (1300.0, 1400.0)
    _, rows = _report(db_path, "flagged_anomalies", "2026-11-22")
    assert rows == []


def test_score_drift_rows(db_path):
    _, rows = _report(db_path, "score_drift")
    got = {(r["machine_id"], r["model"]): (r["drifted"], r["status"]) for r in rows}
    assert got == {
        ("id_02", f"{MODEL}:1"): (True, "drifted"),
        ("id_02", f"{MODEL}:2"): (True, "drifted"),
        ("id_00", f"{MODEL}:1"): (False, "ok"),
        ("id_00", f"{MODEL}:2"): (False, "ok"),
    }
    assert [r["drifted"] for r in rows] == [True, True, False, False]  # drifted first
    r = next(r for r in rows if r["machine_id"] == "id_02" and r["model"] == f"{MODEL}:1")
    assert r["baseline_median"] == 1.0 and r["baseline_p90"] == 1.5 and r["ratio"] == pytest.approx(2.65)
    r = next(r for r in rows if r["machine_id"] == "id_02" and r["model"] == f"{MODEL}:2")
    assert r["baseline_median"] == 1.2 and r["ratio"] == pytest.approx(2.7 / 1.2, abs=1e-4)
    # on 11-22, id_02's median (1.65) was already above its p90 (1.5); id_00's was not
    _, rows = _report(db_path, "score_drift", "2026-11-22")
    assert {r["machine_id"]: r["drifted"] for r in rows} == {"id_00": False, "id_02": True}


def test_trend_rows(db_path):
    _, rows = _report(db_path, "trend_30_nights")
    v1 = [(r["machine_id"], str(r["night"]), r["scored"], r["flagged"]) for r in rows if r["model"] == f"{MODEL}:1"]
    assert v1 == [
        ("id_00", "2026-11-21", 3, 1),
        ("id_00", "2026-11-22", 2, 0),
        ("id_00", LATEST, 4, 0),
        ("id_02", "2026-11-21", 2, 0),
        ("id_02", "2026-11-22", 2, 0),
        ("id_02", LATEST, 4, 1),
    ]
    assert len(rows) == 8
    r = next(r for r in rows if r["machine_id"] == "id_02" and str(r["night"]) == LATEST and r["model"].endswith(":1"))
    assert r["median_score_7n"] == pytest.approx((1.1 + 1.65 + 2.65) / 3)
    _, rows = _report(db_path, "trend_30_nights", "2026-11-22")
    assert max(str(r["night"]) for r in rows) == "2026-11-22" and len(rows) == 4
    _, rows = _report(db_path, "trend_30_nights", "2026-10-30")  # window 10-01 .. 10-30
    assert [(r["machine_id"], str(r["night"])) for r in rows] == [("id_00", "2026-10-01")]


def test_rejected_rows(db_path):
    title, rows = _report(db_path, "rejected_by_reason")
    assert "all nights" in title
    assert [(r["reason"], r["n"]) for r in rows] == [("silent", 2), ("empty", 1), ("truncated", 1)]
    assert rows[0]["example_uri"] in {u for u, *_ in REJECTED[1:3]} and rows[0]["last_seen"] is not None
    _, rows = _report(db_path, "rejected_by_reason", LATEST)
    assert [(r["reason"], r["n"], r["machines"]) for r in rows] == [("silent", 2, 1), ("empty", 1, 1)]


def test_model_comparison_rows(db_path):
    _, rows = _report(db_path, "model_comparison")
    assert len(rows) == 1
    r = rows[0]
    assert (r["model_a"], r["model_b"], r["n_common"], r["machines"]) == (f"{MODEL}:1", f"{MODEL}:2", 8, 2)
    assert (r["flagged_a"], r["flagged_b"], r["flagged_both"]) == (1, 2, 1)
    assert r["agreement"] == 0.875
    assert r["mean_score_a"] == pytest.approx(sum([1.0, 1.1, 1.2, 1.3, 2.5, 2.6, 2.7, 4.0]) / 8)
    assert 0.8 < r["rank_corr"] <= 1.0


# -- validation, formatting, read-only -------------------------------------------------------


@pytest.mark.parametrize(
    "bad", ["2026-13-01", "x'; DROP TABLE scores; --", "2026-11-23 ", "20261123", "2026-02-30", ""]
)
def test_bad_night(db_path, bad):
    with pytest.raises(ValueError, match="night") as exc:
        run_report(str(db_path), night=bad)
    assert repr(bad) in str(exc.value)


def test_unknown_report(db_path):
    with pytest.raises(ValueError, match="nightly_summary") as exc:
        run_report(str(db_path), names=["nightly_summary", "no_such_report"])
    assert "no_such_report" in str(exc.value)
    for name in REPORTS:
        assert name in str(exc.value)


def test_missing_database(tmp_path):
    with pytest.raises(FileNotFoundError):
        run_report(str(tmp_path / "nothing.duckdb"))


def test_reports_leave_database_unchanged(db_path):
    def state():
        counts = ResultsDB(db_path).query(
            "SELECT (SELECT count(*) FROM scores), (SELECT count(*) FROM clips), "
            "(SELECT count(*) FROM rejected), (SELECT count(*) FROM model_versions), (SELECT count(*) FROM runs)"
        )[1]
        return ResultsDB(db_path).snapshots()[-1][0], counts  # no new snapshot: nothing was written

    before = state()
    run_report(str(db_path))
    run_report(str(db_path), night=LATEST)
    with pytest.raises(ValueError):
        run_report(str(db_path), night="x'; DROP TABLE scores; --")
    assert state() == before


def test_format_table_shape():
    cols = ["machine_id", "scored", "rate", "median_score", "drifted", "night"]
    rows = [
        ("id_00", 4, 0.083333333, 1.23456789, False, dt.date(2026, 11, 23)),
        ("id_02", 12, None, 1234.5678, True, dt.date(2026, 11, 23)),
    ]
    text = format_table(cols, rows)
    lines = text.splitlines()
    assert len(lines) == 2 + len(rows) + 1 and lines[-1] == "(2 rows)"
    assert lines[0].split() == cols
    assert set(lines[1]) == {"-", " "}
    assert "0.08333" in text and "1.235" in text and "1234.568" in text and "1.23456789" not in text
    # numbers right-aligned: the scored column ends at the same position in every row
    end = lines[0].index("scored") + len("scored")
    assert lines[2][end - 1] == "4" and lines[3][end - 2 : end] == "12"
    assert "true" in lines[3] and "2026-11-23" in lines[2]

    assert "(no rows)" in format_table(cols, [])
    assert format_table([], []) == "(no rows)"
    many = format_table(["i"], [(i,) for i in range(120)], max_rows=10)
    assert len(many.splitlines()) == 2 + 10 + 1 and "110 more rows" in many


def test_library_module_does_not_import_prefect():
    code = "import sys, slidead.shell.report; assert 'prefect' not in sys.modules, 'prefect imported'"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr


def test_format_every_report(db_path):
    for title, cols, rows in run_report(str(db_path)):
        text = format_table(cols, rows)
        assert text.splitlines()[0].split()[0] == cols[0], title


def test_empty_database(tmp_path):
    path = tmp_path / "empty.duckdb"
    with ResultsDB(path).connect():
        pass  # schema only
    for title, cols, rows in run_report(str(path)):
        assert cols and rows == [], title
        assert "(no rows)" in format_table(cols, rows)
    script = tmp_path / "attach.sql"
    script.write_text(init_script(ResultsDB(path)))
    for f in SQL_FILES:
        _cli(script, f)
