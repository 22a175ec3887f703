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
import dataclasses
import datetime as dt
import functools
import logging
import os
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import pyarrow as pa

from slidead.core.explain import sentence
from slidead.errors import NightBusyError, StoreError, redact
from slidead.jobs.champions import champions
from slidead.jobs.ingest import arrival, ingest, list_refs
from slidead.jobs.night_lock import night_lock
from slidead.jobs.steps import Steps, inline
from slidead.layout import ObjectInfo, check_night, parse_key
from slidead.store import alarms as alarm_store
from slidead.store.model_files import LoadedModel
from slidead.store.objects import Lease
from slidead.store.registry_read import quick_champion_version
from slidead.store.results import ARRIVAL_COLUMNS, CLIP_COLUMNS, REJECTED_COLUMNS
from slidead.store.services import Services
from slidead.store.shards import ShardStore, shard_id
from slidead.store.tracking import model_name

log = logging.getLogger(__name__)

_SCORE_SCHEMA = pa.schema(
    [
        ("clip_id", pa.string()),
        ("model_name", pa.string()),
        ("model_version", pa.int32()),
        ("family", pa.string()),
        ("night", pa.string()),
        ("machine_type", pa.string()),
        ("machine_id", pa.string()),
        ("score", pa.float64()),
        ("threshold", pa.float64()),
        ("is_anomaly", pa.bool_()),
        ("peak_time_s", pa.float64()),
        ("peak_freq_lo_hz", pa.float64()),
        ("peak_freq_hi_hz", pa.float64()),
        ("run_id", pa.string()),
        ("explanation", pa.string()),
        ("p_value", pa.float64()),  # the calibration's p-value (conformal: rank among normal scores)
        ("provisional", pa.bool_()),  # the machine's threshold rests on training clips only
    ]
)
_CLIP_SCHEMA = pa.schema(
    [
        (c, pa.int32() if c in ("sample_rate", "channels") else pa.float64() if c == "duration_s" else pa.string())
        for c in CLIP_COLUMNS
    ]
)
_REJ_SCHEMA = pa.schema([(c, pa.string()) for c in REJECTED_COLUMNS])
_ARRIVAL_SCHEMA = pa.schema([(c, pa.int64() if c == "size_bytes" else pa.string()) for c in ARRIVAL_COLUMNS])


@dataclass
class NightResult:
    night: str
    run_id: str
    family: str | None = None
    models: dict[str, int] = field(default_factory=dict)  # model name -> version used
    n_clips: int = 0  # objects listed under the night's drop folder
    n_scored: int = 0  # new score rows this run loaded
    n_skipped: int = 0
    n_rejected: int = 0
    n_flagged: int = 0
    # the night's ledger after the load (every arrival, every run so far): arrivals = scored +
    # duplicates + rejected, per machine in ``ledger`` ({"slider/00": {"arrivals": .., ...}})
    n_arrivals: int = 0
    n_duplicates: int = 0
    ledger: dict[str, dict[str, int]] = field(default_factory=dict)
    n_shards_resumed: int = 0
    seconds: float = 0.0
    shards: list[tuple[str, str, int, str]] = field(default_factory=list)  # (night, model, version, shard)
    alarms: list = field(default_factory=list)  # machine alarms this run raised (slidead.core.alarms.Alarm)
    commissioning: list = field(default_factory=list)  # the commissioning step's decisions (slidead.jobs.commission)
    engine: str = "process"  # where the shards were scored (the runner's name)

    def summary(self) -> dict:
        """What the command line prints with ``--json`` and the score flow returns."""
        return {
            "night": self.night,
            "run_id": self.run_id,
            "models": self.models,
            "n_clips": self.n_clips,
            "n_scored": self.n_scored,
            "n_skipped": self.n_skipped,
            "n_rejected": self.n_rejected,
            "n_flagged": self.n_flagged,
            "n_arrivals": self.n_arrivals,
            "n_duplicates": self.n_duplicates,
            "ledger": self.ledger,
            "shards_resumed": self.n_shards_resumed,
            "engine": self.engine,
            "alarms": [a.detail for a in self.alarms],
            "commissioning": self.commissioning,
        }


def shard_store(svc: Services) -> ShardStore:
    fs = svc.features
    return ShardStore(fs.fs, fs.root.rsplit("/", 1)[0] + "/results")


@dataclass(frozen=True)
class ShardJob:
    """One shard of a night for one model version: what a worker anywhere needs to score it."""

    night: str
    model_name: str
    model_version: int
    keys: tuple[str, ...]
    shard: str
    run_id: str
    infos: tuple[ObjectInfo, ...] = ()  # each key's size and tag, from the night's one listing


@dataclass
class NightPlan:
    """A night listed once: the result so far, the shards still to score, the champion models,
    and per model the clip IDs it has already scored."""

    result: NightResult
    jobs: list[ShardJob]
    models: dict[str, LoadedModel]
    already: dict[str, frozenset]
    finished: set[str] = field(default_factory=set)  # shards scored so far (a retried step skips them)
    skipped: int = 0  # clips those shards skipped (already scored)


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


class ShardRunner(Protocol):
    """Scores a night's planned shards, writing each one's results to the store; returns how
    many clips it skipped (already scored). ``name`` is what the run reports as its engine."""

    name: str

    def __call__(
        self, svc: Services, plan: NightPlan, lease: Lease, progress: Callable[[int, int], None] | None
    ) -> int: ...


def _lost(plan: NightPlan) -> NightBusyError:
    res = plan.result
    return NightBusyError(
        f"night {res.night} ({res.family}): run {res.run_id} lost its lock to another run "
        "(no heartbeat for longer than its ttl); stopping. The shards written so far are kept."
    )


class LocalRunner:
    """Every shard in this process, on the configured device, as a pipeline: while one shard is
    scored and written, the next one is read, hashed and featured (threads), so the network,
    the features and the model overlap. On the CPU the model runs on one torch thread per core
    over a share of the shard's clips each (:func:`score_shards_clips`): on a busy machine two
    OpenMP threads on one batch were twice as slow as one, and nothing spins while it waits.
    At most one shard's features wait ahead of the one being scored."""

    name = "process"

    def __call__(
        self, svc: Services, plan: NightPlan, lease: Lease, progress: Callable[[int, int], None] | None
    ) -> int:
        if not plan.jobs:  # a night already scored: no device, no torch
            return 0
        from concurrent.futures import ThreadPoolExecutor

        from slidead.core.train import resolve_device

        device = resolve_device(svc.device)
        total, done = sum(len(j.keys) for j in plan.jobs), 0
        todo = [j for j in plan.jobs if j.shard not in plan.finished]

        def ingest_job(job: ShardJob):
            res = NightResult(job.night, job.run_id)
            ing = _ingest_shard(svc, plan.models[job.model_name], job, plan.already[job.model_name], device, res)
            return res, ing

        with _one_torch_thread(device), ThreadPoolExecutor(1, thread_name_prefix="slidead-ahead") as ahead:
            nxt = ahead.submit(ingest_job, todo[0]) if todo else None
            for job in plan.jobs:
                if job.shard not in plan.finished:
                    if lease.lost:
                        nxt.cancel()
                        raise _lost(plan)
                    res, ing = nxt.result()
                    k = todo.index(job)
                    nxt = ahead.submit(ingest_job, todo[k + 1]) if k + 1 < len(todo) else None
                    loaded = plan.models[job.model_name]
                    tables = _shard_tables(loaded, ing, job.run_id, device, parts=_cores(device))
                    shard_store(svc).write(job.night, job.model_name, job.model_version, job.shard, tables)
                    plan.skipped += res.n_skipped
                    plan.finished.add(job.shard)
                done += len(job.keys)
                if progress:
                    progress(done, total)
        return plan.skipped


def _cores(device) -> int:
    """How many parts a shard's clips are scored in at once: one per usable core on the CPU."""
    if getattr(device, "type", str(device)) != "cpu":
        return 1
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


@contextlib.contextmanager
def _one_torch_thread(device):
    """torch on one intra-op thread while a night is scored on the CPU (the pipeline's threads
    give the parallelism); the caller's setting is restored after."""
    if getattr(device, "type", str(device)) != "cpu":
        yield
        return
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


def _run_shards(
    svc: Services, plan: NightPlan, runner: ShardRunner, lease: Lease, progress: Callable[[int, int], None] | None
) -> NightResult:
    t0 = time.perf_counter()
    res = plan.result
    res.engine = runner.name
    res.n_skipped = runner(svc, plan, lease, progress)  # a retried step counts its shards once
    res.seconds = time.perf_counter() - t0
    return res


def run_shard(svc: Services, job: ShardJob, loaded: LoadedModel, already: frozenset, device=None) -> int:
    """Score one shard and write its results to the store; returns how many clips it skipped."""
    from slidead.core.train import resolve_device

    res = NightResult(job.night, job.run_id)
    device = device or resolve_device(svc.device)
    infos = {i.key: i for i in job.infos}
    tables = _score_shard(svc, loaded, [parse_key(k) for k in job.keys], already, device, res, infos)
    shard_store(svc).write(job.night, job.model_name, job.model_version, job.shard, tables)
    return res.n_skipped


@functools.lru_cache(maxsize=8)
def _worker_model(tracking_uri: str, artifact_root: str | None, name: str, version: int) -> LoadedModel:
    from slidead.store.tracking import Tracker

    return Tracker(tracking_uri, artifact_root).load(name, version)


def run_shard_on_worker(settings, job: ShardJob, already: frozenset) -> int:
    """:func:`run_shard` for a worker process on any machine: builds its own services from
    ``settings`` and loads the model version once per process from the registry."""
    svc = Services.from_settings(settings)
    loaded = _worker_model(svc.tracking_uri, svc.artifact_root, job.model_name, job.model_version)
    return run_shard(svc, job, loaded, already)


def _score_shard(svc, loaded: LoadedModel, refs, already, device, res: NightResult, infos=None) -> dict[str, pa.Table]:
    ing = _ingest(svc, loaded, refs, already, device, res, infos)
    return _shard_tables(loaded, ing, res.run_id, device)


def _ingest_shard(svc, loaded: LoadedModel, job: ShardJob, already, device, res: NightResult):
    infos = {i.key: i for i in job.infos}
    return _ingest(svc, loaded, [parse_key(k) for k in job.keys], already, device, res, infos)


def _ingest(svc, loaded: LoadedModel, refs, already, device, res: NightResult, infos=None):
    """Read, hash and feature a shard's clips (the champion's feature config); counts the skipped."""
    ing = ingest(
        svc.store,
        svc.features,
        refs,
        [loaded.config.features],
        svc.audio,
        skip_ids=already,
        device=str(device),
        infos=infos,
        workers=max(4, min(16, 2 * _cores("cpu"))),  # reads, hashes and decodes: more cores, more at once
    )
    res.n_skipped += ing.n_skipped
    return ing


def score_shards_clips(loaded: LoadedModel, logmels, machine_ids, device, parts: int = 1):
    """:func:`~slidead.core.score.score_logmels` of the clips, in ``parts`` contiguous shares
    scored at once on threads (each share's windows batched as score_logmels batches them);
    the same scores as one call."""
    from concurrent.futures import ThreadPoolExecutor

    from slidead.core.score import ClipScores, score_logmels

    cfg = loaded.config
    n = len(logmels)
    parts = max(1, min(parts, n // 8))  # a few clips are not worth a thread
    # the windows in flight stay those of one batch: each share gets its part of the budget
    config = dataclasses.replace(cfg.score, batch_windows=max(1, cfg.score.batch_windows // parts))

    def score(lo: int, hi: int) -> ClipScores:
        return score_logmels(
            loaded.model,
            logmels[lo:hi],
            cfg.features,
            config,
            device,
            machine_ids[lo:hi],
            loaded.thresholds.band_error,
        )

    if parts == 1:
        return score(0, n)
    cuts = [n * p // parts for p in range(parts + 1)]
    with ThreadPoolExecutor(parts, thread_name_prefix="slidead-score") as pool:
        shares = list(pool.map(score, cuts[:-1], cuts[1:]))
    return ClipScores(
        **{
            f.name: None if getattr(shares[0], f.name) is None else np.concatenate([getattr(s, f.name) for s in shares])
            for f in dataclasses.fields(ClipScores)
        }
    )


def _shard_tables(loaded: LoadedModel, ing, run_id, device, parts: int = 1) -> dict[str, pa.Table]:
    """A featured shard scored by ``loaded``: its scores, clips, rejected and arrivals tables."""
    from slidead.core.models import family_of  # torch: only when there are clips to score
    from slidead.core.score import fold_scores

    cfg = loaded.config
    rows = ing.features[cfg.features.hash]
    ids = [c["clip_id"] for c in ing.clips if c["clip_id"] in rows]
    refs_by_id = ing.refs
    # machine IDs: the ID classifier scores how unlikely a clip's own ID is; the AE/VAE ignore them
    sc = score_shards_clips(
        loaded, [rows[i].logmel for i in ids], [refs_by_id[i].machine_id for i in ids], device, parts
    )
    machine_ids = [refs_by_id[i].machine_id for i in ids]
    th = loaded.thresholds
    thr = [th.for_id(m) for m in machine_ids]
    # infinite: nothing can be flagged; cross-conformal: the flag is the fold models' p-value, and no
    # threshold on the main model's score says it (a ratio to one would mislead)
    cross = {m for m, f in th.per_id.items() if f.method == "cross-conformal"}
    conformal_ids = {m for m, f in th.per_id.items() if f.conformal}
    thr = [None if t is None or not np.isfinite(t) or m in cross else t for t, m in zip(thr, machine_ids)]
    fold_sc = None
    if ids and th.n_folds and loaded.folds:  # cross-conformal: each clip under each fold model too
        fold_sc = fold_scores(loaded.folds, [rows[i].logmel for i in ids], cfg, machine_ids, device)
    p_value, flags = th.decide(machine_ids, sc.score, fold_sc) if ids else (np.zeros(0), np.zeros(0, dtype=bool))
    flagged = [bool(f) for f in flags]
    provisional = [bool(th.per_id[m].provisional) if m in th.per_id else True for m in machine_ids]
    what = "error" if family_of(loaded.model).reconstructs else "deviation"
    explanation = [
        sentence(
            float(sc.score[k]),
            thr[k],
            sc.span_start_s[k],
            sc.span_end_s[k],
            sc.span_freq_lo_hz[k],
            sc.span_freq_hi_hz[k],
            what,
        )
        + (f", p = {p_value[k]:.2g}" if machine_ids[k] in conformal_ids and np.isfinite(p_value[k]) else "")
        if flagged[k]
        else None
        for k in range(len(ids))
    ]
    scores = pa.table(
        {
            "clip_id": ids,
            "model_name": [loaded.name] * len(ids),
            "model_version": [loaded.version] * len(ids),
            "family": [cfg.family] * len(ids),
            "night": [refs_by_id[i].night for i in ids],
            "machine_type": [refs_by_id[i].machine_type for i in ids],
            "machine_id": [refs_by_id[i].machine_id for i in ids],
            "score": sc.score.astype(np.float64),
            "threshold": thr,
            "is_anomaly": flagged,
            "peak_time_s": sc.peak_time_s,
            "peak_freq_lo_hz": sc.peak_freq_lo_hz,
            "peak_freq_hi_hz": sc.peak_freq_hi_hz,
            "run_id": [run_id] * len(ids),
            "explanation": explanation,
            "p_value": np.asarray(p_value, dtype=np.float64),
            "provisional": provisional,
        },
        schema=_SCORE_SCHEMA,
    )
    rejected = [dict(r, run_id=run_id) for r in ing.rejected]
    arrivals = [dict(a, run_id=run_id) for a in ing.arrivals]
    return {
        "scores": scores,
        "clips": _table(ing.clips, _CLIP_SCHEMA),
        "rejected": _table(rejected, _REJ_SCHEMA),
        "arrivals": _table(arrivals, _ARRIVAL_SCHEMA),
    }


def _write_rejected_only(shards: ShardStore, night, run_id, bad, res: NightResult, by_uri=None) -> None:
    """The keys that break the layout (no machine type to score with), as one shard: their
    rejected rows and their arrivals. ``by_uri``: the listing's ObjectInfo per uri."""
    rows = [dict(r, run_id=run_id) for r in bad]
    arrivals = [
        dict(
            arrival(r["uri"], night, None, None, (by_uri or {}).get(r["uri"]), reason=r["reason"], detail=r["detail"]),
            run_id=run_id,
        )
        for r in bad
    ]
    sid = shard_id([r["uri"] for r in bad], [a["etag"] for a in arrivals])
    empty = _SCORE_SCHEMA.empty_table()
    shards.write(
        night,
        "_layout",
        0,
        sid,
        {
            "scores": empty,
            "clips": _table([], _CLIP_SCHEMA),
            "rejected": _table(rows, _REJ_SCHEMA),
            "arrivals": _table(arrivals, _ARRIVAL_SCHEMA),
        },
    )
    res.shards.append((night, "_layout", 0, sid))


def _table(rows: list[dict], schema: pa.Schema) -> pa.Table:
    cols = {}
    for f in schema:
        vals = [r.get(f.name) for r in rows]
        if pa.types.is_string(f.type):
            vals = [None if v is None else str(v) for v in vals]
        cols[f.name] = pa.array(vals, type=f.type)
    return pa.table(cols, schema=schema)


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
