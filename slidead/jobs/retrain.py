"""A retrain: ingest the train/eval sets, train a family, evaluate, register, promote.

:func:`retrain` is the whole job, top to bottom, the one recipe both ``slidead train
--no-prefect`` and the ``retrain`` flow run (the flow passes ``steps`` that make each step a
Prefect task). Library code: takes :class:`~slidead.store.services.Services` and values,
reports progress through callbacks and :mod:`logging`, never imports prefect. The ``train``
step, :func:`~slidead.jobs.training.train_and_evaluate`, is in :mod:`slidead.jobs.training`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from slidead.core.config import RunConfig
from slidead.core.features import FeatureConfig, windows
from slidead.core.models import family as family_by_name
from slidead.core.models import family_of
from slidead.jobs.ingest import IngestResult, ingest, list_refs
from slidead.jobs.labels import add_plant_clips
from slidead.jobs.steps import Steps, inline
from slidead.jobs.stream import StoredClips
from slidead.jobs.training import Outcome, evaluate, fold_scores, train_and_evaluate  # noqa: F401 (the steps' names)
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

    train = {k: v for k, v in train.items() if v is not None}
    cfg = RunConfig.default(family, machine_type, metric, device=device or settings.device, **train)
    if getattr(settings, "domain_statistics", False) and cfg.score.metric == "mahalanobis":
        if family_by_name(family).reconstructs:  # per-domain statistics (SLIDEAD_DOMAIN_STATISTICS)
            cfg = replace(cfg, score=replace(cfg.score, domain_statistics=True))
    return replace(cfg, threshold_quantile=settings.threshold_quantile())
