"""The night's ledger (``drops``): every object listed under a night's drop folder has one row per
version saying what became of it, and the counts add up to the arrivals on every path."""

from __future__ import annotations

import hashlib
import os

import pytest
from faultkit import MODEL, NIGHT, clip, ledger, put_night, services

from slidead.core.features import FeatureConfig
from slidead.jobs import nightly
from slidead.jobs.ingest import ingest, list_refs

pytestmark = [pytest.mark.faults, pytest.mark.usefixtures("one_torch_thread")]

NEXT = "2026-11-24"


def _drops(svc, night):
    with svc.db.connect(read_only=True) as con:
        rows = con.execute(
            "SELECT uri, version, fate, reason, duplicate_of, duplicate_of_night, duplicate_of_split, note, "
            "machine_type, machine_id, size_bytes, clip_id FROM drops WHERE night = ?::DATE ORDER BY uri, version",
            [night],
        ).fetchall()
    cols = "uri version fate reason dup dup_night dup_split note mtype mid size clip_id".split()
    return [dict(zip(cols, r)) for r in rows]


def _by_name(svc, night):
    return {
        r["uri"].rsplit("/", 1)[-1] + (f"@{r['version']}" if r["version"] > 1 else ""): r for r in _drops(svc, night)
    }


def _summary(svc, night):
    cols, rows = svc.db.query("SELECT * FROM nightly_summary WHERE night = ?::DATE", [night])
    return [dict(zip(cols, r)) for r in rows]


def test_every_arrival_has_one_fate_and_the_counts_add_up(tmp_path):
    svc = services(tmp_path)
    a, b, c, old, evalclip = (clip(1.0, s) for s in (1, 2, 3, 4, 5))
    # an evaluation clip the registry's training run has seen (as retrain records it)
    svc.store.put("eval/slider/id_00/normal/e0.wav", evalclip)
    refs, _ = list_refs(svc.store, "eval", "slider")
    svc.db.add_clips(ingest(svc.store, svc.features, refs, [FeatureConfig()]).clips)
    # last night: one clip
    put_night(svc.store, {"slider/id_00/yesterday.wav": old}, night=NIGHT)
    nightly.run_night(svc, NIGHT, "ae")

    put_night(
        svc.store,
        {
            "slider/id_00/a.wav": a,
            "slider/id_00/a_copy1.wav": a,  # the same bytes under three names
            "slider/id_02/a_copy2.wav": a,  # ... one of them in another machine's folder
            "slider/id_00/b.wav": b,
            "slider/id_00/old_again.wav": old,  # last night's bytes, re-sent under a new name
            "slider/id_00/leak.wav": evalclip,  # bytes equal to an evaluation clip
            "slider/id_00/broken.wav": b"RIFF\x00\x00\x00\x00WAVEjunk",
            "slider/id_00/empty.wav": b"",
            "slider/notes.txt": b"no machine folder",  # breaks the layout
        },
        night=NEXT,
    )
    first = nightly.run_night(svc, NEXT, "ae")
    rows = _by_name(svc, NEXT)
    assert set(rows) == {
        "a.wav",
        "a_copy1.wav",
        "a_copy2.wav",
        "b.wav",
        "old_again.wav",
        "leak.wav",
        "broken.wav",
        "empty.wav",
        "notes.txt",
    }
    a_uri = svc.store.uri_for(f"drops/{NEXT}/slider/id_00/a.wav")
    assert rows["a.wav"]["fate"] == "scored" and rows["b.wav"]["fate"] == "scored"
    for name in ("a_copy1.wav", "a_copy2.wav"):
        assert rows[name]["fate"] == "duplicate" and rows[name]["dup"] == a_uri, rows[name]
        assert "another name this night" in rows[name]["note"]
    assert rows["a_copy2.wav"]["mid"] == "02" or rows["a_copy2.wav"]["mid"].endswith("02")
    again = rows["old_again.wav"]
    assert again["fate"] == "duplicate" and str(again["dup_night"]) == NIGHT and "sent again" in again["note"]
    assert again["dup"].endswith("yesterday.wav")
    leak = rows["leak.wav"]
    assert leak["fate"] == "duplicate" and leak["dup_split"] == "eval" and "evaluation clip" in leak["note"]
    assert rows["broken.wav"]["fate"] == "rejected" and rows["broken.wav"]["reason"]
    assert rows["empty.wav"]["fate"] == "rejected" and rows["empty.wav"]["reason"] == "empty"
    assert rows["notes.txt"]["fate"] == "rejected" and rows["notes.txt"]["reason"] == "bad_key"
    assert rows["notes.txt"]["mtype"] is None
    assert rows["a.wav"]["size"] == len(a) and rows["a.wav"]["clip_id"] == hashlib.sha256(a).hexdigest()

    # the duplicates were not scored again: one score per distinct new clip (a, b)
    with svc.db.connect(read_only=True) as con:
        (n_scores,) = con.execute("SELECT count(*) FROM scores WHERE night = ?::DATE", [NEXT]).fetchone()
    assert n_scores == 2
    # the run's result, its per-machine ledger and nightly_summary agree and add up
    assert (first.n_arrivals, first.n_duplicates) == (9, 4)
    for m in first.ledger.values():
        assert m["arrivals"] == m["scored"] + m["duplicates"] + m["rejected"]
    assert first.ledger["slider/02"] == {"arrivals": 1, "scored": 0, "duplicates": 1, "rejected": 0}
    assert first.ledger["?"] == {"arrivals": 1, "scored": 0, "duplicates": 0, "rejected": 1}
    summary = _summary(svc, NEXT)
    assert sum(r["n_arrivals"] for r in summary) == 9
    for r in summary:
        assert r["n_arrivals"] == r["n_scored"] + r["n_duplicates"] + r["n_rejected"], r

    # a re-run changes nothing
    before = _drops(svc, NEXT)
    second = nightly.run_night(svc, NEXT, "ae")
    assert _drops(svc, NEXT) == before and second.n_scored == 0 and second.n_arrivals == 9

    # b.wav is overwritten with new bytes: a new version of that arrival, the old one kept
    key = f"drops/{NEXT}/slider/id_00/b.wav"
    svc.store.put(key, c)
    os.utime(svc.store.local_path(key), ns=(1, 1))  # a different mtime even on a coarse clock
    third = nightly.run_night(svc, NEXT, "ae")
    rows = _by_name(svc, NEXT)
    assert rows["b.wav"]["clip_id"] == hashlib.sha256(b).hexdigest()
    assert rows["b.wav@2"]["fate"] == "scored" and rows["b.wav@2"]["clip_id"] == hashlib.sha256(c).hexdigest()
    assert third.n_scored == 1 and third.n_arrivals == 10
    assert len(_drops(svc, NEXT)) == 10


def test_ledger_matches_every_listed_object(tmp_path):
    """The faults suite's end-state check reads the ledger: one row per listed object."""
    svc = services(tmp_path)
    put_night(svc.store, {"slider/id_00/x.wav": clip(1.0, 1), "slider/id_00/y.wav": b"RIFF"})
    nightly.run_night(svc, NIGHT, "ae")
    where = ledger(svc, NIGHT, MODEL)
    assert {k.rsplit("/", 1)[-1]: v[0] for k, v in where.items()} == {"x.wav": "scored", "y.wav": "rejected"}


_RSS_SCRIPT = r"""
import sys
sys.path.insert(0, sys.argv[1])
from pathlib import Path
from faultkit import services
from slidead.jobs import nightly
svc = services(Path(sys.argv[2]))
res = nightly.run_night(svc, sys.argv[3], "ae")
# VmHWM: this process's own peak since exec (ru_maxrss would carry the forking parent's, here pytest's)
hwm = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print(res.n_arrivals, res.n_rejected, hwm // 1024)
"""


@pytest.mark.slow
def test_a_multi_gigabyte_recording_is_rejected_from_its_header_with_bounded_memory(tmp_path):
    """A recorder left running: a 48 kHz stereo float WAV of 3 GiB (2.3 hours; sparse on disk).
    It is rejected too_long from its first bytes; the night's peak RSS stays far below its size."""
    import struct
    import subprocess
    import sys
    from pathlib import Path

    svc = services(tmp_path)
    put_night(svc.store, {"slider/id_00/ok.wav": clip(1.0, 1)})
    big = svc.store.local_path(f"drops/{NIGHT}/slider/id_00/recorder.wav")
    size = 3 * 2**30
    rate, channels, width = 48000, 2, 4
    data_bytes = size - 44
    header = (
        b"RIFF"
        + struct.pack("<I", min(size - 8, 0xFFFFFFFF))
        + b"WAVEfmt "
        + struct.pack("<IHHIIHH", 16, 3, channels, rate, rate * channels * width, channels * width, 8 * width)
        + b"data"
        + struct.pack("<I", data_bytes)
    )
    with open(big, "wb") as f:
        f.write(header)
        f.truncate(size)  # sparse: no disk is used for the samples
    tests = str(Path(__file__).parent)
    out = subprocess.run(
        [sys.executable, "-c", _RSS_SCRIPT, tests, str(tmp_path), NIGHT],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    ).stdout.split()
    arrivals, rejected, peak_mb = (int(x) for x in out[-3:])
    assert (arrivals, rejected) == (2, 1)
    assert peak_mb < 1200, f"peak RSS {peak_mb} MB for a night of a 1 s clip and a {size >> 20} MB file"
    (row,) = [r for r in _drops(svc, NIGHT) if r["uri"].endswith("recorder.wav")]
    assert row["fate"] == "rejected" and row["reason"] == "too_long" and row["size"] == size
    with svc.db.connect(read_only=True) as con:
        (detail,) = con.execute("SELECT detail FROM drops WHERE uri LIKE '%recorder.wav'").fetchone()
    assert "2 channel(s) at 48000 Hz" in detail and "judged from the header" in detail
