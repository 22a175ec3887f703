"""The one registry of model families, and the contract a family's network keeps.

Each file under ``slidead/core/models/`` defines one network and registers its
:class:`Family`: its feature config, its training batch, the score metrics it supports (the
default first), how it fits (``fits``: gradient epochs on windows, or one pass over the training
clips) and how it scores windows (:meth:`Family.score_windows`: a reconstruction family through
the one shared default, :mod:`.reconstruction`; any other through its network's own). Everything
else (``RunConfig``, training, scoring, the command line's ``--family`` and its help, the
``SLIDEAD_FAMILY`` check, fusion) asks this registry and never the network what it is, so a new
family is one new file that calls :func:`register` and one import line in
``slidead/core/models/__init__.py`` (or, for a plug-in, any module imported before use).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn

from slidead.core.features import FeatureConfig
from slidead.core.models import reconstruction

# how a family fits (``Family.fits``)
EPOCHS = "epochs"  # gradient epochs on windows (slidead.core.train.fit; early stopping on a validation split)
CLIPS = "clips"  # one pass over the training clips: the network's fit_clips((machine_id, logmel) pairs)
# the network trains itself on the training rows, with their domain and conditions: fit_rows(rows, train)
ROWS = "rows"
FITS = (EPOCHS, CLIPS, ROWS)


@runtime_checkable
class Detector(Protocol):
    """What every family's network offers (an ``nn.Module``). Trained on normal windows only:
    ``loss(x)`` (or ``loss(x, y)`` with machine-ID targets for a family that ``learns_ids``).
    A family that fits in one pass over clips (``Family.fits == CLIPS``) has
    ``fit_clips(pairs of (machine_id, (n_mels, T) log-mel))`` instead of gradient training.

    A reconstruction family (``Family.reconstructs``) also has ``window_errors(x, use_kl)``:
    per-dimension squared errors ``(B, dim)`` and a per-window extra term ``(B,)``; its
    ``forward(x)`` is the reconstruction; the shared default scores its windows
    (:mod:`.reconstruction`). Any other family scores windows itself with
    ``score_windows(flat, w, machine_ids, metric)`` -> ``(per_window (B, W), time profile
    (B, T), band profile (B, n_mels))`` (see :func:`slidead.core.score.score_logmels`) and, for
    the ``mahalanobis`` metric after gradient training, has ``embed(x)``."""

    family: str
    config: Any

    def loss(self, x: torch.Tensor, *targets: torch.Tensor) -> tuple[torch.Tensor, dict]: ...


def _input_dim(features: FeatureConfig) -> dict:
    return {"input_dim": features.dim}


@dataclass(frozen=True)
class Family:
    name: str
    network: type[nn.Module]
    config: type  # the network's frozen config dataclass
    features: Mapping[str, Any]  # FeatureConfig fields that differ from the defaults
    batch_size: int  # training batch (the seed's: AE 128, VAE 512)
    metrics: tuple[str, ...]  # score metrics it supports, the default first
    shape: Callable[[FeatureConfig], dict] = _input_dim  # model config fields the features fix
    reconstructs: bool = True  # has window_errors (scored by the shared default); else score_windows
    learns_ids: bool = False  # trains on (window, machine-ID index) pairs
    fits: str = EPOCHS  # EPOCHS: gradient epochs on windows; CLIPS: the network's fit_clips; ROWS: its fit_rows
    # after gradient training, per-ID statistics of the normal training windows its scoring needs
    # besides the Mahalanobis ones: (model, (x, y) batches, classes) -> None (the ID classifier's band profiles)
    fit_profiles: Callable[[nn.Module, Iterable, Sequence[str]], None] | None = None
    window_hop: Callable[[Any], int] = lambda config: 1  # every n-th window, in training and scoring
    train: Mapping[str, Any] = field(default_factory=dict)  # TrainConfig defaults of its own (options override)
    description: str = field(default="", compare=False)

    def hop(self, model: nn.Module) -> int:
        """Every how many windows this network looks at, in training and scoring."""
        return self.window_hop(getattr(model, "config", None))

    def needs_statistics(self, metric: str) -> bool:
        """Whether, after gradient training, the network needs statistics of its normal training
        windows (:func:`slidead.core.score.fit_normal_statistics`): its own profiles, or the
        Mahalanobis statistics of ``metric``. A family fitted on clips fits them itself."""
        return self.fits == EPOCHS and (self.fit_profiles is not None or metric == "mahalanobis")

    def normal_vectors(self, model: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
        """What the Mahalanobis statistics measure of a window: a reconstruction family's
        reconstruction error, any other family's embedding."""
        if self.reconstructs:
            return lambda x: reconstruction.error_vectors(model, x)
        return model.embed

    def score_windows(
        self,
        model: nn.Module,
        flat: torch.Tensor,
        w: torch.Tensor,
        machine_ids,
        metric: str,
        frames: int,
        use_kl: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Scores of the windows ``flat`` (``(B * W, frames * n_mels)``; ``w`` the same as
        ``(B, W, dim)``, ``B`` clips of ``machine_ids``) by ``metric``: per window ``(B, W)``, a
        time profile ``(B, T)`` and a band profile ``(B, n_mels)``. A reconstruction family
        through the shared default (:func:`.reconstruction.score_windows`), any other through its
        network's ``score_windows``."""
        if self.reconstructs:
            return reconstruction.score_windows(model, flat, w, machine_ids, metric, frames, use_kl)
        return model.score_windows(flat, w, machine_ids, metric)

    def feature_config(self, **overrides) -> FeatureConfig:
        return FeatureConfig(**{**self.features, **overrides})

    def model_config(self, features: FeatureConfig | None = None, **values):
        """The network's config: ``values`` over the fields ``features`` fix (when given)."""
        fixed = self.shape(features) if features is not None else {}
        return self.config(**{**fixed, **values})

    def check(self, model_config, features: FeatureConfig) -> None:
        """The model config agrees with the features it will see (``shape``)."""
        want = self.shape(features)
        got = {k: getattr(model_config, k) for k in want}
        if got != want:
            raise ValueError(
                f"{self.name}: model config {got} does not match the features' {want} "
                f"({features.n_mels} mels x {features.frames} frames)"
            )

    def build(self, config=None) -> nn.Module:
        """A fresh network; ``config`` is its dataclass or a dict of its fields (default: defaults)."""
        if config is None:
            config = self.config()
        elif isinstance(config, dict):
            config = self.config(**config)
        return self.network(config)


_FAMILIES: dict[str, Family] = {}
UNNAMED = Family(
    "",
    nn.Module,
    dict,
    features={},
    batch_size=128,
    metrics=("mse", "mahalanobis"),
    description="a reconstruction network that names no family (not registered)",
)


def register(family: Family) -> Family:
    """Add (or replace) a family; returns it, so a model file can keep it as ``FAMILY``."""
    if not family.metrics:
        raise ValueError(f"family {family.name!r} names no score metric")
    if family.fits not in FITS:
        raise ValueError(f"family {family.name!r}: fits={family.fits!r}, expected one of {FITS}")
    _FAMILIES[family.name] = family
    return family


def families() -> tuple[str, ...]:
    """The registered family names, in registration order."""
    return tuple(_FAMILIES)


def family(name: str) -> Family:
    try:
        return _FAMILIES[name]
    except KeyError:
        raise ValueError(f"unknown family {name!r}: expected one of {', '.join(_FAMILIES)}") from None


def family_of(model: nn.Module) -> Family:
    """The registered family of a network (its ``family`` attribute names it); a network that
    names none (a probe in a test, say) is scored as a plain reconstruction model."""
    name = getattr(model, "family", None)
    return UNNAMED if name is None else family(name)


def for_family(name: str, **overrides) -> FeatureConfig:
    """The feature config for a model family, e.g. the seed's 128 mels for the VAE and 64 for
    the AE (windows of 5 frames); for the ID classifier 64 mels in patches of 32 frames."""
    return family(name).feature_config(**overrides)
