"""Tests for slidead.jobs.ingest: one read per clip, sha256 ids, features per config, rejects, reuse."""

from __future__ import annotations

import hashlib
import os

import numpy as np
import pytest
from conftest import sine, wav_bytes

from slidead.core.audio import AudioConfig, decode
from slidead.core.features import FeatureConfig, log_mel
from slidead.core.models import for_family
from slidead.jobs.ingest import ingest, list_refs
from slidead.layout import parse_key
from slidead.store.features import FeatureStore
from slidead.store.objects import LocalObjectStore

pytestmark = pytest.mark.usefixtures("one_torch_thread")

NIGHT = "2024-03-01"
AE, VAE = for_family("ae"), for_family("vae")


def _sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def _noise(seconds, seed, channels=1, rate=16000):
    x = np.random.default_rng(seed).uniform(-0.3, 0.3, (int(seconds * rate), channels)).astype(np.float32)
    return x[:, 0] if channels == 1 else x


@pytest.fixture
def night(tmp_path):
    """A store with a night of drops (good, resampled, stereo, duplicate, corrupt, silent, skipped)."""
    store = LocalObjectStore(tmp_path / "store")
    clips = {
        "slider/id_00/a.wav": wav_bytes(_noise(1.0, 0)),
        "slider/id_00/b.wav": wav_bytes(sine(1000.0, 0.5, 44100), 44100),
        "slider/id_02/c.wav": wav_bytes(_noise(0.6, 1, channels=2), subtype="FLOAT"),
        "slider/id_04/skip.wav": wav_bytes(_noise(0.3, 2)),
        "slider/id_04/silent.wav": wav_bytes(np.zeros(8000, np.int16)),
        "slider/id_06/corrupt.wav": b"RIFF\x10\x00\x00\x00WAVEfmt " + b"\xff" * 40,
    }
    clips["slider/id_06/dup_of_a.wav"] = clips["slider/id_00/a.wav"]
    for rel, data in clips.items():
        store.put(f"drops/{NIGHT}/{rel}", data)
    store.put(f"drops/{NIGHT}/slider/no_id_folder/x.wav", clips["slider/id_00/a.wav"])
    fstore = FeatureStore.local(store.uri)
    return store, fstore, {k: v for k, v in clips.items()}


def test_list_refs_rejects_bad_keys(night):
    store, _, clips = night
    refs, rejected = list_refs(store, "drop", night=NIGHT)
    assert sorted(r.key for r in refs) == sorted(f"drops/{NIGHT}/{k}" for k in clips)
    assert rejected == [
        {
            "uri": store.uri_for(f"drops/{NIGHT}/slider/no_id_folder/x.wav"),
            "night": NIGHT,
            "reason": "bad_key",
            "detail": rejected[0]["detail"],
        }
    ]
    assert "no machine ID" in rejected[0]["detail"]
    refs_02, _ = list_refs(store, "drop", "slider", NIGHT)
    assert len(refs_02) == len(refs)
    assert list_refs(store, "drop", "fan", NIGHT) == ([], [])


def test_ingest_clips_features_rejects_skips_duplicates(night):
    store, fstore, clips = night
    refs, _ = list_refs(store, "drop", night=NIGHT)
    progress = []
    res = ingest(
        store,
        fstore,
        refs,
        [AE, VAE],
        skip_ids={_sha(clips["slider/id_04/skip.wav"])},
        progress=lambda i, n: progress.append((i, n)),
        workers=2,
    )
    assert progress == [(i, 7) for i in range(1, 8)]
    ids = {k: _sha(v) for k, v in clips.items()}

    # clips: rows keyed by the SHA-256 of their bytes
    rows = {r["clip_id"]: r for r in res.clips}
    assert set(rows) == {ids["slider/id_00/a.wav"], ids["slider/id_00/b.wav"], ids["slider/id_02/c.wav"]}
    a, b, c = (rows[ids[k]] for k in ("slider/id_00/a.wav", "slider/id_00/b.wav", "slider/id_02/c.wav"))
    assert a == {
        "clip_id": ids["slider/id_00/a.wav"],
        "uri": store.uri_for(f"drops/{NIGHT}/slider/id_00/a.wav"),
        "night": NIGHT,
        "split": "drop",
        "machine_type": "slider",
        "machine_id": "00",
        "label": None,
        "sample_rate": 16000,
        "channels": 1,
        "duration_s": 1.0,
        "note": None,
        "section": None,  # a drop's name carried no DCASE section, domain or conditions
        "domain": None,
        "attributes": None,
    }
    assert b["sample_rate"] == 44100 and b["note"] == "resampled from 44100 Hz"
    assert b["duration_s"] == pytest.approx(0.5)
    assert c["channels"] == 2 and c["note"] == "channel 0 of 2" and c["machine_id"] == "02"
    assert set(res.refs) == set(rows)
    assert res.refs[ids["slider/id_00/a.wav"]] == parse_key(f"drops/{NIGHT}/slider/id_00/a.wav")

    # rejected, with reasons, never silently dropped
    rej = {r["uri"].rsplit("/", 1)[1]: r for r in res.rejected}
    assert set(rej) == {"silent.wav", "corrupt.wav"}
    assert rej["silent.wav"]["reason"] == "silent" and rej["silent.wav"]["machine_id"] == "04"
    assert rej["silent.wav"]["clip_id"] == ids["slider/id_04/silent.wav"]
    assert rej["corrupt.wav"]["reason"] == "unreadable" and rej["corrupt.wav"]["night"] == NIGHT
    assert res.n_skipped == 1 and res.n_duplicates == 1 and res.n_reused == 0

    # features for both configs, from the same decoded audio
    assert set(res.features) == {AE.hash, VAE.hash}
    for cid in rows:
        key = next(k for k, v in ids.items() if v == cid)
        audio = decode(clips[key]).audio
        for cfg in (AE, VAE):
            row = res.features[cfg.hash][cid]
            assert row.clip_id == cid and row.machine_id == rows[cid]["machine_id"] and row.label is None
            np.testing.assert_array_equal(row.logmel, log_mel(audio, cfg))
    assert res.features[AE.hash][ids["slider/id_00/a.wav"]].logmel.shape == (64, 32)
    assert res.features[VAE.hash][ids["slider/id_00/a.wav"]].logmel.shape == (128, 32)

    # and they are in the Parquet store
    for cfg in (AE, VAE):
        assert fstore.existing(cfg, f"night={NIGHT}", "slider") == set(rows)


def test_second_ingest_reuses_stored_features(night):
    store, fstore, clips = night
    refs, _ = list_refs(store, "drop", night=NIGHT)
    first = ingest(store, fstore, refs, [AE, VAE])
    files_before = sorted(os.walk(os.path.join(store.uri, "features")))
    second = ingest(store, fstore, refs, [AE, VAE])
    assert len(first.clips) == 4 and first.n_reused == 0  # no skip_ids this time
    assert second.n_reused == 4
    assert {r["clip_id"] for r in second.clips} == {r["clip_id"] for r in first.clips}
    assert second.n_duplicates == 1 and len(second.rejected) == 2
    for cfg in (AE, VAE):
        assert set(second.features[cfg.hash]) == set(first.features[cfg.hash])
        for cid, row in first.features[cfg.hash].items():
            got = second.features[cfg.hash][cid]
            assert got.logmel.dtype == np.float32
            np.testing.assert_array_equal(got.logmel, row.logmel)
            assert (got.machine_id, got.label) == (row.machine_id, row.label)
    reused = {r["clip_id"]: r for r in second.clips}
    for r in first.clips:
        for k in ("uri", "machine_id", "sample_rate", "channels"):
            assert reused[r["clip_id"]][k] == r[k]
        assert reused[r["clip_id"]]["duration_s"] == pytest.approx(r["duration_s"], abs=1e-3)
    assert sorted(os.walk(os.path.join(store.uri, "features"))) == files_before  # nothing rewritten


def test_corrupt_feature_file_means_recompute(night):
    store, fstore, _ = night
    refs, _ = list_refs(store, "drop", night=NIGHT)
    first = ingest(store, fstore, refs, [AE, VAE])
    d = fstore.directory(VAE, f"night={NIGHT}", "slider")
    (path,) = fstore._files(d)
    with open(path, "r+b") as f:
        f.truncate(100)
    again = ingest(store, fstore, refs, [AE, VAE])
    assert again.n_reused == 0
    for cid, row in first.features[VAE.hash].items():
        np.testing.assert_array_equal(again.features[VAE.hash][cid].logmel, row.logmel)
    assert fstore.existing(VAE, f"night={NIGHT}", "slider") == set(first.features[VAE.hash])


def test_missing_object_is_rejected_not_raised(tmp_path):
    store = LocalObjectStore(tmp_path / "store")
    fstore = FeatureStore.local(store.uri)
    ref = parse_key("train/slider/id_00/gone.wav")
    res = ingest(store, fstore, [ref], [AE])
    assert res.clips == [] and len(res.rejected) == 1
    assert res.rejected[0]["reason"] == "unreadable_object" and "FileNotFoundError" in res.rejected[0]["detail"]


def test_train_and_eval_partitions_and_labels(tmp_path):
    store = LocalObjectStore(tmp_path / "store")
    fstore = FeatureStore.local(store.uri)
    store.put("train/slider/id_00/t.wav", wav_bytes(_noise(0.3, 5)))
    store.put("eval/slider/id_00/anomaly/e.wav", wav_bytes(_noise(0.3, 6)))
    refs = list_refs(store, "train")[0] + list_refs(store, "eval", "slider")[0]
    res = ingest(store, fstore, refs, [AE])
    labels = {r["split"]: r["label"] for r in res.clips}
    assert labels == {"train": "normal", "eval": "anomaly"}
    assert len(fstore.existing(AE, "set=train", "slider")) == 1
    (row,) = fstore.read(AE, "set=eval", "slider").values()
    assert row.label == "anomaly"


def test_feature_config_channel_decides_the_channel(tmp_path):
    # FeatureConfig.channel is part of the config's hash: features must come from that channel
    store = LocalObjectStore(tmp_path / "store")
    fstore = FeatureStore.local(store.uri)
    x = _noise(0.5, 7, channels=2)
    x[:, 1] *= 0.1
    data = wav_bytes(x, subtype="FLOAT")
    store.put("train/slider/id_00/st.wav", data)
    ch0, ch1 = FeatureConfig(n_mels=32), FeatureConfig(n_mels=32, channel=1)
    res = ingest(store, fstore, list_refs(store, "train")[0], [ch0, ch1])
    cid = _sha(data)
    np.testing.assert_array_equal(res.features[ch0.hash][cid].logmel, log_mel(x[:, 0], ch0))
    np.testing.assert_array_equal(res.features[ch1.hash][cid].logmel, log_mel(x[:, 1], ch1))
    # a channel the file does not have is a rejection, not an exception
    res = ingest(store, fstore, list_refs(store, "train")[0], [FeatureConfig(n_mels=32, channel=5)])
    assert [r["reason"] for r in res.rejected] == ["no_such_channel"]


def test_clip_too_short_for_a_feature_config_is_rejected(tmp_path):
    # 3000 samples: one window at hop 512, but not at hop 1024 (needs 4096)
    store = LocalObjectStore(tmp_path / "store")
    fstore = FeatureStore.local(store.uri)
    store.put("train/slider/id_00/s.wav", wav_bytes(_noise(3000 / 16000, 8)))
    res = ingest(store, fstore, list_refs(store, "train")[0], [FeatureConfig(n_mels=32, hop_length=1024)])
    assert res.clips == [] and [r["reason"] for r in res.rejected] == ["too_short"]
    res = ingest(store, fstore, list_refs(store, "train")[0], [FeatureConfig(n_mels=32)])
    assert len(res.clips) == 1


def test_audio_config_limits_still_apply(tmp_path):
    store = LocalObjectStore(tmp_path / "store")
    fstore = FeatureStore.local(store.uri)
    store.put("train/slider/id_00/l.wav", wav_bytes(_noise(1.0, 9)))
    res = ingest(store, fstore, list_refs(store, "train")[0], [AE], audio_config=AudioConfig(max_seconds=0.5))
    assert [r["reason"] for r in res.rejected] == ["too_long"]


def test_ingest_without_keeping_features_writes_them_in_bounded_files(tmp_path, monkeypatch):
    import slidead.jobs.ingest as ingest_mod

    store = LocalObjectStore(tmp_path / "store")
    fstore = FeatureStore.local(store.uri)
    for i in range(7):
        store.put(f"train/slider/id_0{i % 2}/t{i}.wav", wav_bytes(_noise(0.3, 10 + i)))
    refs, _ = list_refs(store, "train", "slider")
    kept = ingest(store, FeatureStore.local(str(tmp_path / "other")), refs, [AE])
    monkeypatch.setattr(ingest_mod, "FLUSH_CLIPS", 3)
    res = ingest(store, fstore, refs, [AE], keep_features=False)
    assert res.features == {AE.hash: {}} and len(res.refs) == 7 and len(res.clips) == 7
    assert len(fstore._files(fstore.directory(AE, "set=train", "slider"))) == 3  # 3 + 3 + 1 clips
    stored = fstore.read(AE, "set=train", "slider")
    assert set(stored) == set(res.refs) == set(kept.features[AE.hash])
    for cid, row in kept.features[AE.hash].items():
        np.testing.assert_array_equal(stored[cid].logmel, row.logmel)
    again = ingest(store, fstore, refs, [AE], keep_features=False)  # reused: still nothing kept
    assert again.n_reused == 7 and again.features == {AE.hash: {}}


def test_ordered_map_keeps_order_and_bounds_the_work_in_flight():
    import threading
    from concurrent.futures import ThreadPoolExecutor

    from slidead.jobs.ingest import _ordered

    lock, state = threading.Lock(), {"started": 0, "taken": 0, "most_ahead": 0}

    def fn(i):
        with lock:
            state["started"] += 1
            state["most_ahead"] = max(state["most_ahead"], state["started"] - state["taken"])
        return i * i

    with ThreadPoolExecutor(4) as pool:
        out = []
        for r in _ordered(pool, fn, range(50), ahead=5):
            out.append(r)
            with lock:
                state["taken"] += 1
    assert out == [i * i for i in range(50)]
    # at most `ahead` waiting, plus the one the loop body holds; pool.map would start all 50 at once
    assert 1 <= state["most_ahead"] <= 6


def test_malloc_arenas_are_capped_once_and_the_environment_wins(monkeypatch):
    import platform
    import sys

    import slidead.jobs.ingest as ingest_mod

    monkeypatch.setattr(ingest_mod, "_arenas_capped", None)
    monkeypatch.setenv("MALLOC_ARENA_MAX", "4")
    assert ingest_mod.cap_malloc_arenas() is False  # glibc has applied the user's value
    monkeypatch.setattr(ingest_mod, "_arenas_capped", None)
    monkeypatch.delenv("MALLOC_ARENA_MAX")
    glibc = sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"
    assert ingest_mod.cap_malloc_arenas() is glibc
    assert ingest_mod.cap_malloc_arenas() is False  # once per process
