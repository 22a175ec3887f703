"""Synthetic loads for the results lake's tests and bench (not a test module): what a night
hands the store, without models."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pyarrow as pa

from slidead.store.results import KEYS, SCORE_COLUMNS, ResultsDB


def night_batch(night: str, n: int, shared: str | None = None) -> tuple[pa.Table, list[dict], list[dict]]:
    """A night's shard results, clips and arrivals for ``n`` clips of slider/00; ``shared`` names
    one more clip id whose bytes also arrive on another night."""
    ids = [f"{night}-{i:05d}" for i in range(n)] + ([shared] if shared else [])
    uris = [f"drops/{night}/slider/id_00/{cid}.wav" for cid in ids]
    scores = pa.table(
        {
            "clip_id": ids,
            "model_name": ["slidead-slider-ae"] * len(ids),
            "model_version": pa.array([1] * len(ids), pa.int32()),
            "family": ["ae"] * len(ids),
            "night": [night] * len(ids),
            "machine_type": ["slider"] * len(ids),
            "machine_id": ["00"] * len(ids),
            "score": [float(i % 97) for i in range(len(ids))],
            "threshold": [90.0] * len(ids),
            "is_anomaly": [i % 97 > 90 for i in range(len(ids))],
            "peak_time_s": [1.0] * len(ids),
            "peak_freq_lo_hz": [1000.0] * len(ids),
            "peak_freq_hi_hz": [1100.0] * len(ids),
            "run_id": [f"run-{night}"] * len(ids),
            "explanation": pa.nulls(len(ids), pa.string()),
            "p_value": [0.5] * len(ids),
            "provisional": [True] * len(ids),
        }
    ).select(list(SCORE_COLUMNS))
    clips = [
        {"clip_id": c, "uri": u, "night": night, "split": "drop", "machine_type": "slider", "machine_id": "00"}
        for c, u in zip(ids, uris)
    ]
    arrivals = [
        {
            "night": night,
            "uri": u,
            "machine_type": "slider",
            "machine_id": "00",
            "size_bytes": 100,
            "etag": c,
            "clip_id": c,
        }
        for c, u in zip(ids, uris)
    ]
    return scores, clips, arrivals


# a process that loads one night; with a hold file, its first try waits (inside its open
# transaction, after its inserts) until that file exists, then commits; prints its tries
LOADER = """
import os, sys, time
sys.path.insert(0, sys.argv[5])
from lakekit import night_batch
from slidead.store.results import ResultsDB
path, night, hold, catalog = sys.argv[1:5]
db = ResultsDB(path, lock_timeout_s=120, catalog=None if catalog == "-" else catalog)
tries = 0
write = db.write
def held_write(fn, **kw):
    def body(con):
        global tries
        tries += 1
        out = fn(con)
        if tries == 1 and hold != "-":
            print("loaded", flush=True)
            while not os.path.exists(hold):
                time.sleep(0.05)
        return out
    return write(body, **kw)
db.write = held_write
scores, clips, arrivals = night_batch(night, 200, shared="shared-clip")
new = db.load_scores([scores], clips, [], arrivals)
print("tries", tries, "new", new, flush=True)
"""


def _loader(path, night, hold="-", catalog="-") -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", LOADER, str(path), night, str(hold), catalog, str(Path(__file__).parent)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def no_duplicate_keys(db: ResultsDB) -> None:
    for table, keys in KEYS.items():
        cols = ", ".join(keys)
        _, rows = db.query(f"SELECT {cols}, count(*) FROM {table} GROUP BY ALL HAVING count(*) > 1")
        assert rows == [], (table, rows[:3])


def two_nights_at_once(path: Path, catalog: str = "-") -> ResultsDB:
    """Night A opens its transaction and loads; night B loads and commits meanwhile; then A
    commits: A meets B's snapshot, starts again and lands. Both share one clip's bytes."""
    hold = path.parent / "go"
    a = _loader(path, "2026-11-20", hold, catalog)
    assert a.stdout.readline().strip() == "loaded", a.stderr.read()
    b = _loader(path, "2026-11-21", "-", catalog)
    out_b, err_b = b.communicate(timeout=120)
    assert b.returncode == 0, err_b
    hold.touch()
    out_a, err_a = a.communicate(timeout=120)
    assert a.returncode == 0, err_a
    assert out_b.split()[:4] == ["tries", "1", "new", "201"]
    tries_a = int(out_a.split()[1])
    assert tries_a >= 2, out_a  # its first commit met B's: it was retried, not failed
    assert out_a.split()[2:] == ["new", "200"]  # the shared clip was B's first: a duplicate here
    db = ResultsDB(path, catalog=None if catalog == "-" else catalog)
    _, rows = db.query("SELECT night, count(*) FROM scores GROUP BY 1 ORDER BY 1")
    assert [(str(n), c) for n, c in rows] == [("2026-11-20", 200), ("2026-11-21", 201)]
    _, rows = db.query("SELECT night, fate, count(*) FROM drops GROUP BY ALL ORDER BY ALL")
    assert [(str(n), f, c) for n, f, c in rows] == [
        ("2026-11-20", "duplicate", 1),
        ("2026-11-20", "scored", 200),
        ("2026-11-21", "scored", 201),
    ]
    no_duplicate_keys(db)
    return db
