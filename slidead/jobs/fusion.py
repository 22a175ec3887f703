"""Score fusion: each family's champion, normalised per machine ID against its normal scores, averaged.

Scores of different families live on different scales (a mean squared error, a squared
Mahalanobis distance, a log-odds). Each family's score of a clip is first put on a common
scale against that family's normal scores of the same machine ID (the held-out normal clips
its thresholds were fitted on, stored with the model version in
``thresholds["normal_scores"]``); the fused score is the mean over families, so a clip is as
unusual as the families say on average. Two normalisations (``method``):

- ``rank``: the mid-rank empirical CDF, ``(#{r < s} + #{r == s} / 2) / n`` in [0, 1].
  Bounded: every score above the highest normal one is 1. With few normal clips per ID (four
  on the demo plant), or normal scores of training clips that the model has fitted (the
  reference when an ID has fewer than three held-out clips), many clips tie at 1 and the
  families' information about *how* unusual a clip is is lost;
- ``tail`` (the default, :data:`DEFAULT_METHOD`): ``-ln P(normal score >= s)`` under the ID's
  fitted normal-score distribution (the gamma its threshold came from; a normal distribution
  fitted to the normal scores where the threshold was empirical): a rank against the fitted
  distribution on a log scale, unbounded, so it keeps how far beyond the normal range a score
  lies. On the synthetic plants it fuses to a mean AUC at or above the best single family,
  where ``rank`` fell below it (README).

- :func:`rank_normalise`, :func:`tail_normalise` and :func:`fuse` are pure: arrays in, arrays out.
- :func:`fused_thresholds`: per machine ID, the empirical ``quantile`` of the fused scores of
  the normal reference clips (only clips every family holds out count; with ``rank`` each is
  ranked leave-one-out against its family's other normal scores). With fewer than three such
  clips, the threshold is what a single family would give at the quantile (``q`` for rank,
  ``-ln(1 - q)`` for tail).
- :func:`evaluate_fused`: loads the champions, scores the labelled ``eval/`` clips with each
  and reports the fused scores' metrics exactly as ``slidead evaluate`` does for one family.

A clip of a machine ID that a family has no normal scores for gets NaN from that family, and
the fused score averages the families that know the ID (NaN if none does).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np
from scipy import stats

from slidead.core import metrics
from slidead.core.thresholds import MIN_FIT, threshold_map

Log = Callable[[str], None]
METHODS = ("rank", "tail")
DEFAULT_METHOD = "tail"


def rank_normalise(scores, reference) -> np.ndarray:
    """Mid-rank empirical CDF of ``scores`` among ``reference``: ``(#{r < s} + #{r == s} / 2) / n``."""
    ref = np.sort(np.asarray(reference, dtype=np.float64).ravel())
    ref = ref[np.isfinite(ref)]
    s = np.asarray(scores, dtype=np.float64)
    if ref.size == 0:
        return np.full(s.shape, np.nan)
    below = np.searchsorted(ref, s, side="left")
    upto = np.searchsorted(ref, s, side="right")
    out = (below + (upto - below) / 2.0) / ref.size
    return np.where(np.isnan(s), np.nan, out)


def tail_normalise(scores, reference, fit: Mapping | None = None) -> np.ndarray:
    """``-ln P(normal score >= s)``: under the gamma of ``fit`` (a stored per-ID threshold fit
    with ``shape`` and ``scale``, location 0) when it has one, else under a normal distribution
    with the mean and standard deviation of ``reference``."""
    s = np.asarray(scores, dtype=np.float64)
    if fit is not None and fit.get("shape") and fit.get("scale"):
        return -stats.gamma.logsf(s, fit["shape"], scale=fit["scale"])
    ref = np.asarray(reference, dtype=np.float64).ravel()
    ref = ref[np.isfinite(ref)]
    if ref.size == 0:
        return np.full(s.shape, np.nan)
    sd = ref.std(ddof=1) if ref.size > 1 else 0.0
    return -stats.norm.logsf(s, ref.mean(), sd if sd > 0 else max(abs(ref.mean()), 1.0) * 1e-6)


def _normalise(method: str, scores, reference, fit):
    if method == "rank":
        return rank_normalise(scores, reference)
    if method == "tail":
        return tail_normalise(scores, reference, fit)
    raise ValueError(f"method={method!r}: expected one of {METHODS}")


def fuse(
    scores: Mapping[str, Sequence[float]],
    references: Mapping[str, Mapping[str, Sequence[float]]],
    machine_ids: Sequence[str],
    method: str = DEFAULT_METHOD,
    fits: Mapping[str, Mapping[str, Mapping]] | None = None,
) -> np.ndarray:
    """``scores``: family -> one score per clip; ``references``: family -> machine ID -> that
    family's normal scores; ``fits`` (``tail`` only): family -> machine ID -> the stored
    threshold fit. Returns the mean over families of each clip's normalised score."""
    if method not in METHODS:
        raise ValueError(f"method={method!r}: expected one of {METHODS}")
    if not scores:
        raise ValueError("fuse needs the scores of at least one family")
    ids = np.asarray([str(m) for m in machine_ids])
    parts = []
    for family, s in scores.items():
        s = np.asarray(s, dtype=np.float64)
        if s.shape != ids.shape:
            raise ValueError(f"{family}: {s.size} scores for {ids.size} clips")
        r = np.full(ids.shape, np.nan)
        for mid in np.unique(ids):
            ref = references.get(family, {}).get(mid)
            if ref is not None and len(ref):
                m = ids == mid
                r[m] = _normalise(method, s[m], ref, (fits or {}).get(family, {}).get(mid))
        parts.append(r)
    stacked = np.vstack(parts)
    known = np.isfinite(stacked).sum(axis=0)
    total = np.nansum(np.where(np.isfinite(stacked), stacked, 0.0), axis=0)
    return np.where(known > 0, total / np.maximum(known, 1), np.nan)


def fused_normal_scores(
    normal: Mapping[str, Mapping[str, Mapping[str, float]]],
    method: str = DEFAULT_METHOD,
    fits: Mapping[str, Mapping[str, Mapping]] | None = None,
) -> dict[str, np.ndarray]:
    """``normal``: family -> machine ID -> {clip_id: score} (the families' normal reference
    scores). Per ID, the fused score of each clip every family holds; with ``rank`` each
    family's score is ranked leave-one-out against that family's other normal scores."""
    families = list(normal)
    ids = sorted(set.intersection(*(set(normal[f]) for f in families))) if families else []
    out = {}
    for mid in ids:
        clips = sorted(set.intersection(*(set(normal[f][mid]) for f in families)))
        fused = np.zeros(len(clips))
        for f in families:
            ref = normal[f][mid]
            if method == "rank":
                for j, c in enumerate(clips):
                    others = [v for k, v in ref.items() if k != c]
                    fused[j] += float(rank_normalise([ref[c]], others)[0]) if others else 0.5
            else:
                fused += _normalise(
                    method, [ref[c] for c in clips], list(ref.values()), (fits or {}).get(f, {}).get(mid)
                )
        out[mid] = fused / len(families)
    return out


def fused_thresholds(
    normal: Mapping[str, Mapping[str, Mapping[str, float]]],
    quantile: float = 0.9,
    method: str = DEFAULT_METHOD,
    fits: Mapping[str, Mapping[str, Mapping]] | None = None,
) -> dict:
    """Thresholds in the stored format (``{"quantile", "per_id": {id: {"threshold", ...}}}``)."""
    if not 0 < quantile < 1:
        raise ValueError(f"quantile={quantile!r} must be in (0, 1)")
    if method not in METHODS:
        raise ValueError(f"method={method!r}: expected one of {METHODS}")
    per_id = {}
    all_ids = sorted(set().union(*(set(v) for v in normal.values()))) if normal else []
    fused = fused_normal_scores(normal, method, fits)
    for mid in all_ids:
        s = fused.get(mid, np.zeros(0))
        if s.size >= MIN_FIT:
            per_id[mid] = {
                "threshold": float(np.quantile(s, quantile)),
                "n": int(s.size),
                "method": "empirical",
                "source": "fused validation",
            }
        else:
            single = quantile if method == "rank" else float(-np.log1p(-quantile))
            per_id[mid] = {
                "threshold": float(single),
                "n": int(s.size),
                "method": f"{method} quantile",
                "source": "too few common normal clips",
            }
    return {"quantile": quantile, "per_id": per_id}


def normal_reference(thresholds: dict, family: str = "") -> dict[str, dict[str, float]]:
    """A model version's normal reference scores (``{machine_id: {clip_id: score}}``)."""
    ref = thresholds.get("normal_scores")
    if not ref:
        raise ValueError(
            f"{family or 'the model'} has no stored normal scores (trained before score fusion "
            "existed): retrain it to fuse it"
        )
    return {str(m): {str(c): float(v) for c, v in d.items()} for m, d in ref.items()}


def evaluate_fused(
    svc,
    machine_type: str,
    families: Sequence[str] | None = None,
    log: Log = lambda _m: None,
    device: str = "cpu",
    method: str = DEFAULT_METHOD,
) -> dict:
    """Fused metrics of the champions of ``families`` (default: every family with a champion)
    on ``eval/<machine_type>/``, as ``{"family": "fused", "machine_type", "model_version": None,
    "method", "members": {family: version}, "per_id": {...}, "mean": {"auc", "pauc"}}``."""
    if method not in METHODS:
        raise ValueError(f"method={method!r}: expected one of {METHODS}")
    from slidead.core import models
    from slidead.core.score import score_logmels
    from slidead.errors import NoChampionError, NotEnoughDataError
    from slidead.jobs.ingest import ingest, list_refs
    from slidead.jobs.labels import add_plant_clips
    from slidead.store.tracking import model_name

    explicit = families is not None
    loaded = {}
    for family in families or models.families():
        try:
            loaded[family] = svc.tracker.load(model_name(machine_type, family))
        except NoChampionError:
            if explicit:
                raise
    if len(loaded) < 2:
        raise NotEnoughDataError(
            f"fused needs the champions of two or more families for {machine_type}; found "
            f"{sorted(loaded) or 'none'}: train them first (slidead train --family ...)"
        )
    refs, _ = list_refs(svc.store, "eval", machine_type)
    if not refs:
        raise NotEnoughDataError(f"no labelled clips under eval/{machine_type}/ in {svc.store.uri}")
    configs = list({m.config.features.hash: m.config.features for m in loaded.values()}.values())
    res = ingest(svc.store, svc.features, refs, configs, svc.audio)
    add_plant_clips(svc, machine_type, configs, res, log)  # operators' verdicts on night clips
    clips = sorted(set.intersection(*(set(res.features[m.config.features.hash]) for m in loaded.values())))
    scores, normal = {}, {}
    rows = None
    for family, m in loaded.items():
        by_clip = res.features[m.config.features.hash]
        rows = [by_clip[c] for c in clips]
        ids = [r.machine_id for r in rows]
        scores[family] = score_logmels(
            m.model, [r.logmel for r in rows], m.config.features, m.config.score, device, ids
        ).score
        normal[family] = normal_reference(m.thresholds, f"{m.name} v{m.version}")
        log(f"fused: {m.name} v{m.version} scored {len(rows)} eval clips")
    ids = [r.machine_id for r in rows]
    labels = [1 if r.label == "anomaly" else 0 for r in rows]
    fits = {f: m.thresholds.get("per_id", {}) for f, m in loaded.items()}
    fused = fuse(
        scores, {f: {mid: list(d.values()) for mid, d in n.items()} for f, n in normal.items()}, ids, method, fits
    )
    quantile = next(iter(loaded.values())).config.threshold_quantile
    thresholds = fused_thresholds(normal, quantile, method, fits)
    keep = np.isfinite(fused)
    report = metrics.evaluate(np.asarray(ids)[keep], np.asarray(labels)[keep], fused[keep], threshold_map(thresholds))
    per_id = {mid: {k: r[k] for k in metrics.AT_THRESHOLD_KEYS if k in r} for mid, r in report["per_id"].items()}
    return {
        "family": "fused",
        "machine_type": machine_type,
        "model_version": None,
        "method": method,
        "members": {f: m.version for f, m in loaded.items()},
        "per_id": per_id,
        "mean": {k: report["mean"][k] for k in ("auc", "pauc") if k in report["mean"]},
    }
