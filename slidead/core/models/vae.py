"""The seed's variational autoencoder (861,480 parameters).

640 -> 400 -> 400 -> (mu 20, log sigma^2 20) -> 400 -> 400 -> 640, BatchNorm + ReLU on the
400-wide layers. Loss: MSE reconstruction + KL(q(z|x) || N(0, I)).
Input and output: ``(batch, input_dim)`` float32 context-window vectors (128 mels x 5 frames).
In eval mode the decoder reconstructs from mu (no sampling), so scores are deterministic.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from slidead.core.models.registry import Family, register


@dataclass(frozen=True)
class VAEConfig:
    input_dim: int = 640
    hidden: int = 400
    latent: int = 20
    kl_weight: float = 1.0

    def to_dict(self) -> dict:
        return asdict(self)


def _block(i: int, o: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(i, o), nn.BatchNorm1d(o), nn.ReLU())


class VAE(nn.Module):
    family = "vae"

    def __init__(self, config: VAEConfig = VAEConfig()):
        super().__init__()
        self.config = config
        d, h, z = config.input_dim, config.hidden, config.latent
        self.encoder = nn.Sequential(_block(d, h), _block(h, h))
        self.mu = nn.Linear(h, z)
        self.logvar = nn.Linear(h, z)
        self.decoder = nn.Sequential(_block(z, h), _block(h, h), nn.Linear(h, d))

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        e = self.encoder(x)
        return self.mu(e), self.logvar(e)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Reconstruction: sampled in training, from mu in eval mode."""
        recon, _, _ = self._forward(x)
        return recon

    def _forward(self, x):
        mu, logvar = self.encode(x)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar) if self.training else mu
        return self.decoder(z), mu, logvar

    @staticmethod
    def kl(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
        """Per-window KL divergence to N(0, I), ``(batch,)``."""
        return -0.5 * torch.sum(1 + logvar - mu**2 - logvar.exp(), dim=1)

    def loss(self, x: torch.Tensor) -> tuple[torch.Tensor, dict]:
        recon, mu, logvar = self._forward(x)
        mse = torch.mean((recon - x) ** 2)
        kl = torch.mean(self.kl(mu, logvar)) / x.shape[1]  # per dimension, on the MSE's scale
        return mse + self.config.kl_weight * kl, {"mse": mse.detach(), "kl": kl.detach()}

    @torch.no_grad()
    def window_errors(self, x: torch.Tensor, use_kl: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-dimension squared error ``(batch, dim)`` and per-window KL term (per dimension)."""
        recon, mu, logvar = self._forward(x)
        extra = self.kl(mu, logvar) / x.shape[1] if use_kl else torch.zeros(x.shape[0], device=x.device)
        return (recon - x) ** 2, extra


FAMILY = register(
    Family(
        "vae",
        VAE,
        VAEConfig,
        features={"n_mels": 128},
        batch_size=512,
        metrics=("mse", "mahalanobis"),
        description="the seed's variational autoencoder",
    )
)
