"""Flow ``retrain``: ingest train/eval, train one family, evaluate, register, promote.

Deployments ``retrain/ae`` and ``retrain/vae`` run it with ``family`` set.
"""

from __future__ import annotations

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NONE

from slidead import retrain as steps
from slidead.config import RunConfig
from slidead.features import for_family
from slidead.progress import Progress, epochs
from slidead.services import Services
from slidead.settings import Settings


@task(retries=2, retry_delay_seconds=5, cache_policy=NONE)
def ingest_sets(svc: Services, machine_type: str, family: str) -> steps.DataSets:
    log = get_run_logger().info
    return steps.ingest_sets(svc, machine_type, [for_family(family)], Progress("ingest", log), log)


@task(cache_policy=NONE)
def train(cfg: RunConfig, data: steps.DataSets) -> steps.Outcome:
    log = get_run_logger().info
    return steps.train_and_evaluate(cfg, data.rows(cfg.features, "train"), data.rows(cfg.features, "eval"),
                                    epochs(cfg.family, log), log)


@task(retries=1, retry_delay_seconds=5, cache_policy=NONE)
def register(svc: Services, outcome: steps.Outcome, data: steps.DataSets, tolerance: float):
    return steps.register(svc, outcome, data.rows(outcome.config.features, "eval"), tolerance, get_run_logger().info)


@flow(name="retrain", log_prints=True)
def retrain(family: str = "vae", machine_type: str = "slider", epochs: int | None = None,
            device: str | None = None, tolerance: float = 0.0, seed: int = 0, patience: int | None = None,
            metric: str | None = None, stream: str = "auto") -> dict:
    """Train ``family`` on ``train/<machine_type>/``, evaluate on ``eval/`` (and the plant clips
    operators labelled), register, gate promotion. ``metric``: the score metric (ae/vae ``mse``
    or ``mahalanobis``; idclf ``mahalanobis`` or ``logit``), default the family's. ``stream``:
    ``auto`` (stream the training clips from the Parquet feature store when they exceed the
    memory budget), ``memory`` or ``parquet``."""
    settings = Settings()
    svc = Services.from_settings(settings)
    overrides = {"device": device or settings.device, "seed": seed, "stream": stream}
    if epochs is not None:
        overrides["epochs"] = epochs
    if patience is not None:
        overrides["patience"] = patience
    cfg = RunConfig.default(family, machine_type, metric, **overrides)
    data = ingest_sets(svc, machine_type, family)
    outcome = train(cfg, data)
    run_id, version, decision = register(svc, outcome, data, tolerance)
    summary = {"family": family, "machine_type": machine_type, "model_version": version, "mlflow_run_id": run_id,
               "promoted": decision.promoted, "decision": decision.reason, "report": outcome.report,
               "epochs_run": outcome.epochs_run, "best_epoch": outcome.best_epoch}
    mean = outcome.report.get("mean", {})
    create_markdown_artifact(
        key=f"retrain-{machine_type}-{family}",
        markdown=(f"# {family} for {machine_type}: v{version}\n\n"
                  f"mean AUC {mean.get('auc', float('nan')):.4f}, pAUC {mean.get('pauc', float('nan')):.4f}\n\n"
                  f"{'Promoted to champion' if decision.promoted else 'Not promoted'}: {decision.reason}\n"),
        description="retrain summary")
    return summary
