"""Where in a clip a reconstruction model errs: the squared error per frame and mel band.

``error_map(model, logmel, frames)`` gives an ``(n_mels, T)`` map, the same shape as the log-mel:
each context window's squared reconstruction error spread back onto the frames it covers and
averaged (the profiles :func:`slidead.core.score.score_logmels` reduces to a peak time and band
come from the same map). A family that does not reconstruct (the ID classifier) has no map: None.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from slidead.core.features import windows
from slidead.core.models.registry import family_of


@torch.no_grad()
def error_map(model: nn.Module, logmel: np.ndarray, frames: int) -> np.ndarray | None:
    if not family_of(model).reconstructs:
        return None
    model.eval()
    device = next(model.parameters()).device
    x = torch.as_tensor(np.asarray(logmel, dtype=np.float32))
    n_mels, t = x.shape
    w = windows(x, frames).to(device)  # (W, frames * n_mels), frame-major
    err = ((model(w).float() - w) ** 2).reshape(-1, frames, n_mels).cpu()
    n_w = err.shape[0]
    total = torch.zeros(t, n_mels)
    cover = torch.zeros(t, 1)
    for k in range(frames):
        total[k : k + n_w] += err[:, k, :]
        cover[k : k + n_w] += 1
    return (total / cover.clamp(min=1)).T.numpy()
