"""The seed's autoencoder (50,760 parameters).

320 -> 64 -> 64 -> 8 -> 64 -> 64 -> 320, ReLU after each layer but the last.
Input and output: ``(batch, input_dim)`` float32 context-window vectors (64 mels x 5 frames).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from slidead.core.models.registry import Family, register


@dataclass(frozen=True)
class AEConfig:
    input_dim: int = 320
    hidden: int = 64
    bottleneck: int = 8

    def to_dict(self) -> dict:
        return asdict(self)


class AE(nn.Module):
    family = "ae"

    def __init__(self, config: AEConfig = AEConfig()):
        super().__init__()
        self.config = config
        d, h, z = config.input_dim, config.hidden, config.bottleneck
        self.encoder = nn.Sequential(
            nn.Linear(d, h),
            nn.ReLU(),
            nn.Linear(h, h),
            nn.ReLU(),
            nn.Linear(h, z),
            nn.ReLU(),
        )
        self.decoder = nn.Sequential(
            nn.Linear(z, h),
            nn.ReLU(),
            nn.Linear(h, h),
            nn.ReLU(),
            nn.Linear(h, d),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))

    def loss(self, x: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """MSE between input and reconstruction (mean over batch and dims)."""
        mse = torch.mean((self(x) - x) ** 2)
        return mse, {"mse": mse.detach()}

    @torch.no_grad()
    def window_errors(self, x: torch.Tensor, use_kl: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-dimension squared error ``(batch, dim)`` and per-window extra term (zeros)."""
        err = (self(x) - x) ** 2
        return err, torch.zeros(x.shape[0], device=x.device)


FAMILY = register(
    Family(
        "ae",
        AE,
        AEConfig,
        features={"n_mels": 64},
        batch_size=128,
        metrics=("mse", "mahalanobis"),
        description="the seed's autoencoder",
    )
)
