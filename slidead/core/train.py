"""The training loop, seeded, on CPU or CUDA, with early stopping on a validation split.

``fit(model, train, val, config)`` takes context windows, either as ``(N, dim)`` float32
arrays or as :class:`FrameWindows` (the clips' log-mel frames, windows gathered per batch:
five times less memory than materialised windows), and returns a :class:`TrainResult` with
the best epoch's state dict and the loss history. Windows may carry labels (one class index
per window: ``FrameWindows(..., labels=per_clip)`` or an ``(x, y)`` pair of arrays); then the
loop calls ``model.loss(x, y)`` instead of ``model.loss(x)`` (the ID classifier).
Splitting clips into train and validation sets is :func:`split_clips`'s job (by clip, per
machine ID, so no clip's windows land on both sides).

Any other windows source trains too when it offers ``epoch_batches(batch_size, generator)``
(one epoch of shuffled ``(x, y_or_None)`` mini-batches), ``eval_batches(batch_size)`` (every
window once), ``len()`` and ``to(device)``: :class:`slidead.jobs.stream.StreamWindows` streams the
clips from the Parquet feature store that way. ``TrainConfig.stream`` says which
:func:`slidead.jobs.retrain.train_and_evaluate` uses: ``memory`` (FrameWindows), ``parquet``
(streamed through a buffer of ``buffer_clips`` clips), or ``auto`` (streamed when the training
clips' frames would take more than ``memory_budget_mb``).
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

STREAM_MODES = ("auto", "memory", "parquet")
THRESHOLD_SCHEMES = ("auto", "split", "cross", "validation", "oof")  # as slidead.core.thresholds.SCHEMES


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 100
    batch_size: int | None = None  # None: the family's (the seed's: AE 128, VAE 512)
    lr: float = 1e-3
    beta1: float = 0.9
    beta2: float = 0.999
    weight_decay: float = 0.0
    val_fraction: float = 0.1
    patience: int = 10  # epochs without a better validation loss before stopping
    seed: int = 0
    device: str = "auto"
    stream: str = "auto"  # memory | parquet | auto (parquet above memory_budget_mb)
    memory_budget_mb: int = 1024  # auto: the training frames' size above which training streams
    buffer_clips: int = 512  # parquet: clips the shuffle buffer holds at most
    # how the thresholds are calibrated (slidead.core.thresholds.SCHEMES, docs/conformal.md): auto (split
    # conformal when every machine has 50 held-out clips, else cross-conformal), split, cross; or the
    # seed's gamma fit on the validation split's scores (validation) or on out-of-fold scores (oof)
    threshold_scheme: str = "auto"
    threshold_folds: int = 5  # cross / oof: folds (each fold model trains on the other folds)
    calibration_fraction: float = 0.25  # split: the share of each machine's clips held out to calibrate

    def __post_init__(self):
        if self.epochs < 1:
            raise ValueError(f"epochs={self.epochs!r} must be >= 1")
        if self.batch_size is not None and self.batch_size < 1:
            raise ValueError(f"batch_size={self.batch_size!r} must be >= 1")
        if not 0 < self.val_fraction < 1:
            raise ValueError(f"val_fraction={self.val_fraction!r} must be in (0, 1)")
        if self.lr <= 0:
            raise ValueError(f"lr={self.lr!r} must be > 0")
        if self.stream not in STREAM_MODES:
            raise ValueError(f"stream={self.stream!r}: expected one of {STREAM_MODES}")
        if self.memory_budget_mb < 0:
            raise ValueError(f"memory_budget_mb={self.memory_budget_mb!r} must be >= 0")
        if self.buffer_clips < 1:
            raise ValueError(f"buffer_clips={self.buffer_clips!r} must be >= 1")
        if self.threshold_scheme not in THRESHOLD_SCHEMES:
            raise ValueError(f"threshold_scheme={self.threshold_scheme!r}: expected one of {THRESHOLD_SCHEMES}")
        if not 0 < self.calibration_fraction < 1:
            raise ValueError(f"calibration_fraction={self.calibration_fraction!r} must be in (0, 1)")
        if self.threshold_folds < 2:
            raise ValueError(f"threshold_folds={self.threshold_folds!r} must be >= 2")
        resolve_device(self.device, check=False)

    def batch_for(self, family: str) -> int:
        from slidead.core import models  # the package: every family registered

        known = family in models.families()
        return self.batch_size or (models.family(family).batch_size if known else 128)

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


class _IndexedWindows:
    """What the in-memory window sources share: windows addressed by index (``batch(idx)``,
    ``labels`` per window or None), served as shuffled epochs or in order."""

    labels: torch.Tensor | None = None

    def targets(self, idx: torch.Tensor) -> torch.Tensor | None:
        return None if self.labels is None else self.labels[idx]

    def epoch_batches(self, batch_size: int, generator: torch.Generator):
        """A random permutation of the windows (drawn from ``generator``) in batches."""
        n = len(self)
        perm = torch.randperm(n, generator=generator).to(self.device)
        for start in range(0, n, batch_size):
            idx = perm[start : start + batch_size]
            yield self.batch(idx), self.targets(idx)

    def eval_batches(self, batch_size: int):
        n = len(self)
        for start in range(0, n, batch_size):
            idx = torch.arange(start, min(start + batch_size, n), device=self.device)
            yield self.batch(idx), self.targets(idx)


class FrameWindows(_IndexedWindows):
    """Context windows of ``frames`` frames gathered on the fly from clips' log-mel frames.

    ``logmels``: a list of ``(n_mels, T)`` arrays. Holds ``(sum T, n_mels)`` floats instead of
    ``(sum (T - frames + 1), frames * n_mels)``; ``batch(idx)`` returns ``(len(idx), frames *
    n_mels)`` windows, frame-major as :func:`slidead.core.features.windows` makes them. ``stride``
    keeps every ``stride``-th window of a clip (the first at frame 0). ``labels``: optional, one
    integer per clip; ``targets(idx)`` then gives each window its clip's label.
    """

    def __init__(self, logmels, frames: int = 5, labels=None, stride: int = 1):
        logmels = list(logmels)
        if stride < 1:
            raise ValueError(f"stride={stride!r} must be >= 1")
        if labels is not None and len(labels) != len(logmels):
            raise ValueError(f"{len(labels)} labels for {len(logmels)} clips")
        self.frames = frames
        self.n_mels = logmels[0].shape[0] if logmels else 0
        self.data = (
            torch.from_numpy(np.concatenate([m.T for m in logmels]).astype(np.float32, copy=False))
            if logmels
            else torch.zeros(0, 0)
        )
        starts, clips, offset = [], [], 0
        for i, m in enumerate(logmels):
            t = m.shape[1]
            if t >= frames:
                starts.append(np.arange(offset, offset + t - frames + 1, stride))
                clips.append(np.full(starts[-1].size, i))
            offset += t
        self.starts = torch.from_numpy(np.concatenate(starts)) if starts else torch.zeros(0, dtype=torch.long)
        self.clips = torch.from_numpy(np.concatenate(clips)) if clips else torch.zeros(0, dtype=torch.long)
        self.labels = None if labels is None else torch.as_tensor(np.asarray(labels, dtype=np.int64))[self.clips]
        self._span = torch.arange(frames)

    def with_labels(self, labels) -> "FrameWindows":
        """The same windows (sharing their frames) with one label per clip."""
        out = copy.copy(self)
        out.labels = torch.as_tensor(np.asarray(labels, dtype=np.int64)).to(self.clips.device)[self.clips]
        return out

    def __len__(self) -> int:
        return int(self.starts.numel())

    def to(self, device) -> "FrameWindows":
        self.data, self.starts, self._span = self.data.to(device), self.starts.to(device), self._span.to(device)
        self.clips = self.clips.to(device)
        if self.labels is not None:
            self.labels = self.labels.to(device)
        return self

    def batch(self, idx: torch.Tensor) -> torch.Tensor:
        if self.data.device.type == "cpu":
            # numpy's gather is single-threaded: torch's spreads a 100 kB copy over OpenMP threads
            # and, when another process holds a core, waits milliseconds at the barrier
            rows = self.starts.numpy()[idx.numpy()][:, None] + self._span.numpy()
            return torch.from_numpy(self.data.numpy()[rows].reshape(len(idx), self.frames * self.n_mels))
        rows = self.starts[idx][:, None] + self._span
        return self.data[rows].reshape(len(idx), self.frames * self.n_mels)

    @property
    def device(self) -> torch.device:
        return self.starts.device


class _ArrayWindows(_IndexedWindows):
    def __init__(self, x, labels=None):
        self.x = torch.as_tensor(x, dtype=torch.float32)
        self.labels = None if labels is None else torch.as_tensor(labels, dtype=torch.long)
        if self.labels is not None and self.labels.shape != (self.x.shape[0],):
            raise ValueError(f"labels {tuple(self.labels.shape)} do not match {self.x.shape[0]} windows")

    def __len__(self) -> int:
        return self.x.shape[0]

    def to(self, device) -> "_ArrayWindows":
        self.x = self.x.to(device)
        if self.labels is not None:
            self.labels = self.labels.to(device)
        return self

    def batch(self, idx: torch.Tensor) -> torch.Tensor:
        return self.x[idx]

    @property
    def device(self) -> torch.device:
        return self.x.device


def _as_windows(x):
    """FrameWindows, an ``(N, dim)`` array, an ``(x, y)`` pair (windows and a label each), or
    any source with ``epoch_batches`` and ``eval_batches`` (e.g. :class:`slidead.jobs.stream.StreamWindows`)."""
    if isinstance(x, (FrameWindows, _ArrayWindows)) or (hasattr(x, "epoch_batches") and hasattr(x, "eval_batches")):
        return x
    labels = None
    if isinstance(x, tuple) and len(x) == 2:
        x, labels = x
    if not isinstance(x, (np.ndarray, torch.Tensor)) or x.ndim != 2:
        raise ValueError(f"windows must be FrameWindows or an (N, dim) array, got {type(x).__name__}")
    return _ArrayWindows(x, labels)


def _loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor | None):
    return model.loss(x) if y is None else model.loss(x, y)


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
    train, val = _as_windows(train), _as_windows(val)
    if len(train) == 0 or len(val) == 0:
        raise ValueError(f"train/val must be non-empty, got {len(train)} and {len(val)} windows")
    device = resolve_device(config.device)
    torch.manual_seed(config.seed)
    gen = torch.Generator(device="cpu").manual_seed(config.seed)
    model = model.to(device)
    x_train, x_val = train.to(device), val.to(device)
    batch = config.batch_for(getattr(model, "family", ""))
    # On a GPU the fused Adam is one kernel per step instead of one per parameter tensor (same
    # update); on the CPU the default, so CPU training stays exactly as it was.
    fused = {"fused": True} if device.type == "cuda" else {}
    opt = torch.optim.Adam(
        model.parameters(),
        lr=config.lr,
        betas=(config.beta1, config.beta2),
        weight_decay=config.weight_decay,
        **fused,
    )
    history: dict[str, list[float]] = {"train_loss": [], "val_loss": []}
    best, best_epoch, best_state, stale = math.inf, 0, None, 0
    t0 = time.perf_counter()
    n = len(x_train)
    for epoch in range(1, config.epochs + 1):
        model.train()
        # the epoch's loss is summed where it is computed and read once per epoch: reading it
        # every step (float(loss)) made a GPU wait for each step before the next was queued
        total = torch.zeros((), dtype=torch.float64, device=device)
        for x, y in x_train.epoch_batches(batch, gen):
            if x.shape[0] < 2 and n > 1:  # BatchNorm cannot train on a batch of one
                continue
            loss, _ = _loss(model, x, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.detach().double() * x.shape[0]
        train_loss = float(total) / n
        val_loss = evaluate_loss(model, x_val, batch=max(batch, 4096))
        history["train_loss"].append(train_loss)
        history["val_loss"].append(val_loss)
        if progress:
            progress(epoch, config.epochs, train_loss, val_loss)
        if val_loss < best:
            best, best_epoch, stale = val_loss, epoch, 0
            best_state = copy.deepcopy({k: _cpu(v) for k, v in model.state_dict().items()})
        else:
            stale += 1
            if stale >= config.patience:
                break
    if best_state is None:  # every validation loss was NaN: nothing worth keeping
        raise ValueError(
            f"training diverged: validation loss {history['val_loss'][-1]} in every epoch "
            f"(non-finite data, or lr={config.lr!r} too high?)"
        )
    model.load_state_dict(best_state)
    return TrainResult(
        best_state, history, best_epoch, len(history["train_loss"]), time.perf_counter() - t0, str(device)
    )


def _cpu(v):
    """A state-dict entry on the CPU (tensors; a module's extra state is kept as it is)."""
    return v.detach().cpu() if isinstance(v, torch.Tensor) else v


@torch.no_grad()
def evaluate_loss(model: nn.Module, x, batch: int = 4096) -> float:
    model.eval()
    x = _as_windows(x)
    n = len(x)
    device = next(model.parameters()).device
    total = torch.zeros((), dtype=torch.float64, device=device)  # read once, as in fit
    for xb, yb in x.eval_batches(batch):
        loss, _ = _loss(model, xb.to(device), None if yb is None else yb.to(device))
        total += loss.double() * xb.shape[0]
    return float(total) / n
