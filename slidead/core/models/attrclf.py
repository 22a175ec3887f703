"""A section x operating-condition classifier with an angular margin, scored per domain.

The self-supervised recipe of the DCASE 2023-2025 systems that do well on the target domain,
small enough to train from scratch on a CPU: a compact CNN learns to tell a machine type's
clips apart by *section and attribute combination* (``00|load=2.0,spd=0.8``) with an ArcFace
head (additive angular margin ``margin``, scale ``scale``), from random ``crop``-frame crops of
their log-mel, classes drawn evenly (ten target clips weigh as much as a source condition's
many). When the training clips carry no attributes it learns the sections (the machine IDs,
with their domain when the clips say it, as :mod:`.idclf` does), and says so; it needs two
classes or more.

Scoring needs neither the clip's domain nor its conditions: a clip's embedding (the CNN over
the whole clip, mean- and max-pooled over time, L2-normalised; with ``statistics``, the default,
joined at equal weight by the clip's spectral statistics of :mod:`.clipstats` standardised over
the training clips, a second branch that keeps the level changes a classifier may learn to
ignore: on the generated plant it lifted the official score from 0.65 to 0.68) is compared with the normal training clips of
its section (all sections for an unknown one), *each domain separately*: the cosine distance to
the nearest normal clip of the domain, divided by that domain's own spread (the mean distance
of its normal clips to their nearest other normal clip), and the smallest of these is the
score. So a target-domain clip near one of ten target clips scores as low as a source clip near
its many neighbours. Training clips without a domain count as source. A clip whose embedding
equals a stored one (a training clip scored again) skips that copy: training clips get their
leave-one-out distance, which thresholds may use.

The training embeddings (``bank``), their section and domain, the per-(section, domain) spread
and each section's normal band profile (for the explanation's band and time, as in
:mod:`.clipstats`) are buffers that take their stored shapes on load; the classifier head is
only used in training and is not kept. The family sees single frames (``frames=1``), so
:meth:`AttrClf.score_windows` gets all of a clip's frames; fitting is :meth:`AttrClf.fit_rows`,
called by the retrain job in place of the generic gradient loop.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from slidead.core.models.clipstats import clip_statistics, statistics_width
from slidead.core.models.registry import ROWS, Family, register

log = logging.getLogger(__name__)

SELF = 1e-5  # a cosine distance below this is a clip's own copy in the bank


@dataclass(frozen=True)
class AttrClfConfig:
    n_mels: int = 64
    frames: int = 1  # the family sees single frames: all of a clip's frames reach score_windows
    channels: tuple[int, ...] = (16, 32, 64)  # one conv block each, 2x2 max pooling between
    embedding: int = 64
    crop: int = 32  # training crop, frames (1 s at 16 kHz, hop 512)
    epochs: int = 60  # passes over the training clips (a command's --epochs caps it)
    batch: int = 32
    lr: float = 2e-3
    margin: float = 0.2  # ArcFace additive angular margin (radians)
    scale: float = 16.0  # ArcFace logit scale
    statistics: bool = True  # second branch: the clip's standardised spectral statistics, half the embedding
    events: bool = False  # that branch also holds each band's 90th percentile and maximum over time (clipstats')

    def __post_init__(self):
        object.__setattr__(self, "channels", tuple(int(c) for c in self.channels))
        if self.frames != 1:
            raise ValueError(f"frames={self.frames!r}: this family takes single frames (frames=1)")
        pools = len(self.channels) - 1
        if not self.channels or min(self.channels) < 1:
            raise ValueError(f"channels={self.channels!r}: give one or more positive widths")
        if self.n_mels % 2**pools or self.crop < 2**pools:
            raise ValueError(f"n_mels={self.n_mels!r} must divide by {2**pools}, crop={self.crop!r} be >= it")
        for name in ("embedding", "epochs", "batch"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)!r} must be >= 1")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["channels"] = list(self.channels)
        return d


def class_labels(machine_ids: Sequence[str], domains: Sequence, attributes: Sequence) -> tuple[list[str], str]:
    """Each clip's class and what the classes are: ``section|k=v,...`` when any clip carries
    attributes ("attributes"), else ``section`` (with ``|domain`` when any clip says it:
    "sections")."""
    parsed = [json.loads(a) if a else {} for a in attributes]
    if any(parsed):
        combos = [",".join(f"{k}={v}" for k, v in sorted(p.items())) for p in parsed]
        return [f"{m}|{c}" for m, c in zip(machine_ids, combos)], "attributes"
    if any(d for d in domains):
        return [f"{m}|{d or 'source'}" for m, d in zip(machine_ids, domains)], "sections"
    return [str(m) for m in machine_ids], "sections"


class _ArcFace(nn.Module):
    def __init__(self, dim: int, n_classes: int, margin: float, scale: float):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(n_classes, dim) * 0.05)
        self.margin, self.scale = margin, scale

    def forward(self, e: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        cos = F.normalize(e) @ F.normalize(self.weight).T
        theta = torch.acos(cos.clamp(-1 + 1e-6, 1 - 1e-6))
        target = torch.cos(theta + self.margin)
        onehot = F.one_hot(y, cos.shape[1]).bool()
        logits = self.scale * torch.where(onehot, target, cos)
        return F.cross_entropy(logits, y), (cos.argmax(dim=1) == y).float().mean()


class AttrClf(nn.Module):
    family = "attrclf"

    def __init__(self, config: AttrClfConfig = AttrClfConfig()):
        super().__init__()
        self.config = config
        c = config
        layers, width = [], 1
        for k, out in enumerate(c.channels):
            layers += [nn.Conv2d(width, out, 3, padding=1, bias=False), nn.BatchNorm2d(out), nn.ReLU()]
            if k < len(c.channels) - 1:
                layers.append(nn.MaxPool2d(2))
            width = out
        self.norm = nn.BatchNorm1d(c.n_mels)
        self.features = nn.Sequential(*layers)
        self.project = nn.Linear(2 * c.channels[-1] * (c.n_mels // 2 ** (len(c.channels) - 1)), c.embedding)
        self.sections: tuple[str, ...] = ()
        self.label_source = ""
        self.classes: tuple[str, ...] = ()
        stats = statistics_width(True, c.events) * c.n_mels if c.statistics else 0
        width = c.embedding + stats
        self.register_buffer("stat_mean", torch.zeros(stats))
        self.register_buffer("stat_std", torch.ones(stats))
        for name, shape in (("bank", (0, width)), ("spread", (0, 2)), ("band_mean", (0, c.n_mels))):
            self.register_buffer(name, torch.zeros(shape))
        self.register_buffer("band_std", torch.ones(0, c.n_mels))
        self.register_buffer("bank_section", torch.zeros(0, dtype=torch.long))
        self.register_buffer("bank_domain", torch.zeros(0, dtype=torch.long))

    # ------------------------------------------------------------------ the network
    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, n_mels, T)`` log-mel -> ``(B, embedding)`` (not normalised)."""
        h = self.features(self.norm(x).unsqueeze(1))  # (B, C, bands, time)
        # mean and max over time: steady tones and short events (clicks) both reach the embedding
        return self.project(torch.cat([h.mean(dim=-1), h.amax(dim=-1)], dim=1).flatten(1))

    def clip_embedding(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, n_mels, T)`` -> the unit vector scoring compares: the network's embedding and (with
        ``statistics``) the clip's standardised statistics, each normalised, weighing half."""
        e = F.normalize(self.embed(x).float())
        if not self.config.statistics:
            return e
        v = (clip_statistics(x.transpose(1, 2), True, self.config.events) - self.stat_mean) / self.stat_std
        return torch.cat([e, F.normalize(v)], dim=1) / math.sqrt(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, n_mels)`` frames -> the same (MLflow's signature; scoring uses score_windows)."""
        return x

    def loss(self, x: torch.Tensor, *targets: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """Nothing for the generic loop: :meth:`fit_rows` trains the network itself."""
        return torch.zeros((), device=x.device), {}

    # ------------------------------------------------------------------ fitting
    def fit_clips(self, clips: Iterable[tuple[str, np.ndarray]]) -> "AttrClf":
        """From ``(machine_id, log-mel)`` pairs alone: classes are the sections."""
        pairs = list(clips)
        return self.fit_arrays([m for m, _ in pairs], [lm for _, lm in pairs], [None] * len(pairs), [None] * len(pairs))

    def fit_rows(self, rows, train=None) -> "AttrClf":
        """From FeatureRows (their machine ID, log-mel, domain and attributes)."""
        rows = list(rows)
        epochs = min(self.config.epochs, train.epochs) if train is not None else self.config.epochs
        seed = train.seed if train is not None else 0
        return self.fit_arrays(
            [r.machine_id for r in rows],
            [r.logmel for r in rows],
            [getattr(r, "domain", None) for r in rows],
            [getattr(r, "attributes", None) for r in rows],
            epochs,
            seed,
        )

    def fit_arrays(self, machine_ids, logmels, domains, attributes, epochs=None, seed=0):
        c = self.config
        epochs = epochs or c.epochs
        labels, source = class_labels([str(m) for m in machine_ids], domains, attributes)
        classes = sorted(set(labels))
        if len(classes) < 2:
            raise ValueError(
                f"{self.family} learns to tell sections and operating conditions apart: the training clips "
                f"form one class ({classes}); give clips with attributes, or of two or more machine IDs"
            )
        if source == "sections":
            log.info(
                f"{self.family}: the training clips carry no attributes: classifying sections ({len(classes)} classes)"
            )
        else:
            log.info(f"{self.family}: classifying {len(classes)} section x attribute combinations")
        self.label_source, self.classes = source, tuple(classes)
        y = torch.tensor([classes.index(lab) for lab in labels])
        gen = torch.Generator().manual_seed(int(seed))
        torch.manual_seed(int(seed))
        head = _ArcFace(c.embedding, len(classes), c.margin, c.scale)
        opt = torch.optim.Adam(list(self.parameters()) + list(head.parameters()), lr=c.lr)
        counts = torch.bincount(y, minlength=len(classes)).float()
        weights = (1.0 / counts)[y]  # every class as often
        mels = [torch.as_tensor(np.asarray(m, dtype=np.float32)) for m in logmels]
        steps = max(1, math.ceil(len(mels) / c.batch))
        self.train()
        for _ in range(epochs):
            for _ in range(steps):
                pick = torch.multinomial(weights, min(c.batch, max(2, len(mels))), replacement=True, generator=gen)
                x = torch.stack([_crop(mels[int(i)], c.crop, gen) for i in pick])
                loss, _acc = head(self.embed(x), y[pick])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
        self.eval()
        self._fit_bank(machine_ids, mels, domains)
        return self

    @torch.no_grad()
    def _fit_bank(self, machine_ids, mels: list[torch.Tensor], domains) -> None:
        sections = sorted({str(m) for m in machine_ids})
        self.sections = tuple(sections)
        sec = torch.tensor([sections.index(str(m)) for m in machine_ids])
        dom = torch.tensor([1 if d == "target" else 0 for d in domains])
        if self.config.statistics:
            v = torch.cat([clip_statistics(m.T[None], True, self.config.events) for m in mels])
            self.stat_mean, self.stat_std = v.mean(dim=0), v.std(dim=0).clamp(min=1e-3)
        bank = torch.cat([self.clip_embedding(m[None]) for m in mels])
        spread = torch.ones(len(sections), 2)
        band_mean, band_std = (
            torch.zeros(len(sections), self.config.n_mels),
            torch.ones(len(sections), self.config.n_mels),
        )
        for s in range(len(sections)):
            levels = torch.stack([mels[i].mean(dim=1) for i in torch.nonzero(sec == s).flatten().tolist()])
            band_mean[s] = levels.mean(dim=0)
            spread_t = torch.stack([mels[i].std(dim=1) for i in torch.nonzero(sec == s).flatten().tolist()]).mean(dim=0)
            band_std[s] = spread_t.clamp(min=1e-3)
            pooled = []
            for d in range(2):
                e = bank[(sec == s) & (dom == d)]
                if e.shape[0] >= 2:
                    dist = 1 - e @ e.T
                    dist.fill_diagonal_(float("inf"))
                    spread[s, d] = dist.min(dim=1).values.mean().clamp(min=1e-6)
                    pooled.append(spread[s, d])
            for d in range(2):  # a domain with fewer than two clips: the section's other spread
                e = bank[(sec == s) & (dom == d)]
                if e.shape[0] < 2:
                    spread[s, d] = torch.stack(pooled).mean() if pooled else 1.0
        self.bank, self.bank_section, self.bank_domain = bank, sec, dom
        self.spread, self.band_mean, self.band_std = spread, band_mean, band_std

    # ------------------------------------------------------------------ scoring
    @torch.no_grad()
    def clip_scores(self, x: torch.Tensor, machine_ids) -> torch.Tensor:
        """``(B, n_mels, T)`` clips -> ``(B,)``: the smallest over domains of the cosine distance
        to the nearest normal clip of the domain (of the clip's section; all sections for an
        unknown one), divided by the domain's spread."""
        e = self.clip_embedding(x)
        dist = 1 - e @ self.bank.to(e.device).T  # (B, N)
        # a training clip is not its own neighbour: its score is its distance to the others (so
        # scores of training clips, which thresholds may fall back on, are not all zero)
        dist = torch.where(dist < SELF, float("inf"), dist)
        lookup = {m: i for i, m in enumerate(self.sections)}
        sec, dom = self.bank_section.to(e.device), self.bank_domain.to(e.device)
        out = torch.full((x.shape[0],), float("inf"), device=e.device)
        for b, m in enumerate(machine_ids):
            s = lookup.get(str(m))
            for d in range(2):
                for si in [s] if s is not None else range(len(self.sections)):
                    sel = (sec == si) & (dom == d)
                    if bool(sel.any()):
                        out[b] = torch.minimum(out[b], dist[b, sel].min() / self.spread[si, d].to(e.device))
        return torch.where(torch.isfinite(out), out, torch.zeros_like(out))

    @torch.no_grad()
    def score_windows(self, flat: torch.Tensor, w: torch.Tensor, machine_ids, metric: str):
        """``w``: ``(B, T, n_mels)``, every frame of ``B`` clips of one length. Per window the
        clip's score ``(B, T)``; each frame's and each band's departure from the section's
        normal band level, in units of its normal spread (``(B, T)``, ``(B, n_mels)``)."""
        x = w.float().transpose(1, 2)  # (B, n_mels, T)
        scores = self.clip_scores(x, machine_ids)
        lookup = {m: i for i, m in enumerate(self.sections)}
        rows = torch.tensor([lookup.get(str(m), -1) for m in machine_ids], device=x.device)
        known = (rows >= 0)[:, None]
        mean = torch.where(known, self.band_mean[rows.clamp(min=0)], self.band_mean.mean(dim=0))
        std = torch.where(known, self.band_std[rows.clamp(min=0)], self.band_std.mean(dim=0))
        z = (w.float() - mean[:, None, :]) / std[:, None, :]
        return scores[:, None].expand(-1, w.shape[1]), (z**2).mean(dim=2), ((x.mean(dim=2) - mean) / std).abs()

    # ------------------------------------------------------------------ state
    def get_extra_state(self) -> dict:
        return {"sections": list(self.sections), "classes": list(self.classes), "label_source": self.label_source}

    def set_extra_state(self, state: dict) -> None:
        self.sections = tuple(state.get("sections", ()))
        self.classes = tuple(state.get("classes", ()))
        self.label_source = state.get("label_source", "")

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        c, t = self.config, state_dict.get(prefix + "stat_mean")
        if c.events and t is not None and t.shape[0] == statistics_width(True) * c.n_mels:
            self.config = replace(c, events=False)  # stored before the events option: scored as trained
        for name in ("bank", "bank_section", "bank_domain", "spread", "band_mean", "band_std", "stat_mean", "stat_std"):
            t = state_dict.get(prefix + name)
            if t is not None and t.shape != getattr(self, name).shape:
                setattr(self, name, torch.empty_like(t, device=getattr(self, name).device))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


def _crop(m: torch.Tensor, n: int, gen: torch.Generator) -> torch.Tensor:
    """A random ``n``-frame crop of an ``(n_mels, T)`` log-mel (repeated when shorter)."""
    t = m.shape[1]
    if t < n:
        m = m.repeat(1, -(-n // t))
        t = m.shape[1]
    start = int(torch.randint(0, t - n + 1, (1,), generator=gen))
    return m[:, start : start + n]


FAMILY = register(
    Family(
        "attrclf",
        AttrClf,
        AttrClfConfig,
        features={"n_mels": 64, "frames": 1},
        batch_size=1,  # trains itself (fit_rows)
        fits=ROWS,
        metrics=("cosine",),
        shape=lambda features: {"n_mels": features.n_mels, "frames": features.frames},
        reconstructs=False,
        description="section x attribute classifier (ArcFace), cosine distance to the nearest normal clip per domain",
    )
)
