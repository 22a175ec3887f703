"""How a reconstruction family scores its windows: the one default every such family shares.

A reconstruction network (``Family.reconstructs``: the seed's AE and VAE, the tests' toy) offers
``window_errors(x, use_kl)`` and ``forward(x)`` (the reconstruction); :func:`score_windows`
turns those into what every family's scoring returns (see
:meth:`slidead.core.models.registry.Family.score_windows`):

- ``mse``: a window's mean squared reconstruction error (plus, for the VAE with ``use_kl``, its
  KL term per dimension);
- ``mahalanobis``: the squared Mahalanobis distance of the window's reconstruction error
  ``x_hat - x`` to the normal statistics of the clip's machine ID (``model.mahalanobis``), or,
  when training kept a target domain's statistics apart, to whichever of the two the clip lies
  nearer.

The time and band profiles are the squared errors spread back onto the frames each window
covers (:func:`profiles`).
"""

from __future__ import annotations

import torch
from torch import nn


def score_windows(
    model: nn.Module, flat: torch.Tensor, w: torch.Tensor, machine_ids, metric: str, frames: int, use_kl: bool = False
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``flat``: ``(B * W, frames * n_mels)`` windows of ``B`` clips (``w``: the same as
    ``(B, W, dim)``). Returns per window ``(B, W)``, the time profile ``(B, T)`` and the band
    profile ``(B, n_mels)``."""
    b = w.shape[0]
    n_mels = flat.shape[1] // frames
    if metric == "mse":
        err, extra = model.window_errors(flat, use_kl=use_kl)
        err, extra = err.float(), extra.float()
        per_window = (err.mean(dim=1) + extra).reshape(b, -1)
        return (per_window, *profiles(err.reshape(b, -1, frames, n_mels)))
    diff = error_vectors(model, flat)
    # per ID, or its source or target statistics, whichever the clip lies nearer
    per_window = model.mahalanobis.smaller_distance(diff, machine_ids, w.shape[1])
    return (per_window.reshape(b, -1), *profiles((diff**2).reshape(b, -1, frames, n_mels)))


def error_vectors(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The reconstruction errors ``x_hat - x`` (what the Mahalanobis statistics measure)."""
    return model(x).float() - x


def profiles(e: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``e``: (B, W, frames, n_mels) window errors. Spread each window's error back onto the
    frames it covers, average; return per clip the error per frame (B, T) and per mel band
    (B, n_mels).

    Both without building the (B, T, n_mels) map: the frame profile spreads the windows' mean
    over mels (``frames`` small additions), the band profile is one weighted sum over ``e`` (a
    window's frame k counts 1/cover of frame w + k, over T frames): a third of the time the map
    took, and no copy of ``e``."""
    b, w, frames, n_mels = e.shape
    t = w + frames - 1
    cover = torch.zeros(t, device=e.device)
    per_frame = e.mean(dim=3)  # (B, W, frames)
    tmap = torch.zeros(b, t, device=e.device)
    for k in range(frames):
        tmap[:, k : k + w] += per_frame[:, :, k]
        cover[k : k + w] += 1
    weight = (1.0 / (cover.unfold(0, frames, 1) * t)).reshape(1, 1, w * frames)  # (w, frames) flattened
    f_prof = torch.matmul(weight.to(e.dtype), e.reshape(b, w * frames, n_mels)).reshape(b, n_mels)
    return tmap / cover, f_prof
