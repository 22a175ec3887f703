"""Model families, one network per file, each registering itself (:mod:`.registry`).

``ae`` and ``vae`` are the seed's reconstruction models; ``idclf`` is a machine-ID classifier
(:mod:`.idclf`); ``clipstats`` and ``knn`` score clip spectral statistics without a network
(:mod:`.clipstats`, :mod:`.knn`); ``attrclf`` classifies sections and operating conditions
with an angular margin and scores by the nearest normal clip of each domain (:mod:`.attrclf`).
:mod:`.mahalanobis` holds the normal statistics a model may carry for the selective Mahalanobis
score; :mod:`.reconstruction` is how every reconstruction family scores its windows. A new
family: a new file that calls ``register(Family(...))``, and its import below.
"""

from __future__ import annotations

from torch import nn

from slidead.core.models import ae, attrclf, clipstats, idclf, knn, vae  # noqa: F401 - each registers its family
from slidead.core.models.ae import AE, AEConfig
from slidead.core.models.idclf import IDClf, IDClfConfig
from slidead.core.models.mahalanobis import SelectiveMahalanobis
from slidead.core.models.registry import (
    CLIPS,
    EPOCHS,
    ROWS,
    Detector,
    Family,
    families,
    family,
    family_of,
    for_family,
    register,
)
from slidead.core.models.vae import VAE, VAEConfig


def model_config(name: str, **values):
    return family(name).model_config(**values)


def build(name: str, config=None) -> nn.Module:
    """A fresh model of family ``name``; ``config`` is its dataclass or a dict of its fields."""
    return family(name).build(config)


def n_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


__all__ = [
    "CLIPS",
    "EPOCHS",
    "ROWS",
    "AE",
    "AEConfig",
    "VAE",
    "VAEConfig",
    "IDClf",
    "IDClfConfig",
    "SelectiveMahalanobis",
    "Detector",
    "Family",
    "build",
    "families",
    "family",
    "family_of",
    "for_family",
    "model_config",
    "n_parameters",
    "register",
]
