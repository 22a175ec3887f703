"""A featured shard as Arrow tables: its scores (flags, explanations, p-values), clips, rejected
and arrivals, in the schemas the shard store and the results lake share.

:func:`score_shards_clips` scores a shard's clips with a champion (in parts on threads on the
CPU); :func:`_shard_tables` turns the scores and the ingest's rows into the four tables.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pyarrow as pa

from slidead.core.explain import sentence
from slidead.store.model_files import LoadedModel
from slidead.store.results import ARRIVAL_COLUMNS, CLIP_COLUMNS, REJECTED_COLUMNS

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


def _table(rows: list[dict], schema: pa.Schema) -> pa.Table:
    cols = {}
    for f in schema:
        vals = [r.get(f.name) for r in rows]
        if pa.types.is_string(f.type):
            vals = [None if v is None else str(v) for v in vals]
        cols[f.name] = pa.array(vals, type=f.type)
    return pa.table(cols, schema=schema)
