"""Ingest: list clips in the store, read each once, hash, decode, and compute features.

``ingest(store, features, refs, configs)`` reads every clip once (into memory, no temp
files), names it by the SHA-256 of its bytes (``clip_id``), reuses features already in the
Parquet store for that clip and config, decodes the rest once and computes every requested
feature config from the same audio. The feature config decides the channel and sample rate it
is computed from (and the shortest audio it accepts); configs that agree share one decode.
Unscorable clips become ``rejected`` rows with a reason; nothing raises for a bad clip. New
features go to the store every ``FLUSH_CLIPS`` clips, and ``keep_features=False`` returns no
log-mels (``features`` stays empty; ``refs`` names every clip that has them in the store), so
memory does not grow with the number of clips. The first call caps glibc's malloc arenas at
``MALLOC_ARENAS`` for the process (see :func:`cap_malloc_arenas`). A store that fails (:class:`~slidead.errors.StoreError`: unreachable, 5xx after retries) is not a
bad clip: ingest stops and raises it, so that no clip is marked unreadable for the store's sake.
"""

from __future__ import annotations

import ctypes
import dataclasses
import io
import os
import sys
from collections import defaultdict, deque
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import soundfile as sf

from slidead.core.audio import HEAD_BYTES, AudioConfig, decode, oversized
from slidead.core.conditions import ClipConditions, parse_name
from slidead.errors import AudioError, LayoutError, StoreError
from slidead.jobs.sidecars import is_drop_sidecar, night_conditions, sidecar_rows, with_sidecar
from slidead.layout import ClipRef, ObjectInfo, parse_key, prefix
from slidead.store.features import FeatureRow, FeatureStore, partition
from slidead.store.objects import ObjectStore, ObjectTooLarge, get_hashed, list_info

if TYPE_CHECKING:  # torch and torchaudio load when clips are featured, not when a night is listed
    from slidead.core.features import FeatureConfig

FLUSH_CLIPS = 256  # new feature rows written to the store at a time (one Parquet file)
MALLOC_ARENAS = 2  # glibc malloc arenas for the process (see cap_malloc_arenas)
_M_ARENA_MAX = -8  # mallopt's parameter number, from glibc's malloc.h
_arenas_capped: bool | None = None


def cap_malloc_arenas(n: int = MALLOC_ARENAS) -> bool:
    """Cap the process's glibc malloc arenas at ``n``, once; True if this call set it.

    glibc gives threads that allocate at once their own arenas (up to 8 per core), and an arena
    keeps what was freed in it for reuse. Ingest's worker threads each decode audio and compute
    log-mels, so every arena ends up holding a shard's worth of freed buffers, and a night's RSS
    creeps up shard after shard: measured over a 10,000-clip night, 1.09 GB after 4 shards and
    1.44 GB after 30, 1.48 GB peak; with two arenas 0.92-0.97 GB throughout, 1.17 GB peak, at the
    same speed. Does nothing when ``MALLOC_ARENA_MAX`` is set in the environment (glibc has
    applied it) or off glibc."""
    global _arenas_capped
    if _arenas_capped is not None:
        return False
    _arenas_capped = False
    if os.environ.get("MALLOC_ARENA_MAX") or not sys.platform.startswith("linux"):
        return False
    try:
        _arenas_capped = bool(ctypes.CDLL("libc.so.6").mallopt(_M_ARENA_MAX, int(n)))
    except (OSError, AttributeError):  # not glibc (musl has no mallopt)
        pass
    return _arenas_capped


@dataclass
class IngestResult:
    clips: list[dict] = field(default_factory=list)  # rows for the clips table
    rejected: list[dict] = field(default_factory=list)  # rows for the rejected table
    features: dict[str, dict[str, FeatureRow]] = field(default_factory=dict)  # config hash -> clip_id -> row
    refs: dict[str, ClipRef] = field(default_factory=dict)  # clip_id -> where it was
    arrivals: list[dict] = field(default_factory=list)  # one per ref: what arrived, its bytes' clip_id or why rejected
    n_reused: int = 0
    n_skipped: int = 0
    n_duplicates: int = 0


def list_refs(
    store: ObjectStore,
    split: str,
    machine_type: str | None = None,
    night: str | None = None,
    infos: dict[str, ObjectInfo] | None = None,
) -> tuple[list[ClipRef], list[dict]]:
    """Clips under a split's prefix, and a rejected row for each key that breaks the layout.
    ``infos``, when given, receives each listed key's size and tag (from the same listing)."""
    refs, rejected, sidecars = [], [], []
    for info in list_info(store, prefix(split, machine_type, night)):
        if infos is not None:
            infos[info.key] = info
        try:
            refs.append(parse_key(info.key))
        except LayoutError as e:
            if is_drop_sidecar(info.key):  # conditions beside a night's clips: a row of its own
                sidecars.append(info.key)
                continue
            rejected.append({"uri": store.uri_for(info.key), "night": night, "reason": "bad_key", "detail": str(e)})
    return refs, rejected + sidecar_rows(store, sidecars, {r.key for r in refs}, night)


def arrival(uri: str, night, machine_type, machine_id, info: ObjectInfo | None, size=None, **fate) -> dict:
    """A row of the night's ledger (the ``drops`` table) before its fate is decided at load:
    ``fate`` holds ``clip_id`` (the bytes' SHA-256) or ``reason``/``detail`` (rejected)."""
    return {
        "night": night,
        "uri": uri,
        "machine_type": machine_type,
        "machine_id": machine_id,
        "size_bytes": info.size if info is not None and info.size is not None else size,
        "etag": info.tag if info is not None else None,
        "clip_id": fate.get("clip_id"),
        "reason": fate.get("reason"),
        "detail": fate.get("detail"),
    }


def _rejected(store, ref: ClipRef, reason: str, detail: str, clip_id=None) -> dict:
    return {
        "uri": store.uri_for(ref.key),
        "night": ref.night,
        "machine_type": ref.machine_type,
        "machine_id": ref.machine_id,
        "reason": reason,
        "detail": detail,
        "clip_id": clip_id,
    }


def conditions_of(ref: ClipRef, sidecars: dict | None = None) -> ClipConditions:
    """What the clip's file name (and, for a night's clip, its sidecars: :mod:`.sidecars`) says of
    its section, domain and operating conditions."""
    return with_sidecar(parse_name(ref.key.rsplit("/", 1)[-1]), (sidecars or {}).get(ref.key))


def _clip_row(store, ref: ClipRef, clip_id: str, rate, channels, duration, note, sidecars=None) -> dict:
    cond = conditions_of(ref, sidecars)
    if cond.problem:  # the clip is scored as one without conditions; the note says why
        note = f"{note}; {cond.problem}" if note else cond.problem
    return {
        "clip_id": clip_id,
        "uri": store.uri_for(ref.key),
        "night": ref.night,
        "split": ref.split,
        "machine_type": ref.machine_type,
        "machine_id": ref.machine_id,
        "label": ref.label,
        "sample_rate": rate,
        "channels": channels,
        "duration_s": duration,
        "note": note,
        "section": cond.section,
        "domain": cond.domain,
        "attributes": cond.attributes_json,
    }


def ingest(
    store: ObjectStore,
    fstore: FeatureStore,
    refs: Sequence[ClipRef],
    configs: Iterable[FeatureConfig],
    audio_config: AudioConfig = AudioConfig(),
    skip_ids: set[str] | frozenset = frozenset(),
    progress: Callable[[int, int], None] | None = None,
    workers: int = 4,
    device: str = "cpu",
    keep_features: bool = True,
    infos: dict[str, ObjectInfo] | None = None,
) -> IngestResult:
    """Every clip of ``refs`` read once, named, and featured for every config in ``configs``
    (module docstring). The steps: the clips grouped by store partition and machine type; per
    group, workers read, hash and feature the clips (:meth:`_Ingest.work`), and each clip's fate
    is settled in order (:meth:`_Ingest.settle`: rejected, a duplicate, already scored, features
    reused, or new), new features flushed to the store as they add up. ``skip_ids``: clips
    already scored (counted, not featured); ``infos``: the listing's size and tag of each key;
    ``keep_features=False``: no log-mels in the result (they stay in the store)."""
    import torch  # here: listing a night (planning, a re-run with nothing new) needs no torch

    cap_malloc_arenas()
    run = _Ingest(store, fstore, list(configs), audio_config, device, infos)
    run.skip_ids, run.keep_features = skip_ids, keep_features
    run.sidecars = night_conditions(store, refs)  # conditions dropped beside a night's clips
    groups: dict[tuple, list[ClipRef]] = defaultdict(list)
    for r in refs:
        groups[(partition(r.split, r.night), r.machine_type)].append(r)
    done, total = 0, len(refs)
    # decode and features overlap with reads: a clip per thread, one torch thread each (small
    # FFTs do not gain from intra-op threads; clips in parallel do)
    torch_threads = torch.get_num_threads()
    if device == "cpu" and workers > 1:
        torch.set_num_threads(1)
    try:
        with _Pool(max_workers=workers) as pool:
            for (part, mtype), group in groups.items():
                have = {c.hash: fstore.existing(c, part, mtype) for c in run.configs}
                batch = _Batch(part, mtype, {c.hash: [] for c in run.configs})
                for result in _ordered(pool, lambda r: run.work(r, have), group, 2 * workers):
                    done += 1
                    if progress:
                        progress(done, total)
                    run.settle(batch, *result)
                run.finish(batch)
    finally:
        torch.set_num_threads(torch_threads)
    return run.res


@dataclass
class _Batch:
    """One group's new feature rows waiting to be written, and the clips whose features it reuses."""

    part: str
    machine_type: str
    new_rows: dict[str, list[FeatureRow]]
    cached_ids: dict[str, str] = field(default_factory=dict)


class _Ingest:
    """One :func:`ingest` call's state: the extractors and decodes its configs need, the result
    so far, and the bytes read of each key (for stores whose listing has no sizes)."""

    def __init__(self, store, fstore, configs, audio_config, device, infos):
        from slidead.core.features import LogMel

        self.store, self.fstore, self.configs, self.audio_config = store, fstore, configs, audio_config
        self.infos = infos or {}
        self.skip_ids: set[str] | frozenset = frozenset()  # clips already scored: counted, not featured
        self.keep_features = True  # False: the new log-mels go to the store only
        self.res = IngestResult(features={c.hash: {} for c in configs})
        self.extractors = {c.hash: LogMel.shared(c, str(device)) for c in configs}
        self.audio_for = {c.hash: _audio_config(audio_config, c) for c in configs}
        self.decodes = list(dict.fromkeys(self.audio_for.values())) or [audio_config]
        self.sizes: dict[str, int] = {}
        self.sidecars: dict = {}  # a night clip's conditions from files beside it, by key

    def arrived(self, ref: ClipRef, **fate) -> None:
        """The clip's row in the night's ledger."""
        info, size = self.infos.get(ref.key), self.sizes.get(ref.key)
        self.res.arrivals.append(
            arrival(self.store.uri_for(ref.key), ref.night, ref.machine_type, ref.machine_id, info, size, **fate)
        )

    def reject(self, ref: ClipRef, reason: str, detail: str, clip_id=None) -> None:
        self.res.rejected.append(_rejected(self.store, ref, reason, detail, clip_id))
        self.arrived(ref, clip_id=clip_id, reason=reason, detail=detail)

    def features_of(self, ref: ClipRef, clip_id: str, data: bytes):
        """Decode once per audio config, compute every feature config: (facts, rows). The audio
        itself is dropped here, so a result waiting in the pool holds only its log-mels."""
        decoded = {a: decode(data, a) for a in self.decodes}
        cond = conditions_of(ref, self.sidecars)
        rows = {
            c.hash: FeatureRow(
                clip_id,
                ref.machine_id,
                ref.label,
                self.extractors[c.hash](decoded[self.audio_for[c.hash]].audio),
                cond.domain,
                cond.attributes_json,
            )
            for c in self.configs
        }
        dec = decoded[self.decodes[0]]
        return (dec.sample_rate, dec.channels, dec.duration_s, dec.note), rows

    def work(self, ref: ClipRef, have: dict[str, set[str]]):
        """In a worker thread: read, hash, and (unless skippable) decode and compute features.
        Returns (ref, clip_id, data-if-skippable, facts-or-None, rows-or-None, error-or-None).
        An object the listing says is over ``max_bytes`` is judged from its first bytes and
        never read whole (clip_id None, an AudioError)."""
        store, audio_config = self.store, self.audio_config
        info = self.infos.get(ref.key)
        try:
            if info is not None and info.size is not None and info.size > audio_config.max_bytes:
                head = store.get_head(ref.key, HEAD_BYTES)
                return ref, None, None, None, None, oversized(head, info.size, audio_config)
            data, clip_id = get_hashed(store, ref.key, audio_config.max_bytes)
        except ObjectTooLarge as e:  # a store that could not say its size: stopped at the limit
            self.sizes[ref.key] = e.size
            return ref, None, None, None, None, oversized(e.head, e.size, audio_config)
        except Exception as e:  # noqa: BLE001 - any read failure is reported per clip
            return ref, None, None, None, None, e
        self.sizes[ref.key] = len(data)
        if clip_id in self.skip_ids or all(clip_id in have[c.hash] for c in self.configs):
            return ref, clip_id, data, None, None, None
        try:
            return (ref, clip_id, None, *self.features_of(ref, clip_id, data), None)
        except Exception as e:  # noqa: BLE001 - sorted out below, per clip
            return ref, clip_id, None, None, None, e

    def settle(self, batch: _Batch, ref: ClipRef, clip_id, data, facts, rows, err) -> None:
        """One worked clip's fate, in the order the refs came: a store failure stops the run;
        an unreadable clip is rejected; a second copy is a duplicate; a clip already scored is
        skipped; features already in the store are reused; else its new features join the batch."""
        res = self.res
        if isinstance(err, StoreError):
            raise err
        if clip_id is None:
            if isinstance(err, AudioError):
                self.reject(ref, err.reason, err.detail)
            else:
                reason = "bad_key" if isinstance(err, LayoutError) else "unreadable_object"
                self.reject(ref, reason, f"{type(err).__name__}: {err}")
            return
        if clip_id in res.refs:
            res.n_duplicates += 1
            self.arrived(ref, clip_id=clip_id)
            return
        if clip_id in self.skip_ids:
            res.n_skipped += 1
            self.arrived(ref, clip_id=clip_id)
            return
        if facts is None and err is None:  # features already in the store
            info = _header(data)
            if info is not None:
                res.refs[clip_id] = ref
                res.clips.append(_clip_row(self.store, ref, clip_id, *info, None, self.sidecars))
                self.arrived(ref, clip_id=clip_id)
                batch.cached_ids[clip_id] = ref.machine_id
                res.n_reused += 1
                return
            try:
                facts, rows = self.features_of(ref, clip_id, data)
            except Exception as e:  # noqa: BLE001
                err = e
        if isinstance(err, AudioError):
            self.reject(ref, err.reason, err.detail, clip_id)
            return
        if err is not None:  # an unforeseen file must not stop the night
            self.reject(ref, "decode_failed", f"{type(err).__name__}: {err}"[:500], clip_id)
            return
        res.refs[clip_id] = ref
        res.clips.append(_clip_row(self.store, ref, clip_id, *facts, self.sidecars))
        self.arrived(ref, clip_id=clip_id)
        self.add(batch, clip_id, rows)

    def add(self, batch: _Batch, clip_id: str, rows: dict[str, FeatureRow]) -> None:
        """A new clip's feature rows: kept in the result (unless not asked), and written to the
        store every ``FLUSH_CLIPS`` clips."""
        for c in self.configs:
            if self.keep_features:
                self.res.features[c.hash][clip_id] = rows[c.hash]
            batch.new_rows[c.hash].append(rows[c.hash])
        if self.configs and len(batch.new_rows[self.configs[0].hash]) >= FLUSH_CLIPS:
            for c in self.configs:
                self.fstore.write(c, batch.part, batch.machine_type, batch.new_rows[c.hash])
                batch.new_rows[c.hash] = []

    def finish(self, batch: _Batch) -> None:
        """A group's last new rows to the store, and the reused features read back (if kept)."""
        for c in self.configs:
            self.fstore.write(c, batch.part, batch.machine_type, batch.new_rows[c.hash])
            if batch.cached_ids and self.keep_features:
                self.res.features[c.hash].update(
                    self.fstore.read(c, batch.part, batch.machine_type, set(batch.cached_ids))
                )


def _ordered(pool: ThreadPoolExecutor, fn, items, ahead: int):
    """``pool.map(fn, items)`` with at most ``ahead`` items submitted and not yet taken: results
    waiting for a slow consumer cannot pile up (``map`` submits every item at once)."""
    pending = deque()
    it = iter(items)
    for item in it:
        pending.append(pool.submit(fn, item))
        if len(pending) >= ahead:
            break
    while pending:
        result = pending.popleft().result()
        for item in it:
            pending.append(pool.submit(fn, item))
            break
        yield result


class _Pool(ThreadPoolExecutor):
    """Cancels the reads not yet started when the loop stops (a failing store: no point waiting)."""

    def __exit__(self, exc_type, exc, tb):
        self.shutdown(wait=True, cancel_futures=exc_type is not None)
        return False


def _audio_config(audio: AudioConfig, features: FeatureConfig) -> AudioConfig:
    """The decode a feature config needs: its channel, its sample rate, at least one window."""
    return dataclasses.replace(
        audio,
        target_rate=features.sample_rate,
        channel=features.channel,
        min_samples=max(audio.min_samples, features.min_samples),
    )


def _header(data: bytes):
    """(rate, channels, duration) from a WAV header, or None."""
    try:
        info = sf.info(io.BytesIO(data))
        return info.samplerate, info.channels, info.frames / info.samplerate
    except Exception:  # noqa: BLE001
        return None
