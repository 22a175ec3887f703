"""Tests for the machine-ID classifier family: table, shapes, loss, ID scores, training with labels,
scoring (peaks, unknown IDs) and its config's round trip."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from slidead.core.config import RunConfig
from slidead.core.features import FeatureConfig, mel_band_edges
from slidead.core.models import IDClf, IDClfConfig, build, for_family, n_parameters
from slidead.core.score import ScoreConfig, fit_normal_statistics, score_logmels
from slidead.core.train import FrameWindows, TrainConfig, fit

pytestmark = pytest.mark.usefixtures("one_torch_thread")

THREE = IDClfConfig(classes=("00", "02", "04"))


def test_parameter_count_and_layer_table():
    m = IDClf(THREE)
    # input BN 2*64; convs 1->16->32->64 (3x3, no bias) with BN; linear 64*16 -> 3
    assert n_parameters(m) == 128 + (9 * 16 + 32) + (9 * 16 * 32 + 64) + (9 * 32 * 64 + 128) + (1024 * 3 + 3) == 26_611
    assert n_parameters(build("idclf", {"classes": ["00", "02"]})) == 26_611 - 1025
    kinds = [type(x).__name__ for x in m.features]
    assert kinds == ["Conv2d", "BatchNorm2d", "ReLU", "MaxPool2d"] * 2 + ["Conv2d", "BatchNorm2d", "ReLU"]
    assert m.config.embedding_dim == 1024 and m.config.input_dim == 64 * 32


@pytest.mark.parametrize("batch", [1, 2, 9])
def test_shapes(batch):
    torch.manual_seed(0)
    m = IDClf(THREE).eval()
    x = torch.randn(batch, 2048)
    assert m(x).shape == (batch, 3)
    assert m.embed(x).shape == (batch, 1024)
    assert m.band_levels(x).shape == (batch, 64)
    if batch > 1:
        m.train()
        assert m(x).shape == (batch, 3)


def test_patches_are_frame_major_windows():
    m = IDClf(IDClfConfig(n_mels=8, frames=4, channels=(4, 4), classes=("a", "b")))
    lm = torch.arange(8 * 6, dtype=torch.float32).reshape(8, 6)
    from slidead.core.features import windows

    w = windows(lm, 4)  # (3, 32) frame-major
    torch.testing.assert_close(m.patches(w)[1], lm[:, 1:5])


def test_loss_is_cross_entropy_and_needs_labels():
    torch.manual_seed(0)
    m = IDClf(THREE).eval()
    x, y = torch.randn(6, 2048), torch.tensor([0, 1, 2, 0, 1, 2])
    loss, parts = m.loss(x, y)
    torch.testing.assert_close(loss, F.cross_entropy(m(x), y))
    assert set(parts) == {"ce", "accuracy"}
    with pytest.raises(ValueError, match="labels"):
        m.loss(x)


def test_id_logit_scores_exact_values():
    m = IDClf(IDClfConfig(classes=("00", "02")))
    logits = torch.tensor([[0.0, 0.0], [math.log(3.0), 0.0], [math.log(3.0), 0.0], [0.0, 2.0]])
    target = torch.tensor([0, 0, 1, -1])
    # log((1 - p) / p): p = 1/2 -> 0; p = 3/4 -> -log 3; p = 1/4 -> log 3; unknown -> most likely class
    expected = torch.tensor([0.0, -math.log(3.0), math.log(3.0), -2.0])
    torch.testing.assert_close(m.id_logit_scores(logits, target), expected)
    three = torch.tensor([[1.0, 2.0, 3.0]])
    p = torch.softmax(three, dim=1)[0, 0]
    torch.testing.assert_close(IDClf(THREE).id_logit_scores(three, torch.tensor([0]))[0], torch.log((1 - p) / p))


def test_class_index_and_config_validation():
    m = IDClf(THREE)
    assert m.class_index(["04", "00", "07"]) == [2, 0, -1]
    with pytest.raises(ValueError, match="duplicates"):
        IDClfConfig(classes=("00", "00"))
    with pytest.raises(ValueError, match="divisible"):
        IDClfConfig(n_mels=30)
    with pytest.raises(ValueError, match="patch_hop"):
        IDClfConfig(patch_hop=0)
    assert IDClfConfig(classes=["00", 2]).classes == ("00", "2")


def test_run_config_round_trip_keeps_the_class_list():
    cfg = RunConfig.default("idclf", "slider").with_classes(["04", "00", "02", "00"])
    assert cfg.features == for_family("idclf") == FeatureConfig(n_mels=64, frames=32)
    assert cfg.model.classes == ("00", "02", "04") and cfg.score.metric == "mahalanobis"
    back = RunConfig.from_dict(cfg.to_dict())
    assert back == cfg and isinstance(back.model.classes, tuple)
    assert cfg.flat()["model.classes"] == "['00', '02', '04']"
    assert RunConfig.default("ae", "slider").with_classes(["00"]) == RunConfig.default("ae", "slider")
    assert RunConfig.default("idclf", "slider", metric="logit").score.metric == "logit"
    with pytest.raises(ValueError, match="'mse' does not apply to family 'idclf'"):
        RunConfig.default("idclf", "slider", metric="mse")
    with pytest.raises(ValueError, match="'logit' does not apply to family 'ae'"):
        RunConfig.default("ae", "slider", metric="logit")


# --- training and scoring on a toy problem: two "machines" with tones in different bands ------

CFG = FeatureConfig(n_mels=16, frames=8)
SMALL = IDClfConfig(n_mels=16, frames=8, channels=(4, 8), patch_hop=2, classes=("a", "b"))


def _clips(n, band, seed, t=40):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        x = rng.normal(0.0, 1.0, (16, t)).astype(np.float32)
        x[band] += 6.0
        out.append(x)
    return out


def _trained():
    a, b = _clips(12, 3, 0), _clips(12, 11, 1)
    clips, labels = a + b, [0] * 12 + [1] * 12
    torch.manual_seed(0)
    model = IDClf(SMALL)
    tr = FrameWindows(clips[2:12] + clips[14:], 8, labels[2:12] + labels[14:], stride=2)
    va = FrameWindows(clips[:2] + clips[12:14], 8, labels[:2] + labels[12:14], stride=2)
    res = fit(model, tr, va, TrainConfig(epochs=8, batch_size=32, lr=3e-3, device="cpu"))
    return model, res, tr


def test_fit_with_labels_learns_the_ids_and_scores_them():
    model, res, tr = _trained()
    assert res.history["val_loss"][res.best_epoch - 1] < 0.2
    assert len(tr) == 20 * 17 and tr.labels.shape == (len(tr),)  # (40 - 8) // 2 + 1 windows per clip
    fit_normal_statistics(model, tr, ("a", "b"), ScoreConfig(metric="mahalanobis"))
    assert model.mahalanobis.ids == ("a", "b") and model.mahalanobis.dim == SMALL.embedding_dim == 8 * 8
    assert model.band_mean[0].argmax() == 3 and model.band_mean[1].argmax() == 11
    normal = _clips(4, 3, 5)
    # a fault: a burst in band 7 (new to both machines: far from a's embeddings), or in band 11
    # (machine b's band: a's ID becomes unlikely, which is what the logit score sees)
    for metric, band in (("mahalanobis", 7), ("logit", 11)):
        odd = _clips(4, 3, 6)
        for x in odd:
            x[band, 10:20] += 12.0
        s = score_logmels(model, normal + odd, CFG, ScoreConfig(metric=metric), machine_ids=["a"] * 8)
        assert s.score[4:].min() > s.score[:4].max(), metric
        # the highest patch covers the burst (frames 10-19), the band is the burst's
        assert np.all((s.peak_time_s[4:] >= CFG.frame_seconds(8)) & (s.peak_time_s[4:] <= CFG.frame_seconds(22)))
        assert np.all(s.peak_freq_lo_hz[4:] == mel_band_edges(CFG)[band][0]), metric
    # scored as the other machine, a clip is very unlikely
    own = score_logmels(model, normal, CFG, ScoreConfig(metric="logit"), machine_ids=["a"] * 4).score
    other = score_logmels(model, normal, CFG, ScoreConfig(metric="logit"), machine_ids=["b"] * 4).score
    assert other.min() > own.max()


def test_unknown_or_missing_ids_score_against_the_closest_id_or_pooled_statistics():
    model, _, tr = _trained()
    fit_normal_statistics(model, tr, ("a", "b"), ScoreConfig(metric="mahalanobis"))
    clips = _clips(3, 3, 9)
    for metric in ("logit", "mahalanobis"):
        cfg = ScoreConfig(metric=metric)
        unknown = score_logmels(model, clips, CFG, cfg, machine_ids=["zz"] * 3)
        missing = score_logmels(model, clips, CFG, cfg)
        np.testing.assert_allclose(unknown.score, missing.score, rtol=1e-6)
        assert np.all(np.isfinite(unknown.score))
    closest = score_logmels(model, clips, CFG, ScoreConfig(metric="logit"), machine_ids=["a"] * 3).score
    np.testing.assert_allclose(score_logmels(model, clips, CFG, ScoreConfig(metric="logit")).score, closest, rtol=1e-6)
    with pytest.raises(ValueError, match="2 machine IDs for 3 clips"):
        score_logmels(model, clips, CFG, ScoreConfig(metric="logit"), machine_ids=["a", "a"])


def test_scoring_batches_and_metric_checks():
    model, _, tr = _trained()
    clips = _clips(5, 3, 3, t=40) + _clips(2, 3, 4, t=23)
    ids = ["a"] * 7
    one = score_logmels(model, clips, CFG, ScoreConfig(metric="logit", batch_windows=10_000), machine_ids=ids)
    for budget in (1, 20):
        many = score_logmels(model, clips, CFG, ScoreConfig(metric="logit", batch_windows=budget), machine_ids=ids)
        np.testing.assert_allclose(many.score, one.score, rtol=1e-5)
        np.testing.assert_array_equal(many.peak_time_s, one.peak_time_s)
    with pytest.raises(ValueError, match="does not reconstruct"):
        score_logmels(model, clips, CFG, ScoreConfig())
    with pytest.raises(ValueError, match="no Mahalanobis statistics"):
        score_logmels(model, clips, CFG, ScoreConfig(metric="mahalanobis"))


class _Reconstructor(nn.Module):
    family = "ae"  # scored as a reconstruction model

    def forward(self, x):
        return torch.zeros_like(x)


def test_logit_needs_a_classifier():
    with pytest.raises(ValueError, match="needs an ID classifier"):
        score_logmels(
            _Reconstructor(), [np.zeros((16, 10), np.float32)], FeatureConfig(n_mels=16), ScoreConfig(metric="logit")
        )
