"""Model families, one network per file. ``build(family, config_dict)`` makes one.

``ae`` and ``vae`` are the seed's reconstruction models; ``idclf`` is a machine-ID classifier
(:mod:`.idclf`). :mod:`.mahalanobis` holds the normal statistics a model may carry for the
selective Mahalanobis score.
"""

from __future__ import annotations

from torch import nn

from .ae import AE, AEConfig
from .idclf import IDClf, IDClfConfig
from .mahalanobis import SelectiveMahalanobis
from .vae import VAE, VAEConfig

FAMILIES = {"ae": (AE, AEConfig), "vae": (VAE, VAEConfig), "idclf": (IDClf, IDClfConfig)}


def model_config(family: str, **values):
    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}: expected one of {sorted(FAMILIES)}")
    return FAMILIES[family][1](**values)


def build(family: str, config=None) -> nn.Module:
    """A fresh model of ``family``; ``config`` is its dataclass or a dict of its fields."""
    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}: expected one of {sorted(FAMILIES)}")
    cls, cfg_cls = FAMILIES[family]
    if config is None:
        config = cfg_cls()
    elif isinstance(config, dict):
        config = cfg_cls(**config)
    return cls(config)


def n_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


__all__ = ["AE", "AEConfig", "VAE", "VAEConfig", "IDClf", "IDClfConfig", "SelectiveMahalanobis", "FAMILIES", "build",
           "model_config", "n_parameters"]
