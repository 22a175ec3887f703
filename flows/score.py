"""Flow ``score``: a night's drops -> features -> champion scores -> DuckDB.

Deployment ``score/nightly`` runs it at 02:00 with ``night`` defaulting to the night before.
The flow holds the night's lock for the whole run (a second run of the same night and family
stops with a message naming the first), and records every run, completed or failed, in ``runs``.
"""

from __future__ import annotations

import datetime as dt
import time

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NONE

from slidead import nightly
from slidead.progress import Progress
from slidead.services import Services
from slidead.settings import Settings


@task(cache_policy=NONE)
def champions(svc: Services, night: str, family: str, machine_type: str | None) -> dict:
    """No retries: a missing champion needs a retrain, not another try."""
    return nightly.champions(svc, night, family, machine_type)


@task(retries=2, retry_delay_seconds=10, cache_policy=NONE)
def score_shards(svc: Services, night: str, family: str, machine_type: str | None, shard_size: int, run_id: str,
                 models: dict):
    log = get_run_logger().info
    return nightly.score_night(svc, night, family, machine_type, shard_size, run_id, Progress("score", log), log,
                               models)


@task(retries=3, retry_delay_seconds=10, cache_policy=NONE)
def load(svc: Services, res: nightly.NightResult) -> nightly.NightResult:
    return nightly.load_night(svc, res, get_run_logger().info)


@task(retries=2, retry_delay_seconds=10, cache_policy=NONE)
def score_shard(settings: Settings, job: nightly.ShardJob, already: frozenset) -> int:
    """One shard on whichever Dask worker gets it; returns the clips it skipped."""
    return nightly.run_shard_on_worker(settings, job, already)


@flow(name="score-shards", persist_result=False)
def fan_out(settings: Settings, jobs: list, already: dict) -> int:
    """Every shard a task on the Dask cluster; results land in the store as Parquet."""
    futures = [score_shard.submit(settings, job, already[job.model_name]) for job in jobs]
    return sum(f.result() for f in futures)


def dask_runner(settings: Settings):
    """The distributed task runner the settings ask for, or None for a single process."""
    if not settings.dask_address and settings.dask_workers <= 0:
        return None
    from prefect_dask import DaskTaskRunner

    if settings.dask_address:
        return DaskTaskRunner(address=settings.dask_address)
    return DaskTaskRunner(cluster_kwargs={"n_workers": settings.dask_workers, "threads_per_worker": 1,
                                          "processes": True, "dashboard_address": None})


def yesterday(tz: str | None = None) -> str:
    from zoneinfo import ZoneInfo

    now = dt.datetime.now(ZoneInfo(tz)) if tz else dt.datetime.now()
    return (now.date() - dt.timedelta(days=1)).isoformat()


@flow(name="score", log_prints=True)
def score(night: str | None = None, family: str | None = None, machine_type: str | None = None,
          shard_size: int = 256, timezone: str | None = None) -> dict:
    """Score every clip of ``night`` (default: the night before) with the champion models."""
    settings = Settings()
    svc = Services.from_settings(settings)
    night = night or yesterday(timezone)
    family = family or settings.family
    started = dt.datetime.now()
    res = nightly.NightResult(night, _run_id(), family)
    engine = "process"
    try:
        with nightly.night_lock(svc, night, family, res.run_id):
            models = champions(svc, night, family, machine_type)
            runner = dask_runner(settings)
            engine = "process" if runner is None else (
                f"dask {settings.dask_address}" if settings.dask_address else f"dask local x{settings.dask_workers}")
            if runner is None:
                res = score_shards(svc, night, family, machine_type, shard_size, res.run_id, models)
            else:
                res, jobs, already = nightly.plan_night(svc, night, family, machine_type, shard_size, res.run_id,
                                                        models, get_run_logger().info)
                t0 = time.perf_counter()
                res.n_skipped += fan_out.with_options(task_runner=runner)(settings, jobs, already)
                res.seconds = time.perf_counter() - t0
            res = load(svc, res)
    except Exception as e:
        try:
            nightly.record_run(svc, res, family, "failed", started, f"{type(e).__name__}: {e}")
        except Exception as busy:  # e.g. the database is held open: say so, but raise the first error
            get_run_logger().warning(f"could not record the failed run: {type(busy).__name__}: {busy}")
        raise
    nightly.record_run(svc, res, family, "completed", started)
    cols, rows = svc.db.query(
        "SELECT machine_type, machine_id, uri, score, threshold, ratio, explanation, peak_time_s, peak_freq_lo_hz, "
        "peak_freq_hi_hz FROM anomalies WHERE night = ?::DATE AND model_name = ANY(?) ORDER BY ratio DESC",
        [night, list(res.models)])
    create_table_artifact(key=f"flagged-{night}", table=[dict(zip(cols, r)) for r in rows],
                          description=f"flagged clips of night {night}")
    create_markdown_artifact(
        key=f"night-{night}",
        markdown=(f"# Night {night}\n\n{res.n_clips} clips: {res.n_scored} newly scored, {res.n_skipped} "
                  f"already scored, {res.n_rejected} rejected, {res.n_flagged} flagged.\n\n"
                  + "".join(f"- {name} v{v}\n" for name, v in res.models.items())
                  + ("\n## Machine alarms raised\n\n" if res.alarms else "")
                  + "".join(f"- **{a.kind}** {a.machine_type} id {a.machine_id}: {a.detail}\n" for a in res.alarms)),
        description="nightly summary")
    return {"night": night, "run_id": res.run_id, "models": res.models, "n_clips": res.n_clips,
            "n_scored": res.n_scored, "n_skipped": res.n_skipped, "n_rejected": res.n_rejected,
            "n_flagged": res.n_flagged, "shards_resumed": res.n_shards_resumed, "engine": engine,
            "alarms": [a.detail for a in res.alarms]}


def _run_id() -> str:
    from prefect.runtime import flow_run

    return str(flow_run.id or "")[:12] or dt.datetime.now().strftime("%Y%m%d%H%M%S")
