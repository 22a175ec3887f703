"""Training one family on normal clips, its thresholds calibrated, evaluated: :func:`train_and_evaluate`.

The retrain's ``train`` step (:mod:`slidead.jobs.retrain`), read top to bottom as its steps:
deal the training clips (train, validation, and the calibration clips a split-conformal
calibration holds out: :func:`deal`), build the model, cut the windows, fit it as its family
declares, fit the scoring statistics, score every normal clip, gather the calibration scores
(:func:`calibration_set`: split, cross-conformal fold models, or the seed's validation gamma),
calibrate the thresholds, and evaluate on the labelled clips (:func:`evaluate`). Pure of
storage: it takes rows (or clips left in the feature store) and returns an :class:`Outcome`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from slidead.core import metrics
from slidead.core.config import RunConfig
from slidead.core.models import EPOCHS, ROWS, family_of
from slidead.core.models import family as family_by_name
from slidead.core.models.mahalanobis import domain_classes
from slidead.core.score import fit_normal_statistics, fold_scores, score_logmels
from slidead.core.thresholds import Thresholds
from slidead.core.train import FrameWindows, TrainResult, fit, resolve_device, split_clips
from slidead.errors import NotEnoughDataError
from slidead.jobs.calibration import CalibrationSet, calibration_scheme, calibration_set, validation_mask
from slidead.jobs.stream import StoredClips, StreamWindows, stored_rows
from slidead.store.features import FeatureRow

log = logging.getLogger(__name__)


@dataclass
class Outcome:
    config: RunConfig
    model: torch.nn.Module
    history: dict
    best_epoch: int
    epochs_run: int
    seconds: float
    thresholds: Thresholds
    report: dict
    eval_scores: dict  # machine_ids, labels, scores (lists)
    baseline: dict  # machine_id -> {median, p90} of held-out normal scores
    data: dict = field(default_factory=dict)
    fold_models: list = field(default_factory=list)  # cross-conformal: the fold models the night scores with too


def train_and_evaluate(
    cfg: RunConfig,
    train_rows: list[FeatureRow] | StoredClips,
    eval_rows: list[FeatureRow],
    progress: Callable[[int, int, float, float], None] | None = None,
) -> Outcome:
    """Train ``cfg``'s family on normal clips, fit its thresholds, evaluate on ``eval_rows``.

    An ID classifier learns the machine IDs of ``train_rows`` (their sorted list becomes
    ``cfg.model.classes``; it needs two or more). After training, the scoring statistics are
    fitted on the training windows (:func:`~slidead.core.score.fit_normal_statistics`). The normal
    scores the thresholds were fitted on are kept in ``Thresholds.normal_scores``
    (``{machine_id: {clip_id: score}}``) for score fusion (:mod:`slidead.jobs.fusion`).

    ``train_rows`` left in the feature store (:class:`~slidead.jobs.stream.StoredClips`) are streamed
    when ``cfg.train.stream`` is ``parquet``, or ``auto`` and their frames take more than
    ``cfg.train.memory_budget_mb``: training, the scoring statistics and the threshold scores
    then read the clips in blocks, and memory is bounded by ``cfg.train.buffer_clips``.

    The steps, in order: deal the clips (train, validation, calibration), build the model, cut
    the windows, fit, fit the scoring statistics, score every normal clip, gather the
    calibration scores, calibrate the thresholds, evaluate."""
    clips = deal(cfg, train_rows)
    cfg, device = clips.cfg, resolve_device(cfg.train.device)
    model = _new_model(clips)
    x_train, x_val = _windows(clips, model)
    result = fit_as_declared(model, clips.tr, x_train, x_val, cfg, progress)
    if family_of(model).needs_statistics(cfg.score.metric):
        _fit_statistics(model, clips, x_train, device)
    score_of, band_error = _normal_scores(model, clips, device)
    cal_set = calibration_set(clips, score_of, result.best_epoch, device)
    thresholds = _thresholds(cfg, cal_set, band_error)
    report, ev = evaluate(model, cfg, eval_rows, thresholds, device, cal_set.fold_models)
    return Outcome(
        cfg,
        model,
        result.history,
        result.best_epoch,
        result.epochs_run,
        result.seconds,
        thresholds,
        report,
        ev,
        _baseline(cal_set),
        _run_data(clips, cal_set, x_train, eval_rows),
        cal_set.fold_models,
    )


@dataclass
class TrainingClips:
    """A run's normal training clips, dealt: ``tr`` trains, ``va`` early-stops, ``cal`` (split
    conformal only) is held out to calibrate; ``rows`` is ``tr`` and ``va`` together. ``cfg``
    carries the machine IDs as its classes; ``streamed``: the clips are read from the feature
    store in blocks (:class:`~slidead.jobs.stream.StoredClips`), else they are rows in memory."""

    cfg: RunConfig
    classes: list[str]
    scheme: str  # the calibration scheme (calibration_scheme)
    streamed: bool
    rows: list[FeatureRow] | StoredClips
    tr: list[FeatureRow] | StoredClips
    va: list[FeatureRow] | StoredClips
    cal: list[FeatureRow] | StoredClips

    @property
    def row_of(self) -> dict[str, int]:
        """Each machine ID's class row."""
        return {m: k for k, m in enumerate(self.classes)}

    def labels(self, rows) -> list[int]:
        """The class row of each of ``rows``."""
        row_of = self.row_of
        return [row_of[r.machine_id] for r in rows]

    def label_of(self) -> dict[str, int]:
        """The class row of each clip of ``rows`` by clip ID (what streamed windows look up)."""
        row_of = self.row_of
        return {r.clip_id: row_of[r.machine_id] for r in self.rows}


def deal(cfg: RunConfig, train_rows: list[FeatureRow] | StoredClips) -> TrainingClips:
    """Decide whether the clips stream, and deal them: the calibration clips a split-conformal
    calibration holds out (never trained or early-stopped on), then the validation split."""
    stored = isinstance(train_rows, StoredClips)
    mode = cfg.train.stream
    if mode == "parquet" and not stored:
        raise ValueError(
            "stream='parquet' trains from the feature store: pass the training set "
            "as ingest_sets(...).rows(config, 'train') (StoredClips), not rows in memory"
        )
    streaming = stored and (
        mode == "parquet" or (mode == "auto" and train_rows.nbytes > cfg.train.memory_budget_mb * 2**20)
    )
    if stored and not streaming:
        train_rows = train_rows.rows()
    if len(train_rows) < 2:
        raise NotEnoughDataError(f"{cfg.machine_type}: {len(train_rows)} training clips; need at least 2")
    ids = np.array([r.machine_id for r in train_rows])
    cfg = cfg.with_classes(ids)
    classes = sorted(set(ids.tolist()))
    scheme = calibration_scheme(cfg, ids, streaming)
    cal_mask = split_clips(ids, cfg.train.calibration_fraction, cfg.train.seed + 1) if scheme == "split" else None
    if cal_mask is not None:
        cal = train_rows.subset(cal_mask) if streaming else [r for r, c in zip(train_rows, cal_mask) if c]
        train_rows = train_rows.subset(~cal_mask) if streaming else [r for r, c in zip(train_rows, cal_mask) if not c]
        ids = ids[~cal_mask]
    else:
        cal = []
    val_mask = validation_mask(cfg, ids, cfg.train.seed, scheme)
    if streaming:
        tr, va = train_rows.subset(~val_mask), train_rows.subset(val_mask)
    else:
        tr = [r for r, v in zip(train_rows, val_mask) if not v]
        va = [r for r, v in zip(train_rows, val_mask) if v]
    return TrainingClips(cfg, classes, scheme, streaming, train_rows, tr, va, cal)


def _new_model(clips: TrainingClips) -> torch.nn.Module:
    """The family's network, its initial weights seeded (a run is repeatable); an ID classifier
    needs two or more machine IDs."""
    cfg = clips.cfg
    torch.manual_seed(cfg.train.seed)
    model = cfg.build_model()
    if family_of(model).learns_ids and len(clips.classes) < 2:
        raise NotEnoughDataError(
            f"{cfg.machine_type}: {cfg.family} learns to tell machine IDs apart and needs "
            f"two or more; the training set has {clips.classes}"
        )
    return model


def _windows(clips: TrainingClips, model):
    """The training and validation windows (labelled with their class rows for an ID classifier):
    gathered from the clips in memory, or streamed from the store through a buffer."""
    cfg, fam = clips.cfg, family_of(model)
    frames, stride = cfg.features.frames, fam.hop(model)
    tr, va = clips.tr, clips.va
    if clips.streamed:
        label_of = clips.label_of() if fam.learns_ids else None
        buffer = cfg.train.buffer_clips
        x_train = StreamWindows(tr, frames, label_of, stride, buffer)
        x_val = StreamWindows(va, frames, label_of, stride, buffer)
        log.info(
            f"{cfg.family}: {len(tr)} train clips ({len(x_train)} windows), {len(va)} validation clips, "
            f"streamed from the feature store through a buffer of {buffer} clips "
            f"({clips.rows.nbytes / 2**20:.0f} MB of frames, budget {cfg.train.memory_budget_mb} MB)"
        )
    else:
        tr_rows, va_rows = (clips.labels(tr), clips.labels(va)) if fam.learns_ids else (None, None)
        x_train = FrameWindows([r.logmel for r in tr], frames, tr_rows, stride)
        x_val = FrameWindows([r.logmel for r in va], frames, va_rows, stride)
        log.info(f"{cfg.family}: {len(tr)} train clips ({len(x_train)} windows), {len(va)} validation clips")
    return x_train, x_val


def _fit_statistics(model, clips: TrainingClips, x_train, device) -> None:
    """The scoring statistics (Mahalanobis) on the training windows, per :func:`stats_rows`."""
    if clips.streamed:
        stats_classes = clips.classes
        stats_data = x_train.with_labels(clips.label_of()).sequential()
    else:
        stats_classes, rows_of = stats_rows(clips.cfg, clips.classes, clips.tr, clips.labels(clips.tr))
        stats_data = x_train.with_labels(rows_of)
    fit_normal_statistics(model, stats_data, stats_classes, clips.cfg.score, device)


def _normal_scores(model, clips: TrainingClips, device) -> tuple[dict[str, float], dict[str, list]]:
    """Every training clip is normal: each one's score (what the calibration rests on), and each
    ID's mean error per mel band (what explanations compare against). Streamed clips are scored
    in one pass over the store, a chunk of clips at a time."""
    cfg = clips.cfg
    band_sum: dict[str, np.ndarray] = {}
    band_n: dict[str, int] = {}

    def scores_of(rows):
        sc = score_logmels(
            model, [r.logmel for r in rows], cfg.features, cfg.score, device, [r.machine_id for r in rows]
        )
        for r, profile in zip(rows, sc.band_error):
            band_sum[r.machine_id] = band_sum.get(r.machine_id, 0.0) + profile
            band_n[r.machine_id] = band_n.get(r.machine_id, 0) + 1
        return sc.score

    score_of: dict[str, float] = {}
    if clips.streamed:
        for part in (clips.rows, clips.cal) if len(clips.cal) else (clips.rows,):
            for chunk in stored_rows(part):
                score_of.update(zip((r.clip_id for r in chunk), map(float, scores_of(chunk))))
    else:
        for part in (clips.va, clips.tr, clips.cal):
            if part:
                score_of.update(zip((r.clip_id for r in part), map(float, scores_of(part))))
    band_error = {mid: (band_sum[mid] / band_n[mid]).round(6).tolist() for mid in band_sum}
    return score_of, band_error


def _thresholds(cfg: RunConfig, cal_set: CalibrationSet, band_error: dict) -> Thresholds:
    """The thresholds calibrated on ``cal_set`` at the run's quantile, each ID's fit saying where
    its scores came from; too few scores for the target rate are warned of."""
    thresholds = Thresholds.calibrate(
        cal_set.scores, cal_set.method, cfg.threshold_quantile, "", cal_set.folds, True, band_error
    )
    thresholds = thresholds.with_fits({m: replace(f, source=cal_set.sources[m]) for m, f in thresholds.per_id.items()})
    for warning in thresholds.too_few():
        log.warning(f"warning: {warning}")
    return thresholds


def _baseline(cal_set: CalibrationSet) -> dict:
    """Each ID's median and 90th percentile of its calibration scores."""
    return {
        mid: {"median": float(np.median(list(s.values()))), "p90": float(np.quantile(list(s.values()), 0.9))}
        for mid, s in cal_set.scores.items()
    }


def _run_data(clips: TrainingClips, cal_set: CalibrationSet, x_train, eval_rows) -> dict:
    """What the MLflow run records of the data: the scheme, the counts, every clip ID by role."""
    tr, va, cal = clips.tr, clips.va, clips.cal
    return {
        "threshold_scheme": cal_set.method,
        "n_train_clips": len(tr),
        "n_val_clips": len(va),
        "n_calibration_clips": len(cal),
        "n_eval_clips": len(eval_rows),
        "n_train_windows": int(len(x_train)),
        "train_streamed": bool(clips.streamed),
        "train_clip_ids": sorted(r.clip_id for r in tr),
        "val_clip_ids": sorted(r.clip_id for r in va),
        "calibration_clip_ids": sorted(r.clip_id for r in cal),
        "eval_clip_ids": sorted(r.clip_id for r in eval_rows),
    }


def stats_rows(cfg: RunConfig, classes: list[str], tr, tr_rows):
    """The Mahalanobis statistics' rows and each training clip's row: per machine ID, and, when
    the config asks (``score.domain_statistics``) for a reconstruction family whose clips carry a
    target domain, per ID and domain (source and target kept apart, the smaller distance taken at
    scoring). Streamed clips (``tr_rows`` None): per ID."""
    if tr_rows is None or not cfg.score.domain_statistics or not family_by_name(cfg.family).reconstructs:
        return classes, tr_rows
    if not any(getattr(r, "domain", None) == "target" for r in tr):
        return classes, tr_rows
    return domain_classes(classes, [r.machine_id for r in tr], [getattr(r, "domain", None) for r in tr])


def fit_as_declared(model, tr, x_train, x_val, cfg: RunConfig, progress=None) -> TrainResult:
    """Fit ``model`` as its family declares (``Family.fits``): gradient epochs on the windows, or
    one pass over its training clips ``tr`` (rows, or clips streamed from the store) with no
    epochs: ``fit_clips`` of (machine ID, log-mel) pairs (a statistics family, e.g.
    :mod:`slidead.core.models.clipstats`), or ``fit_rows`` of the rows with their domain and
    conditions (:mod:`slidead.core.models.attrclf`)."""
    fits = family_of(model).fits
    if fits == EPOCHS:
        return fit(model, x_train, x_val, cfg.train, progress)
    t0 = time.perf_counter()
    rows = (r for chunk in stored_rows(tr) for r in chunk) if isinstance(tr, StoredClips) else tr
    if fits == ROWS:  # learns from the clips' domain and conditions too (attrclf)
        model.fit_rows(rows, cfg.train)
    else:
        model.fit_clips((r.machine_id, r.logmel) for r in rows)
    state = {k: v.detach().cpu() if isinstance(v, torch.Tensor) else v for k, v in model.state_dict().items()}
    return TrainResult(state, {}, 0, 0, time.perf_counter() - t0, "cpu")


def evaluate(
    model, cfg: RunConfig, eval_rows: list[FeatureRow], thresholds: Thresholds, device="cpu", folds=()
) -> tuple[dict, dict]:
    """Metrics per machine ID on labelled clips (AUC, pAUC, and the decisions of the calibration:
    p-values at the target rate, or the gamma thresholds). ``folds``: the version's fold models
    (cross-conformal)."""
    if not eval_rows:
        return {"per_id": {}, "mean": {}}, {"machine_ids": [], "labels": [], "scores": [], "p_values": []}
    ids = [r.machine_id for r in eval_rows]
    logmels = [r.logmel for r in eval_rows]
    scores = score_logmels(model, logmels, cfg.features, cfg.score, device, ids).score
    p, flags = thresholds.decide(ids, scores, fold_scores(folds, logmels, cfg, ids, device))
    labels = [1 if r.label == "anomaly" else 0 for r in eval_rows]
    domains = [getattr(r, "domain", None) for r in eval_rows]  # the official DCASE figures when clips say
    report = metrics.evaluate(ids, labels, scores, thresholds.map(), flags, domains)
    ev = {
        "machine_ids": ids,
        "labels": labels,
        "scores": [float(s) for s in scores],
        "p_values": p.tolist(),
        "domains": domains,
    }
    return report, ev
