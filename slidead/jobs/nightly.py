"""Nightly scoring: a night's drops -> features -> champion scores -> shard Parquet -> DuckDB.

The night is processed in shards of ``shard_size`` clips. Each shard's results (scores, clip
facts, rejected inputs) are written to the store as Parquet; only :func:`load_night` writes
DuckDB, in one transaction. Clips already scored by the champion version are skipped, and a
shard whose results are already in the store is loaded, not recomputed, so re-running a
night after a crash finishes the work without scoring anything twice.

One run at a time per night and family (:mod:`slidead.jobs.night_lock`); the champions come from
:mod:`slidead.jobs.champions`. :func:`run_night` is the whole night, top to bottom: take the
lease once, list the drops once and plan the shards (:func:`plan_night`), score them through a
:class:`ShardRunner` (in this process by default; the score flow passes a Dask runner), load
DuckDB once (:func:`load_night`), and record a ``runs`` row saying ``completed`` or ``failed``
with the reason. ``steps`` lets a caller wrap the plan, score and load steps (the Prefect flow
makes each a task with its retries); the recipe is the same either way.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

import pyarrow as pa

from slidead.errors import StoreError, redact
from slidead.jobs.champions import champions
from slidead.jobs.ingest import list_refs
from slidead.jobs.night_lock import night_lock
from slidead.jobs.shard_scoring import (  # noqa: F401 (the night's types and runners, by their old names too)
    LocalRunner,
    NightPlan,
    NightResult,
    ShardJob,
    ShardRunner,
    _write_rejected_only,
    run_shard,
    run_shard_on_worker,
    shard_store,
)
from slidead.jobs.shard_tables import score_shards_clips  # noqa: F401 (by its old name too)
from slidead.jobs.steps import Steps, inline
from slidead.layout import ObjectInfo, check_night
from slidead.store import alarms as alarm_store
from slidead.store.model_files import LoadedModel
from slidead.store.objects import Lease
from slidead.store.registry_read import quick_champion_version
from slidead.store.services import Services
from slidead.store.shards import shard_id
from slidead.store.tracking import model_name

log = logging.getLogger(__name__)


def plan_night(
    svc: Services,
    night: str,
    family: str,
    machine_type: str | None,
    shard_size: int,
    run_id: str,
    models: dict[str, LoadedModel] | None = None,
) -> NightPlan:
    """List the night (once), ask the registry which version is each machine type's champion,
    plan the shards still to score under it (shards whose results are already in the store are
    resumed, not planned), load the champion only where some are left (unless given), and write
    the layout-rejects shard."""
    if shard_size < 1:
        raise ValueError(f"shard_size={shard_size!r} must be >= 1")
    res = NightResult(night, run_id, family)
    infos: dict[str, ObjectInfo] = {}
    refs_all, bad_all = list_refs(svc.store, "drop", machine_type, night, infos)
    types = [machine_type] if machine_type else sorted({r.machine_type for r in refs_all})
    res.n_clips = len(refs_all) + len(bad_all)
    if not refs_all and not bad_all:
        log.info(f"night {night}: no clips under drops/{night}/")
    models = dict(models or {})
    shards = shard_store(svc)
    jobs, already = [], {}
    for mtype in types:
        name = model_name(mtype, family)
        refs = [r for r in refs_all if r.machine_type == mtype]
        # which version is the champion, asked of the registry every time; the model itself is
        # loaded only when the night has clips left for it (a re-run of a scored night needs none)
        version = models[name].version if name in models else quick_champion_version(svc.tracking_uri, name)
        if version is None:  # the quick read cannot tell: load it now (its errors are the clear ones)
            models.update(champions(svc, family, [mtype]))
            version = models[name].version
        part = _plan_machine_type(svc, res, name, version, refs, infos, shard_size)
        if part.jobs and name not in models:
            models.update(champions(svc, family, [mtype]))
            if models[name].version != version:  # promoted meanwhile: plan for the one loaded
                version = models[name].version
                part = _plan_machine_type(svc, res, name, version, refs, infos, shard_size)
        res.models[name] = version
        res.shards += part.shards
        res.n_shards_resumed += part.resumed
        already[name] = part.already
        jobs += part.jobs
        log.info(
            f"{night} {mtype}: {len(refs)} clips, scoring with {name} v{version} "
            f"({len(part.already)} clips already scored by it)"
        )
    if bad_all:  # keys that break the layout have no machine type to score with: report them once
        by_uri = {svc.store.uri_for(k): i for k, i in infos.items()}
        _write_rejected_only(shards, night, run_id, bad_all, res, by_uri)
    return NightPlan(res, jobs, models, already)


@dataclass
class _TypePlan:
    shards: list[tuple[str, str, int, str]]
    resumed: int
    jobs: list[ShardJob]
    already: frozenset


def _plan_machine_type(svc, res: NightResult, name, version, refs, infos, shard_size) -> _TypePlan:
    """One machine type's shards of the night ``res`` is the run of, under champion ``version``:
    resumed where the store holds their results, else a job to score."""
    shards, night, run_id = shard_store(svc), res.night, res.run_id
    out = _TypePlan([], 0, [], frozenset(svc.db.scored_clip_ids(name, version)))
    for start in range(0, len(refs), shard_size):
        keys = tuple(r.key for r in refs[start : start + shard_size])
        job_infos = tuple(infos.get(k, ObjectInfo(k)) for k in keys)
        sid = shard_id(list(keys), [i.tag for i in job_infos])
        out.shards.append((night, name, version, sid))
        if shards.done(night, name, version, sid) and shards.read(night, name, version, sid):
            out.resumed += 1
        else:
            out.jobs.append(ShardJob(night, name, version, keys, sid, run_id, job_infos))
    return out


def _run_shards(
    svc: Services, plan: NightPlan, runner: ShardRunner, lease: Lease, progress: Callable[[int, int], None] | None
) -> NightResult:
    t0 = time.perf_counter()
    res = plan.result
    res.engine = runner.name
    res.n_skipped = runner(svc, plan, lease, progress)  # a retried step counts its shards once
    res.seconds = time.perf_counter() - t0
    return res


def load_night(svc: Services, res: NightResult) -> NightResult:
    """Load every shard of the run into DuckDB in one transaction (the one writer): scores, clips
    and rejected inputs all go in, or none of them do. Takes the night's lock (for a caller that
    scored without :func:`run_night`, which holds it already)."""
    family = res.family or next((n.rsplit("-", 1)[-1] for n in res.models), None)
    lock = night_lock(svc, res.night, family, res.run_id) if family else contextlib.nullcontext()
    with lock:
        return _load_night(svc, res)


def _load_night(svc: Services, res: NightResult) -> NightResult:
    shards = shard_store(svc)
    scores, clips, rejected, arrivals = [], [], [], []
    prior: dict[tuple[str, int], set[str]] = {}
    for night, name, version, sid in res.shards:
        t = shards.read(night, name, version, sid)
        if t is None:
            raise StoreError(f"shard {sid} of {name} v{version} for {night} is missing or unreadable; re-run the night")
        if (name, version) not in prior:
            prior[(name, version)] = svc.db.scored_clip_ids(name, version)
        # a resumed shard may hold clips an earlier run already loaded: those count as skipped
        res.n_skipped += sum(1 for c in t["scores"].column("clip_id").to_pylist() if c in prior[(name, version)])
        scores.append(t["scores"])
        clips.append(t["clips"])
        rejected.append(t["rejected"])
        arrivals.append(t["arrivals"])
    clip_table = pa.concat_tables(clips, promote_options="permissive") if clips else ()
    rejected_table = pa.concat_tables(rejected, promote_options="permissive") if rejected else ()
    arrival_table = pa.concat_tables(arrivals, promote_options="permissive") if arrivals else ()
    new = svc.db.load_scores(scores, clip_table, rejected_table, arrival_table)
    res.n_scored = new
    res.ledger = svc.db.night_ledger_counts(res.night)
    res.n_arrivals = sum(m["arrivals"] for m in res.ledger.values())
    res.n_duplicates = sum(m["duplicates"] for m in res.ledger.values())
    res.n_rejected = len(set(rejected_table.column("uri").to_pylist())) if rejected else 0
    cols, rows = svc.db.query(
        "SELECT count(*) FROM anomalies WHERE night = ?::DATE AND list_contains(?, model_name || ':' || model_version)",
        [res.night, [f"{n}:{v}" for n, v in res.models.items()]],
    )
    res.n_flagged = int(rows[0][0])
    log.info(
        f"{res.night}: {new} new scores loaded, {res.n_skipped} already scored, "
        f"{res.n_rejected} rejected, {res.n_flagged} flagged in the night; ledger: {res.n_arrivals} arrivals, "
        f"{res.n_arrivals - res.n_duplicates - sum(m['rejected'] for m in res.ledger.values())} scored, "
        f"{res.n_duplicates} duplicates, {sum(m['rejected'] for m in res.ledger.values())} rejected"
    )
    # machine alarms follow from every night's scores: recomputed after each load, so a re-run
    # or a late night gives the same alarms (see slidead.core.alarms)
    res.alarms = alarm_store.update(svc.db, list(res.models), svc.alarms)
    for a in res.alarms:
        log.info(f"ALARM {a.kind} {a.machine_type} id {a.machine_id} (night {a.night}): {a.detail}")
    return res


def record_run(
    svc: Services, res: NightResult, family: str, status: str, started_at, detail: str | None = None
) -> None:
    name, version = next(iter(res.models.items()), (None, None))
    svc.db.record_run(
        {
            "run_id": res.run_id,
            "flow": "score",
            "night": res.night,
            "machine_type": None,
            "family": family,
            "model_name": name,
            "model_version": version,
            "status": status,
            "n_clips": res.n_clips,
            "n_scored": res.n_scored,
            "n_skipped": res.n_skipped,
            "n_rejected": res.n_rejected,
            "n_flagged": res.n_flagged,
            "started_at": started_at,
            "finished_at": dt.datetime.now(),
            "seconds": res.seconds,
            "detail": None if detail is None else redact(detail)[:1000],
        }
    )


def commission_step(svc: Services, res: NightResult) -> list[dict]:
    """After the load: machines whose provisional thresholds have heard ``svc.commission_nights``
    nights are commissioned on them (:func:`slidead.jobs.commission.commission_due`)."""
    if not res.family or svc.commission_nights < 1 or not res.models:
        return []
    from slidead.jobs.commission import commission_due

    try:
        return commission_due(svc, res.family, res.models, res.night, svc.commission_nights)
    except Exception as e:  # noqa: BLE001 - the night's scores are loaded; commissioning waits for the next night
        log.warning(
            f"commissioning skipped tonight ({type(e).__name__}: {redact(str(e))[:300]}); it is tried again next night"
        )
        return []


def run_night(
    svc: Services,
    night: str,
    family: str,
    machine_type: str | None = None,
    shard_size: int = 256,
    run_id: str | None = None,
    progress: Callable[[int, int], None] | None = None,
    lock_wait_s: float = 0.0,
    runner: ShardRunner | None = None,
    steps: Steps = inline,
) -> NightResult:
    """The whole night, top to bottom: lease, plan (list once, champions), score, load, ``runs`` row.

    On failure the run is recorded as ``failed`` with the error (when the database can be written)
    and the error is raised; shards already written stay, so a re-run resumes from them."""
    check_night(night)
    started = dt.datetime.now()
    res = NightResult(night, run_id or uuid.uuid4().hex[:12], family)
    runner = runner or LocalRunner()
    try:
        with night_lock(svc, night, family, res.run_id, lock_wait_s) as lease:
            plan = steps("plan", plan_night, svc, night, family, machine_type, shard_size, res.run_id)
            res = plan.result
            res = steps("score", _run_shards, svc, plan, runner, lease, progress)
            res = steps("load", _load_night, svc, res)
            res.commissioning = steps("commission", commission_step, svc, res)
    except Exception as e:
        with contextlib.suppress(Exception):  # a busy database must not hide the first error
            record_run(svc, res, family, "failed", started, f"{type(e).__name__}: {e}")
        raise  # the caller says it once (the command line as one sentence; a flow as its failed state)
    record_run(svc, res, family, "completed", started)
    return res
