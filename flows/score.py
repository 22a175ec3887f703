"""Flow ``score``: a night's drops -> features -> champion scores -> DuckDB.

Deployment ``score/nightly`` runs it at 02:00 with ``night`` defaulting to the night before.
The night is :func:`slidead.jobs.nightly.run_night`, the same recipe ``slidead score
--no-prefect`` runs; this flow makes its steps Prefect tasks (with retries), scores the shards
on a Dask cluster when the settings ask for one, and publishes the night as artifacts.
"""

from __future__ import annotations

import datetime as dt

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_link_artifact, create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NONE

from flows.logs import to_run_log
from flows.tasks import as_tasks
from slidead.jobs import night_report, nightly
from slidead.layout import night_before
from slidead.progress import Progress
from slidead.settings import Settings
from slidead.store.services import Services

# retries per step of the recipe: a missing champion needs a retrain, not another try
TASKS = as_tasks({"plan": 0, "score": 2, "load": 3}, delay_s=10)


def steps_for(runner):
    """How the night's steps run: each a task, but for a Dask runner the score step runs in the
    flow itself, since its fan-out is a subflow of one task per shard (with their own retries)."""

    def run(name, fn, *args, **kwargs):
        if name == "score" and runner is not None:
            return fn(*args, **kwargs)
        return TASKS(name, fn, *args, **kwargs)

    return run


@task(retries=2, retry_delay_seconds=10, cache_policy=NONE)
def score_shard(settings: Settings, job: nightly.ShardJob, already: frozenset) -> int:
    """One shard on whichever Dask worker gets it; returns the clips it skipped."""
    return nightly.run_shard_on_worker(settings, job, already)


@flow(name="score-shards", persist_result=False)
def fan_out(settings: Settings, jobs: list, already: dict) -> int:
    """Every shard a task on the Dask cluster; results land in the store as Parquet."""
    futures = [score_shard.submit(settings, job, already[job.model_name]) for job in jobs]
    return sum(f.result() for f in futures)


class DaskRunner:
    """A :class:`~slidead.jobs.nightly.ShardRunner`: the night's shards as tasks on a Dask cluster."""

    def __init__(self, settings: Settings):
        from prefect_dask import DaskTaskRunner

        self.settings = settings
        if settings.dask_address:
            self.name, self.task_runner = f"dask {settings.dask_address}", DaskTaskRunner(address=settings.dask_address)
        else:
            self.name = f"dask local x{settings.dask_workers}"
            self.task_runner = DaskTaskRunner(
                cluster_kwargs={
                    "n_workers": settings.dask_workers,
                    "threads_per_worker": 1,
                    "processes": True,
                    "dashboard_address": None,
                }
            )

    def __call__(self, svc, plan, lease, progress) -> int:
        return fan_out.with_options(task_runner=self.task_runner)(self.settings, plan.jobs, plan.already)


def shard_runner(settings: Settings):
    """The Dask runner the settings ask for, or None (the recipe's own: this process)."""
    return DaskRunner(settings) if settings.dask_address or settings.dask_workers > 0 else None


@flow(name="score", log_prints=True)
def score(
    night: str | None = None,
    family: str | None = None,
    machine_type: str | None = None,
    shard_size: int = 256,
    timezone: str | None = None,
) -> dict:
    """Score every clip of ``night`` (default: the night before) with the champion models. The
    library's log lines go to the run's log."""
    settings = Settings()
    svc = Services.from_settings(settings)
    night = night or night_before(timezone or settings.timezone)
    runner = shard_runner(settings)
    with to_run_log():
        res = nightly.run_night(
            svc,
            night,
            family or settings.family,
            machine_type,
            shard_size,
            run_id=_run_id(),
            progress=Progress("score"),
            runner=runner,
            steps=steps_for(runner),
        )
        publish(svc, res)
        summary = res.summary()
        try:  # the page for people; the night's scores stand without it
            summary["report"] = night_report.write_night_report(svc, res.night)
            create_link_artifact(
                key=f"night-report-{res.night}",
                link=_link(summary["report"]),
                link_text=f"Night {res.night}: flagged clips with pictures and sound",
                description="night report (HTML)",
            )
        except Exception as e:  # noqa: BLE001
            get_run_logger().info(f"the night report for {res.night} was not written: {e}")
    return summary


def _link(where: str) -> str:
    from pathlib import Path

    return where if "://" in where else Path(where).as_uri()


def publish(svc: Services, res: nightly.NightResult) -> None:
    """The night's flagged clips and summary as Prefect artifacts."""
    cols, rows = svc.db.query(
        "SELECT machine_type, machine_id, uri, score, threshold, ratio, explanation, peak_time_s, peak_freq_lo_hz, "
        "peak_freq_hi_hz FROM anomalies WHERE night = ?::DATE AND model_name = ANY(?) ORDER BY ratio DESC",
        [res.night, list(res.models)],
    )
    create_table_artifact(
        key=f"flagged-{res.night}",
        table=[dict(zip(cols, r)) for r in rows],
        description=f"flagged clips of night {res.night}",
    )
    create_markdown_artifact(
        key=f"night-{res.night}",
        markdown=(
            f"# Night {res.night}\n\n{res.n_clips} clips: {res.n_scored} newly scored, {res.n_skipped} "
            f"already scored, {res.n_rejected} rejected, {res.n_flagged} flagged.\n\n"
            + "".join(f"- {name} v{v}\n" for name, v in res.models.items())
            + f"\n## Ledger: {res.n_arrivals} arrivals = scored + duplicates + rejected\n\n"
            + "| machine | arrivals | scored | duplicates | rejected |\n| --- | --- | --- | --- | --- |\n"
            + "".join(
                f"| {m} | {c['arrivals']} | {c['scored']} | {c['duplicates']} | {c['rejected']} |\n"
                for m, c in res.ledger.items()
            )
            + ("\n## Machine alarms raised\n\n" if res.alarms else "")
            + "".join(f"- **{a.kind}** {a.machine_type} id {a.machine_id}: {a.detail}\n" for a in res.alarms)
        ),
        description="nightly summary",
    )


def _run_id() -> str:
    from prefect.runtime import flow_run

    return str(flow_run.id or "")[:12] or dt.datetime.now().strftime("%Y%m%d%H%M%S")
