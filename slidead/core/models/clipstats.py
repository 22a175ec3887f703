"""Clip statistics: a clip's spectral statistics scored by Mahalanobis distance per machine ID.

No network and no gradient training: a clip is summarised by the mean and the spread (standard
deviation over time) of its log-mel level in every mel band, and the mean absolute
frame-to-frame change per band (``deltas``, on by default: 64 mels give 192 values). A clip is anomalous when that vector lies far
from the vectors of its own machine's normal training clips: the squared Mahalanobis distance
to their mean under their covariance, shrunk towards a scaled identity (``shrinkage``, so it
inverts with fewer clips than dimensions), as :class:`~.mahalanobis.SelectiveMahalanobis`
keeps them per machine ID with the pooled statistics of all IDs for an ID it never saw. The
one-line baseline a detector should beat, kept as a family so it trains, registers, scores a
night, is thresholded and fused exactly as the networks are.

The family sees a clip's log-mel frames as windows of one frame (``frames=1``, every frame), so
:meth:`ClipStats.score_windows` gets all of a clip's frames at once and computes the clip's
statistics from them; each of its windows carries the clip's score (their mean is the clip's
score). Fitting is one pass over the training clips, :meth:`ClipStats.fit_clips` (the family
declares ``fits=CLIPS``), which :func:`slidead.jobs.retrain.train_and_evaluate` calls instead of
the gradient loop. Peaks: the band is where the clip's mean level departs most from its
machine's normal level (in units of the normal within-clip spread), the time the frame that
departs most over all bands.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass, replace

import numpy as np
import torch
from torch import nn

from slidead.core.models.mahalanobis import SelectiveMahalanobis
from slidead.core.models.registry import CLIPS, Family, register


@dataclass(frozen=True)
class ClipStatsConfig:
    n_mels: int = 64
    frames: int = 1  # the family sees single frames: all of a clip's frames reach score_windows
    deltas: bool = True  # add the mean |frame-to-frame change| per band to mean and spread
    # add each band's 90th percentile and maximum over time: brief events (a valve's click) that a
    # mean dilutes; on the real valve clips it lifted kNN's target-domain AUC from 0.53 to 0.69
    events: bool = True
    # add each band's spread and 99th percentile of the frame-to-frame change: onsets (off by default:
    # on the valve clips it helped, on the generated plant it cost; tests/bench/RESULTS.md)
    onsets: bool = False
    shrinkage: float = 0.05  # covariance shrinkage towards a scaled identity, in [0, 1]

    def __post_init__(self):
        if self.frames != 1:
            raise ValueError(f"frames={self.frames!r}: clip statistics take single frames (frames=1)")
        if self.n_mels < 1:
            raise ValueError(f"n_mels={self.n_mels!r} must be >= 1")
        if not 0 <= self.shrinkage <= 1:
            raise ValueError(f"shrinkage={self.shrinkage!r} must be in [0, 1]")

    @property
    def dim(self) -> int:
        """Length of a clip's statistics vector."""
        return self.n_mels * statistics_width(self.deltas, self.events, self.onsets)

    def to_dict(self) -> dict:
        return asdict(self)


def statistics_width(deltas: bool = False, events: bool = False, onsets: bool = False) -> int:
    """How many values per mel band :func:`clip_statistics` gives."""
    return 2 + int(deltas) + 2 * int(events) + 2 * int(onsets)


def clip_statistics(
    frames: torch.Tensor, deltas: bool = False, events: bool = False, onsets: bool = False
) -> torch.Tensor:
    """``(B, T, n_mels)`` log-mel frames of ``B`` clips -> ``(B, width * n_mels)``: per band the
    mean level, its standard deviation over time, (``deltas``) the mean |change| per frame,
    (``events``) the level's 90th percentile and maximum over time, and (``onsets``) the standard
    deviation and the 99th percentile of |change| per frame (see :func:`statistics_width`)."""
    x = frames.float()
    parts = [x.mean(dim=1), x.std(dim=1, unbiased=False)]
    d = x[:, 1:] - x[:, :-1] if x.shape[1] > 1 else torch.zeros_like(x)
    if deltas:
        parts.append(d.abs().mean(dim=1))
    if events:
        parts += [torch.quantile(x, 0.9, dim=1), x.amax(dim=1)]
    if onsets:
        parts += [d.std(dim=1, unbiased=False), torch.quantile(d.abs(), 0.99, dim=1)]
    return torch.cat(parts, dim=1)


def statistics_of(
    logmels: Iterable[np.ndarray], deltas: bool, events: bool = False, onsets: bool = False
) -> torch.Tensor:
    """The statistics vector of each ``(n_mels, T)`` log-mel, ``(n_clips, dim)``."""
    rows = [
        clip_statistics(torch.as_tensor(np.asarray(m, dtype=np.float32).T)[None], deltas, events, onsets)[0]
        for m in logmels
    ]
    if not rows:
        raise ValueError("no clips to fit clip statistics on")
    return torch.stack(rows)


class ClipStats(nn.Module):
    family = "clipstats"

    def __init__(self, config: ClipStatsConfig = ClipStatsConfig()):
        super().__init__()
        self.config = config
        self.mahalanobis = SelectiveMahalanobis(config.dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The identity on ``(B, n_mels)`` frames: there is no network (MLflow's signature)."""
        return x

    def loss(self, x: torch.Tensor, *targets: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """Nothing to learn by gradient steps: :meth:`fit_clips` fits the statistics."""
        return torch.zeros((), device=x.device), {}

    @torch.no_grad()
    def fit_clips(self, clips: Iterable[tuple[str, np.ndarray]]) -> "ClipStats":
        """Fit from ``(machine_id, (n_mels, T) log-mel)`` pairs of normal training clips."""
        ids, vectors = self._vectors(clips)
        classes = sorted(set(ids))
        row = torch.tensor([classes.index(m) for m in ids], dtype=torch.long)
        self.mahalanobis = SelectiveMahalanobis().fit([(vectors, row)], classes, self.config.shrinkage)
        return self

    def _vectors(self, clips: Iterable[tuple[str, np.ndarray]]) -> tuple[list[str], torch.Tensor]:
        ids, logmels = [], []
        for mid, m in clips:
            ids.append(str(mid))
            logmels.append(m)
        c = self.config
        return ids, statistics_of(logmels, c.deltas, c.events, c.onsets)

    def clip_scores(self, vectors: torch.Tensor, machine_ids) -> torch.Tensor:
        """``(B,)`` squared Mahalanobis distance of statistics ``vectors`` to their IDs' normal ones."""
        return self.mahalanobis.distance(vectors, self.mahalanobis.index(machine_ids))

    @torch.no_grad()
    def score_windows(self, flat: torch.Tensor, w: torch.Tensor, machine_ids, metric: str):
        """``w``: ``(B, T, n_mels)``, every frame of ``B`` clips of one length. Per window the
        clip's score ``(B, T)``; the frames' departure from the ID's normal level ``(B, T)``;
        the bands' ``(B, n_mels)``."""
        x = w.float()
        c = self.config
        scores = self.clip_scores(clip_statistics(x, c.deltas, c.events, c.onsets), machine_ids)
        t_prof, f_prof = self.departures(x, machine_ids)
        return scores[:, None].expand(-1, x.shape[1]), t_prof, f_prof

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # a version stored before ``events`` existed holds statistics without them: score it as trained
        c, t = self.config, state_dict.get(prefix + "mahalanobis.mean")
        if c.events and t is not None and t.shape[-1] == c.n_mels * statistics_width(c.deltas, False, c.onsets):
            self.config = replace(c, events=False)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def departures(self, x: torch.Tensor, machine_ids) -> tuple[torch.Tensor, torch.Tensor]:
        """How far each frame (mean over bands) and each band's mean level lie from the ID's
        normal mean level, in units of its normal within-clip spread (both from the fitted mean)."""
        n = self.config.n_mels
        rows = self.mahalanobis.index(machine_ids).to(x.device)
        rows = torch.where(rows < 0, len(self.mahalanobis.ids), rows)
        mu, spread = self.mahalanobis.mean[rows, :n], self.mahalanobis.mean[rows, n : 2 * n].clamp(min=1e-3)
        z = (x - mu[:, None, :]) / spread[:, None, :]
        return (z**2).mean(dim=2), ((x.mean(dim=1) - mu) / spread).abs()


# what every family on clip statistics declares (this one and knn)
STATISTICS_FAMILY = dict(
    features={"n_mels": 64, "frames": 1},
    batch_size=1,  # no gradient training
    fits=CLIPS,  # one pass over the training clips (fit_clips)
    # fitting is one pass over the clips, so fold models cost little: conformal thresholds as every
    # family's (auto: cross-conformal on small data, split on large)
    train={"threshold_folds": 5},
    metrics=("mahalanobis",),
    shape=lambda features: {"n_mels": features.n_mels, "frames": features.frames},
    reconstructs=False,
)

FAMILY = register(
    Family(
        "clipstats",
        ClipStats,
        ClipStatsConfig,
        **STATISTICS_FAMILY,
        description="clip spectral statistics (mean and spread per mel band), Mahalanobis per machine ID",
    )
)
