"""Log-mel features, exactly as the DCASE 2020 Task 2 baseline computes them.

16 kHz audio -> power mel spectrogram (n_fft 1024, hop 512, power 2, Slaney mel scale and
norm as librosa) -> ``10 * log10(mel + eps)`` -> context windows of ``frames`` consecutive
frames flattened frame-major into one vector (frame t's mels, then frame t+1's, ...).

Shapes: ``log_mel`` takes ``(samples,)`` or ``(batch, samples)`` float32 and returns
``(n_mels, T)`` or ``(batch, n_mels, T)``; ``windows`` takes ``(n_mels, T)`` and returns
``(T - frames + 1, frames * n_mels)``. A 10 s clip has T = 313 frames and 309 windows.
"""

from __future__ import annotations

import functools
import hashlib
import json
import sys
import warnings
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torchaudio

EPS = sys.float_info.epsilon  # the baseline's epsilon


@dataclass(frozen=True)
class FeatureConfig:
    sample_rate: int = 16000
    n_fft: int = 1024
    hop_length: int = 512
    n_mels: int = 128
    power: float = 2.0
    frames: int = 5
    channel: int = 0

    def __post_init__(self):
        for name in ("sample_rate", "n_fft", "hop_length", "n_mels", "frames"):
            if getattr(self, name) <= 0:
                raise ValueError(f"FeatureConfig.{name}={getattr(self, name)!r} must be > 0")
        if self.channel < 0:
            raise ValueError(f"FeatureConfig.channel={self.channel!r} must be >= 0")

    @property
    def dim(self) -> int:
        """Length of one context-window vector."""
        return self.n_mels * self.frames

    @property
    def min_samples(self) -> int:
        """Fewest samples that still give one context window (centred STFT)."""
        return (self.frames - 1) * self.hop_length

    def to_dict(self) -> dict:
        return asdict(self)

    @functools.cached_property
    def hash(self) -> str:
        """Short stable hash naming this config's Parquet folder."""
        blob = json.dumps(self.to_dict(), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:12]

    def frame_seconds(self, frame: int) -> float:
        return frame * self.hop_length / self.sample_rate


class LogMel:
    """A reusable log-mel extractor on one device (the mel filterbank is built once)."""

    def __init__(self, config: FeatureConfig, device: str | torch.device = "cpu"):
        self.config = config
        self.device = torch.device(device)
        # power spectrogram as z * conj(z) (torchaudio's |z|^2 takes a square root first) and the
        # same Slaney filterbank torchaudio.transforms.MelSpectrogram uses
        self.spec = torchaudio.transforms.Spectrogram(
            n_fft=config.n_fft,
            hop_length=config.hop_length,
            power=None,
            center=True,
            pad_mode="reflect",
        ).to(self.device)
        self.fb = torchaudio.functional.melscale_fbanks(
            config.n_fft // 2 + 1,
            0.0,
            config.sample_rate / 2.0,
            config.n_mels,
            config.sample_rate,
            norm="slaney",
            mel_scale="slaney",
        ).to(self.device)  # (n_freqs, n_mels)
        # each FFT bin feeds at most two Slaney bands: on the CPU a sparse product is ~10x faster
        self._fb_csr = None
        if self.device.type == "cpu":
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # "sparse CSR support is in beta"
                self._fb_csr = self.fb.T.contiguous().to_sparse_csr()  # (n_mels, n_freqs)

    @staticmethod
    @functools.lru_cache(maxsize=8)
    def shared(config: FeatureConfig, device: str = "cpu") -> LogMel:
        """One extractor per (config, device) for the process: building the filterbank took
        ~0.1 s, once per shard of a night. Safe to call from several threads at once."""
        return LogMel(config, device)

    @torch.no_grad()
    def __call__(self, audio) -> np.ndarray:
        return self.tensor(audio).cpu().numpy()

    @torch.no_grad()
    def tensor(self, audio) -> torch.Tensor:
        x = torch.as_tensor(audio, dtype=torch.float32).to(self.device)
        if x.ndim not in (1, 2):
            raise ValueError(f"audio must be (samples,) or (batch, samples), got {tuple(x.shape)}")
        if x.shape[-1] < self.config.min_samples:
            raise ValueError(
                f"audio has {x.shape[-1]} samples, fewer than one context window needs ({self.config.min_samples})"
            )
        z = self.spec(x)
        power = (z * z.conj()).real  # (..., n_freqs, T)
        if self.config.power != 2.0:
            power = power.pow(self.config.power / 2.0)
        mel = self._mel(power)
        return 10.0 * torch.log10(mel + EPS)

    def _mel(self, power: torch.Tensor) -> torch.Tensor:
        """``(..., n_freqs, T)`` power -> ``(..., n_mels, T)`` mel power."""
        if self._fb_csr is None:
            return torch.matmul(power.transpose(-1, -2), self.fb).transpose(-1, -2)
        if power.ndim == 2:
            return self._fb_csr @ power
        b, f, t = power.shape
        flat = power.permute(1, 0, 2).reshape(f, b * t)
        return (self._fb_csr @ flat).reshape(-1, b, t).permute(1, 0, 2)

    def band_edges_hz(self) -> np.ndarray:
        """``(n_mels, 2)`` lower and upper edge in Hz of each mel band (Slaney scale)."""
        return mel_band_edges(self.config)


def log_mel(audio, config: FeatureConfig) -> np.ndarray:
    """One-off convenience; use :class:`LogMel` in loops."""
    return LogMel(config)(audio)


def windows(logmel, frames: int = 5):
    """``(n_mels, T)`` -> ``(T - frames + 1, frames * n_mels)``; also batched ``(B, n_mels, T)``.

    Works on numpy arrays and torch tensors; returns the same kind.
    """
    is_np = isinstance(logmel, np.ndarray)
    x = torch.from_numpy(logmel) if is_np else logmel
    if x.ndim not in (2, 3):
        raise ValueError(f"logmel must be (n_mels, T) or (B, n_mels, T), got {tuple(x.shape)}")
    t = x.shape[-1]
    if t < frames:
        raise ValueError(f"logmel has {t} frames, fewer than frames={frames}")
    # unfold over time -> (..., n_mels, W, frames); frame-major flatten -> (..., W, frames*n_mels)
    u = x.unfold(-1, frames, 1)
    u = u.movedim(-3, -1)  # (..., W, frames, n_mels)
    out = u.reshape(*u.shape[:-2], frames * x.shape[-2])
    return out.numpy() if is_np else out


def mel_band_edges(config: FeatureConfig) -> np.ndarray:
    """Edges in Hz of the Slaney mel bands: band k spans points k..k+2 of the mel grid."""
    f_max = config.sample_rate / 2.0
    m_min, m_max = _hz_to_mel(0.0), _hz_to_mel(f_max)
    pts = _mel_to_hz(np.linspace(m_min, m_max, config.n_mels + 2))
    return np.stack([pts[:-2], pts[2:]], axis=1)


def _hz_to_mel(f):
    f = np.asarray(f, dtype=np.float64)
    f_sp, min_log_hz, logstep = 200.0 / 3, 1000.0, np.log(6.4) / 27.0
    mels = f / f_sp
    min_log_mel = min_log_hz / f_sp
    return np.where(f >= min_log_hz, min_log_mel + np.log(np.maximum(f, 1e-9) / min_log_hz) / logstep, mels)


def _mel_to_hz(m):
    m = np.asarray(m, dtype=np.float64)
    f_sp, min_log_hz, logstep = 200.0 / 3, 1000.0, np.log(6.4) / 27.0
    min_log_mel = min_log_hz / f_sp
    return np.where(m >= min_log_mel, min_log_hz * np.exp(logstep * (m - min_log_mel)), f_sp * m)
