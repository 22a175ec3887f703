"""The thresholds' calibration scores of a training run: which scheme, and the normal scores it rests on.

:func:`calibration_scheme` says what ``TrainConfig.threshold_scheme`` comes to for a run's
clips; :func:`calibration_set` gathers the scores: ``split``, the main model's scores of the
held-out calibration clips; ``cross`` (and ``oof``), every training clip scored by a fold model
that did not train on it (:func:`_fold_scores` trains them); ``validation``, the seed's
validation split. :func:`slidead.jobs.training.train_and_evaluate` calls both.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch

from slidead.core import conformal
from slidead.core.config import RunConfig
from slidead.core.models import EPOCHS, family_of
from slidead.core.models import family as family_by_name
from slidead.core.score import fit_normal_statistics, score_logmels
from slidead.core.thresholds import MIN_FIT, SPLIT_MIN
from slidead.core.train import FrameWindows, split_clips
from slidead.errors import NotEnoughDataError
from slidead.store.features import FeatureRow

if TYPE_CHECKING:
    from slidead.jobs.training import TrainingClips

log = logging.getLogger(__name__)


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


def validation_mask(cfg: RunConfig, machine_ids, seed: int, scheme: str = "cross") -> np.ndarray:
    """Which clips early-stop (True): the validation split for a family trained in gradient
    epochs; none for a family fitted in one pass over its clips (it early-stops on nothing, so
    every clip goes into the model: with a ten-clip target domain, one clip is a tenth of what
    the model knows of it), unless the seed's gamma fit (``validation``, ``oof``) needs the
    validation clips' scores."""
    if family_by_name(cfg.family).fits != EPOCHS and scheme in ("split", "cross"):
        return np.zeros(len(machine_ids), dtype=bool)
    return split_clips(machine_ids, cfg.train.val_fraction, seed)


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
    n_main = len(rows) - int(validation_mask(cfg, ids, cfg.train.seed).sum())
    for f in range(k):
        held = [r for r, g in zip(rows, fold) if g == f]
        rest = [r for r, g in zip(rows, fold) if g != f]
        if not held or len(rest) < 2:
            raise NotEnoughDataError(
                f"{cfg.machine_type}: {len(rows)} training clips are too few for {k} calibration folds"
            )
        val = validation_mask(cfg, [r.machine_id for r in rest], cfg.train.seed + f + 1)
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
    from slidead.jobs.training import fit_as_declared, stats_rows  # they train the main model too

    torch.manual_seed(cfg.train.seed)
    model = cfg.build_model()
    fam = family_of(model)
    frames, stride = cfg.features.frames, fam.hop(model)
    tr_rows, va_rows = [row_of[r.machine_id] for r in tr], [row_of[r.machine_id] for r in va]
    x_train = FrameWindows([r.logmel for r in tr], frames, tr_rows if fam.learns_ids else None, stride)
    x_val = FrameWindows([r.logmel for r in va], frames, va_rows if fam.learns_ids else None, stride)
    fit_as_declared(model, tr, x_train, x_val, cfg)
    if fam.needs_statistics(cfg.score.metric):
        stats_classes, rows_of = stats_rows(cfg, classes, tr, tr_rows)
        fit_normal_statistics(model, x_train.with_labels(rows_of), stats_classes, cfg.score, device)
    return model
