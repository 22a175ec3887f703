"""The jobs behind the command line and the demo: train, evaluate and score, either through
the Prefect flows (``use_prefect=True``) or by calling the library in this process. Each takes
:class:`~slidead.settings.Settings` and returns a plain dict (what ``--json`` prints).
"""

from __future__ import annotations

import os
import sys

from .settings import Settings


def say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _prefect_env(settings: Settings) -> None:
    """Keep Prefect's own state under SLIDEAD_HOME unless the user points it elsewhere."""
    os.environ.setdefault("PREFECT_HOME", str(settings.home_dir / "prefect"))
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "INFO")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("DO_NOT_TRACK", "1")


def _services(settings: Settings):
    from .services import Services

    return Services.from_settings(settings)


def run_retrain(settings: Settings, family: str, machine_type: str, epochs=None, device=None,
                tolerance=0.0, patience=None, use_prefect=True, stream=None, metric=None) -> dict:
    if use_prefect:
        _prefect_env(settings)
        from flows.retrain import retrain

        extra = {} if stream is None else {"stream": stream}
        if metric is not None:
            extra["metric"] = metric
        return retrain(family=family, machine_type=machine_type, epochs=epochs, device=device,
                       tolerance=tolerance, patience=patience, **extra)
    from . import retrain as steps
    from .config import RunConfig
    from .progress import Progress, epochs as epoch_progress

    svc = _services(settings)
    overrides = {"device": device or settings.device}
    if epochs is not None:
        overrides["epochs"] = epochs
    if patience is not None:
        overrides["patience"] = patience
    if stream is not None:
        overrides["stream"] = stream
    cfg = RunConfig.default(family, machine_type, metric, **overrides)
    data = steps.ingest_sets(svc, machine_type, [cfg.features], Progress("ingest", say), say)
    outcome = steps.train_and_evaluate(cfg, data.rows(cfg.features, "train"), data.rows(cfg.features, "eval"),
                                       epoch_progress(family, say), say)
    run_id, version, decision = steps.register(svc, outcome, data.rows(cfg.features, "eval"), tolerance, say)
    return {"family": family, "machine_type": machine_type, "model_version": version, "mlflow_run_id": run_id,
            "promoted": decision.promoted, "decision": decision.reason, "report": outcome.report,
            "epochs_run": outcome.epochs_run, "best_epoch": outcome.best_epoch}


def evaluate_version(settings: Settings, family: str, machine_type: str, version: int | None = None) -> dict:
    from . import retrain as steps
    from .ingest import ingest, list_refs
    from .labels import add_plant_clips
    from .tracking import model_name

    svc = _services(settings)
    loaded = svc.tracker.load(model_name(machine_type, family), version)
    refs, _ = list_refs(svc.store, "eval", machine_type)
    if not refs:
        raise SystemExit(f"no labelled clips under eval/{machine_type}/ in {svc.store.uri}")
    res = ingest(svc.store, svc.features, refs, [loaded.config.features], svc.audio)
    add_plant_clips(svc, machine_type, [loaded.config.features], res, say)
    rows = [res.features[loaded.config.features.hash][c] for c in sorted(res.features[loaded.config.features.hash])]
    report, _ = steps.evaluate(loaded.model, loaded.config, rows, loaded.thresholds)
    per_id = {mid: {k: r[k] for k in ("auc", "pauc", "precision", "recall", "f1", "accuracy") if k in r}
              for mid, r in report["per_id"].items()}
    return {"family": family, "machine_type": machine_type, "model_version": loaded.version, "per_id": per_id,
            "mean": {k: report["mean"][k] for k in ("auc", "pauc") if k in report["mean"]}}


def run_score(settings: Settings, night: str, family: str | None, machine_type=None, shard_size=256,
              use_prefect=True) -> dict:
    from .layout import check_night

    check_night(night)
    if use_prefect:
        _prefect_env(settings)
        from flows.score import score

        return score(night=night, family=family, machine_type=machine_type, shard_size=shard_size)
    from . import nightly
    from .progress import Progress

    svc = _services(settings)
    family = family or settings.family
    # the same steps as the flow: lock, champions, score, load, and a runs row (failed ones too)
    res = nightly.run_night(svc, night, family, machine_type, shard_size, progress=Progress("score", say), log=say)
    return {"night": night, "run_id": res.run_id, "models": res.models, "n_clips": res.n_clips,
            "n_scored": res.n_scored, "n_skipped": res.n_skipped, "n_rejected": res.n_rejected,
            "n_flagged": res.n_flagged, "shards_resumed": res.n_shards_resumed, "engine": "process",
            "alarms": [a.detail for a in res.alarms]}
