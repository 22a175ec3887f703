"""The clip-statistics and kNN families: their statistics, their scores, their round trip through
MLflow, the command line (train, score a night, evaluate), and thresholds that keep their
false-alarm promise on a plant whose normal sound varies between recording sessions."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from plant import NIGHT, make_plant

from slidead.core.config import RunConfig
from slidead.core.features import LogMel
from slidead.core.models import family
from slidead.core.models.clipstats import ClipStats, ClipStatsConfig, clip_statistics
from slidead.core.models.knn import KNN, KNNConfig
from slidead.core.score import score_logmels
from slidead.core.thresholds import Fit, Thresholds
from slidead.jobs import retrain as steps
from slidead.shell.cli import main
from slidead.store.features import FeatureRow
from slidead.store.tracking import Tracker
from slidead.synth.sounds import _seed_rng, machine_build, normal_clip, session_conditions

# no network to speak of: more intra-op threads only spin (and on a busy machine, wait)
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_clip_statistics_are_mean_spread_and_change_per_band():
    x = torch.tensor([[[0.0, 10.0], [2.0, 10.0], [4.0, 16.0]]])  # 1 clip, 3 frames, 2 bands
    got = clip_statistics(x, deltas=True)[0]
    want = [2.0, 12.0, np.sqrt(8 / 3), np.sqrt(8), 2.0, 3.0]  # means, spreads, mean |change|
    torch.testing.assert_close(got, torch.tensor(want, dtype=torch.float32))
    assert clip_statistics(x, deltas=False).shape == (1, 4)
    with pytest.raises(ValueError, match="frames=1"):
        ClipStatsConfig(frames=5)


def _clips(rng, n, n_mels=8, t=40, level=-30.0):
    return [rng.normal(level, 2.0, (n_mels, t)).astype(np.float32) for _ in range(n)]


def test_scores_per_machine_id_with_the_pooled_statistics_for_an_unknown_one():
    rng = np.random.default_rng(0)
    model = ClipStats(ClipStatsConfig(n_mels=8, shrinkage=0.1))
    model.fit_clips([("00", m) for m in _clips(rng, 30)] + [("02", m) for m in _clips(rng, 30, level=-10.0)])
    assert model.mahalanobis.ids == ("00", "02")
    normal = _clips(rng, 5)
    louder = [m.copy() for m in normal]
    for m in louder:
        m[3] += 6.0  # one band 6 dB up
    feats = family("clipstats").feature_config(n_mels=8)
    cfg = RunConfig.default("clipstats", "slider")
    s = score_logmels(model, normal + louder, feats, cfg.score, machine_ids=["00"] * 10)
    assert s.score[5:].min() > 3 * s.score[:5].max()
    # the band that departs names the peak: band 3 of 8
    edges = __import__("slidead.core.features", fromlist=["mel_band_edges"]).mel_band_edges(feats)
    assert set(s.peak_freq_lo_hz[5:]) == {edges[3][0]}
    # a -30 dB clip measured as machine 02 (-10 dB) is far off; as an unknown machine, the pooled statistics
    as_02 = score_logmels(model, normal, feats, cfg.score, machine_ids=["02"] * 5).score
    unknown = score_logmels(model, normal, feats, cfg.score, machine_ids=["09"] * 5).score
    assert as_02.min() > 10 * s.score[:5].max() and unknown.max() < as_02.min()


def test_knn_is_the_mean_distance_to_the_k_nearest_clips_of_the_machine():
    rng = np.random.default_rng(1)
    model = KNN(KNNConfig(n_mels=8, k=2))
    train = _clips(rng, 12)
    model.fit_clips([("00", m) for m in train] + [("02", m) for m in _clips(rng, 12, level=-20.0)])
    probe = _clips(rng, 3)
    # three new clips and a training clip, which is its own nearest neighbour at distance 0
    v = torch.stack([clip_statistics(torch.as_tensor(m.T)[None], True, True)[0] for m in probe + train[:1]])
    bank = model.bank[model.bank_row == 0]
    p = model.mahalanobis.precision[0]
    d = torch.stack([((bank - x) @ p * (bank - x)).sum(dim=1) for x in v]).sort(dim=1).values
    assert float(d[3, 0]) < 1e-3 < float(d[:3, 0].min())
    torch.testing.assert_close(model.clip_scores(v, ["00"] * 4), d[:, :2].mean(dim=1), rtol=1e-4, atol=1e-3)


def test_round_trip_through_tracking(tmp_path):
    tracker = Tracker(f"sqlite:///{tmp_path}/mlflow.db", str(tmp_path / "artifacts"))
    for name, cls in (("clipstats", ClipStats), ("knn", KNN)):
        cfg = RunConfig.default(name, "slider")
        rng = np.random.default_rng(2)
        model = cfg.build_model()
        clips = _clips(rng, 9, n_mels=cfg.features.n_mels)
        ids = ["00", "02", "04"] * 3
        model.fit_clips(zip(ids, clips))
        thresholds = Thresholds(0.9, {m: Fit(1.0, 5, "gamma") for m in ("00", "02", "04")})
        report = {"per_id": {}, "mean": {"auc": 0.5, "pauc": 0.5}}
        _, version = tracker.log_training(cfg, model, {}, thresholds, report, {})
        loaded = tracker.load(f"slidead-slider-{name}", version)
        assert isinstance(loaded.model, cls) and loaded.config == cfg
        assert loaded.model.mahalanobis.ids == ("00", "02", "04")
        before = score_logmels(model, clips, cfg.features, cfg.score, machine_ids=ids).score
        after = score_logmels(loaded.model, clips, cfg.features, cfg.score, machine_ids=ids).score
        np.testing.assert_allclose(after, before, rtol=1e-5)


@pytest.mark.integration
def test_statistics_families_train_score_a_night_and_evaluate_through_the_cli(tmp_path, capsys, monkeypatch):
    settings, svc, summary = make_plant(tmp_path / "home")
    monkeypatch.setenv("SLIDEAD_HOME", str(settings.home))
    n = len(summary["night_truth"])
    for name in ("clipstats", "knn"):
        assert main(["train", "--family", name, "--no-prefect"]) == 0
        assert f"{name} v1" in capsys.readouterr().out
        assert main(["score", "--night", NIGHT, "--family", name, "--no-prefect", "--json"]) == 0
        out = json.loads(capsys.readouterr().out)
        assert out["models"] == {f"slidead-slider-{name}": 1} and out["n_scored"] == n
        assert main(["evaluate", "--family", name, "--json"]) == 0
        got = json.loads(capsys.readouterr().out)
        assert got["family"] == name and set(got["per_id"]) == {"00", "02"}
        assert got["mean"]["auc"] > 0.6, got  # measured 0.8+; chance is 0.5
    with svc.db.connect(read_only=True) as con:
        rows = con.execute("SELECT family, count(*) FROM scores GROUP BY family ORDER BY family").fetchall()
    assert rows == [("clipstats", n), ("knn", n)]
    assert main(["evaluate", "--family", "fused", "--json"]) == 0
    fused = json.loads(capsys.readouterr().out)
    assert set(fused["members"]) == {"clipstats", "knn"} and set(fused["selected"]) == {"00", "02"}
    assert all(set(m) <= {"clipstats", "knn"} and m for m in fused["selected"].values())


def _session_plant(ids, n_train, n_later, seed, seconds=3.0):
    """Normal clips of machines whose sound varies between 4 recording sessions (clip i in session
    i % 4): the first ``n_train`` per machine to train on, the next ``n_later`` as later normals."""
    cfg = RunConfig.default("clipstats", "slider")
    lm = LogMel(cfg.features)
    train, later = [], []
    for mid in ids:
        build = machine_build("slider", mid, seed)
        for i in range(n_train + n_later):
            audio = normal_clip(
                build, _seed_rng(seed, "sessions", mid, i), duration_s=seconds, session=session_conditions(build, i % 4)
            )
            (train if i < n_train else later).append(FeatureRow(f"{mid}-{i:03d}", mid, "normal", lm(audio)))
    return train, later


@pytest.mark.slow  # 256 synthetic clips of four machines
def test_out_of_fold_thresholds_keep_their_false_alarm_rate_on_later_normals_where_the_seeds_do_not():
    ids = ("00", "02", "04", "06")
    train, later = _session_plant(ids, n_train=24, n_later=40, seed=0, seconds=2.0)
    rates = {}
    for scheme in ("validation", "oof"):
        # oof: leave one clip out (24 folds of one clip per machine): a fit costs milliseconds
        cfg = RunConfig.default("clipstats", "slider").with_train(threshold_scheme=scheme, threshold_folds=24)
        out = steps.train_and_evaluate(cfg, train, [])
        s = score_logmels(
            out.model, [r.logmel for r in later], cfg.features, cfg.score, machine_ids=[r.machine_id for r in later]
        )
        thr = out.thresholds.map()
        rates[scheme] = float(np.mean([x > thr[r.machine_id] for r, x in zip(later, s.score)]))
        sources = {v.source for v in out.thresholds.per_id.values()}
        # the seed's scheme: 24 clips leave 2 for validation, too few, so the training clips join the fit
        assert sources == ({"validation+train"} if scheme == "validation" else {"oof"})
    target = 1 - cfg.threshold_quantile
    # measured 0.069 against 0.99 for the seed's scheme; over seeds 0-5 of this plant 0.044-0.125
    # (mean 0.076: the fold fits, on one clip fewer, lean conservative) against 0.95-1.0; 0.044 since
    # the statistics keep brief events. A promise is an upper bound: at most target + 0.05, and not
    # so conservative that a quarter of the target is never reached
    assert target / 4 <= rates["oof"] <= target + 0.05, rates
    assert rates["validation"] > 0.5, rates
