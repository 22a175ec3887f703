"""Score fusion: each family's champion, normalised per machine ID against its normal scores, averaged.

Scores of different families live on different scales (a mean squared error, a squared
Mahalanobis distance, a log-odds). Each family's score of a clip is first put on a common
scale against that family's normal scores of the same machine ID (the held-out normal clips
its thresholds were fitted on, stored with the model version in
``Thresholds.normal_scores``); the fused score is the mean over families, so a clip is as
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
  ``-ln(1 - q)`` for tail). Shown for reading: the fused *flags* are not a threshold on the
  fused score but each member's own calibrated p-value (:meth:`Thresholds.decide`, conformal
  for every family at its defaults), combined per clip by Bonferroni, ``min(1, F min_f p_f)``
  (:func:`slidead.core.conformal.combine`): valid whatever the families' dependence, so the
  fused flags keep the members' promise (at most the target rate of normal clips).
- :func:`~slidead.jobs.fused_evaluation.evaluate_fused` (the job, in its own module): loads the
  champions, scores the labelled ``eval/`` clips with each and reports the fused scores' metrics
  exactly as ``slidead evaluate`` does for one family.

A clip of a machine ID that a family has no normal scores for gets NaN from that family, and
the fused score averages the families that know the ID (NaN if none does).

**Member selection from normal data alone** (``select=True``, the default of
:func:`~slidead.jobs.fused_evaluation.evaluate_fused`). A weak family dilutes the mean (on the synthetic plants the mean of
all families fell below its best member). So per machine ID the fusion averages only the
members, a single family or a combination, that best pass a test built from normal clips:

- *pseudo-anomalies*: each normal reference clip of the ID that every family held out, with
  the held-out normal clip of another machine ID mixed in ``mix_db`` (-10 dB) below it (power
  per mel band and frame, :func:`mix_logmels`): a sound that is not this machine's normal
  sound, made without a single faulty clip;
- *criterion* (:func:`select_members`): for every non-empty subset of the families, the AUC
  of those pseudo-anomalies against the ID's normal reference clips, both fused over the
  subset; ties are broken by the median fused pseudo-anomaly score (how surprised the subset
  is, in the common ``tail`` or ``rank`` scale), then by fewer members.

Each single family is one of the candidates, so on this criterion the chosen members are
never worse than the best single family, by construction. What it cannot promise: real faults
are not another machine mixed in. A family that hears foreign sounds well may hear a slow
spectral change badly, and an ID holds only a few common held-out clips, so on test clips the
selection may fall below its best member (the README's table says how it did on one plant).
An ID with fewer than three common held-out clips, or another ID to borrow from, keeps all
families.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from scipy import stats

from slidead.core import metrics
from slidead.core.thresholds import MIN_FIT, Fit, Thresholds

DEVICE = "cpu"  # where the members score the evaluation clips
METHODS = ("rank", "tail")
DEFAULT_METHOD = "tail"
MIX_DB = -10.0  # a pseudo-anomaly: another machine's normal clip this far below the clip's power


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


def tail_normalise(scores, reference, fit: Fit | None = None) -> np.ndarray:
    """``-ln P(normal score >= s)``: under the gamma of ``fit`` (a stored per-ID threshold fit
    with ``shape`` and ``scale``, location 0) when it has one, else under a normal distribution
    with the mean and standard deviation of ``reference``."""
    s = np.asarray(scores, dtype=np.float64)
    if fit is not None and fit.shape and fit.scale:
        return -stats.gamma.logsf(s, fit.shape, scale=fit.scale)
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
    fits: Mapping[str, Mapping[str, Fit]] | None = None,
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
    fits: Mapping[str, Mapping[str, Fit]] | None = None,
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
    fits: Mapping[str, Mapping[str, Fit]] | None = None,
) -> Thresholds:
    """Per machine ID, the empirical ``quantile`` of the fused normal scores (module docstring)."""
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
            per_id[mid] = Fit(float(np.quantile(s, quantile)), int(s.size), "empirical", "fused validation")
        else:
            single = quantile if method == "rank" else float(-np.log1p(-quantile))
            per_id[mid] = Fit(float(single), int(s.size), f"{method} quantile", "too few common normal clips")
    return Thresholds(quantile, per_id)


def mix_logmels(a: np.ndarray, b: np.ndarray, mix_db: float = MIX_DB) -> np.ndarray:
    """Log-mel ``(n_mels, T)`` of clip ``a`` with clip ``b`` added ``mix_db`` below ``a``'s mean
    power (summed as power per band and frame; the shorter clip's length)."""
    t = min(a.shape[1], b.shape[1])
    pa, pb = 10.0 ** (a[:, :t].astype(np.float64) / 10), 10.0 ** (b[:, :t].astype(np.float64) / 10)
    gain = 10.0 ** (mix_db / 10) * pa.mean() / max(pb.mean(), 1e-30)
    return (10.0 * np.log10(pa + gain * pb)).astype(np.float32)


def _subsets(families: Sequence[str]) -> list[tuple[str, ...]]:
    from itertools import combinations

    return [c for k in range(1, len(families) + 1) for c in combinations(families, k)]


def select_members(
    normal: Mapping[str, Mapping[str, Mapping[str, float]]],
    pseudo: Mapping[str, Mapping[str, Sequence[float]]],
    method: str = DEFAULT_METHOD,
    fits: Mapping[str, Mapping[str, Fit]] | None = None,
    references: Mapping[str, Mapping[str, Mapping[str, float]]] | None = None,
) -> dict[str, dict]:
    """Per machine ID, the members to fuse: the subset of families whose fused pseudo-anomaly
    scores (``pseudo``: family -> ID -> raw scores, the same clips in the same order for every
    family) stand out best from the fused normal reference scores (``normal``: family -> ID ->
    {clip_id: score}, restricted to clips every family holds; each is normalised against
    ``references``, the same for all of a family's normal scores, default ``normal``). Returns ``{id: {"members",
    "auc", "surprise", "n_normal", "n_pseudo", "single": {family: auc}}}``; an ID without
    pseudo-anomalies or with fewer than three common normal clips keeps every family."""
    families = list(normal)
    out = {}
    ids = sorted(set.intersection(*(set(normal[f]) for f in families))) if families else []
    for mid in ids:
        clips = sorted(set.intersection(*(set(normal[f][mid]) for f in families)))
        n_pseudo = min((len(pseudo.get(f, {}).get(mid, ())) for f in families), default=0)
        if len(clips) < MIN_FIT or n_pseudo == 0:
            out[mid] = {"members": tuple(families), "auc": None, "surprise": None, "n_normal": len(clips)}
            out[mid].update({"n_pseudo": n_pseudo, "single": {}})
            continue
        own, fake = {}, {}  # each family's normalised scores, as fuse and fused_normal_scores make them
        for f in families:
            ref, fit = (references or normal)[f][mid], (fits or {}).get(f, {}).get(mid)
            mine = normal[f][mid]
            if method == "rank":  # each normal clip ranked leave-one-out
                own[f] = np.array([rank_normalise([mine[c]], [v for k, v in ref.items() if k != c])[0] for c in clips])
            else:
                own[f] = _normalise(method, [mine[c] for c in clips], list(ref.values()), fit)
            fake[f] = _normalise(
                method, np.asarray(pseudo[f][mid][:n_pseudo], dtype=np.float64), list(ref.values()), fit
            )
        best, single = None, {}
        for subset in _subsets(families):
            own_s = np.mean([own[f] for f in subset], axis=0)
            fake_s = np.mean([fake[f] for f in subset], axis=0)
            auc = metrics.auc(np.r_[np.zeros(own_s.size), np.ones(fake_s.size)], np.r_[own_s, fake_s])
            key = (round(float(auc), 6), float(np.median(fake_s)), -len(subset))
            if len(subset) == 1:
                single[subset[0]] = float(auc)
            if best is None or key > best[0]:
                best = (key, subset)
        (auc, surprise, _), members = best
        out[mid] = {"members": members, "auc": auc, "surprise": surprise, "n_normal": len(clips)}
        out[mid].update({"n_pseudo": n_pseudo, "single": single})
    return out


def normal_reference(thresholds: Thresholds, family: str = "") -> dict[str, dict[str, float]]:
    """A model version's normal reference scores (``{machine_id: {clip_id: score}}``)."""
    ref = thresholds.normal_scores
    if not ref:
        raise ValueError(
            f"{family or 'the model'} has no stored normal scores (trained before score fusion "
            "existed): retrain it to fuse it"
        )
    return {str(m): {str(c): float(v) for c, v in d.items()} for m, d in ref.items()}


def __getattr__(name: str):
    """:func:`~slidead.jobs.fused_evaluation.evaluate_fused`, the job, by its old address too
    (it imports this module, so it is looked up when asked for)."""
    if name == "evaluate_fused":
        from slidead.jobs.fused_evaluation import evaluate_fused

        return evaluate_fused
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
