"""Conformal p-values of anomaly scores: what a flag promises, for every family on one scale.

A detector's score of a clip says how unusual the clip is *to that model*; each training run has
its own scale. A conformal p-value compares a model only with itself: the clip's score is ranked
among the scores the same model gave normal clips it never trained on (the calibration set).

- **Split conformal** (:func:`p_split`): ``n`` calibration clips held out of training, scored by
  the model; ``p(s) = (1 + #{c_i >= s}) / (n + 1)``. If the new clip and the calibration clips
  are exchangeable (normal clips of the same machine, recorded the same way), then for every
  ``a`` in [0, 1], ``P(p <= a) <= a`` (Vovk et al. 2005; Laxhammar & Falkman 2015 for anomaly
  detection): flagging at ``p <= a`` flags at most a share ``a`` of such normal clips, whatever
  the family and however few clips (the ``+1`` is the finite-sample correction). The rate is a
  promise over calibration sets: for one fitted calibration the rate a machine meets is
  Beta(n + 1 - r, r) distributed with ``r`` the threshold's rank (:func:`rate_interval`).
- **Cross-conformal** (:func:`p_cross`, Vovk 2015; the CV+ / jackknife+ family of Barber et al.
  2021): the clips are dealt into ``K`` folds; fold model ``k`` trains on the other folds and
  scores its own fold (``c_i`` for clip ``i`` in fold ``k``); a new clip is scored by every fold
  model (``s_k``) and ``p = (1 + sum_k #{i in fold k: c_i >= s_k}) / (n + 1)``. Every clip is
  used for calibration and each fold model is compared only with itself. The guarantee is weaker:
  ``P(p <= a) <= 2a`` in the worst case (Barber et al., Theorem 4 and its cross-conformal
  reading), about ``a`` in practice (measured in docs/conformal.md).

Combining p-values of several families (score fusion): :func:`combine` with ``bonferroni`` (the
default: ``min(1, F * min_f p_f)``, valid under any dependence between the families, so the
promise holds), ``cauchy`` (the Cauchy combination test of Liu & Xie 2020, close to valid under
dependence for small ``a``) or ``fisher`` (valid only for independent p-values, which the
families are not: kept for ranking, not for promises).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

COMBINATIONS = ("bonferroni", "cauchy", "fisher")


def _finite(a) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64).ravel()
    return a[np.isfinite(a)]


def p_split(calibration, scores) -> np.ndarray:
    """Split-conformal p-values of ``scores`` against ``calibration`` scores (same model)."""
    cal = np.sort(_finite(calibration))
    s = np.asarray(scores, dtype=np.float64)
    at_least = cal.size - np.searchsorted(cal, s, side="left")  # #{c >= s}
    p = (1.0 + at_least) / (cal.size + 1.0)
    return np.where(np.isnan(s), np.nan, p)


def p_cross(fold_calibration: Sequence, fold_scores) -> np.ndarray:
    """Cross-conformal p-values: ``fold_calibration[k]`` the held-out scores of fold model ``k``,
    ``fold_scores`` ``(K, m)``: the new clips' scores under each fold model."""
    cals = [np.sort(_finite(c)) for c in fold_calibration]
    s = np.atleast_2d(np.asarray(fold_scores, dtype=np.float64))
    if s.shape[0] != len(cals):
        raise ValueError(f"{s.shape[0]} fold scores per clip for {len(cals)} calibration folds")
    n = sum(c.size for c in cals)
    at_least = sum(c.size - np.searchsorted(c, s[k], side="left") for k, c in enumerate(cals))
    p = (1.0 + at_least) / (n + 1.0)
    return np.where(np.isnan(s).any(axis=0), np.nan, p)


def split_threshold(calibration, alpha: float) -> float:
    """The score above which a split-conformal p-value is at most ``alpha``: with ``n``
    calibration scores, ``m = floor(alpha (n + 1)) - 1`` of them may lie at or above a flagged
    score, so the threshold is the ``(m + 1)``-th largest; ``inf`` (nothing flagged) when ``n + 1
    < 1 / alpha``."""
    cal = np.sort(_finite(calibration))
    m = flaggable(cal.size, alpha)
    if m < 0:
        return math.inf
    return float(cal[cal.size - m - 1])


def flaggable(n: int, alpha: float) -> int:
    """How many of ``n`` calibration scores may lie at or above a flagged score (-1: none can
    be flagged, too few calibration scores for ``alpha``)."""
    return int(math.floor(alpha * (n + 1) + 1e-9)) - 1


def rate_interval(n: int, alpha: float, level: float = 0.9) -> tuple[float, float, float]:
    """What a split-conformal calibration on ``n`` scores promises a later exchangeable normal
    clip: the false-alarm rate's expectation over calibration sets, ``(m + 1) / (n + 1) <=
    alpha``, and the ``level`` interval of the rate a single calibration meets (Beta(m + 1, n - m))."""
    from scipy import stats

    m = flaggable(n, alpha)
    if m < 0:
        return 0.0, 0.0, 0.0
    a, b = m + 1, n - m
    lo, hi = stats.beta.ppf([(1 - level) / 2, (1 + level) / 2], a, b)
    return float(a / (a + b)), float(lo), float(hi)


def min_calibration(alpha: float) -> int:
    """The fewest calibration scores with which a p-value can reach ``alpha``: ``ceil(1/alpha) - 1``."""
    return max(1, math.ceil(1.0 / alpha - 1e-9) - 1)


def combine(p_values, method: str = "bonferroni") -> np.ndarray:
    """One p-value per clip from ``(F, m)`` p-values of ``F`` families (NaN: a family that does
    not know the clip's machine; the others are combined)."""
    if method not in COMBINATIONS:
        raise ValueError(f"method={method!r}: expected one of {COMBINATIONS}")
    p = np.atleast_2d(np.asarray(p_values, dtype=np.float64))
    known = np.isfinite(p)
    f = known.sum(axis=0)
    out = np.full(p.shape[1], np.nan)
    ok = f > 0
    q = np.clip(np.where(known, p, np.nan), 1e-300, 1.0)
    if method == "bonferroni":
        out[ok] = np.minimum(1.0, f[ok] * np.nanmin(q[:, ok], axis=0))
    elif method == "cauchy":
        t = np.nanmean(np.tan((0.5 - q[:, ok]) * np.pi), axis=0)
        out[ok] = np.clip(0.5 - np.arctan(t) / np.pi, 0.0, 1.0)
    else:
        from scipy import stats

        stat = -2.0 * np.nansum(np.log(q[:, ok]), axis=0)
        out[ok] = stats.chi2.sf(stat, 2 * f[ok])
    return out
