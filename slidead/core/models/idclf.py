"""A compact machine-ID classifier over log-mel patches (self-supervised anomaly detection).

Trained to tell the machine IDs of one machine type apart from their normal clips only (the
idea of the DCASE 2021 baseline's MobileNetV2 and of STgram-MFN, here small enough to train on
a CPU in seconds). A clip is anomalous when it does not look like a normal clip of its own ID:
either the softmax evidence for its ID is weak (``logit``: log((1 - p) / p), the DCASE 2021
baseline's score) or its patch embeddings lie far from its ID's normal embeddings
(``mahalanobis``, see :mod:`.mahalanobis`); :meth:`IDClf.score_windows` computes both.

Input: ``(batch, frames * n_mels)`` context windows flattened frame-major (patches of
``frames`` consecutive log-mel frames, as :func:`slidead.core.features.windows` makes them).
Network: per-band BatchNorm of the input -> conv blocks (3x3 conv, BatchNorm, ReLU; 2x2 max
pooling between blocks) -> mean over time -> flatten (channels x remaining bands: the
embedding, which keeps where in frequency a pattern sits) -> dropout -> linear to one logit per
machine ID. 26,611 parameters for three IDs with the default (16, 32, 64) channels.
``classes`` (the machine IDs seen in training, sorted) is part of the config, so a model
rebuilt from ``run_config.json`` knows which output is which ID.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from slidead.core.models.registry import Family, register


@dataclass(frozen=True)
class IDClfConfig:
    n_mels: int = 64
    frames: int = 32  # patch length in frames (1 s at 16 kHz, hop 512)
    channels: tuple[int, ...] = (16, 32, 64)  # one conv block each
    patch_hop: int = 8  # frames between patches, in training and scoring
    dropout: float = 0.2
    classes: tuple[str, ...] = ()  # machine IDs, index = output unit; set at training

    def __post_init__(self):
        object.__setattr__(self, "channels", tuple(int(c) for c in self.channels))
        object.__setattr__(self, "classes", tuple(str(c) for c in self.classes))
        pools = len(self.channels) - 1
        if not self.channels or min(self.channels) < 1:
            raise ValueError(f"channels={self.channels!r}: give one or more positive widths")
        if self.n_mels % 2**pools or self.frames < 2**pools:
            raise ValueError(
                f"n_mels={self.n_mels!r} must be divisible by {2**pools} and frames={self.frames!r} "
                f"at least {2**pools} for {len(self.channels)} conv blocks"
            )
        if self.patch_hop < 1:
            raise ValueError(f"patch_hop={self.patch_hop!r} must be >= 1")
        if len(set(self.classes)) != len(self.classes):
            raise ValueError(f"classes={self.classes!r} has duplicates")

    @property
    def input_dim(self) -> int:
        return self.n_mels * self.frames

    @property
    def embedding_dim(self) -> int:
        return self.channels[-1] * (self.n_mels // 2 ** (len(self.channels) - 1))

    def to_dict(self) -> dict:
        d = asdict(self)
        d["channels"], d["classes"] = list(self.channels), list(self.classes)
        return d


def _block(i: int, o: int) -> list[nn.Module]:
    return [nn.Conv2d(i, o, 3, padding=1, bias=False), nn.BatchNorm2d(o), nn.ReLU()]


class IDClf(nn.Module):
    family = "idclf"

    def __init__(self, config: IDClfConfig = IDClfConfig()):
        super().__init__()
        self.config = config
        c = config
        layers, width = [], 1
        for k, out in enumerate(c.channels):
            layers += _block(width, out) + ([nn.MaxPool2d(2)] if k < len(c.channels) - 1 else [])
            width = out
        self.norm = nn.BatchNorm1d(c.n_mels)
        self.features = nn.Sequential(*layers)
        self.dropout = nn.Dropout(c.dropout)
        self.head = nn.Linear(c.embedding_dim, max(len(c.classes), 1))
        # each ID's normal band profile (mean and spread of a patch's mean level per mel band):
        # scoring names the band where a patch departs most from its ID's profile
        self.register_buffer("band_mean", torch.zeros(max(len(c.classes), 1), c.n_mels))
        self.register_buffer("band_std", torch.ones(max(len(c.classes), 1), c.n_mels))

    @property
    def window_hop(self) -> int:
        return self.config.patch_hop

    def patches(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, frames * n_mels)`` frame-major -> ``(B, n_mels, frames)``."""
        return x.reshape(x.shape[0], self.config.frames, self.config.n_mels).transpose(1, 2)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, embedding_dim)``: conv features averaged over time, flattened over bands."""
        h = self.features(self.norm(self.patches(x)).unsqueeze(1))  # (B, C, bands, time)
        return h.mean(dim=-1).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, n_classes)``."""
        return self.head(self.dropout(self.embed(x)))

    def loss(self, x: torch.Tensor, y: torch.Tensor | None = None) -> tuple[torch.Tensor, dict]:
        """Cross-entropy of the machine-ID labels ``y`` (class indices, ``(B,)``)."""
        if y is None:
            raise ValueError("idclf trains on machine-ID labels: give windows with labels")
        logits = self(x)
        ce = F.cross_entropy(logits, y)
        acc = (logits.argmax(dim=1) == y).float().mean()
        return ce, {"ce": ce.detach(), "accuracy": acc.detach()}

    def class_index(self, machine_ids) -> list[int]:
        """Output index of each machine ID; -1 for an ID the model never saw."""
        lookup = {c: i for i, c in enumerate(self.config.classes)}
        return [lookup.get(str(m), -1) for m in machine_ids]

    @torch.no_grad()
    def id_logit_scores(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """log((1 - p) / p) of each window's target class ``(B,)``; a target of -1 (unknown ID)
        takes the most likely class (the clip is scored against the ID it resembles most)."""
        target = torch.where(target < 0, logits.argmax(dim=1), target)
        own = logits.gather(1, target[:, None]).squeeze(1)
        others = logits.scatter(1, target[:, None], float("-inf"))
        return torch.logsumexp(others, dim=1) - own

    def band_levels(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, n_mels)``: each patch's mean level per mel band."""
        return self.patches(x).mean(dim=2)

    @torch.no_grad()
    def fit_band_profiles(self, batches, classes) -> None:
        """Each ID's normal band profile from ``(x, y)`` batches of normal training patches
        (``y``: the index into ``classes``); an ID with fewer than two patches keeps its default."""
        k = len(classes)
        n = torch.zeros(k, dtype=torch.float64)
        s = torch.zeros(k, self.band_mean.shape[1], dtype=torch.float64)
        ss = torch.zeros_like(s)
        for x, y in batches:
            v, y = self.band_levels(x).double().cpu(), y.cpu()
            n.index_add_(0, y, torch.ones_like(y, dtype=torch.float64))
            s.index_add_(0, y, v)
            ss.index_add_(0, y, v * v)
        mean = s / n.clamp(min=1)[:, None]
        std = ((ss - n[:, None] * mean**2) / (n - 1).clamp(min=1)[:, None]).clamp(min=1e-6).sqrt()
        ok = (n >= 2).to(self.band_mean.device)
        self.band_mean[ok] = mean.to(self.band_mean)[ok]
        self.band_std[ok] = std.clamp(min=1e-3).to(self.band_std)[ok]

    @torch.no_grad()
    def band_deviation(self, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """``(B, n_mels)``: |patch band level - its ID's normal level| / the ID's spread (the
        mean profile over IDs for an unknown ID, target -1)."""
        known = (target >= 0)[:, None]
        k = target.clamp(min=0)
        mean = torch.where(known, self.band_mean[k], self.band_mean.mean(dim=0))
        std = torch.where(known, self.band_std[k], self.band_std.mean(dim=0))
        return (self.band_levels(x) - mean).abs() / std.clamp(min=1e-6)

    @torch.no_grad()
    def score_windows(self, flat: torch.Tensor, w: torch.Tensor, machine_ids, metric: str):
        """Scores of the patches ``flat`` (``w``: the same as ``(B, W, dim)``, ``B`` clips of
        ``machine_ids``) by ``metric`` (``mahalanobis`` or ``logit``): per patch ``(B, W)``, a time
        profile ``(B, T)`` whose peak is the highest-scoring patch (its centre frame) and span the
        patches near its height, and that patch's band deviation ``(B, n_mels)``."""
        b, hop, frames = w.shape[0], self.config.patch_hop, self.config.frames
        cls = _per_window(torch.tensor(self.class_index(machine_ids), dtype=torch.long), w)
        if metric == "mahalanobis":
            rows = _per_window(self.mahalanobis.index(machine_ids), w)
            per_window = self.mahalanobis.distance(self.embed(flat).float(), rows)
        else:
            per_window = self.id_logit_scores(self(flat).float(), cls)
        per_window = per_window.float().reshape(b, -1)
        peak = per_window.argmax(dim=1)  # the highest-scoring patch
        # each frame gets the highest score of the patches covering it
        n_frames = (w.shape[1] - 1) * hop + frames
        t_prof = torch.full((b, n_frames), float("-inf"), device=flat.device)
        for k in range(frames):
            cols = torch.arange(w.shape[1], device=flat.device) * hop + k
            t_prof[:, cols] = torch.maximum(t_prof[:, cols], per_window)
        centre = peak * hop + frames // 2
        t_prof[torch.arange(b, device=flat.device), centre] += 1e-6 * per_window.abs().amax(dim=1).clamp(min=1)
        pick = torch.arange(b, device=flat.device) * w.shape[1] + peak
        return per_window, t_prof, self.band_deviation(flat[pick].float(), cls[pick])


def _per_window(rows: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """One row per clip -> one per window of ``w (B, W, dim)``, flattened clip-major."""
    return rows.to(w.device).repeat_interleave(w.shape[1])


def _patch_shape(features) -> dict:
    return {"n_mels": features.n_mels, "frames": features.frames}


FAMILY = register(
    Family(
        "idclf",
        IDClf,
        IDClfConfig,
        features={"n_mels": 64, "frames": 32},
        batch_size=128,
        metrics=("mahalanobis", "logit"),
        shape=_patch_shape,
        reconstructs=False,
        learns_ids=True,
        window_hop=lambda config: config.patch_hop,
        fit_profiles=IDClf.fit_band_profiles,
        description="a machine-ID classifier",
    )
)
