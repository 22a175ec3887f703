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
* ``clip_view(logmel, ...)``: one flagged clip for the night report: its log-mel beside the
  machine's normal level per mel band, its error map beside its error per band against the
  machine's normal error per band (each optional, (n_mels,) arrays).
* ``night_trend(nights, series)``: per scoring model, the median score and flag rate per night.
* ``png(fig)``: a figure as small PNG bytes (palette colours) for pages that travel by mail;
  ``picture(fig)`` as lossy WebP (spectrograms), with its MIME type.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from os import PathLike

import numpy as np
from matplotlib.dates import DateFormatter
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from matplotlib.ticker import LogLocator, NullFormatter, PercentFormatter

from slidead.core.metrics import roc_curve

__all__ = [
    "loss_curves",
    "score_distributions",
    "roc_curves",
    "reconstruction",
    "clip_view",
    "night_trend",
    "png",
    "save",
]

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


def _band_ticks(ax, band_hz, n_mels: int) -> None:
    """Label a mel-band axis in Hz at a few bands (band_hz: (n_mels, 2) edges, or None)."""
    if band_hz is None:
        ax.set_ylabel("mel band")
        return
    edges = np.asarray(band_hz, dtype=np.float64)
    ticks = np.linspace(0, n_mels - 1, 5).round().astype(int)
    ax.set_yticks(ticks)
    ax.set_yticklabels(
        [f"{edges[i].mean() / 1000:.1f}k" if edges[i].mean() >= 1000 else f"{edges[i].mean():.0f}" for i in ticks]
    )
    ax.set_ylabel("Hz")


def clip_view(
    logmel: np.ndarray,
    frame_s: float,
    emap: np.ndarray | None = None,
    band_error: np.ndarray | None = None,
    normal_error: np.ndarray | None = None,
    normal_level: np.ndarray | None = None,
    normal_level_sd: np.ndarray | None = None,
    band_hz: np.ndarray | None = None,
    span: tuple[float, float, float, float] | None = None,
    title: str = "",
) -> Figure:
    """Top: the clip's log-mel (time in s, ``frame_s`` seconds a frame) beside its mean level per
    band against the machine's normal level (mean and +-1 sd). Bottom: the error map beside the
    clip's error per band against the machine's normal error per band (log scale). ``span``:
    (start_s, end_s, lo_hz, hi_hz) where the error peaked, outlined on both maps."""
    x = _as_2d(logmel, "logmel")
    n_mels, t = x.shape
    rows = 2 if emap is not None else 1
    # a fixed layout: the constrained one took most of the page's drawing time
    fig = Figure(figsize=(7.5, 2.3 * rows + 0.4), dpi=DPI)
    grid = fig.add_gridspec(
        rows,
        2,
        width_ratios=(4, 1),
        left=0.08,
        right=0.98,
        bottom=0.1 if rows == 2 else 0.2,
        top=0.93,
        wspace=0.12,
        hspace=0.35,
    )
    extent = (0.0, t * frame_s, -0.5, n_mels - 0.5)
    common = dict(origin="lower", aspect="auto", interpolation="nearest", extent=extent)
    bands = np.arange(n_mels)

    def outline(ax):
        if span is None or band_hz is None:
            return
        t0, t1, lo, hi = span
        edges = np.asarray(band_hz, dtype=np.float64)
        b0 = int(np.searchsorted(edges[:, 1], lo, side="right"))
        b1 = int(np.searchsorted(edges[:, 0], hi, side="left")) - 1
        b0, b1 = min(max(b0, 0), n_mels - 1), min(max(b1, b0), n_mels - 1)
        ax.add_patch(
            Rectangle((t0, b0 - 0.5), max(t1 - t0, frame_s), b1 - b0 + 1, fill=False, edgecolor="white", linewidth=1.2)
        )

    ax = fig.add_subplot(grid[0, 0])
    im = ax.imshow(x, cmap="magma", **common)
    fig.colorbar(im, ax=ax, pad=0.01, label="log-mel")
    ax.set_title("log-mel spectrogram", fontsize="medium", loc="left")
    _band_ticks(ax, band_hz, n_mels)
    outline(ax)
    side = fig.add_subplot(grid[0, 1], sharey=ax)
    if normal_level is not None:
        lvl = np.asarray(normal_level, dtype=np.float64)
        if normal_level_sd is not None:
            sd = np.asarray(normal_level_sd, dtype=np.float64)
            side.fill_betweenx(bands, lvl - sd, lvl + sd, color=_NORMAL_COLOR, alpha=0.25, linewidth=0)
        side.plot(lvl, bands, color=_NORMAL_COLOR, linewidth=1, label="normal")
    side.plot(x.mean(axis=1), bands, color=_ANOMALY_COLOR, linewidth=1, label="clip")
    side.set_title("level per band", fontsize="small")
    side.tick_params(labelleft=False, labelsize="x-small")
    side.legend(fontsize="x-small", loc="upper right")
    if emap is not None:
        e = _as_2d(emap, "emap")
        ax2 = fig.add_subplot(grid[1, 0], sharex=ax)
        im = ax2.imshow(e, cmap="viridis", **common)
        fig.colorbar(im, ax=ax2, pad=0.01, label="error")
        ax2.set_title("reconstruction error", fontsize="medium", loc="left")
        _band_ticks(ax2, band_hz, n_mels)
        outline(ax2)
        ax2.set_xlabel("time (s)")
        side2 = fig.add_subplot(grid[1, 1], sharey=ax2)
        if normal_error is not None:
            side2.plot(
                np.maximum(np.asarray(normal_error, dtype=np.float64), 1e-9),
                bands,
                color=_NORMAL_COLOR,
                linewidth=1,
                label="normal",
            )
        clip_err = np.asarray(band_error, dtype=np.float64) if band_error is not None else e.mean(axis=1)
        side2.plot(np.maximum(clip_err, 1e-9), bands, color=_ANOMALY_COLOR, linewidth=1, label="clip")
        side2.set_xscale("log")
        side2.xaxis.set_minor_formatter(NullFormatter())
        side2.xaxis.set_major_locator(LogLocator(numticks=3))
        side2.set_title("error per band", fontsize="small")
        side2.tick_params(labelleft=False, labelsize="x-small")
    else:
        ax.set_xlabel("time (s)")
    if title:
        fig.suptitle(title, fontsize="medium")
    return fig


def night_trend(nights: Sequence, series: Mapping[str, Mapping[str, Sequence[float]]], night=None) -> Figure:
    """Per night (dates or ISO strings), for each model in ``series`` (``{model: {"median":
    [...], "flag_rate": [...]}}``, one value per night, NaN where it did not score): the median
    clip score (top) and the share of clips flagged (bottom). ``night``: marked with a line."""
    import datetime as _dt

    days = [n if isinstance(n, _dt.date) else _dt.date.fromisoformat(str(n)) for n in nights]
    fig = Figure(figsize=(6.0, 3.2), dpi=DPI)
    top, bottom = fig.subplots(2, 1, sharex=True)
    fig.subplots_adjust(left=0.12, right=0.98, top=0.97, bottom=0.1, hspace=0.12)
    for i, (model, s) in enumerate(series.items()):
        color = f"C{i}"
        for ax, key in ((top, "median"), (bottom, "flag_rate")):
            ax.plot(days, np.asarray(s.get(key, []), dtype=np.float64), marker="o", ms=3, color=color, label=model)
    if night is not None:
        mark = night if isinstance(night, _dt.date) else _dt.date.fromisoformat(str(night))
        for ax in (top, bottom):
            ax.axvline(mark, color="0.5", linestyle=":", linewidth=1)
        first = min([mark - _dt.timedelta(days=29), *days])
        bottom.set_xlim(first - _dt.timedelta(days=1), max([mark, *days]) + _dt.timedelta(days=1.5))
    bottom.xaxis.set_major_formatter(DateFormatter("%m-%d"))
    top.set_ylabel("median score", fontsize="small")
    bottom.set_ylabel("flagged", fontsize="small")
    bottom.set_ylim(-0.02, 1.02)
    bottom.yaxis.set_major_formatter(PercentFormatter(1.0))
    for ax in (top, bottom):
        ax.grid(True, alpha=0.3)
        ax.tick_params(labelsize="x-small")
    if series:
        top.legend(fontsize="x-small", loc="upper left")
    return fig


def png(fig: Figure, dpi: int = 80, colors: int = 96) -> bytes:
    """``fig`` as PNG bytes, reduced to a palette of ``colors`` colours (a third of the size
    of a full-colour PNG, and still sharp: plots have few colours)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    try:
        from PIL import Image
    except ImportError:  # matplotlib brings Pillow; without it the full-colour PNG
        return buf.getvalue()
    img = Image.open(io.BytesIO(buf.getvalue())).convert("RGB").quantize(colors=colors)
    out = io.BytesIO()
    img.save(out, format="PNG", optimize=True)
    return out.getvalue()


def picture(fig: Figure, dpi: int = 80, quality: int = 70) -> tuple[bytes, str]:
    """``fig`` as (bytes, MIME type) for a page that travels by mail: lossy WebP, which keeps a
    spectrogram's texture at a third of a PNG's size; a palette PNG where WebP is missing."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    try:
        from PIL import Image, features

        if not features.check("webp"):
            raise ImportError("no WebP")
    except ImportError:
        return png(fig, dpi), "image/png"
    out = io.BytesIO()
    Image.open(io.BytesIO(buf.getvalue())).convert("RGB").save(out, format="WEBP", quality=quality, method=6)
    return out.getvalue(), "image/webp"


def save(fig: Figure, path: str | PathLike[str]) -> None:
    """Write ``fig`` to ``path`` (format from the suffix); closes nothing."""
    fig.savefig(path, bbox_inches="tight")
