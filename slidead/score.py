"""Clip scores from a trained model, and where in time and frequency the error peaked.

``score_logmels(model, logmels, feature_config)`` takes a list of ``(n_mels, T)`` log-mel
matrices (one per clip) and returns :class:`ClipScores` with arrays of length ``n_clips``:

- ``score``: mean over the clip's context windows of the window's mean squared
  reconstruction error (plus, for the VAE when ``use_kl`` is set, its KL term per dimension);
- ``peak_time_s``: the centre of the frame whose reconstruction error is highest;
- ``peak_freq_lo_hz``/``peak_freq_hi_hz``: edges of the mel band with the highest error.

Windows of many clips are batched together, so the model runs in large batches.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn

from .features import FeatureConfig, mel_band_edges, windows


@dataclass(frozen=True)
class ScoreConfig:
    use_kl: bool = False          # VAE only: add the KL term to each window's error
    batch_windows: int = 16384    # windows per forward pass
    precision: str = "fp32"       # "fp32", or "bf16"/"fp16" autocast (measured: scores within 1e-3)

    def __post_init__(self):
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision={self.precision!r}: expected one of {sorted(PRECISIONS)}")
        if self.batch_windows < 1:
            raise ValueError(f"batch_windows={self.batch_windows!r} must be >= 1")

    def to_dict(self) -> dict:
        return asdict(self)


PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class ClipScores:
    score: np.ndarray
    peak_time_s: np.ndarray
    peak_freq_lo_hz: np.ndarray
    peak_freq_hi_hz: np.ndarray

    def __len__(self) -> int:
        return len(self.score)


@torch.no_grad()
def score_logmels(
    model: nn.Module,
    logmels: Sequence[np.ndarray],
    feature_config: FeatureConfig,
    config: ScoreConfig = ScoreConfig(),
    device: str | torch.device = "cpu",
) -> ClipScores:
    model.eval()
    device = torch.device(device)
    model.to(device)
    edges = mel_band_edges(feature_config)
    n = len(logmels)
    out = {k: np.zeros(n) for k in ("score", "peak_time_s", "peak_freq_lo_hz", "peak_freq_hi_hz")}
    frames = feature_config.frames
    dtype = PRECISIONS[config.precision]
    for group in _groups(logmels, frames, config.batch_windows):
        # clips of one length, stacked: (B, n_mels, T) -> windows (B, W, frames * n_mels)
        x = torch.as_tensor(np.stack([logmels[i] for i in group]), dtype=torch.float32).to(device)
        b, n_mels, _ = x.shape
        w = windows(x, frames)
        flat = w.reshape(-1, w.shape[-1])
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            err, extra = model.window_errors(flat, use_kl=config.use_kl)
        err, extra = err.float(), extra.float()
        per_window = (err.mean(dim=1) + extra).reshape(b, -1)
        t_peak, f_peak = _peaks(err.reshape(b, -1, frames, n_mels))
        for j, i in enumerate(group):
            out["score"][i] = float(per_window[j].mean())
            out["peak_time_s"][i] = feature_config.frame_seconds(int(t_peak[j]))
            out["peak_freq_lo_hz"][i], out["peak_freq_hi_hz"][i] = edges[int(f_peak[j])]
    return ClipScores(**out)


def _groups(logmels, frames: int, budget: int):
    """Indices of clips in groups of equal length, each within ``budget`` windows."""
    by_len: dict[int, list[int]] = {}
    for i, m in enumerate(logmels):
        if m.shape[1] < frames:
            raise ValueError(f"clip {i} has {m.shape[1]} frames, fewer than one window of {frames}")
        by_len.setdefault(m.shape[1], []).append(i)
    for t, idx in by_len.items():
        per = max(1, budget // (t - frames + 1))
        for s in range(0, len(idx), per):
            yield idx[s:s + per]


def _peaks(e: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``e``: (B, W, frames, n_mels) window errors. Spread each window's error back onto the
    frames it covers, average; return per clip the peak frame and the peak mel band."""
    b, w, frames, n_mels = e.shape
    fmap = torch.zeros(b, w + frames - 1, n_mels, device=e.device)
    cover = torch.zeros(w + frames - 1, 1, device=e.device)
    for k in range(frames):
        fmap[:, k:k + w] += e[:, :, k, :]
        cover[k:k + w] += 1
    fmap /= cover
    return fmap.mean(dim=2).argmax(dim=1), fmap.mean(dim=1).argmax(dim=1)
