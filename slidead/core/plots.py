"""Figures for training runs: loss curves, score histograms, ROC curves, reconstructions.

Every function builds a small :class:`matplotlib.figure.Figure` with the object-oriented
API (no ``pyplot``, so no global figure registry, no GUI backend and safe to call from
worker threads) and returns it; nothing is shown or saved except by :func:`save`. The
caller (e.g. the MLflow logging in training) logs or saves the figure.

Shapes and types accepted (numpy arrays or plain lists):

* ``loss_curves(history)``: ``history["train_loss"]`` / ``history["val_loss"]`` are
  per-epoch lists of floats, epoch 1 first; either may be missing or empty.
* ``score_distributions`` / ``roc_curves``: ``machine_ids`` (N,) strings such as ``"00"``,
  ``labels`` (N,) 0 = normal / 1 = anomaly, ``scores`` (N,) floats, higher = more
  anomalous; ``thresholds`` / ``aucs`` map a machine ID to a float.
* ``reconstruction(logmel, recon)``: two arrays of shape (n_mels, T) (a leading singleton
  axis, e.g. (1, n_mels, T), is squeezed away).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from os import PathLike

import numpy as np
from matplotlib.figure import Figure

from slidead.core.metrics import roc_curve

__all__ = ["loss_curves", "score_distributions", "roc_curves", "reconstruction", "save"]

FIGSIZE = (6.0, 4.0)
DPI = 100
MAX_FPR = 0.1
MAX_COLS = 3

_NORMAL_COLOR = "tab:blue"
_ANOMALY_COLOR = "tab:red"
_THRESHOLD_COLOR = "black"


def _new_figure(figsize: tuple[float, float] = FIGSIZE) -> Figure:
    return Figure(figsize=figsize, dpi=DPI, layout="constrained")


def _columns(machine_ids, labels, scores) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    ids = np.asarray([str(m) for m in np.asarray(machine_ids, dtype=object).ravel()], dtype=object)
    y = np.asarray(labels).astype(int).ravel()
    s = np.asarray(scores, dtype=np.float64).ravel()
    if not (ids.shape == y.shape == s.shape):
        raise ValueError(f"machine_ids {ids.shape}, labels {y.shape} and scores {s.shape} must have one entry per clip")
    return ids, y, s


def loss_curves(history: Mapping[str, Sequence[float]], best_epoch: int | None = None) -> Figure:
    """Train / validation loss per epoch (x = 1-based epoch), best epoch as a dashed line."""
    fig = _new_figure()
    ax = fig.add_subplot()
    plotted = False
    for key, label, color in (("train_loss", "train", "tab:blue"), ("val_loss", "validation", "tab:orange")):
        values = np.asarray(list(history.get(key) or []), dtype=np.float64)
        if values.size == 0:
            continue
        epochs = np.arange(1, values.size + 1)
        # markers keep a single epoch visible as a point rather than an invisible line
        ax.plot(epochs, values, marker="o" if values.size <= 30 else None, ms=3, label=label, color=color)
        plotted = True
    if best_epoch is not None:
        ax.axvline(best_epoch, color="tab:green", linestyle="--", linewidth=1, label=f"best epoch {best_epoch}")
        plotted = True
    if not plotted:
        ax.text(0.5, 0.5, "no epochs recorded", ha="center", va="center", transform=ax.transAxes)
    ax.set_title("Loss per epoch")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.grid(True, alpha=0.3)
    if plotted:
        ax.legend()
    return fig


def score_distributions(machine_ids, labels, scores, thresholds: Mapping[str, float] | None = None) -> Figure:
    """One histogram panel per machine ID (sorted): normal vs anomalous scores + threshold."""
    ids, y, s = _columns(machine_ids, labels, scores)
    thresholds = {str(k): float(v) for k, v in (thresholds or {}).items()}
    unique = sorted(set(ids.tolist()))
    n = max(len(unique), 1)
    ncols = min(n, MAX_COLS)
    nrows = math.ceil(n / ncols)
    fig = _new_figure((max(FIGSIZE[0], 3.0 * ncols), max(FIGSIZE[1], 2.6 * nrows)))
    fig.suptitle("Anomaly-score distributions per machine ID")
    if not unique:
        ax = fig.add_subplot()
        ax.text(0.5, 0.5, "no scores", ha="center", va="center", transform=ax.transAxes)
        ax.set_xlabel("anomaly score")
        ax.set_ylabel("clips")
        return fig
    for i, mid in enumerate(unique):
        ax = fig.add_subplot(nrows, ncols, i + 1)
        mask = ids == mid
        ys, ss = y[mask], s[mask]
        finite = ss[np.isfinite(ss)]
        thr = thresholds.get(mid)
        lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
        if thr is not None and np.isfinite(thr):
            lo, hi = min(lo, thr), max(hi, thr)
        if hi <= lo:
            lo, hi = lo - 0.5, hi + 0.5
        bins = np.linspace(lo, hi, 31)
        for cls, name, color in ((0, "normal", _NORMAL_COLOR), (1, "anomaly", _ANOMALY_COLOR)):
            vals = ss[(ys == cls) & np.isfinite(ss)]
            if vals.size:
                ax.hist(vals, bins=bins, alpha=0.55, color=color, label=f"{name} ({vals.size})")
        if thr is not None:
            ax.axvline(thr, color=_THRESHOLD_COLOR, linestyle="--", linewidth=1, label=f"threshold {thr:.3g}")
        ax.set_title(f"id {mid}")
        ax.set_xlabel("anomaly score")
        ax.set_ylabel("clips")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize="small")
    return fig


def roc_curves(machine_ids, labels, scores, aucs: Mapping[str, float] | None = None) -> Figure:
    """ROC curve per machine ID (IDs lacking a class are skipped), chance diagonal, FPR<=0.1 shaded."""
    ids, y, s = _columns(machine_ids, labels, scores)
    aucs = {str(k): float(v) for k, v in (aucs or {}).items()}
    fig = _new_figure()
    ax = fig.add_subplot()
    ax.axvspan(0.0, MAX_FPR, color="0.85", alpha=0.6, label=f"FPR \u2264 {MAX_FPR:g} (pAUC)")
    skipped = []
    for mid in sorted(set(ids.tolist())):
        mask = ids == mid
        ys, ss = y[mask], s[mask]
        if not (np.any(ys == 0) and np.any(ys == 1)):
            skipped.append(mid)
            continue
        fpr, tpr = roc_curve(ys, ss)
        area = aucs.get(mid, float(np.trapezoid(tpr, fpr)))
        ax.plot(fpr, tpr, linewidth=1.5, label=f"id {mid} (AUC {area:.2f})")
    ax.plot([0, 1], [0, 1], color="0.5", linestyle=":", linewidth=1, label="chance")
    title = "ROC per machine ID"
    if skipped:
        title += f" (skipped, one class only: {', '.join(skipped)})"
    ax.set_title(title, fontsize="medium")
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.set_aspect("equal")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower right", fontsize="small")
    return fig


def _as_2d(a, name: str) -> np.ndarray:
    arr = np.asarray(a, dtype=np.float64)
    while arr.ndim > 2 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim != 2:
        raise ValueError(f"{name} must be (n_mels, T), got shape {arr.shape}")
    return arr


def reconstruction(logmel: np.ndarray, recon: np.ndarray, title: str = "") -> Figure:
    """Input log-mel, its reconstruction (shared colour scale) and |input - reconstruction|."""
    x = _as_2d(logmel, "logmel")
    r = _as_2d(recon, "recon")
    if x.shape != r.shape:
        raise ValueError(f"logmel {x.shape} and recon {r.shape} differ in shape")
    err = np.abs(x - r)
    both = np.concatenate([x[np.isfinite(x)], r[np.isfinite(r)]])
    vmin, vmax = (float(both.min()), float(both.max())) if both.size else (0.0, 1.0)
    fig = _new_figure((FIGSIZE[0], 7.0))
    axes = fig.subplots(3, 1, sharex=True, sharey=True)
    common = dict(origin="lower", aspect="auto", interpolation="nearest")
    panels = (
        (x, "input log-mel", dict(cmap="magma", vmin=vmin, vmax=vmax), "log-mel"),
        (r, "reconstruction", dict(cmap="magma", vmin=vmin, vmax=vmax), "log-mel"),
        (err, f"|error| (mean {float(np.nanmean(err)) if err.size else 0.0:.3g})", dict(cmap="viridis"), "|error|"),
    )
    for ax, (data, name, style, cbar_label) in zip(axes, panels):
        im = ax.imshow(data, **common, **style)
        ax.set_title(name, fontsize="medium")
        ax.set_ylabel("mel bin")
        fig.colorbar(im, ax=ax, label=cbar_label)
    axes[-1].set_xlabel("frame")
    fig.suptitle(title or "Log-mel reconstruction")
    return fig


def save(fig: Figure, path: str | PathLike[str]) -> None:
    """Write ``fig`` to ``path`` (format from the suffix); closes nothing."""
    fig.savefig(path, bbox_inches="tight")
