"""Training streamed from the Parquet feature store: the same windows as in memory, a seeded
shuffle, a bounded buffer, and a model as good as the in-memory one."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch
from plant import make_plant

from slidead.core.config import RunConfig
from slidead.core.features import FeatureConfig
from slidead.core.models import AE, AEConfig
from slidead.core.score import ScoreConfig, fit_normal_statistics
from slidead.core.train import FrameWindows, TrainConfig, evaluate_loss, fit
from slidead.jobs import retrain as steps
from slidead.jobs.stream import StoredClips, StreamWindows, stored_rows
from slidead.store.features import FeatureRow, FeatureStore

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CFG = FeatureConfig(n_mels=8, frames=5)
PART, MTYPE = "set=train", "slider"


def _store(tmp_path, n=70, seed=0, files=(30, 40)):
    """``n`` clips of 8 mels and varied lengths (two shorter than a window) in ``len(files)``
    Parquet files; returns the store, the rows in clip ID order and a label per clip ID."""
    rng = np.random.default_rng(seed)
    lengths = [int(x) for x in rng.integers(5, 40, size=n)]
    lengths[3], lengths[11] = 3, 4  # no window at all
    rows = [
        FeatureRow(f"c{i:03d}", f"{i % 3:02d}", None, rng.normal(size=(8, t)).astype(np.float32))
        for i, t in enumerate(lengths)
    ]
    fs = FeatureStore.local(str(tmp_path))
    start = 0
    for k in files:
        fs.write(CFG, PART, MTYPE, rows[start : start + k])
        start += k
    labels = {r.clip_id: int(r.machine_id) // 2 for r in rows}
    return fs, rows, labels


def _multiset(x: torch.Tensor, y: torch.Tensor | None) -> Counter:
    ys = [None] * len(x) if y is None else y.tolist()
    return Counter((row.numpy().tobytes(), lab) for row, lab in zip(x, ys))


def _epoch(w, batch, seed):
    out = list(w.epoch_batches(batch, torch.Generator().manual_seed(seed)))
    x = torch.cat([b[0] for b in out])
    y = None if out[0][1] is None else torch.cat([b[1] for b in out])
    return out, x, y


@pytest.mark.parametrize("stride, with_labels, buffer", [(1, False, 7), (3, True, 7), (2, True, 500)])
def test_an_epoch_streams_exactly_the_frame_windows(tmp_path, stride, with_labels, buffer):
    fs, rows, labels = _store(tmp_path)
    clips = StoredClips.open(fs, CFG, PART, MTYPE)
    assert [c.clip_id for c in clips] == [r.clip_id for r in rows] and len(clips.units()) == 3  # 30 | 32 + 8
    lab = labels if with_labels else None
    ref = FrameWindows([r.logmel for r in rows], 5, [labels[r.clip_id] for r in rows] if with_labels else None, stride)
    everything = torch.arange(len(ref))
    expected = _multiset(ref.batch(everything), ref.targets(everything))
    w = StreamWindows(clips, 5, lab, stride, buffer_clips=buffer)
    assert len(w) == len(ref)
    batches, x, y = _epoch(w, 16, seed=0)
    assert x.shape == (len(ref), 5 * 8) and all(len(b[0]) <= 16 for b in batches)
    assert _multiset(x, y) == expected
    # evaluation order and the sequential view (what fit_normal_statistics reads) see them all too
    ev = list(w.eval_batches(50))
    assert _multiset(torch.cat([b[0] for b in ev]), None if y is None else torch.cat([b[1] for b in ev])) == expected
    seq = w.sequential(batch_size=13)
    got = [
        (seq.batch(torch.arange(s, min(s + 40, len(w)))), seq.targets(torch.arange(s, min(s + 40, len(w)))))
        for s in range(0, len(w), 40)
    ]
    assert _multiset(torch.cat([g[0] for g in got]), None if y is None else torch.cat([g[1] for g in got])) == expected
    assert torch.equal(seq.batch(torch.arange(0, 40)), got[0][0])  # a second pass starts again at 0


def test_the_shuffle_is_seeded_and_differs_between_epochs(tmp_path):
    fs, _, _ = _store(tmp_path)
    w = StreamWindows(StoredClips.open(fs, CFG, PART, MTYPE), 5, buffer_clips=10)
    _, a, _ = _epoch(w, 32, seed=1)
    _, b, _ = _epoch(w, 32, seed=1)
    _, c, _ = _epoch(w, 32, seed=2)
    assert torch.equal(a, b)
    assert not torch.equal(a, c) and _multiset(a, None) == _multiset(c, None)
    gen = torch.Generator().manual_seed(1)
    e1 = torch.cat([x for x, _ in w.epoch_batches(32, gen)])
    e2 = torch.cat([x for x, _ in w.epoch_batches(32, gen)])
    assert torch.equal(e1, a) and not torch.equal(e1, e2)
    # the same clips stored again (other, random file names) shuffle the same way
    runs = []
    for where in ("one", "two"):
        fs_n, _, _ = _store(tmp_path / where, files=(10,) * 7)
        runs.append(_epoch(StreamWindows(StoredClips.open(fs_n, CFG, PART, MTYPE), 5, buffer_clips=10), 32, 1)[1])
    assert torch.equal(runs[0], runs[1])
    # a batch mixes the buffered clips' windows, not one clip's after another
    ids = StreamWindows(w.clips, 5, {c.clip_id: i for i, c in enumerate(w.clips)}, buffer_clips=10)
    _, y = next(iter(ids.epoch_batches(32, torch.Generator().manual_seed(1))))
    assert len(set(y.tolist())) >= 5


@pytest.mark.parametrize("buffer", [1, 5, 12])
def test_the_buffer_never_holds_more_than_its_clips(tmp_path, buffer):
    fs, rows, _ = _store(tmp_path)
    w = StreamWindows(StoredClips.open(fs, CFG, PART, MTYPE), 5, buffer_clips=buffer)
    n = sum(len(x) for x, _ in w.epoch_batches(8, torch.Generator().manual_seed(0)))
    assert n == len(w)
    assert w.peak_clips == buffer  # filled, and never past it
    assert w.blocks_read >= len(rows) / buffer  # read in blocks of at most `buffer` clips


def test_stored_clips_subsets_and_rows(tmp_path):
    fs, rows, _ = _store(tmp_path)
    clips = StoredClips.open(fs, CFG, PART, MTYPE, clip_ids={r.clip_id for r in rows[10:50]})
    assert len(clips) == 40 and clips.n_frames == sum(r.logmel.shape[1] for r in rows[10:50])
    mask = np.arange(40) % 4 == 0
    sub = clips.subset(mask)
    assert [c.clip_id for c in sub] == [r.clip_id for r in rows[10:50:4]]
    got = sub.rows()
    for g, r in zip(got, rows[10:50:4]):
        np.testing.assert_array_equal(g.logmel, r.logmel)
    chunks = list(stored_rows(clips, block_clips=16))
    assert sum(len(c) for c in chunks) == 40 and max(len(c) for c in chunks) < 16 + 32


def test_fit_trains_on_a_stream_and_its_statistics_match_memory(tmp_path):
    fs = FeatureStore.local(str(tmp_path))
    cfg = FeatureConfig(n_mels=16, frames=5)
    rng = np.random.default_rng(0)
    base = rng.normal(size=(16, 1)).astype(np.float32)
    rows = [
        FeatureRow(f"c{i:03d}", f"{i % 2:02d}", None, (base + 0.3 * rng.normal(size=(16, 60))).astype(np.float32))
        for i in range(48)
    ]
    fs.write(cfg, PART, MTYPE, rows)
    clips = StoredClips.open(fs, cfg, PART, MTYPE)
    labels = {r.clip_id: int(r.machine_id) for r in rows}
    tr, va = clips.subset(np.arange(48) < 40), clips.subset(np.arange(48) >= 40)
    mem_tr = FrameWindows([r.logmel for r in rows[:40]], 5)
    mem_va = FrameWindows([r.logmel for r in rows[40:]], 5)
    config = TrainConfig(epochs=8, batch_size=64, patience=8, device="cpu")
    results = {}
    sources = {
        "memory": (mem_tr, mem_va),
        "stream": (StreamWindows(tr, 5, buffer_clips=6), StreamWindows(va, 5, buffer_clips=6)),
    }
    for name, (a, b) in sources.items():
        torch.manual_seed(0)
        model = AE(AEConfig(input_dim=80, hidden=32, bottleneck=8))
        results[name] = (model, fit(model, a, b, config))
    h_mem, h_str = results["memory"][1].history["val_loss"], results["stream"][1].history["val_loss"]
    assert h_str[-1] < 0.8 * h_str[0] and h_mem[-1] < 0.8 * h_mem[0]  # both learn
    assert min(h_str) == pytest.approx(min(h_mem), rel=0.15)  # and get as far
    # the streamed validation loss of a model equals the in-memory one
    model = results["stream"][0]
    assert evaluate_loss(model, StreamWindows(va, 5, buffer_clips=3), batch=7) == pytest.approx(
        evaluate_loss(model, mem_va), rel=1e-5
    )
    # Mahalanobis statistics read sequentially from the store equal those fitted in memory
    sc = ScoreConfig(metric="mahalanobis")
    m_mem = fit_normal_statistics(
        _copy(model), mem_tr.with_labels([labels[r.clip_id] for r in rows[:40]]), ["00", "01"], sc, batch=100
    )
    m_str = fit_normal_statistics(
        _copy(model),
        StreamWindows(tr, 5, buffer_clips=4).with_labels(labels).sequential(batch_size=37),
        ["00", "01"],
        sc,
        batch=100,
    )
    torch.testing.assert_close(m_str.mahalanobis.mean, m_mem.mahalanobis.mean, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(m_str.mahalanobis.precision, m_mem.mahalanobis.precision, rtol=1e-4, atol=1e-4)


def _copy(model):
    import copy

    return copy.deepcopy(model)


def test_sequential_view_refuses_out_of_order_ranges(tmp_path):
    fs, _, _ = _store(tmp_path)
    seq = StreamWindows(StoredClips.open(fs, CFG, PART, MTYPE), 5).sequential()
    seq.batch(torch.arange(0, 10))
    with pytest.raises(ValueError, match="in order"):
        seq.batch(torch.arange(20, 30))
    with pytest.raises(ValueError, match="in order"):
        seq.batch(torch.tensor([10, 12]))


def test_stream_config_validation():
    with pytest.raises(ValueError, match="stream"):
        TrainConfig(stream="disk")
    with pytest.raises(ValueError, match="buffer_clips"):
        TrainConfig(buffer_clips=0)
    with pytest.raises(ValueError, match="memory_budget_mb"):
        TrainConfig(memory_budget_mb=-1)


# --- through train_and_evaluate, on the synthetic plant -----------------------------------------


@pytest.fixture(scope="module")
def plant(tmp_path_factory):
    settings, svc, _ = make_plant(
        tmp_path_factory.mktemp("stream-plant"), n_train=16, n_eval_normal=4, n_eval_anomaly=4, nights=()
    )
    return svc


@pytest.mark.integration
def test_training_streamed_from_the_store_matches_memory(plant):
    svc = plant
    # the seed's thresholds: this compares training modes (fold models, for cross-conformal, need memory)
    base = RunConfig.default("ae", "slider", epochs=6, patience=6, device="cpu", seed=0, threshold_scheme="validation")
    data = steps.ingest_sets(svc, "slider", [base.features])
    train = data.rows(base.features, "train")
    assert isinstance(train, StoredClips) and len(train) == 32
    assert data.train.features[base.features.hash] == {}  # no log-mel kept by ingest
    ev = data.rows(base.features, "eval")
    out = {}
    for mode, extra in (("memory", {}), ("parquet", {"buffer_clips": 6}), ("auto", {"memory_budget_mb": 0})):
        cfg = base.with_train(stream=mode, **extra)
        out[mode] = steps.train_and_evaluate(cfg, train, ev)
    assert out["memory"].data["train_streamed"] is False
    assert out["parquet"].data["train_streamed"] is True and out["auto"].data["train_streamed"] is True
    assert steps.train_and_evaluate(base, train, ev).data["train_streamed"] is False  # 1 GB budget: memory
    m, p = out["memory"], out["parquet"]
    assert m.data["train_clip_ids"] == p.data["train_clip_ids"]
    assert m.data["n_train_windows"] == p.data["n_train_windows"]
    assert min(p.history["val_loss"]) == pytest.approx(min(m.history["val_loss"]), rel=0.2)
    assert p.history["val_loss"][-1] < p.history["val_loss"][0]
    # thresholds fitted on every held-out clip's score, read back from the store in chunks
    for mid in ("00", "02"):
        assert set(p.thresholds.normal_scores[mid]) == set(m.thresholds.normal_scores[mid])
        assert np.isfinite(p.thresholds.per_id[mid].threshold)
    assert set(p.report["per_id"]) == {"00", "02"}


@pytest.mark.integration
def test_streamed_idclf_fits_its_statistics_from_the_store(plant):
    svc = plant
    cfg = RunConfig.default("idclf", "slider", epochs=2, patience=2, device="cpu", stream="parquet", buffer_clips=5)
    data = steps.ingest_sets(svc, "slider", [cfg.features])
    out = steps.train_and_evaluate(cfg, data.rows(cfg.features, "train"), data.rows(cfg.features, "eval"))
    assert out.data["train_streamed"] is True
    maha = out.model.mahalanobis
    assert maha.ids == ("00", "02") and torch.isfinite(maha.precision).all()
    assert torch.isfinite(out.model.band_std).all() and (out.model.band_std > 0).all()


def test_parquet_mode_needs_the_training_set_in_the_store():
    cfg = RunConfig.default("ae", "slider", stream="parquet")
    rows = [FeatureRow(f"c{i}", "00", None, np.zeros((64, 20), np.float32)) for i in range(3)]
    with pytest.raises(ValueError, match="feature store"):
        steps.train_and_evaluate(cfg, rows, [])
