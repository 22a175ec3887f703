"""A toy model family for the tests: one file that registers itself (not a test module).

A linear autoencoder on 32 mels x 3 frames. Importing this module is all it takes for
``RunConfig``, training, scoring, MLflow, the night and the command line to know ``toy``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from slidead.core.models.registry import Family, register


@dataclass(frozen=True)
class ToyConfig:
    input_dim: int = 96
    rank: int = 4

    def to_dict(self) -> dict:
        return asdict(self)


class Toy(nn.Module):
    family = "toy"

    def __init__(self, config: ToyConfig = ToyConfig()):
        super().__init__()
        self.config = config
        self.down = nn.Linear(config.input_dim, config.rank)
        self.up = nn.Linear(config.rank, config.input_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up(self.down(x))

    def loss(self, x: torch.Tensor) -> tuple[torch.Tensor, dict]:
        mse = torch.mean((self(x) - x) ** 2)
        return mse, {"mse": mse.detach()}

    @torch.no_grad()
    def window_errors(self, x: torch.Tensor, use_kl: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        return (self(x) - x) ** 2, torch.zeros(x.shape[0], device=x.device)


FAMILY = register(
    Family(
        "toy",
        Toy,
        ToyConfig,
        features={"n_mels": 32, "frames": 3},
        batch_size=64,
        metrics=("mse",),
        description="a linear autoencoder (tests only)",
    )
)
