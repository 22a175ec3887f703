"""Tests for the local object store, the Parquet feature store and the shard store."""

from __future__ import annotations

import os

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pytest

from slidead.core.features import FeatureConfig
from slidead.errors import LayoutError
from slidead.store.features import FeatureRow, FeatureStore, partition
from slidead.store.objects import LocalObjectStore, ObjectStore
from slidead.store.services import open_store
from slidead.store.shards import KINDS, ShardStore, shard_id


def _files(root):
    return sorted(os.path.relpath(os.path.join(d, f), root) for d, _, fs in os.walk(root) for f in fs)


# --- LocalObjectStore -----------------------------------------------------------------------


def test_local_store_put_get_exists_list(tmp_path):
    s = LocalObjectStore(tmp_path / "store")
    assert isinstance(s, ObjectStore)
    assert list(s.list()) == []
    s.put("train/slider/id_02/b.wav", b"B")
    s.put("train/slider/id_00/a.wav", b"A")
    s.put("drops/2024-03-01/slider/id_00/c.wav", b"C" * 1000)
    assert s.get("train/slider/id_00/a.wav") == b"A"
    assert s.get("drops/2024-03-01/slider/id_00/c.wav") == b"C" * 1000
    assert s.exists("train/slider/id_00/a.wav")
    assert not s.exists("train/slider/id_00/zzz.wav")
    assert not s.exists("train/slider/id_00")  # a folder is not an object
    assert list(s.list()) == [
        "drops/2024-03-01/slider/id_00/c.wav",
        "train/slider/id_00/a.wav",
        "train/slider/id_02/b.wav",
    ]
    assert list(s.list("train/")) == ["train/slider/id_00/a.wav", "train/slider/id_02/b.wav"]
    assert list(s.list("train/slider/id_0")) == ["train/slider/id_00/a.wav", "train/slider/id_02/b.wav"]
    assert list(s.list("train/slider/id_02")) == ["train/slider/id_02/b.wav"]
    assert list(s.list("eval/")) == []
    assert list(s.list("drops/2024-03-02/")) == []
    with pytest.raises(FileNotFoundError):
        s.get("train/slider/id_00/zzz.wav")


def test_local_store_overwrite_is_atomic_and_leaves_no_temp_files(tmp_path):
    s = LocalObjectStore(tmp_path)
    s.put("eval/slider/id_00/normal/x.wav", b"one")
    s.put("eval/slider/id_00/normal/x.wav", b"two")
    assert s.get("eval/slider/id_00/normal/x.wav") == b"two"
    assert _files(tmp_path) == ["eval/slider/id_00/normal/x.wav"]
    # a temp file left by a crashed writer is never listed
    (tmp_path / "eval/slider/id_00/normal/.tmp-123-y.wav").write_bytes(b"half")
    assert list(s.list()) == ["eval/slider/id_00/normal/x.wav"]


def test_local_store_uri_and_path(tmp_path):
    s = LocalObjectStore(tmp_path)
    assert s.uri == str(tmp_path.resolve())
    assert s.uri_for("train/a/id_00/x.wav") == str(tmp_path.resolve() / "train/a/id_00/x.wav")
    assert s.local_path("train/a/id_00/x.wav") == tmp_path.resolve() / "train/a/id_00/x.wav"


@pytest.mark.parametrize("key", ["../outside.wav", "train/../../outside.wav", "/etc/passwd", "a/./b", "a//b", ""])
def test_local_store_refuses_escaping_keys(tmp_path, key):
    s = LocalObjectStore(tmp_path / "root")
    for op in (lambda: s.put(key, b"x"), lambda: s.get(key), lambda: s.exists(key)):
        with pytest.raises(LayoutError):
            op()
    assert not (tmp_path / "outside.wav").exists()


@pytest.mark.parametrize("prefix", ["../", "/etc/", "/", "train/../../"])
def test_local_store_refuses_listing_outside_root(tmp_path, prefix):
    (tmp_path / "root").mkdir()
    (tmp_path / "secret.txt").write_text("x")
    s = LocalObjectStore(tmp_path / "root")
    with pytest.raises(LayoutError):
        list(s.list(prefix))


def test_local_store_refuses_symlink_escape(tmp_path):
    (tmp_path / "root").mkdir()
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "root" / "link").symlink_to(tmp_path / "elsewhere")
    s = LocalObjectStore(tmp_path / "root")
    with pytest.raises(ValueError, match="escapes"):
        s.put("link/x.wav", b"x")
    assert list((tmp_path / "elsewhere").iterdir()) == []


def test_open_store(tmp_path):
    assert isinstance(open_store(str(tmp_path)), LocalObjectStore)
    s = open_store(f"file://{tmp_path}")
    assert isinstance(s, LocalObjectStore) and s.root == tmp_path.resolve()
    with pytest.raises(ValueError, match="http://x"):
        open_store("http://x/y")


# --- FeatureStore ---------------------------------------------------------------------------

CFG = FeatureConfig(n_mels=4)


def _row(cid, t, mid="00", label=None, seed=0):
    lm = np.random.default_rng(seed).normal(-30, 10, (4, t)).astype(np.float32)
    return FeatureRow(cid, mid, label, lm)


def test_partition_names():
    assert partition("drop", "2024-03-01") == "night=2024-03-01"
    assert partition("train") == "set=train" and partition("eval", None) == "set=eval"
    with pytest.raises(ValueError, match="night"):
        partition("drop")
    with pytest.raises(ValueError, match="'test'"):
        partition("test")


def test_feature_store_round_trip_exact(tmp_path):
    fs = FeatureStore.local(str(tmp_path))
    rows = [_row("a", 7, "00", None, 1), _row("b", 313, "02", "normal", 2), _row("c", 5, "02", "anomaly", 3)]
    path = fs.write(CFG, "set=eval", "slider", rows)
    assert path.startswith(f"{tmp_path}/features/{CFG.hash}/set=eval/machine_type=slider/part-")
    assert path.endswith(".parquet") and os.path.exists(path)
    assert not any(".tmp-" in f for f in _files(tmp_path))
    got = fs.read(CFG, "set=eval", "slider")
    assert set(got) == {"a", "b", "c"}
    for r in rows:
        g = got[r.clip_id]
        assert (g.clip_id, g.machine_id, g.label) == (r.clip_id, r.machine_id, r.label)
        assert g.logmel.dtype == np.float32 and g.logmel.shape == r.logmel.shape
        np.testing.assert_array_equal(g.logmel, r.logmel)
    assert fs.existing(CFG, "set=eval", "slider") == {"a", "b", "c"}


def test_feature_store_reads_only_given_clip_ids_across_files(tmp_path):
    fs = FeatureStore.local(str(tmp_path))
    rows1 = [_row("a", 6, seed=1), _row("b", 9, seed=2), _row("c", 11, seed=3)]
    rows2 = [_row("d", 8, seed=4), _row("e", 5, seed=5)]
    fs.write(CFG, "night=2024-03-01", "slider", rows1)
    fs.write(CFG, "night=2024-03-01", "slider", rows2)
    got = fs.read(CFG, "night=2024-03-01", "slider", clip_ids={"c", "e", "zzz"})
    assert set(got) == {"c", "e"}
    np.testing.assert_array_equal(got["c"].logmel, rows1[2].logmel)
    np.testing.assert_array_equal(got["e"].logmel, rows2[1].logmel)
    assert fs.read(CFG, "night=2024-03-01", "slider", clip_ids=set()) == {}
    assert fs.existing(CFG, "night=2024-03-01", "slider") == {"a", "b", "c", "d", "e"}


def test_feature_store_keeps_configs_and_partitions_apart(tmp_path):
    fs = FeatureStore.local(str(tmp_path))
    fs.write(CFG, "set=train", "slider", [_row("a", 6)])
    other = FeatureConfig(n_mels=4, hop_length=256)
    assert fs.read(other, "set=train", "slider") == {}
    assert fs.existing(other, "set=train", "slider") == set()
    assert fs.existing(CFG, "set=eval", "slider") == set()
    assert fs.existing(CFG, "set=train", "fan") == set()


def test_feature_store_ignores_corrupt_files(tmp_path):
    fs = FeatureStore.local(str(tmp_path))
    fs.write(CFG, "set=train", "slider", [_row("good", 6)])
    lost = fs.write(CFG, "set=train", "slider", [_row("lost", 6)])
    data = open(lost, "rb").read()
    with open(lost, "wb") as f:  # cut in half, as by a crash mid-copy
        f.write(data[: len(data) // 2])
    d = fs.directory(CFG, "set=train", "slider")
    with open(f"{d}/part-garbage.parquet", "wb") as f:
        f.write(b"PAR1 this is not parquet PAR1")
    assert len(fs._files(d)) == 3
    assert set(fs.read(CFG, "set=train", "slider")) == {"good"}
    assert set(fs.read(CFG, "set=train", "slider", {"good", "lost"})) == {"good"}
    assert fs.existing(CFG, "set=train", "slider") == {"good"}  # so "lost" gets recomputed


def test_feature_store_write_checks(tmp_path):
    fs = FeatureStore.local(str(tmp_path))
    assert fs.write(CFG, "set=train", "slider", []) is None
    assert not (tmp_path / "features").exists()
    bad = FeatureRow("x", "00", None, np.zeros((5, 6), np.float32))
    with pytest.raises(ValueError, match="5 mels"):
        fs.write(CFG, "set=train", "slider", [bad])


def test_duckdb_sees_hive_partitions(tmp_path):
    fs = FeatureStore.local(str(tmp_path))
    fs.write(CFG, "night=2024-03-01", "slider", [_row("a", 6), _row("b", 7)])
    fs.write(CFG, "night=2024-03-02", "fan", [_row("c", 8)])
    fs.write(CFG, "set=train", "slider", [_row("d", 9)])
    con = duckdb.connect()
    glob = f"{tmp_path}/features/{CFG.hash}/night=*/**/*.parquet"
    rows = con.execute(
        "SELECT clip_id, CAST(night AS VARCHAR), machine_type, n_frames, len(logmel), len(logmel[1]), config_hash "
        "FROM read_parquet(?, hive_partitioning = true) ORDER BY clip_id",
        [glob],
    ).fetchall()
    assert rows == [
        ("a", "2024-03-01", "slider", 6, 6, 4, CFG.hash),
        ("b", "2024-03-01", "slider", 7, 7, 4, CFG.hash),
        ("c", "2024-03-02", "fan", 8, 8, 4, CFG.hash),
    ]
    sets = con.execute(
        'SELECT clip_id, "set", machine_type FROM read_parquet(?, hive_partitioning = true)',
        [f"{tmp_path}/features/{CFG.hash}/set=*/**/*.parquet"],
    ).fetchall()
    assert sets == [("d", "train", "slider")]
    first = con.execute(
        "SELECT logmel[1] FROM read_parquet(?, hive_partitioning = true) WHERE clip_id = 'a'", [glob]
    ).fetchone()[0]
    np.testing.assert_array_equal(np.array(first, np.float32), _row("a", 6).logmel[:, 0])


# --- ShardStore -----------------------------------------------------------------------------


def _tables(n):
    return {
        "scores": pa.table({"clip_id": [f"c{i}" for i in range(n)], "score": [float(i) for i in range(n)]}),
        "clips": pa.table({"clip_id": [f"c{i}" for i in range(n)], "uri": [f"u{i}" for i in range(n)]}),
        "rejected": pa.table({"uri": pa.array([], pa.string()), "reason": pa.array([], pa.string())}),
        "arrivals": pa.table({"uri": [f"u{i}" for i in range(n)], "clip_id": [f"c{i}" for i in range(n)]}),
    }


def test_shard_id_is_order_independent():
    assert shard_id(["b", "a"]) == shard_id(["a", "b"])
    assert shard_id(["a"]) != shard_id(["a", "b"]) and len(shard_id(["a"])) == 16
    # an object replaced by new bytes (a new tag) is a new shard; no tags: the keys alone
    assert shard_id(["a", "b"], ["1", "2"]) != shard_id(["a", "b"], ["1", "3"])
    assert shard_id(["a", "b"], [None, None]) == shard_id(["a", "b"])


def test_shard_store_write_read_done(tmp_path):
    ss = ShardStore(pafs.LocalFileSystem(), f"{tmp_path}/results/")
    sid = shard_id(["k1", "k2"])
    assert not ss.done("2024-03-01", "slidead-slider-ae", 3, sid)
    assert ss.read("2024-03-01", "slidead-slider-ae", 3, sid) is None
    tables = _tables(3)
    ss.write("2024-03-01", "slidead-slider-ae", 3, sid, tables)
    assert ss.done("2024-03-01", "slidead-slider-ae", 3, sid)
    assert not ss.done("2024-03-01", "slidead-slider-ae", 4, sid)
    got = ss.read("2024-03-01", "slidead-slider-ae", 3, sid)
    assert set(got) == set(KINDS)
    for k in KINDS:
        assert got[k].equals(tables[k])
    assert _files(tmp_path) == sorted(
        f"results/night=2024-03-01/model=slidead-slider-ae/version=3/{k}-{sid}.parquet" for k in KINDS
    )


def test_shard_store_missing_or_corrupt_kind_reads_none(tmp_path):
    ss = ShardStore(pafs.LocalFileSystem(), str(tmp_path))
    ss.write("2024-03-01", "m", 1, "s1", _tables(2))
    ss.write("2024-03-01", "m", 1, "s2", _tables(2))
    os.remove(ss.path("2024-03-01", "m", 1, "rejected", "s1"))
    assert ss.read("2024-03-01", "m", 1, "s1") is None
    with open(ss.path("2024-03-01", "m", 1, "clips", "s2"), "wb") as f:
        f.write(b"garbage")
    assert ss.read("2024-03-01", "m", 1, "s2") is None


def test_shard_store_bad_kind(tmp_path):
    with pytest.raises(ValueError, match="'bogus'"):
        ShardStore(pafs.LocalFileSystem(), str(tmp_path)).path("2024-03-01", "m", 1, "bogus", "s")


def test_get_hashed_streams_and_stops_at_the_limit(tmp_path):
    import hashlib

    from slidead.store.objects import ObjectTooLarge, get_hashed

    s = LocalObjectStore(tmp_path)
    blob = bytes(range(256)) * 9000  # 2.3 MB: three chunks
    s.put("a/b.wav", blob)
    assert get_hashed(s, "a/b.wav") == (blob, hashlib.sha256(blob).hexdigest())
    with pytest.raises(ObjectTooLarge) as e:
        get_hashed(s, "a/b.wav", limit=1 << 20)
    assert 1 << 20 < e.value.size <= 2 << 20 and e.value.head == blob[:65536]
