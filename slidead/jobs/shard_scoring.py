"""Scoring a night's shards: the plan's types, the shards' Arrow tables, and who scores them.

:class:`NightResult` is a night's run so far, :class:`ShardJob` one shard to score, and
:class:`NightPlan` the night listed once (:func:`slidead.jobs.nightly.plan_night` makes it). A
:class:`ShardRunner` scores the planned shards, each shard's results written to the store as
Parquet (:func:`shard_store`): :class:`LocalRunner` in this process (a pipeline: the next shard
read and featured while one is scored), or the score flow's Dask runner, whose workers call
:func:`run_shard_on_worker`. A featured shard's tables are :mod:`slidead.jobs.shard_tables`'. The night itself (plan,
load, the ``runs`` row) is :mod:`slidead.jobs.nightly`.
"""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import pyarrow as pa

from slidead.errors import NightBusyError
from slidead.jobs.ingest import arrival, ingest
from slidead.jobs.shard_tables import (
    _ARRIVAL_SCHEMA,
    _CLIP_SCHEMA,
    _REJ_SCHEMA,
    _SCORE_SCHEMA,
    _shard_tables,
    _table,
)
from slidead.layout import ObjectInfo, parse_key
from slidead.store.model_files import LoadedModel
from slidead.store.objects import Lease
from slidead.store.services import Services
from slidead.store.shards import ShardStore, shard_id


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
