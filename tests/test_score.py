"""Tests for slidead.core.score: clip scores, where the error peaked, and batching across clips."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from slidead.core.features import FeatureConfig, mel_band_edges, windows
from slidead.core.models import AE, VAE, AEConfig, VAEConfig
from slidead.core.score import ClipScores, ScoreConfig, score_logmels

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CFG = FeatureConfig(n_mels=8)  # dim 40


class Identity(nn.Module):
    """Reconstructs every window perfectly."""

    def forward(self, x):
        return x

    def window_errors(self, x, use_kl=False):
        return (self(x) - x) ** 2, torch.zeros(x.shape[0])


class Zero(nn.Module):
    """Reconstructs every window as zeros: a window's error is its own square."""

    def forward(self, x):
        return torch.zeros_like(x)

    def window_errors(self, x, use_kl=False):
        return (self(x) - x) ** 2, torch.zeros(x.shape[0])


def _random_logmels(lengths, n_mels=8, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.normal(-40, 5, (n_mels, t)).astype(np.float32) for t in lengths]


def test_perfect_reconstruction_scores_zero():
    lms = _random_logmels([5, 20, 313])
    s = score_logmels(Identity(), lms, CFG)
    assert isinstance(s, ClipScores) and len(s) == 3
    np.testing.assert_array_equal(s.score, np.zeros(3))


@pytest.mark.parametrize("frame, band", [(10, 3), (0, 0), (19, 7), (4, 5)])
def test_injected_error_peaks_at_its_frame_and_band(frame, band):
    t = 20
    lm = np.zeros((8, t), np.float32)
    lm[band, frame] = 3.0
    s = score_logmels(Zero(), [lm], CFG)
    assert s.peak_time_s[0] == pytest.approx(frame * 512 / 16000)
    lo, hi = mel_band_edges(CFG)[band]
    assert s.peak_freq_lo_hz[0] == lo and s.peak_freq_hi_hz[0] == hi
    # score: the mean over 16 windows of each window's mean squared error over 40 dims;
    # the spike sits in as many windows as cover its frame
    covering = {10: 5, 0: 1, 19: 1, 4: 5}[frame]
    assert s.score[0] == pytest.approx(covering * 9.0 / 40 / 16)


def test_span_covers_a_burst_in_time_and_frequency():
    """A burst of error over frames 100-139 and bands 40-49: the span is that stretch, the
    isolated weaker spike elsewhere is not part of it."""
    cfg = FeatureConfig()
    lm = np.zeros((128, 313), np.float32)
    lm[40:50, 100:140] = 2.0
    lm[5, 250] = 1.0
    s = score_logmels(Zero(), [lm], cfg)
    edges = mel_band_edges(cfg)
    # the windows smear the edges by up to frames - 1 = 4 frames; the half-height cut keeps ~2
    assert cfg.frame_seconds(96) <= s.span_start_s[0] <= cfg.frame_seconds(101)
    assert cfg.frame_seconds(139) <= s.span_end_s[0] <= cfg.frame_seconds(144)
    assert s.span_start_s[0] <= s.peak_time_s[0] < s.span_end_s[0]
    assert (s.span_freq_lo_hz[0], s.span_freq_hi_hz[0]) == (edges[40][0], edges[49][1])
    assert s.span_freq_lo_hz[0] <= s.peak_freq_lo_hz[0] and s.peak_freq_hi_hz[0] <= s.span_freq_hi_hz[0]


def test_band_reference_points_at_the_departure_from_normal_not_the_loudest_error():
    """Band 0 always reconstructs worst (error 4 on normal clips); a fault adds error 1 in band
    60. Raw, the peak is band 0; against the machine's normal band profile it is band 60."""
    cfg = FeatureConfig()
    lm = np.zeros((128, 100), np.float32)
    lm[0, :] = 2.0  # squared error 4 everywhere in band 0, as on every normal clip
    lm[60, 40:60] = 1.0
    normal = np.full(128, 1e-3)
    normal[0] = 4.0
    raw = score_logmels(Zero(), [lm], cfg, machine_ids=["00"])
    rel = score_logmels(Zero(), [lm], cfg, machine_ids=["00"], band_reference={"00": normal})
    edges = mel_band_edges(cfg)
    assert raw.peak_freq_lo_hz[0] == edges[0][0]
    assert (rel.peak_freq_lo_hz[0], rel.peak_freq_hi_hz[0]) == tuple(edges[60])
    assert rel.score[0] == raw.score[0]  # the score itself does not change
    np.testing.assert_allclose(raw.band_error, rel.band_error)
    assert raw.band_error.shape == (1, 128) and raw.band_error[0, 0] == pytest.approx(4.0)
    other = score_logmels(Zero(), [lm], cfg, machine_ids=["02"], band_reference={"00": normal})
    assert other.peak_freq_lo_hz[0] == edges[0][0]  # no reference for that ID: raw


def test_span_of_a_single_spike_is_narrow():
    cfg = FeatureConfig()
    lm = np.zeros((128, 313), np.float32)
    lm[100, 200] = 1.0
    s = score_logmels(Zero(), [lm], cfg)
    edges = mel_band_edges(cfg)
    assert (s.span_freq_lo_hz[0], s.span_freq_hi_hz[0]) == tuple(edges[100])
    assert s.span_end_s[0] - s.span_start_s[0] <= cfg.frame_seconds(5)


def test_peak_time_and_band_with_real_feature_config():
    cfg = FeatureConfig()  # 128 mels, 313 frames for 10 s
    lm = np.zeros((128, 313), np.float32)
    lm[100, 200] = 1.0
    lm[30, 50] = 0.5
    s = score_logmels(Zero(), [lm], cfg)
    assert s.peak_time_s[0] == pytest.approx(200 * 0.032)
    assert (s.peak_freq_lo_hz[0], s.peak_freq_hi_hz[0]) == tuple(mel_band_edges(cfg)[100])


def test_score_matches_manual_computation_with_real_ae():
    torch.manual_seed(0)
    model = AE(AEConfig(input_dim=40, hidden=16, bottleneck=4))
    lms = _random_logmels([7, 30, 12], seed=1)
    s = score_logmels(model, lms, CFG)
    model.eval()
    for i, lm in enumerate(lms):
        w = torch.as_tensor(windows(lm, 5))
        expected = float(((model(w) - w) ** 2).mean(dim=1).mean())
        assert s.score[i] == pytest.approx(expected, rel=1e-5)
    assert np.all(s.score > 0)


def test_batching_across_groups_gives_the_same_scores():
    torch.manual_seed(0)
    model = AE(AEConfig(input_dim=40, hidden=16, bottleneck=4))
    lms = _random_logmels([5, 40, 9, 25, 6, 60], seed=2)
    one = score_logmels(model, lms, CFG, ScoreConfig(batch_windows=100_000))
    for budget in (1, 7, 30):
        many = score_logmels(model, lms, CFG, ScoreConfig(batch_windows=budget))
        np.testing.assert_allclose(many.score, one.score, rtol=1e-6)
        np.testing.assert_array_equal(many.peak_time_s, one.peak_time_s)
        np.testing.assert_array_equal(many.peak_freq_lo_hz, one.peak_freq_lo_hz)
        np.testing.assert_array_equal(many.peak_freq_hi_hz, one.peak_freq_hi_hz)


def test_clips_of_different_lengths_score_independently():
    torch.manual_seed(0)
    model = AE(AEConfig(input_dim=40, hidden=16, bottleneck=4))
    lms = _random_logmels([5, 313, 11], seed=3)
    together = score_logmels(model, lms, CFG)
    for i, lm in enumerate(lms):
        alone = score_logmels(model, [lm], CFG)
        assert alone.score[0] == pytest.approx(together.score[i], rel=1e-6)
        assert alone.peak_time_s[0] == together.peak_time_s[i]


def test_vae_kl_switch_adds_mean_kl_per_dimension():
    torch.manual_seed(0)
    model = VAE(VAEConfig(input_dim=40, hidden=16, latent=3))
    lms = _random_logmels([9, 14], seed=4)
    plain = score_logmels(model, lms, CFG, ScoreConfig(use_kl=False))
    with_kl = score_logmels(model, lms, CFG, ScoreConfig(use_kl=True))
    assert not model.training
    for i, lm in enumerate(lms):
        w = torch.as_tensor(windows(lm, 5))
        mu, logvar = model.encode(w)
        mse = ((model(w) - w) ** 2).mean(dim=1).double()
        kl = (VAE.kl(mu, logvar) / 40).double()
        assert kl.mean() > 0.01
        assert plain.score[i] == pytest.approx(float(mse.mean()), rel=1e-6)
        assert with_kl.score[i] == pytest.approx(float((mse + kl).mean()), rel=1e-6)
    # deterministic in eval mode
    np.testing.assert_array_equal(score_logmels(model, lms, CFG).score, plain.score)


def test_too_few_frames_raises():
    with pytest.raises(ValueError, match="clip 1 has 4 frames"):
        score_logmels(Identity(), _random_logmels([6, 4]), CFG)


def test_empty_list_gives_empty_scores():
    s = score_logmels(Identity(), [], CFG)
    assert len(s) == 0 and s.peak_time_s.shape == (0,)
