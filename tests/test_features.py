"""Tests for slidead.core.features: config hashing, log-mel values and shapes, context windows."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch
from conftest import sine

from slidead.core.features import EPS, FeatureConfig, LogMel, log_mel, mel_band_edges, windows
from slidead.core.models import for_family

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# --- config ---------------------------------------------------------------------------------


def test_config_hash_is_stable_and_pinned():
    # The hash names the Parquet folder: changing how it is computed orphans stored features.
    assert FeatureConfig().hash == FeatureConfig().hash
    assert FeatureConfig().hash == "aaa4f39f233a"
    assert len(FeatureConfig(n_mels=64).hash) == 12
    assert FeatureConfig(n_mels=64).hash == for_family("ae").hash


@pytest.mark.parametrize(
    "field, value",
    [
        ("sample_rate", 8000),
        ("n_fft", 2048),
        ("hop_length", 256),
        ("n_mels", 64),
        ("power", 1.0),
        ("frames", 3),
        ("channel", 1),
    ],
)
def test_config_hash_changes_with_every_field(field, value):
    assert FeatureConfig(**{field: value}).hash != FeatureConfig().hash


def test_for_family():
    assert for_family("vae").n_mels == 128 and for_family("vae").dim == 640
    assert for_family("ae").n_mels == 64 and for_family("ae").dim == 320
    assert for_family("ae", hop_length=256).hop_length == 256
    with pytest.raises(ValueError, match="'gan'"):
        for_family("gan")


def test_config_facts():
    c = FeatureConfig()
    assert EPS == sys.float_info.epsilon
    assert c.min_samples == 2048
    assert c.frame_seconds(1) == pytest.approx(0.032)
    assert c.frame_seconds(0) == 0.0
    assert c.to_dict()["n_mels"] == 128


@pytest.mark.parametrize(
    "kw", [{"n_mels": 0}, {"hop_length": -1}, {"n_fft": 0}, {"frames": 0}, {"sample_rate": 0}, {"channel": -1}]
)
def test_bad_config_raises(kw):
    with pytest.raises(ValueError, match=next(iter(kw))):
        FeatureConfig(**kw)


# --- shapes ---------------------------------------------------------------------------------


@pytest.mark.parametrize("family, n_mels", [("vae", 128), ("ae", 64)])
def test_ten_second_clip_shapes(family, n_mels):
    cfg = for_family(family)
    x = np.random.default_rng(0).normal(0, 0.1, 160000).astype(np.float32)
    lm = log_mel(x, cfg)
    assert lm.shape == (n_mels, 313) and lm.dtype == np.float32
    w = windows(lm, cfg.frames)
    assert w.shape == (309, 5 * n_mels) and w.dtype == np.float32


def test_shortest_audio_gives_one_window():
    cfg = FeatureConfig(n_mels=32)
    lm = log_mel(sine(500.0, 1.0)[:2048], cfg)
    assert lm.shape == (32, 5)
    assert windows(lm).shape == (1, 160)


def test_short_or_misshapen_audio_raises():
    cfg = FeatureConfig(n_mels=32)
    with pytest.raises(ValueError, match="2047"):
        log_mel(np.ones(2047, np.float32), cfg)
    with pytest.raises(ValueError, match="samples"):
        log_mel(np.ones((2, 2, 4096), np.float32), cfg)


# --- windows --------------------------------------------------------------------------------


def test_windows_are_frame_major_exact():
    n_mels, t = 3, 8
    lm = np.arange(n_mels * t, dtype=np.float32).reshape(n_mels, t)
    w = windows(lm, 5)
    assert w.shape == (4, 15)
    for i in range(4):
        np.testing.assert_array_equal(w[i], np.concatenate([lm[:, i + k] for k in range(5)]))
    # first window spelled out: frame 0's mels, frame 1's mels, ...
    np.testing.assert_array_equal(w[0, :6], [0, 8, 16, 1, 9, 17])


def test_windows_torch_and_batched():
    lm = torch.arange(2 * 4 * 7, dtype=torch.float32).reshape(2, 4, 7)
    w = windows(lm, 3)
    assert isinstance(w, torch.Tensor) and w.shape == (2, 5, 12)
    for b in range(2):
        np.testing.assert_array_equal(w[b].numpy(), windows(lm[b].numpy(), 3))


def test_windows_bad_input():
    with pytest.raises(ValueError, match="frames"):
        windows(np.zeros((4, 4), np.float32), 5)
    with pytest.raises(ValueError, match="n_mels"):
        windows(np.zeros(10, np.float32), 5)


# --- values ---------------------------------------------------------------------------------


def test_batched_log_mel_equals_per_clip():
    cfg = FeatureConfig(n_mels=64)
    rng = np.random.default_rng(1)
    batch = rng.normal(0, 0.1, (3, 8000)).astype(np.float32)
    ext = LogMel(cfg)
    out = ext(batch)
    assert out.shape == (3, 64, 16)
    for i in range(3):
        np.testing.assert_allclose(out[i], ext(batch[i]), atol=1e-4)


@pytest.mark.parametrize("freq", [440.0, 1000.0, 2500.0, 6000.0])
def test_sine_peaks_in_the_band_containing_it(freq):
    cfg = FeatureConfig()
    lm = log_mel(sine(freq, 1.0), cfg)
    band = int(np.argmax(lm[:, 10:-10].mean(axis=1)))
    lo, hi = mel_band_edges(cfg)[band]
    assert lo <= freq <= hi
    assert np.array_equal(LogMel(cfg).band_edges_hz(), mel_band_edges(cfg))


def test_band_edges_shape_and_ends():
    e = mel_band_edges(FeatureConfig(n_mels=64))
    assert e.shape == (64, 2)
    assert e[0, 0] == 0.0 and e[-1, 1] == pytest.approx(8000.0)
    assert np.all(np.diff(e[:, 0]) > 0) and np.all(e[:, 1] > e[:, 0])
    np.testing.assert_array_equal(e[:-2, 1], e[2:, 0])  # band k ends where band k+2 starts
    assert np.all(e[1:, 0] < e[:-1, 1])  # neighbours overlap


def _slaney_hz_to_mel(f):
    f = np.asarray(f, dtype=np.float64)
    lin = f / (200.0 / 3)
    return np.where(f >= 1000.0, 15.0 + np.log(np.maximum(f, 1e-9) / 1000.0) / (np.log(6.4) / 27.0), lin)


def _slaney_mel_to_hz(m):
    m = np.asarray(m, dtype=np.float64)
    return np.where(m >= 15.0, 1000.0 * np.exp((np.log(6.4) / 27.0) * (m - 15.0)), m * 200.0 / 3)


def _slaney_filterbank(sr, n_fft, n_mels):
    """librosa.filters.mel(sr, n_fft, n_mels, htk=False, norm='slaney'), in numpy: (n_mels, bins)."""
    fft_freqs = np.fft.rfftfreq(n_fft, 1.0 / sr)
    mel_f = _slaney_mel_to_hz(np.linspace(_slaney_hz_to_mel(0.0), _slaney_hz_to_mel(sr / 2), n_mels + 2))
    fdiff = np.diff(mel_f)
    ramps = mel_f[:, None] - fft_freqs[None, :]
    weights = np.zeros((n_mels, fft_freqs.size))
    for i in range(n_mels):
        lower = -ramps[i] / fdiff[i]
        upper = ramps[i + 2] / fdiff[i + 1]
        weights[i] = np.maximum(0, np.minimum(lower, upper))
    weights *= (2.0 / (mel_f[2:] - mel_f[:-2]))[:, None]
    return weights, mel_f


def test_log_mel_matches_independent_numpy_dcase_formula():
    cfg = FeatureConfig(n_fft=256, hop_length=128, n_mels=16)
    rng = np.random.default_rng(7)
    x = (rng.normal(0, 0.2, 4096) + sine(1234.0, 4096 / 16000)).astype(np.float32)
    lm = log_mel(x, cfg)
    assert lm.shape == (16, 33)
    fb, mel_f = _slaney_filterbank(16000, 256, 16)
    np.testing.assert_allclose(mel_f[:-2], mel_band_edges(cfg)[:, 0], rtol=1e-12)
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(256) / 256)  # periodic Hann
    for t in (10, 16, 20):  # frames away from the reflect-padded edges
        frame = x[t * 128 - 128 : t * 128 + 128].astype(np.float64)
        power = np.abs(np.fft.rfft(frame * window)) ** 2
        expected = 10 * np.log10(fb @ power + sys.float_info.epsilon)
        np.testing.assert_allclose(lm[:, t], expected, atol=1e-3)


def test_log_mel_of_silence_is_the_eps_floor():
    lm = log_mel(np.zeros(4096, np.float32), FeatureConfig(n_mels=8))
    np.testing.assert_allclose(lm, 10 * np.log10(sys.float_info.epsilon), atol=1e-3)


def test_log_mel_equals_torchaudio_melspectrogram():
    import torchaudio

    from slidead.core.features import EPS, LogMel
    from slidead.core.models import for_family

    rng = np.random.default_rng(3)
    x = (rng.normal(size=(2, 16000)) * 0.1).astype(np.float32)
    for fam in ("ae", "vae"):
        cfg = for_family(fam)
        ref = torchaudio.transforms.MelSpectrogram(
            sample_rate=16000,
            n_fft=1024,
            hop_length=512,
            n_mels=cfg.n_mels,
            power=2.0,
            center=True,
            pad_mode="reflect",
            norm="slaney",
            mel_scale="slaney",
        )(torch.from_numpy(x))
        np.testing.assert_allclose(LogMel(cfg)(x), (10 * torch.log10(ref + EPS)).numpy(), atol=1e-3)
