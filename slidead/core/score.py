"""Clip scores from a trained model, and where in time and frequency the clip peaked.

``score_logmels(model, logmels, feature_config, config, device, machine_ids)`` takes a list of
``(n_mels, T)`` log-mel matrices (one per clip) and, optionally, each clip's machine ID, and
returns :class:`ClipScores` with arrays of length ``n_clips``. ``ScoreConfig.metric`` says
how a window is scored; a clip's score is the mean over its windows:

- ``mse`` (the seed's, AE and VAE): the window's mean squared reconstruction error (plus, for
  the VAE when ``use_kl`` is set, its KL term per dimension);
- ``mahalanobis`` (AE, VAE, ID classifier): the squared Mahalanobis distance of the window's
  reconstruction error ``x_hat - x`` (AE, VAE) or of its embedding (ID classifier) to the
  normal statistics of the clip's machine ID (:mod:`slidead.core.models.mahalanobis`; the pooled
  statistics when the ID is unknown or not given). The statistics are fitted on the training
  windows by :func:`fit_normal_statistics` and travel in the model's state dict;
- ``logit`` (ID classifier): log((1 - p) / p), p the softmax probability of the clip's own ID
  (the DCASE 2021 baseline's score); a clip whose ID the model never saw, or given without
  IDs, is scored against the ID it resembles most (the most probable one).

Peaks: for the reconstruction models, ``peak_time_s`` is the centre of the frame whose squared
reconstruction error is highest and ``peak_freq_lo_hz``/``peak_freq_hi_hz`` the edges of the
mel band with the highest error. For the ID classifier, the peak time is the centre of the
highest-scoring patch, and the peak band is where that patch's mean level departs most from
its ID's normal band profile (in units of the profile's spread).

A family looks at every ``Family.window_hop``-th window (the ID classifier: its patch hop; the
reconstruction models: every window) and scores them through
:meth:`~slidead.core.models.registry.Family.score_windows`: the reconstruction families through
their one shared default (:mod:`slidead.core.models.reconstruction`), any other through its
network's own. Windows of many clips are batched together, so the model runs in large batches.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields

import numpy as np
import torch
from torch import nn

from slidead.core.features import FeatureConfig, mel_band_edges, windows
from slidead.core.models.registry import family_of

METRICS = ("mse", "mahalanobis", "logit", "cosine")  # cosine: attrclf's nearest normal clip per domain


@dataclass(frozen=True)
class ScoreConfig:
    use_kl: bool = False  # VAE only: add the KL term to each window's error (metric mse)
    batch_windows: int = 16384  # windows per forward pass
    precision: str = "fp32"  # "fp32", or "bf16"/"fp16" autocast (measured: scores within 1e-3)
    metric: str = "mse"  # "mse" | "mahalanobis" | "logit" | "cosine" (see the module docstring)
    # mahalanobis of a reconstruction family whose training clips carry a target domain: keep that
    # domain's statistics apart and take the nearer (DCASE 2023's selective Mahalanobis; docs/dcase.md)
    domain_statistics: bool = False

    def __post_init__(self):
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision={self.precision!r}: expected one of {sorted(PRECISIONS)}")
        if self.batch_windows < 1:
            raise ValueError(f"batch_windows={self.batch_windows!r} must be >= 1")
        if self.metric not in METRICS:
            raise ValueError(f"metric={self.metric!r}: expected one of {METRICS}")
        if self.domain_statistics and self.metric != "mahalanobis":
            raise ValueError(f"domain_statistics keeps Mahalanobis statistics per domain, not metric={self.metric!r}")
        if self.use_kl and self.metric != "mse":
            raise ValueError(f"use_kl adds the VAE's KL term to the mse metric, not to metric={self.metric!r}")

    def to_dict(self) -> dict:
        return asdict(self)


PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class ClipScores:
    score: np.ndarray
    peak_time_s: np.ndarray
    peak_freq_lo_hz: np.ndarray
    peak_freq_hi_hz: np.ndarray
    span_start_s: np.ndarray  # the stretch of time around the peak where the error stays
    span_end_s: np.ndarray  # above half its peak height (over the clip's median)
    span_freq_lo_hz: np.ndarray  # the same for the mel bands around the peak band
    span_freq_hi_hz: np.ndarray
    band_error: np.ndarray | None = None  # (n_clips, n_mels): each clip's error per mel band

    def __len__(self) -> int:
        return len(self.score)


def _check_metric(model: nn.Module, metric: str) -> None:
    classifier = not family_of(model).reconstructs
    if metric == "mse" and classifier:
        raise ValueError(f"{type(model).__name__} does not reconstruct: score it with metric 'mahalanobis' or 'logit'")
    if metric == "logit" and not classifier:
        raise ValueError(f"metric 'logit' needs an ID classifier, not {type(model).__name__}")
    if metric == "mahalanobis" and getattr(model, "mahalanobis", None) is None:
        raise ValueError(f"{type(model).__name__} has no Mahalanobis statistics: fit_normal_statistics first")


@torch.no_grad()
def score_logmels(
    model: nn.Module,
    logmels: Sequence[np.ndarray],
    feature_config: FeatureConfig,
    config: ScoreConfig = ScoreConfig(),
    device: str | torch.device = "cpu",
    machine_ids: Sequence[str] | None = None,
    band_reference: Mapping[str, Sequence[float]] | None = None,
) -> ClipScores:
    """``band_reference``: per machine ID, the normal clips' mean error per mel band (stored
    with a model version as ``Thresholds.band_error``). Given, a clip's peak band and band
    span are where its error is highest *relative to* its machine's normal error, not where the
    error is highest outright (the lowest mel bands always reconstruct worst)."""
    _check_metric(model, config.metric)
    n = len(logmels)
    if machine_ids is not None and len(machine_ids) != n:
        raise ValueError(f"{len(machine_ids)} machine IDs for {n} clips")
    model.eval()
    device = torch.device(device)
    if any(t.device != device for t in (*model.parameters(), *model.buffers())):
        model.to(device)  # not when it is there already: threads may score with it at once
    edges = mel_band_edges(feature_config)
    out = {f.name: np.zeros(n) for f in fields(ClipScores) if f.name != "band_error"}
    out["band_error"] = np.zeros((n, feature_config.n_mels))
    refs = {str(k): np.maximum(np.asarray(v, dtype=np.float64), 1e-12) for k, v in (band_reference or {}).items()}
    frames = feature_config.frames
    fam = family_of(model)
    hop = fam.hop(model)
    dtype = PRECISIONS[config.precision]
    ids = [None] * n if machine_ids is None else [str(m) for m in machine_ids]
    for group in _groups(logmels, frames, config.batch_windows, hop):
        # clips of one length, stacked: (B, n_mels, T) -> windows (B, W, frames * n_mels)
        x = torch.as_tensor(np.stack([logmels[i] for i in group]), dtype=torch.float32).to(device)
        w = windows(x, frames)[:, ::hop]
        flat = w.reshape(-1, w.shape[-1])
        group_ids = [ids[i] for i in group]
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            per_window, t_prof, f_prof = fam.score_windows(
                model, flat, w, group_ids, config.metric, frames, config.use_kl
            )
        t_peak, f_peak = t_prof.argmax(dim=1).cpu().numpy(), f_prof.argmax(dim=1).cpu().numpy()
        t_prof, f_prof = t_prof.float().cpu().numpy(), f_prof.float().cpu().numpy()
        scores = per_window.float().mean(dim=1).cpu().numpy()
        for j, i in enumerate(group):
            out["band_error"][i] = f_prof[j]
            if ids[i] in refs and fam.reconstructs:
                f_prof[j] = f_prof[j] / refs[ids[i]]
                f_peak[j] = int(np.argmax(f_prof[j]))
            out["score"][i] = float(scores[j])
            out["peak_time_s"][i] = feature_config.frame_seconds(int(t_peak[j]))
            out["peak_freq_lo_hz"][i], out["peak_freq_hi_hz"][i] = edges[int(f_peak[j])]
            t0, t1 = _span(t_prof[j], int(t_peak[j]))
            out["span_start_s"][i] = feature_config.frame_seconds(t0)
            out["span_end_s"][i] = feature_config.frame_seconds(t1 + 1)
            b0, b1 = _span(f_prof[j], int(f_peak[j]))
            out["span_freq_lo_hz"][i], out["span_freq_hi_hz"][i] = edges[b0][0], edges[b1][1]
    return ClipScores(**out)


@torch.no_grad()
def fit_normal_statistics(
    model: nn.Module,
    data,
    classes: Sequence[str],
    config: ScoreConfig,
    device: str | torch.device = "cpu",
    batch: int = 4096,
) -> nn.Module:
    """After training, the statistics scoring needs from the normal training windows ``data``
    (:class:`~slidead.core.train.FrameWindows` labelled with each window's index into ``classes``):
    the family's own profiles (``Family.fit_profiles``: the ID classifier's band profiles), and
    for ``metric="mahalanobis"`` the selective Mahalanobis statistics of what the family measures
    (``Family.normal_vectors``), attached as ``model.mahalanobis``. Returns the model."""
    from slidead.core.models.mahalanobis import SelectiveMahalanobis

    model.eval()
    device = torch.device(device)
    model.to(device)
    data = data.to(device)

    def batches(fn):
        for start in range(0, len(data), batch):
            idx = torch.arange(start, min(start + batch, len(data)), device=device)
            yield fn(data.batch(idx)), data.targets(idx)

    fam = family_of(model)
    if fam.fit_profiles is not None:
        fam.fit_profiles(model, batches(lambda x: x), classes)
    if config.metric == "mahalanobis":
        model.mahalanobis = SelectiveMahalanobis().to(device).fit(batches(fam.normal_vectors(model)), classes)
    return model


def _groups(logmels, frames: int, budget: int, hop: int = 1):
    """Indices of clips in groups of equal length, each within ``budget`` windows (every
    ``hop``-th window of a clip counted)."""
    by_len: dict[int, list[int]] = {}
    for i, m in enumerate(logmels):
        if m.shape[1] < frames:
            raise ValueError(f"clip {i} has {m.shape[1]} frames, fewer than one window of {frames}")
        by_len.setdefault(m.shape[1], []).append(i)
    for t, idx in by_len.items():
        per = max(1, budget // -(-(t - frames + 1) // hop))
        for s in range(0, len(idx), per):
            yield idx[s : s + per]


def _span(profile: np.ndarray, peak: int) -> tuple[int, int]:
    """The contiguous run of indices around ``peak`` where ``profile`` stays at or above half
    the peak's height over the profile's median (first and last index, inclusive)."""
    finite = profile[np.isfinite(profile)]
    base = float(np.median(finite)) if finite.size else 0.0
    cut = base + 0.5 * (float(profile[peak]) - base)
    above = profile >= cut
    lo = peak
    while lo > 0 and above[lo - 1]:
        lo -= 1
    hi = peak
    while hi < profile.size - 1 and above[hi + 1]:
        hi += 1
    return lo, hi


def fold_scores(folds, logmels, cfg, machine_ids, device="cpu") -> np.ndarray | None:
    """``(K, n)``: the clips' scores under each of a version's fold models (None without any);
    ``cfg``: their RunConfig (features and score config)."""
    if not folds:
        return None
    return np.vstack(
        [score_logmels(m, logmels, cfg.features, cfg.score, device, list(machine_ids)).score for m in folds]
    )
