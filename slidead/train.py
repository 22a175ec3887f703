"""The training loop, seeded, on CPU or CUDA, with early stopping on a validation split.

``fit(model, train, val, config)`` takes context-window arrays ``(N, dim)`` float32 and
returns a :class:`TrainResult` with the best epoch's state dict and the loss history.
Splitting clips into train and validation sets is :func:`split_clips`'s job (by clip, per
machine ID, so no clip's windows land on both sides).
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from torch import nn

FAMILY_BATCH = {"ae": 128, "vae": 512}


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 100
    batch_size: int | None = None     # None: the seed's per family (AE 128, VAE 512)
    lr: float = 1e-3
    beta1: float = 0.9
    beta2: float = 0.999
    weight_decay: float = 0.0
    val_fraction: float = 0.1
    patience: int = 10                # epochs without a better validation loss before stopping
    seed: int = 0
    device: str = "auto"

    def __post_init__(self):
        if self.epochs < 1:
            raise ValueError(f"epochs={self.epochs!r} must be >= 1")
        if self.batch_size is not None and self.batch_size < 1:
            raise ValueError(f"batch_size={self.batch_size!r} must be >= 1")
        if not 0 < self.val_fraction < 1:
            raise ValueError(f"val_fraction={self.val_fraction!r} must be in (0, 1)")
        if self.lr <= 0:
            raise ValueError(f"lr={self.lr!r} must be > 0")
        resolve_device(self.device, check=False)

    def batch_for(self, family: str) -> int:
        return self.batch_size or FAMILY_BATCH.get(family, 128)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class TrainResult:
    state_dict: dict
    history: dict[str, list[float]] = field(default_factory=dict)
    best_epoch: int = 0
    epochs_run: int = 0
    seconds: float = 0.0
    device: str = "cpu"


def resolve_device(device: str, check: bool = True) -> torch.device:
    """``auto`` -> CUDA when present, else CPU. ``cuda`` without a GPU raises ValueError."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device != "cpu" and not device.startswith("cuda"):
        raise ValueError(f"device={device!r}: expected auto, cpu, cuda or cuda:N")
    if check and device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device={device!r} asked for, but CUDA is not available on this machine")
    return torch.device(device)


def split_clips(machine_ids, val_fraction: float, seed: int) -> np.ndarray:
    """Boolean mask over clips: True = validation. Per machine ID, at least one clip each side
    when the ID has two or more clips."""
    ids = np.asarray(machine_ids).astype(str)
    rng = np.random.default_rng(seed)
    val = np.zeros(ids.size, dtype=bool)
    for mid in sorted(set(ids)):
        idx = np.flatnonzero(ids == mid)
        if idx.size < 2:
            continue
        n_val = min(max(1, int(round(val_fraction * idx.size))), idx.size - 1)
        val[rng.choice(idx, size=n_val, replace=False)] = True
    return val


def fit(
    model: nn.Module,
    train: np.ndarray,
    val: np.ndarray,
    config: TrainConfig = TrainConfig(),
    progress: Callable[[int, int, float, float], None] | None = None,
) -> TrainResult:
    """Adam on ``model.loss``; keeps the weights of the epoch with the lowest validation loss."""
    if train.ndim != 2 or val.ndim != 2 or len(train) == 0 or len(val) == 0:
        raise ValueError(f"train/val must be non-empty (N, dim) arrays, got {train.shape} and {val.shape}")
    device = resolve_device(config.device)
    torch.manual_seed(config.seed)
    gen = torch.Generator(device="cpu").manual_seed(config.seed)
    model = model.to(device)
    x_train = torch.as_tensor(train, dtype=torch.float32).to(device)
    x_val = torch.as_tensor(val, dtype=torch.float32).to(device)
    batch = config.batch_for(getattr(model, "family", ""))
    opt = torch.optim.Adam(model.parameters(), lr=config.lr, betas=(config.beta1, config.beta2),
                           weight_decay=config.weight_decay)
    history: dict[str, list[float]] = {"train_loss": [], "val_loss": []}
    best, best_epoch, best_state, stale = math.inf, 0, None, 0
    t0 = time.perf_counter()
    n = x_train.shape[0]
    for epoch in range(1, config.epochs + 1):
        model.train()
        perm = torch.randperm(n, generator=gen).to(device)
        total = 0.0
        for start in range(0, n, batch):
            idx = perm[start:start + batch]
            if idx.numel() < 2 and n > 1:  # BatchNorm cannot train on a batch of one
                continue
            loss, _ = model.loss(x_train[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach()) * idx.numel()
        train_loss = total / n
        val_loss = evaluate_loss(model, x_val, batch=max(batch, 4096))
        history["train_loss"].append(train_loss)
        history["val_loss"].append(val_loss)
        if progress:
            progress(epoch, config.epochs, train_loss, val_loss)
        if val_loss < best:
            best, best_epoch, stale = val_loss, epoch, 0
            best_state = copy.deepcopy({k: v.detach().cpu() for k, v in model.state_dict().items()})
        else:
            stale += 1
            if stale >= config.patience:
                break
    if best_state is None:  # every validation loss was NaN: nothing worth keeping
        raise ValueError(f"training diverged: validation loss {history['val_loss'][-1]} in every epoch "
                         f"(non-finite data, or lr={config.lr!r} too high?)")
    model.load_state_dict(best_state)
    return TrainResult(best_state, history, best_epoch, len(history["train_loss"]),
                       time.perf_counter() - t0, str(device))


@torch.no_grad()
def evaluate_loss(model: nn.Module, x: torch.Tensor, batch: int = 4096) -> float:
    model.eval()
    total = 0.0
    for start in range(0, x.shape[0], batch):
        xb = x[start:start + batch]
        loss, _ = model.loss(xb)
        total += float(loss) * xb.shape[0]
    return total / x.shape[0]
