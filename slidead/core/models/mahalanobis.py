"""Selective Mahalanobis distance: normal statistics per machine ID, pooled as the fallback.

As in the DCASE 2023 Task 2 baseline, a window is scored by the squared Mahalanobis distance
of a vector (the AE's or VAE's reconstruction error ``x_hat - x``, or the ID classifier's patch
embedding) to the distribution of that vector over normal training windows. The baseline keeps
one covariance per domain and selects between them; here the selection is by machine ID: a
window of ID ``k`` is measured against ID ``k``'s mean and covariance, and a window whose ID is
unknown (or not given) against the pooled statistics of all training windows.

:class:`SelectiveMahalanobis` holds ``mean (K + 1, dim)`` and ``precision (K + 1, dim, dim)``
as buffers (row ``K`` is the pooled one) and the ID list as the module's extra state, so they
travel in the model's ``state_dict`` (``torch.load(weights_only=True)`` reads them back; the
buffers take the stored shapes on load). Covariances are shrunk towards a scaled identity,
``(1 - a) * cov + a * mean(diag(cov)) * I`` with ``a = shrinkage``, so they invert also when
an ID has fewer windows than dimensions.

Domains (the DCASE 2023 baseline's selection): when training clips carry their domain, the
reconstruction families keep a target-domain row per machine ID besides the source one
(``"<id>|target"``, :func:`domain_classes`), and :meth:`SelectiveMahalanobis.smaller_distance`
scores a clip under both rows of its ID and keeps the domain whose mean distance over the
clip's windows is smaller. The clip's own domain is never needed.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

SHRINKAGE = 0.01
TARGET = "|target"  # suffix of a machine ID's target-domain statistics row


def domain_classes(classes, machine_ids, domains) -> tuple[list[str], list[int]]:
    """Statistics rows and each clip's row: ``classes`` (machine IDs, the source domain and
    clips without one) plus ``<id>|target`` for IDs with target-domain clips."""
    classes = [str(c) for c in classes]
    targets = sorted({str(m) for m, d in zip(machine_ids, domains) if d == "target"})
    rows = classes + [m + TARGET for m in targets]
    lookup = {c: i for i, c in enumerate(rows)}
    return rows, [lookup[str(m) + TARGET] if d == "target" else lookup[str(m)] for m, d in zip(machine_ids, domains)]


class SelectiveMahalanobis(nn.Module):
    def __init__(self, dim: int = 0, ids: tuple[str, ...] = ()):
        super().__init__()
        self.ids = tuple(str(i) for i in ids)
        k = len(self.ids) + 1
        self.register_buffer("mean", torch.zeros(k, dim))
        self.register_buffer("precision", torch.eye(dim).repeat(k, 1, 1))

    @property
    def dim(self) -> int:
        return self.mean.shape[1]

    def index(self, machine_ids) -> torch.Tensor:
        """Row of each machine ID's statistics; -1 (pooled) for an ID without its own."""
        lookup = {m: i for i, m in enumerate(self.ids)}
        return torch.tensor([lookup.get(str(m), -1) for m in machine_ids], dtype=torch.long)

    @torch.no_grad()
    def distance(self, v: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """Squared Mahalanobis distance ``(B,)`` of vectors ``v (B, dim)`` to the statistics
        in rows ``index (B,)`` (-1: pooled)."""
        if v.shape[1] != self.dim:
            raise ValueError(f"vectors have {v.shape[1]} dimensions, the statistics {self.dim}")
        index = torch.where(index < 0, len(self.ids), index).to(v.device)
        out = torch.empty(v.shape[0], device=v.device)
        with torch.autocast(v.device.type, enabled=False):
            v = v.float()
            for k in index.unique().tolist():
                rows = index == k
                d = v[rows] - self.mean[k]
                out[rows] = ((d @ self.precision[k]) * d).sum(dim=1)
        return out

    @torch.no_grad()
    def smaller_distance(self, v: torch.Tensor, machine_ids, per_clip: int) -> torch.Tensor:
        """Distances ``(B * per_clip,)`` of windows ``v`` of ``B`` clips (``per_clip`` windows each,
        clip-major) under their ID's statistics, or, for an ID with a target-domain row, under
        the row (source or target) whose mean over the clip's windows is smaller."""
        src = self.index(machine_ids)
        if not any(i.endswith(TARGET) for i in self.ids):
            return self.distance(v, src.repeat_interleave(per_clip))
        tgt = self.index([f"{m}{TARGET}" for m in machine_ids])
        d_src = self.distance(v, src.repeat_interleave(per_clip)).reshape(-1, per_clip)
        has = (tgt >= 0).to(v.device)
        d_tgt = self.distance(v, torch.where(tgt >= 0, tgt, src).repeat_interleave(per_clip)).reshape(-1, per_clip)
        use_tgt = has & (d_tgt.mean(dim=1) < d_src.mean(dim=1))
        return torch.where(use_tgt[:, None], d_tgt, d_src).reshape(-1)

    @torch.no_grad()
    def fit(self, batches: Iterable[tuple[torch.Tensor, torch.Tensor]], ids, shrinkage: float = SHRINKAGE):
        """Fit from ``(vectors (B, dim), id_row (B,))`` batches of normal windows, ``id_row``
        indexing ``ids``. Accumulates in float64: memory is ``(K + 1) dim^2``, not the windows.
        An ID with fewer than two windows uses the pooled statistics."""
        if not 0 <= shrinkage <= 1:
            raise ValueError(f"shrinkage={shrinkage!r} must be in [0, 1]")
        ids = tuple(str(i) for i in ids)
        k = len(ids)
        n = s = ss = None
        for v, row in batches:
            v, row = v.detach().double().cpu(), row.detach().long().cpu()
            if n is None:
                d = v.shape[1]
                n, s, ss = (
                    torch.zeros(k + 1, dtype=torch.float64),
                    torch.zeros(k + 1, d, dtype=torch.float64),
                    torch.zeros(k + 1, d, d, dtype=torch.float64),
                )
            for j in [j for j in row.unique().tolist() if 0 <= j < k] + [k]:
                part = v if j == k else v[row == j]
                n[j] += part.shape[0]
                s[j] += part.sum(dim=0)
                ss[j] += part.T @ part
        if n is None or n[k] < 2:
            raise ValueError("need at least two normal windows to fit Mahalanobis statistics")
        dim = s.shape[1]
        mean = torch.zeros(k + 1, dim, dtype=torch.float64)
        precision = torch.zeros(k + 1, dim, dim, dtype=torch.float64)
        for j in [k] + list(range(k)):
            if n[j] < 2:
                mean[j], precision[j] = mean[k], precision[k]
                continue
            mu = s[j] / n[j]
            cov = (ss[j] - n[j] * torch.outer(mu, mu)) / (n[j] - 1)
            cov = (1 - shrinkage) * cov + shrinkage * cov.diagonal().mean() * torch.eye(dim, dtype=torch.float64)
            p = torch.linalg.inv(cov)
            mean[j], precision[j] = mu, (p + p.T) / 2
        self.ids = ids
        device = self.mean.device
        self.mean = mean.float().to(device)
        self.precision = precision.float().to(device)
        return self

    def get_extra_state(self) -> dict:
        return {"ids": list(self.ids)}

    def set_extra_state(self, state: dict) -> None:
        self.ids = tuple(str(i) for i in state["ids"])

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        for name in ("mean", "precision"):  # take the stored shapes (number of IDs, dim)
            t = state_dict.get(prefix + name)
            if t is not None and t.shape != getattr(self, name).shape:
                setattr(self, name, torch.empty_like(t, device=getattr(self, name).device))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
