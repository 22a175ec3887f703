"""Flow ``retrain``: ingest train/eval, train one family, evaluate, register, promote.

Deployments ``retrain/ae``, ``retrain/vae`` and ``retrain/idclf`` run it with ``family`` set.
The job is :func:`slidead.jobs.retrain.retrain`, the same recipe ``slidead train --no-prefect``
runs; this flow makes its steps Prefect tasks (with retries) and publishes a summary artifact.
"""

from __future__ import annotations

from prefect import flow
from prefect.artifacts import create_markdown_artifact

from flows.logs import to_run_log
from flows.tasks import as_tasks
from slidead.jobs import retrain as job
from slidead.progress import Progress
from slidead.progress import epochs as epoch_progress
from slidead.settings import Settings
from slidead.store.services import Services

STEPS = as_tasks({"ingest": 2, "train": 0, "register": 1}, delay_s=5)


@flow(name="retrain", log_prints=True)
def retrain(
    family: str = "vae",
    machine_type: str = "slider",
    epochs: int | None = None,
    device: str | None = None,
    tolerance: float = 0.0,
    seed: int = 0,
    patience: int | None = None,
    metric: str | None = None,
    stream: str = "auto",
    thresholds: str | None = None,  # None: the family's (auto: conformal, docs/conformal.md)
) -> dict:
    """Train ``family`` on ``train/<machine_type>/``, evaluate on ``eval/`` (and the plant clips
    operators labelled), register, gate promotion. ``metric``: the score metric (ae/vae ``mse``
    or ``mahalanobis``; idclf ``mahalanobis`` or ``logit``), default the family's. ``stream``:
    ``auto`` (stream the training clips from the Parquet feature store when they exceed the
    memory budget), ``memory`` or ``parquet``. The library's log lines go to the run's log."""
    settings = Settings()
    cfg = job.run_config(
        settings,
        family,
        machine_type,
        metric,
        device,
        epochs=epochs,
        patience=patience,
        stream=stream,
        seed=seed,
        threshold_scheme=thresholds,
    )
    with to_run_log():
        svc = Services.from_settings(settings)
        res = job.retrain(svc, cfg, tolerance, Progress("ingest"), epoch_progress(family), steps=STEPS)
    publish(res)
    return res.summary()


def publish(res) -> None:
    """The retrain's summary as a Prefect artifact."""
    family, machine_type = res.family, res.machine_type
    mean = res.outcome.report.get("mean", {})
    create_markdown_artifact(
        key=f"retrain-{machine_type}-{family}",
        markdown=(
            f"# {family} for {machine_type}: v{res.model_version}\n\n"
            f"mean AUC {mean.get('auc', float('nan')):.4f}, pAUC {mean.get('pauc', float('nan')):.4f}\n\n"
            f"{'Promoted to champion' if res.decision.promoted else 'Not promoted'}: {res.decision.reason}\n"
        ),
        description="retrain summary",
    )
