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

    def to_dict(self) -> dict:
        return asdict(self)


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
    for group in _groups(logmels, frames, config.batch_windows):
        wins = [windows(torch.as_tensor(logmels[i], dtype=torch.float32), frames) for i in group]
        counts = [w.shape[0] for w in wins]
        x = torch.cat(wins).to(device)
        err, extra = model.window_errors(x, use_kl=config.use_kl)
        per_window = err.mean(dim=1) + extra
        for j, (i, part, ext) in enumerate(zip(group, err.split(counts), per_window.split(counts))):
            out["score"][i] = float(ext.mean())
            t, f = _peak(part, frames, logmels[i].shape[0])
            out["peak_time_s"][i] = feature_config.frame_seconds(t)
            out["peak_freq_lo_hz"][i], out["peak_freq_hi_hz"][i] = edges[f]
    return ClipScores(**out)


def _groups(logmels, frames: int, budget: int):
    group, used = [], 0
    for i, m in enumerate(logmels):
        w = m.shape[1] - frames + 1
        if w < 1:
            raise ValueError(f"clip {i} has {m.shape[1]} frames, fewer than one window of {frames}")
        if group and used + w > budget:
            yield group
            group, used = [], 0
        group.append(i)
        used += w
    if group:
        yield group


def _peak(err: torch.Tensor, frames: int, n_mels: int) -> tuple[int, int]:
    """Spread each window's error back onto its frames; return (peak frame, peak mel band)."""
    w = err.shape[0]
    e = err.reshape(w, frames, n_mels)
    fmap = torch.zeros(w + frames - 1, n_mels, device=err.device)
    cover = torch.zeros(w + frames - 1, 1, device=err.device)
    for k in range(frames):
        fmap[k:k + w] += e[:, k, :]
        cover[k:k + w] += 1
    fmap /= cover
    return int(fmap.mean(dim=1).argmax()), int(fmap.mean(dim=0).argmax())
