"""Bad input never stops a night: every clip ends scored (with a note where something was odd) or
in ``rejected`` with a reason and a detail. See docs/reliability.md for the table of cases."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import signal
import struct
import tempfile
from pathlib import Path

import numpy as np
import pytest
from conftest import sine, wav_bytes
from faultkit import NIGHT, clip, ledger, put_night, runs, services
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from slidead.core.audio import AudioConfig
from slidead.core.models import for_family
from slidead.jobs import nightly
from slidead.jobs.ingest import ingest, list_refs
from slidead.store.features import FeatureStore

pytestmark = [pytest.mark.faults, pytest.mark.usefixtures("one_torch_thread")]


def _patch32(data: bytes, offset: int, value: int) -> bytes:
    b = bytearray(data)
    b[offset : offset + 4] = struct.pack("<I", value)
    return bytes(b)


def _with(x: np.ndarray, index: int, value: float) -> np.ndarray:
    x = x.copy()
    x[index] = value
    return x


GOOD = clip(1.0, 1)  # 16000 frames of PCM16 after a 44-byte header
NOISE = np.random.default_rng(2).uniform(-0.3, 0.3, 16000).astype(np.float32)

# name -> (bytes, expected: a rejection reason, or "scored" with a note fragment or None)
CASES = {
    "zero_bytes.wav": (b"", "empty"),
    "not_a_wav.wav": (b"ID3\x03\x00 an mp3 renamed to .wav" + bytes(200), "not_wav"),
    "corrupt_header.wav": (GOOD[:20] + b"\xff" * 16 + GOOD[36:], "unreadable"),
    "header_only.wav": (GOOD[:44], "silent"),
    "truncated.wav": (GOOD[: 44 + 2 * 9000 + 1], ("scored", "truncated: 9000 of 16000 frames present")),
    "size_lies_bigger.wav": (_patch32(GOOD, 40, 64000), ("scored", "truncated")),
    "size_lies_zero.wav": (_patch32(_patch32(GOOD, 40, 0), 4, 0), ("scored", "header declared 0 data bytes")),
    "riff_size_lies.wav": (_patch32(GOOD, 4, 0xFFFFFFF0), ("scored", None)),
    "size_lies_smaller.wav": (_patch32(GOOD, 40, 2000), "too_short"),
    "pcm8.wav": (wav_bytes(NOISE, 16000, "PCM_U8"), ("scored", None)),
    "pcm24.wav": (wav_bytes(NOISE, 16000, "PCM_24"), ("scored", None)),
    "float32.wav": (wav_bytes(NOISE, 16000, "FLOAT"), ("scored", None)),
    "nan.wav": (wav_bytes(_with(NOISE, 500, np.nan), 16000, "FLOAT"), "non_finite"),
    "inf.wav": (wav_bytes(_with(NOISE, 9, np.inf), 16000, "FLOAT"), "non_finite"),
    "silence.wav": (wav_bytes(np.zeros(16000, np.int16)), "silent"),
    "clipped.wav": (wav_bytes(np.clip(4 * NOISE, -1, 1)), ("scored", "clipped")),
    "beyond_full_scale.wav": (wav_bytes(5 * NOISE, 16000, "FLOAT"), ("scored", "beyond full scale")),
    "too_short.wav": (wav_bytes(NOISE[:2000]), "too_short"),
    "long_20s.wav": (clip(20.0, 3), ("scored", "long clip: 20.0 s")),
    "rate_44100.wav": (clip(1.0, 4, rate=44100), ("scored", "resampled from 44100 Hz")),
    "rate_4000.wav": (clip(1.0, 5, rate=4000), "sample_rate_too_low"),
    "stereo.wav": (clip(1.0, 6, channels=2), ("scored", "channel 0 of 2")),
    "eight_channels.wav": (clip(1.0, 7, channels=8, subtype="PCM_24"), ("scored", "channel 0 of 8")),
    "name with spaces.wav": (clip(1.0, 8), ("scored", None)),
    "Prüfung_ß_日本語.wav": (clip(1.0, 9), ("scored", None)),
}


def test_a_night_of_bad_input_scores_or_rejects_every_clip(tmp_path):
    svc = services(tmp_path)
    put_night(svc.store, {f"slider/id_00/{name}": data for name, (data, _) in CASES.items()})
    bad_keys = put_night(
        svc.store,
        {
            "slider/no_machine_id/x.wav": GOOD,
            "slider/id_02/notes.txt": b"not audio",
            "slide rail/id_00/x.wav": clip(1.0, 10),
        },
    )
    res = nightly.run_night(svc, NIGHT, "ae", shard_size=8)
    assert res.n_clips == len(CASES) + len(bad_keys)

    where = ledger(svc)  # every key: scored exactly once, or rejected with a reason and a detail
    with svc.db.connect(read_only=True) as con:
        notes = dict(con.execute("SELECT uri, note FROM clips").fetchall())
    for name, (_, expected) in CASES.items():
        key = f"drops/{NIGHT}/slider/id_00/{name}"
        if isinstance(expected, str):
            assert where[key][:2] == ("rejected", expected), (name, where[key])
        else:
            assert where[key][0] == "scored", (name, where[key])
            note = notes[svc.store.uri_for(key)]
            assert (note is None) if expected[1] is None else (expected[1] in (note or "")), (name, note)
    for key in bad_keys:
        assert where[key][:2] == ("rejected", "bad_key"), where[key]
    assert "no machine ID" in where[f"drops/{NIGHT}/slider/no_machine_id/x.wav"][2]
    assert "machine_type='slide rail'" in where[f"drops/{NIGHT}/slide rail/id_00/x.wav"][2]
    n_rejected = sum(1 for v in where.values() if v[0] == "rejected")
    assert runs(svc) == [(res.run_id, "completed", len(where) - n_rejected, n_rejected, None)]


def test_minimum_sample_rate_is_configurable(tmp_path):
    svc = services(tmp_path, audio=AudioConfig(min_rate=16000))
    put_night(svc.store, {"slider/id_00/a.wav": clip(1.0, 1, rate=11025), "slider/id_00/b.wav": clip(1.0, 2)})
    nightly.run_night(svc, NIGHT, "ae")
    where = ledger(svc)
    a = where[f"drops/{NIGHT}/slider/id_00/a.wav"]
    assert a[:2] == ("rejected", "sample_rate_too_low") and "16000 Hz minimum" in a[2]
    assert where[f"drops/{NIGHT}/slider/id_00/b.wav"][0] == "scored"


def test_empty_drop_folder_completes_and_says_so(tmp_path, caplog):
    svc = services(tmp_path)
    (Path(svc.store.uri) / "drops" / NIGHT / "slider" / "id_00").mkdir(parents=True)
    caplog.set_level(logging.INFO, logger="slidead")
    res = nightly.run_night(svc, NIGHT, "ae")
    assert (res.n_clips, res.n_scored, res.n_rejected) == (0, 0, 0)
    assert f"night {NIGHT}: no clips under drops/{NIGHT}/" in caplog.messages
    assert [r[1:4] for r in runs(svc)] == [("completed", 0, 0)]


def test_symlink_out_of_the_store_is_a_bad_key_and_never_read(tmp_path):
    svc = services(tmp_path)
    secret = tmp_path / "outside.wav"
    secret.write_bytes(clip(1.0, 11))
    folder = Path(svc.store.uri) / "drops" / NIGHT / "slider" / "id_00"
    folder.mkdir(parents=True)
    (folder / "link.wav").symlink_to(secret)
    svc.store.put(f"drops/{NIGHT}/slider/id_00/real.wav", clip(1.0, 12))
    nightly.run_night(svc, NIGHT, "ae")
    with svc.db.connect(read_only=True) as con:
        rows = con.execute("SELECT reason, detail, clip_id FROM rejected").fetchall()
        assert con.execute("SELECT count(*) FROM scores").fetchone()[0] == 1
    assert len(rows) == 1 and rows[0][0] == "bad_key" and "escapes the store root" in rows[0][1]
    assert rows[0][2] is None  # its bytes were never read


# --- property: random bytes and odd WAVs never stop a run, never hang -------------------------


class _MemoryStore:
    uri = "mem://night"

    def __init__(self):
        self.objects: dict[str, bytes] = {}

    def list(self, prefix=""):
        return iter(sorted(k for k in self.objects if k.startswith(prefix)))

    def get(self, key):
        return self.objects[key]

    def put(self, key, data):
        self.objects[key] = data

    def uri_for(self, key):
        return f"{self.uri}/{key}"


_FSTORE_DIR = Path(tempfile.mkdtemp(prefix="slidead-prop-"))
_CFG = for_family("ae")


@contextlib.contextmanager
def _time_limit(seconds: float):
    """Fail (instead of hanging the suite) if one example takes longer than ``seconds``."""

    def fire(*_):
        raise TimeoutError(f"reading one night of odd files took more than {seconds} s")

    old = signal.signal(signal.SIGALRM, fire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def _ingest_never_fails(blobs: list[bytes]) -> None:
    store = _MemoryStore()
    keys = [f"drops/{NIGHT}/slider/id_00/f{i}.wav" for i in range(len(blobs))]
    for k, b in zip(keys, blobs):
        store.put(k, b)
    refs, bad = list_refs(store, "drop", night=NIGHT)
    assert not bad
    with _time_limit(20.0):
        res = ingest(store, FeatureStore.local(str(_FSTORE_DIR)), refs, [_CFG], workers=2)
    ended = [store.uri_for(r.key) for r in res.refs.values()] + [r["uri"] for r in res.rejected]
    distinct = len({hashlib.sha256(b).hexdigest() for b in blobs})
    assert len(ended) + res.n_duplicates == len(keys) and len(set(ended)) == len(ended)
    assert len(res.refs) + len(res.rejected) + res.n_duplicates >= distinct
    for r in res.rejected:
        assert r["reason"] and r["detail"], r
    for cid in res.refs:
        assert np.all(np.isfinite(res.features[_CFG.hash][cid].logmel))


_PROP = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True)


@_PROP
@given(st.lists(st.binary(max_size=3000), min_size=1, max_size=4))
def test_random_bytes_never_stop_the_run(blobs):
    _ingest_never_fails(blobs)


_SUBTYPES = ["PCM_U8", "PCM_16", "PCM_24", "PCM_32", "FLOAT", "DOUBLE"]
_RATES = [4000, 7999, 8000, 11025, 16000, 22050, 44100, 44101, 48000, 96000]


@st.composite
def odd_wavs(draw) -> bytes:
    subtype = draw(st.sampled_from(_SUBTYPES))
    channels = draw(st.integers(1, 8))
    rate = draw(st.sampled_from(_RATES))
    n = draw(st.integers(0, min(3 * rate, 60000)))
    kind = draw(st.sampled_from(["noise", "silence", "full_scale", "dc", "impulse", "nan", "inf", "huge"]))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    x = rng.uniform(-0.5, 0.5, (n, channels)).astype(np.float32)
    if kind == "silence":
        x[:] = 0
    elif kind == "full_scale":
        x = np.sign(x) + 0 * x
    elif kind == "dc":
        x[:] = 0.25
    elif kind == "impulse":
        x[:] = 0
        x[n // 2 : n // 2 + 1] = 1.0
    elif kind in ("nan", "inf") and n:
        x[rng.integers(0, n)] = np.nan if kind == "nan" else np.inf
        if subtype not in ("FLOAT", "DOUBLE"):
            subtype = "FLOAT"
    elif kind == "huge":
        x *= 1e6
        subtype = "FLOAT"
    data = wav_bytes(x if channels > 1 else x[:, 0], rate, subtype)
    cut = draw(st.one_of(st.none(), st.integers(0, len(data))))
    if cut is not None:
        data = data[:cut]
    lie = draw(st.one_of(st.none(), st.tuples(st.sampled_from([4, 40]), st.integers(0, 2**32 - 1))))
    if lie is not None and len(data) >= lie[0] + 4:
        data = _patch32(data, *lie)
    return data


@_PROP
@given(st.lists(odd_wavs(), min_size=1, max_size=3))
def test_odd_wavs_never_stop_the_run(blobs):
    _ingest_never_fails(blobs)


def test_a_sine_at_full_scale_is_not_called_clipped():
    from slidead.core.audio import decode

    assert decode(wav_bytes(sine(440.0, 1.0, amp=1.0))).note is None
    assert "clipped" in decode(wav_bytes(np.clip(sine(440.0, 1.0, amp=3.0), -1, 1))).note
