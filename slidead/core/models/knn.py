"""k nearest neighbours on clip statistics, per machine ID.

The clip statistics of :mod:`.clipstats` (mean and spread of the log-mel level per mel band),
scored not against one Gaussian per machine but against the machine's normal training clips
themselves: a clip's score is the mean squared Mahalanobis distance (under the ID's shrunk
covariance, :class:`~.mahalanobis.SelectiveMahalanobis`) to its ``k`` nearest normal training
clips of the same machine ID; a clip of an ID the model never saw is measured against all
training clips under the pooled covariance. Where a machine's normal sound falls into
clusters (recording sessions with their own speed, load or microphone), the distance to the
nearest clips follows the cluster a clip belongs to, where one Gaussian spans them all.

The training clips' statistics (``bank``) and their ID rows (``bank_row``) are buffers, so they
travel in the state dict; they take the stored shapes on load. Fitting is one pass over the
training clips (:meth:`KNN.fit_clips`), no gradient steps.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass

import numpy as np
import torch

from slidead.core.models.clipstats import STATISTICS_FAMILY, ClipStats, ClipStatsConfig
from slidead.core.models.mahalanobis import SelectiveMahalanobis
from slidead.core.models.registry import Family, register


@dataclass(frozen=True)
class KNNConfig(ClipStatsConfig):
    k: int = 3  # neighbours averaged

    def __post_init__(self):
        super().__post_init__()
        if self.k < 1:
            raise ValueError(f"k={self.k!r} must be >= 1")

    def to_dict(self) -> dict:
        return asdict(self)


class KNN(ClipStats):
    family = "knn"

    def __init__(self, config: KNNConfig = KNNConfig()):
        super().__init__(config)
        self.register_buffer("bank", torch.zeros(0, config.dim))
        self.register_buffer("bank_row", torch.zeros(0, dtype=torch.long))

    @torch.no_grad()
    def fit_clips(self, clips: Iterable[tuple[str, np.ndarray]]) -> "KNN":
        ids, vectors = self._vectors(clips)
        classes = sorted(set(ids))
        row = torch.tensor([classes.index(m) for m in ids], dtype=torch.long)
        self.mahalanobis = SelectiveMahalanobis().fit([(vectors, row)], classes, self.config.shrinkage)
        self.bank, self.bank_row = vectors.float(), row
        return self

    def clip_scores(self, vectors: torch.Tensor, machine_ids) -> torch.Tensor:
        rows = self.mahalanobis.index(machine_ids)
        pooled = len(self.mahalanobis.ids)
        out = torch.empty(vectors.shape[0], device=vectors.device)
        bank, bank_row = self.bank.to(vectors.device), self.bank_row.to(vectors.device)
        for r in rows.unique().tolist():
            sel = (rows == r).to(vectors.device)
            k = pooled if r < 0 else r
            ref = bank if r < 0 else bank[bank_row == r]
            d = vectors[sel][:, None, :] - ref[None, :, :]  # (b, n_ref, dim)
            dist = torch.einsum("bnd,de,bne->bn", d, self.mahalanobis.precision[k], d)
            out[sel] = dist.topk(min(self.config.k, ref.shape[0]), dim=1, largest=False).values.mean(dim=1)
        return out

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        for name in ("bank", "bank_row"):  # take the stored shapes (number of training clips)
            t = state_dict.get(prefix + name)
            if t is not None and t.shape != getattr(self, name).shape:
                setattr(self, name, torch.empty_like(t, device=getattr(self, name).device))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


FAMILY = register(
    Family(
        "knn",
        KNN,
        KNNConfig,
        **STATISTICS_FAMILY,
        description="k nearest normal clips of the machine ID, on clip statistics (Mahalanobis)",
    )
)
