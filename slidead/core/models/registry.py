"""The one registry of model families, and the contract a family's network keeps.

Each file under ``slidead/core/models/`` defines one network and registers its
:class:`Family`: its feature config, its training batch, the score metrics it supports (the
default first), and what it is (a reconstruction model, or one that learns machine IDs).
Everything else (``RunConfig``, training, scoring, the command line's ``--family``, the
``SLIDEAD_FAMILY`` check, fusion) asks this registry, so a new family is one new file that
calls :func:`register` and one import line in ``slidead/core/models/__init__.py`` (or, for a
plug-in, any module imported before use).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn

from slidead.core.features import FeatureConfig


@runtime_checkable
class Detector(Protocol):
    """What every family's network offers (an ``nn.Module``). Trained on normal windows only:
    ``loss(x)`` (or ``loss(x, y)`` with machine-ID targets for a family that ``learns_ids``).

    A reconstruction family (``Family.reconstructs``) also has ``window_errors(x, use_kl)``:
    per-dimension squared errors ``(B, dim)`` and a per-window extra term ``(B,)``; its
    ``forward(x)`` is the reconstruction. Any other family scores windows itself with
    ``score_windows(flat, w, machine_ids, metric)`` -> ``(per_window (B, W), time profile
    (B, T), band profile (B, n_mels))`` (see :func:`slidead.core.score.score_logmels`)."""

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
    reconstructs: bool = True  # has window_errors; else score_windows
    learns_ids: bool = False  # trains on (window, machine-ID index) pairs
    window_hop: Callable[[Any], int] = lambda config: 1  # every n-th window, in training and scoring
    train: Mapping[str, Any] = field(default_factory=dict)  # TrainConfig defaults of its own (options override)
    description: str = field(default="", compare=False)

    def hop(self, model: nn.Module) -> int:
        """Every how many windows this network looks at, in training and scoring."""
        return self.window_hop(getattr(model, "config", None))

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
