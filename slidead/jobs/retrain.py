"""A retrain: ingest the train/eval sets, train a family, evaluate, register, promote.

:func:`retrain` is the whole job, top to bottom, the one recipe both ``slidead train
--no-prefect`` and the ``retrain`` flow run (the flow passes ``steps`` that make each step a
Prefect task). Library code: takes :class:`~slidead.store.services.Services` and values,
reports progress through callbacks, never imports prefect.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from slidead.core import conformal, metrics
from slidead.core.config import RunConfig
from slidead.core.features import FeatureConfig, windows
from slidead.core.models import EPOCHS, ROWS, family_of
from slidead.core.models.mahalanobis import domain_classes
from slidead.core.score import fit_normal_statistics, fold_scores, score_logmels
from slidead.core.thresholds import MIN_FIT, SPLIT_MIN, Thresholds
from slidead.core.train import FrameWindows, TrainResult, fit, resolve_device, split_clips
from slidead.errors import NotEnoughDataError
from slidead.jobs.ingest import IngestResult, ingest, list_refs
from slidead.jobs.labels import add_plant_clips
from slidead.jobs.steps import Steps, inline
from slidead.jobs.stream import StoredClips, StreamWindows, stored_rows
from slidead.store.features import FeatureRow, partition
from slidead.store.services import Services
from slidead.store.tracking import Decision, model_name

log = logging.getLogger(__name__)


@dataclass
class DataSets:
    """The ingested sets. The training clips' log-mels stay in the feature store (``stored``,
    per feature config hash) unless ``ingest_sets`` was asked to keep them in memory."""

    train: IngestResult
    eval: IngestResult
    stored: dict[str, StoredClips] = field(default_factory=dict)

    def rows(self, config: FeatureConfig, which: str) -> list[FeatureRow] | StoredClips:
        """The set's clips in clip ID order: FeatureRows, or for a training set left in the
        store a :class:`~slidead.jobs.stream.StoredClips` (what :func:`train_and_evaluate` takes)."""
        if which == "train" and config.hash in self.stored:
            return self.stored[config.hash]
        res = self.train if which == "train" else self.eval
        return [res.features[config.hash][cid] for cid in sorted(res.features[config.hash])]


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


def ingest_sets(
    svc: Services,
    machine_type: str,
    configs: list[FeatureConfig],
    progress: Callable[[int, int], None] | None = None,
    keep_train: bool = False,
) -> DataSets:
    """Read train/ and eval/ for a machine type once, computing every feature config.

    The training clips' log-mels are left in the feature store (read back in blocks by
    :func:`train_and_evaluate`, all at once or streamed as ``TrainConfig.stream`` says) unless
    ``keep_train``; the evaluation set is kept in memory."""
    out, stored = {}, {}
    for split in ("train", "eval"):
        refs, bad = list_refs(svc.store, split, machine_type)
        log.info(f"{split}: {len(refs)} clips under {split}/{machine_type}/")
        keep = split == "eval" or keep_train
        res = ingest(svc.store, svc.features, refs, configs, svc.audio, progress=progress, keep_features=keep)
        if not keep:
            for c in configs:
                stored[c.hash] = StoredClips.open(svc.features, c, partition("train"), machine_type, set(res.refs))
                if len(stored[c.hash]) < len(res.refs):
                    log.warning(
                        f"train: {len(res.refs) - len(stored[c.hash])} clips' features are no longer readable "
                        "in the feature store; training without them"
                    )
        res.rejected.extend(bad)
        svc.db.add_clips(res.clips)
        svc.db.add_rejected(res.rejected)
        if res.rejected:
            log.info(f"{split}: {len(res.rejected)} clips rejected (see the rejected table)")
        if split == "eval":  # operators' verdicts on night clips (slidead label) join the evaluation set
            add_plant_clips(svc, machine_type, configs, res)
        out[split] = res
    return DataSets(out["train"], out["eval"], stored)


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
    result = _fit(model, clips.tr, x_train, x_val, cfg, progress)
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
    val_mask = split_clips(ids, cfg.train.val_fraction, cfg.train.seed)
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
    """The scoring statistics (Mahalanobis) on the training windows, per :func:`_stats_rows`."""
    fam = family_of(model)
    if clips.streamed:
        stats_classes = clips.classes
        stats_data = x_train.with_labels(clips.label_of()).sequential()
    else:
        stats_classes, stats_rows = _stats_rows(fam, clips.classes, clips.tr, clips.labels(clips.tr))
        stats_data = x_train.with_labels(stats_rows)
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


def calibration_scheme(cfg: RunConfig, machine_ids, streaming: bool = False) -> str:
    """What ``cfg.train.threshold_scheme`` comes to for these training clips: ``auto`` is
    ``split`` when every machine would hold out :data:`~slidead.core.thresholds.SPLIT_MIN` or more
    calibration clips, else ``cross``; clips streamed from the store calibrate ``split`` (fold
    models need the clips in memory), or with too few clips for a split to reach the target rate,
    by the seed's gamma fit on the validation split."""
    scheme = cfg.train.threshold_scheme
    _, counts = np.unique(np.asarray(machine_ids), return_counts=True)
    fewest = int(counts.min()) if counts.size else 0
    if scheme == "auto":
        held = int(np.floor(cfg.train.calibration_fraction * fewest))
        scheme = "split" if held >= SPLIT_MIN else "cross"
    if streaming and scheme in ("cross", "oof"):  # fold models need the clips in memory
        enough = int(round(cfg.train.calibration_fraction * fewest)) >= conformal.min_calibration(
            1.0 - cfg.threshold_quantile
        )
        return "split" if scheme == "cross" and enough else "validation"
    if scheme in ("cross", "oof") and fewest < 2:  # a machine with one clip: no fold can hold it out
        return "validation"
    return scheme


@dataclass
class CalibrationSet:
    """The normal scores a version's thresholds are fitted on: ``{id: {clip_id: score}}``, how
    (``method``: conformal, cross-conformal or gamma), where each ID's came from, and for
    cross-conformal each clip's fold and the fold models."""

    method: str
    scores: dict[str, dict[str, float]]
    sources: dict[str, str]
    folds: dict[str, dict[str, int]] = field(default_factory=dict)
    fold_models: list = field(default_factory=list)


def calibration_set(clips: TrainingClips, score_of: dict, best_epoch: int, device) -> CalibrationSet:
    """The calibration scores of ``clips.scheme`` (:func:`calibration_scheme`): ``split``, the main
    model's scores of the held-out calibration clips ``cal``; ``cross``, every training clip
    scored by the fold model that did not train on it; ``validation`` (the seed's), the validation
    split's scores (with the training clips' when an ID has fewer than three); ``oof``, out-of-fold
    scores under the gamma fit."""
    cfg, scheme, classes, tr, va, cal = clips.cfg, clips.scheme, clips.classes, clips.tr, clips.va, clips.cal
    by_id: dict[str, dict[str, float]] = {}
    sources: dict[str, str] = {}
    if scheme == "split":
        for r in cal:
            by_id.setdefault(r.machine_id, {})[r.clip_id] = score_of[r.clip_id]
        log.info(
            f"thresholds: split conformal on {len(cal)} held-out calibration clips "
            f"({cfg.train.calibration_fraction:.0%} of each machine's, never trained on)"
        )
        return CalibrationSet("conformal", by_id, {m: "calibration split" for m in by_id})
    if scheme in ("cross", "oof"):
        rows = list(tr) + list(va)
        k = min(cfg.train.threshold_folds, min(sum(r.machine_id == m for r in rows) for m in classes))
        log.info(
            f"thresholds: {'cross-conformal' if scheme == 'cross' else 'out-of-fold'} scores of all {len(rows)} "
            f"training clips ({k} fold models, {max(1, best_epoch)} epochs' worth of steps each)"
        )
        held_out, fold_of, models = _fold_scores(cfg, rows, classes, clips.row_of, max(1, best_epoch), device)
        id_of = {r.clip_id: r.machine_id for r in rows}
        for cid, s in held_out.items():
            by_id.setdefault(id_of[cid], {})[cid] = s
        if scheme == "cross":
            folds = {m: {c: fold_of[c] for c in d} for m, d in by_id.items()}
            return CalibrationSet("cross-conformal", by_id, {m: "cross-conformal" for m in by_id}, folds, models)
        sources = {m: "oof" for m in by_id}
    for mid in classes:  # validation (and oof where a fold left an ID with too few scores)
        if mid in by_id and len(by_id[mid]) >= MIN_FIT:
            continue
        held = {r.clip_id: score_of[r.clip_id] for r in va if r.machine_id == mid}
        if len(held) >= MIN_FIT:
            by_id[mid], sources[mid] = held, "validation"
        else:
            held.update({r.clip_id: score_of[r.clip_id] for r in tr if r.machine_id == mid})
            by_id[mid], sources[mid] = held, "validation+train"
    return CalibrationSet("gamma", by_id, sources)


def _fold_scores(
    cfg: RunConfig, rows: list[FeatureRow], classes: list[str], row_of: dict[str, int], epochs: int, device
) -> tuple[dict[str, float], dict[str, int], list]:
    """Each clip's score by a model that did not train on it, its fold, and the fold models: the
    clips of every machine ID are dealt into ``cfg.train.threshold_folds`` folds; each fold model
    trains on the other folds as many optimiser steps as the main model took to its best epoch
    (``epochs``), with the family's own statistics, and scores its fold."""
    ids = np.array([r.machine_id for r in rows])
    # as many folds as asked, or as the machine with the fewest clips allows (each fold holds one of its clips)
    k = min(cfg.train.threshold_folds, int(np.unique(ids, return_counts=True)[1].min()))
    fold = np.zeros(len(rows), dtype=int)
    rng = np.random.default_rng(cfg.train.seed + 7919)
    for mid in classes:
        idx = rng.permutation(np.flatnonzero(ids == mid))
        fold[idx] = np.arange(idx.size) % k
    out: dict[str, float] = {}
    fold_of: dict[str, int] = {}
    models = []
    n_main = len(rows) - int(split_clips(ids, cfg.train.val_fraction, cfg.train.seed).sum())
    for f in range(k):
        held = [r for r, g in zip(rows, fold) if g == f]
        rest = [r for r, g in zip(rows, fold) if g != f]
        if not held or len(rest) < 2:
            raise NotEnoughDataError(
                f"{cfg.machine_type}: {len(rows)} training clips are too few for {k} calibration folds"
            )
        val = split_clips([r.machine_id for r in rest], cfg.train.val_fraction, cfg.train.seed + f + 1)
        # as many optimiser steps as the main model took to its best epoch, on fewer clips
        n_fold = max(1, int((~val).sum()))
        fold_epochs = max(1, int(np.ceil(epochs * n_main / n_fold)))
        with _said_once():
            model = _fit_model(
                cfg.with_train(epochs=fold_epochs, patience=fold_epochs),
                [r for r, v in zip(rest, val) if not v],
                [r for r, v in zip(rest, val) if v],
                classes,
                row_of,
                device,
            )
        sc = score_logmels(
            model, [r.logmel for r in held], cfg.features, cfg.score, device, [r.machine_id for r in held]
        )
        out.update(zip((r.clip_id for r in held), (float(s) for s in sc.score)))
        fold_of.update((r.clip_id, f) for r in held)
        models.append(model.cpu().eval())
    return out, fold_of, models


@contextlib.contextmanager
def _said_once():
    """While a fold model trains: the families' own progress lines (a classifier's classes, the
    same as the main model's) are not repeated; their warnings still show."""
    families = logging.getLogger("slidead.core")
    level = families.level
    families.setLevel(max(logging.WARNING, families.getEffectiveLevel()))
    try:
        yield
    finally:
        families.setLevel(level)


def _fit_model(
    cfg: RunConfig, tr: list[FeatureRow], va: list[FeatureRow], classes: list[str], row_of: dict[str, int], device
) -> torch.nn.Module:
    """A model of ``cfg`` trained on ``tr`` (early stopping on ``va``), with its scoring statistics."""
    torch.manual_seed(cfg.train.seed)
    model = cfg.build_model()
    fam = family_of(model)
    frames, stride = cfg.features.frames, fam.hop(model)
    tr_rows, va_rows = [row_of[r.machine_id] for r in tr], [row_of[r.machine_id] for r in va]
    x_train = FrameWindows([r.logmel for r in tr], frames, tr_rows if fam.learns_ids else None, stride)
    x_val = FrameWindows([r.logmel for r in va], frames, va_rows if fam.learns_ids else None, stride)
    _fit(model, tr, x_train, x_val, cfg)
    if fam.needs_statistics(cfg.score.metric):
        stats_classes, stats_rows = _stats_rows(fam, classes, tr, tr_rows)
        fit_normal_statistics(model, x_train.with_labels(stats_rows), stats_classes, cfg.score, device)
    return model


def _stats_rows(fam, classes: list[str], tr, tr_rows):
    """The Mahalanobis statistics' rows and each training clip's row: per machine ID, and for a
    reconstruction family whose clips carry a domain, per ID and domain (source and target kept
    apart, the smaller distance taken at scoring). Streamed clips (``tr_rows`` None): per ID."""
    if tr_rows is None or not fam.reconstructs or not any(getattr(r, "domain", None) == "target" for r in tr):
        return classes, tr_rows
    return domain_classes(classes, [r.machine_id for r in tr], [getattr(r, "domain", None) for r in tr])


def _fit(model, tr, x_train, x_val, cfg: RunConfig, progress=None) -> TrainResult:
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


def figures(outcome: Outcome, eval_rows: list[FeatureRow]) -> dict:
    """Plots for the MLflow run; empty if plotting is unavailable."""
    try:
        from slidead.core import plots
    except ImportError:
        return {}
    ev = outcome.eval_scores
    th = {m: t for m, t in outcome.thresholds.finite_map().items() if t is not None}
    figs = {"loss_curves": plots.loss_curves(outcome.history, outcome.best_epoch)}
    if ev["scores"]:
        figs["score_distributions"] = plots.score_distributions(ev["machine_ids"], ev["labels"], ev["scores"], th)
        if len(set(ev["labels"])) == 2:
            aucs = {m: r["auc"] for m, r in outcome.report["per_id"].items() if "auc" in r}
            figs["roc_curves"] = plots.roc_curves(ev["machine_ids"], ev["labels"], ev["scores"], aucs)
        worst = int(np.argmax(ev["scores"]))
        if not family_of(outcome.model).reconstructs:
            return figs  # a classifier has no reconstruction to show
        lm = eval_rows[worst].logmel
        frames = outcome.config.features.frames
        with torch.no_grad():
            outcome.model.eval().cpu()
            rec = outcome.model(torch.as_tensor(windows(lm, frames)))
        n_mels = lm.shape[0]
        recon = rec.reshape(-1, frames, n_mels)[:, 0, :].T.numpy()  # each window's first frame
        figs["reconstruction"] = plots.reconstruction(
            lm[:, : recon.shape[1]], recon, f"highest-scoring eval clip (id {ev['machine_ids'][worst]})"
        )
    return figs


def register(
    svc: Services,
    outcome: Outcome,
    eval_rows: list[FeatureRow],
    tolerance: float = 0.0,
    run_id: str | None = None,
) -> tuple[str, int, Decision]:
    """Log the run (into ``run_id`` when the training opened one), register a version, promote
    it if it is no worse than the champion."""
    cfg = outcome.config
    name = model_name(cfg.machine_type, cfg.family)
    tracker = svc.tracker
    # the champion, re-scored on this same evaluation set when it uses the same features
    champion_figs = champion_official = None
    champ = tracker.champion_version(name)
    if champ is not None and eval_rows:
        try:
            current = tracker.load(name, int(champ.version))
            if current.config.features.hash == cfg.features.hash:
                rep, _ = evaluate(current.model, current.config, eval_rows, current.thresholds, folds=current.folds)
                if "auc" in rep["mean"]:
                    champion_figs = (rep["mean"]["auc"], rep["mean"]["pauc"])
                champion_official = _official_pair(rep)
        except Exception as e:  # noqa: BLE001 - fall back to the champion's stored figures
            log.warning(f"could not re-evaluate champion v{champ.version} ({e}); using its stored figures")
    figs = figures(outcome, eval_rows)
    run_id, version = tracker.log_training(
        cfg,
        outcome.model,
        outcome.history,
        outcome.thresholds,
        outcome.report,
        outcome.data,
        figs,
        {"best_epoch": outcome.best_epoch, "epochs_run": outcome.epochs_run, "train_seconds": outcome.seconds},
        run_id,
        svc.features,
        outcome.fold_models,
    )
    mean = outcome.report.get("mean", {})
    auc, pauc = mean.get("auc", float("nan")), mean.get("pauc", float("nan"))
    if not eval_rows or "auc" not in mean:
        decision = tracker.decide(name, auc, pauc, champion_figs, tolerance)
        if decision.champion_version is not None:
            decision = Decision(
                False,
                "no labelled evaluation set: champion kept",
                decision.champion_version,
                decision.champion_auc,
                decision.champion_pauc,
            )
        else:
            decision = Decision(True, "no champion yet (no evaluation set to gate on)", None, None, None)
    elif _official_pair(outcome.report) and champion_official:
        # clips with domains: the gate is the official DCASE score and the harmonic mean of pAUCs
        decision = tracker.decide(name, *_official_pair(outcome.report), champion_official, tolerance, "official score")
    else:
        decision = tracker.decide(name, auc, pauc, champion_figs, tolerance)
    if decision.promoted:
        tracker.set_champion(name, version)
    tracker.log_decision(run_id, decision)
    import json

    svc.db.record_model_version(
        {
            "model_name": name,
            "version": version,
            "family": cfg.family,
            "machine_type": cfg.machine_type,
            "mlflow_run_id": run_id,
            "feature_hash": cfg.features.hash,
            "mean_auc": mean.get("auc"),
            "mean_pauc": mean.get("pauc"),
            "champion_auc": decision.champion_auc,
            "champion_pauc": decision.champion_pauc,
            "promoted": decision.promoted,
            "decision": decision.reason,
            "thresholds": json.dumps(outcome.thresholds.finite_map()),
            "baseline": json.dumps(outcome.baseline),
        }
    )
    log.info(
        f"{name} v{version}: {'promoted to champion' if decision.promoted else 'not promoted'} ({decision.reason})"
    )
    return run_id, version, decision


def _official_pair(report: dict) -> tuple[float, float] | None:
    """(official DCASE score, harmonic mean of the sections' pAUCs) of a report, when it has them."""
    off = report.get("official") or {}
    if off.get("score") is None or "pauc" not in off.get("hmean", {}):
        return None
    return float(off["score"]), float(off["hmean"]["pauc"])


@dataclass
class RetrainResult:
    family: str
    machine_type: str
    model_version: int
    mlflow_run_id: str
    decision: Decision
    outcome: Outcome

    def summary(self) -> dict:
        """What the command line prints with ``--json`` and the retrain flow returns."""
        o = self.outcome
        return {
            "family": self.family,
            "machine_type": self.machine_type,
            "model_version": self.model_version,
            "mlflow_run_id": self.mlflow_run_id,
            "promoted": self.decision.promoted,
            "decision": self.decision.reason,
            "report": o.report,
            "epochs_run": o.epochs_run,
            "best_epoch": o.best_epoch,
        }


def retrain(
    svc: Services,
    cfg: RunConfig,
    tolerance: float = 0.0,
    ingest_progress: Callable[[int, int], None] | None = None,
    epoch_progress: Callable[[int, int, float, float], None] | None = None,
    steps: Steps = inline,
) -> RetrainResult:
    """The whole retrain: ingest ``train/`` and ``eval/`` of ``cfg.machine_type`` (plus the plant
    clips operators labelled), train and evaluate ``cfg``, register the version in MLflow and
    promote it if it is no worse than the champion (by ``tolerance`` in mean AUC)."""
    data = steps("ingest", ingest_sets, svc, cfg.machine_type, [cfg.features], ingest_progress)
    eval_rows = data.rows(cfg.features, "eval")
    # the MLflow run opens before the first epoch, and each epoch's losses log into it as they come
    run_id = svc.tracker.start_training(cfg)
    try:
        on_epoch = svc.tracker.epoch_logger(run_id, epoch_progress)
        outcome = steps("train", train_and_evaluate, cfg, data.rows(cfg.features, "train"), eval_rows, on_epoch)
        run_id, version, decision = steps("register", register, svc, outcome, eval_rows, tolerance, run_id)
    except BaseException:
        svc.tracker.end_failed(run_id)
        raise
    return RetrainResult(cfg.family, cfg.machine_type, version, run_id, decision, outcome)


def run_config(
    settings, family: str, machine_type: str, metric: str | None = None, device: str | None = None, **train
) -> RunConfig:
    """The family's default config for a command's options: the score ``metric`` (None: the
    family's), the device (None: the settings'), the thresholds' quantile from the settings
    (:meth:`~slidead.settings.Settings.threshold_quantile`), and TrainConfig values (those given
    as None are left at their defaults)."""
    from dataclasses import replace

    train = {k: v for k, v in train.items() if v is not None}
    cfg = RunConfig.default(family, machine_type, metric, device=device or settings.device, **train)
    return replace(cfg, threshold_quantile=settings.threshold_quantile())
