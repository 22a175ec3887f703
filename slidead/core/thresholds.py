"""Decision thresholds per machine ID from held-out normal scores.

A gamma distribution (location fixed at 0: scores are positive reconstruction errors or
distances) is fitted to each ID's normal scores; the threshold is its ``quantile`` (0.9 by
default), as the later DCASE baselines do. Scores that can be negative (the ID classifier's
``logit`` score, log((1 - p) / p)) have no gamma with location 0: their threshold is the
empirical quantile (``"method": "empirical"``). Result: a JSON-able dict stored with the model version::

    {"quantile": 0.9, "method": "gamma", "per_id": {"00": {"threshold": t, "shape": a,
     "scale": b, "n": n, "source": "validation"}, ...}}
"""

from __future__ import annotations

import numpy as np

MIN_FIT = 3
MIN_RELIABLE = 20  # fewer normal scores than this: the false-alarm rate is too uncertain to promise
SCHEMES = ("oof", "validation")  # out-of-fold scores of every training clip, or the validation split's


def false_alarm_interval(n: int, quantile: float, level: float = 0.9) -> tuple[float, float, float]:
    """What a threshold at the ``quantile`` of ``n`` normal scores promises: the false-alarm rate
    a later normal clip of the same machine meets, as (expected, low, high) at ``level``.

    With the threshold at the r-th smallest of n exchangeable normal scores (r = ceil(q n)), the
    chance that a new normal score exceeds it is Beta(n - r + 1, r) distributed: 5 scores at
    q = 0.9 promise 10% but may give anything from 1% to 45%; 45 scores, 5% to 19%."""
    from scipy import stats

    if n < 1:
        return 1.0 - quantile, 0.0, 1.0
    r = min(max(int(np.ceil(quantile * n)), 1), n)
    a, b = n - r + 1, r
    lo, hi = stats.beta.ppf([(1 - level) / 2, (1 + level) / 2], a, b)
    return float(a / (a + b)), float(lo), float(hi)


def gamma_threshold(scores, quantile: float = 0.9) -> dict:
    """Fit a gamma to positive ``scores``; threshold at ``quantile``."""
    if not 0 < quantile < 1:
        raise ValueError(f"quantile={quantile!r} must be in (0, 1)")
    s = np.asarray(scores, dtype=np.float64).ravel()
    s = s[np.isfinite(s)]
    if s.size < MIN_FIT:
        raise ValueError(f"need at least {MIN_FIT} normal scores to fit a threshold, got {s.size}")
    if np.ptp(s) == 0:
        return {"threshold": float(s[0]), "shape": None, "scale": None, "n": int(s.size), "method": "constant"}
    if s.min() < 0:
        return _empirical(s, quantile)
    from scipy import stats  # here, not at import: scoring a night needs no scipy (0.9 s of start-up)

    try:
        shape, _, scale = stats.gamma.fit(np.maximum(s, 1e-12), floc=0.0)
        t = float(stats.gamma.ppf(quantile, shape, loc=0.0, scale=scale))
        if not np.isfinite(t):
            raise FloatingPointError
        return {"threshold": t, "shape": float(shape), "scale": float(scale), "n": int(s.size), "method": "gamma"}
    except (FloatingPointError, RuntimeError, ValueError):
        return _empirical(s, quantile)


def _empirical(s: np.ndarray, quantile: float) -> dict:
    return {
        "threshold": float(np.quantile(s, quantile)),
        "shape": None,
        "scale": None,
        "n": int(s.size),
        "method": "empirical",
    }


def fit_thresholds(scores_by_id: dict[str, np.ndarray], quantile: float = 0.9, source: str = "validation") -> dict:
    """Per machine ID: the threshold (gamma fit, or empirical), and the false-alarm rate it
    promises with its 90% interval from the number of normal scores it rests on (``fa_*``)."""
    per_id = {}
    for mid, s in sorted(scores_by_id.items()):
        fit = gamma_threshold(s, quantile)
        fit["source"] = source
        fit["fa_expected"], fit["fa_low"], fit["fa_high"] = false_alarm_interval(fit["n"], quantile)
        per_id[mid] = fit
    return {"quantile": quantile, "per_id": per_id}


def too_few(thresholds: dict) -> list[str]:
    """One sentence per machine ID whose threshold rests on too few normal scores."""
    out = []
    q = thresholds.get("quantile", 0.9)
    for mid, fit in sorted(thresholds.get("per_id", {}).items()):
        n = int(fit.get("n", 0))
        if fit.get("source") == "validation+train":
            out.append(
                f"the threshold of machine {mid} rests on scores of clips the model trained on (too few "
                f"were held out): expect more false alarms than its target {1 - q:.0%}; give it more "
                "training clips or train with --thresholds oof"
            )
        elif n < MIN_RELIABLE:
            lo, hi = fit.get("fa_low"), fit.get("fa_high")
            spread = f"anywhere from {lo:.0%} to {hi:.0%}" if lo is not None else "far from it"
            out.append(
                f"the threshold of machine {mid} rests on {n} normal scores: its false-alarm rate "
                f"(target {1 - q:.0%}) may be {spread}; give it more training clips"
            )
    return out


def threshold_map(thresholds: dict) -> dict[str, float]:
    """``{machine_id: threshold}`` from a stored thresholds dict."""
    return {mid: float(v["threshold"]) for mid, v in thresholds.get("per_id", {}).items()}


def threshold_for(thresholds: dict, machine_id: str) -> float | None:
    """The ID's own threshold; for an ID the model never saw, the highest known (conservative)."""
    m = threshold_map(thresholds)
    if machine_id in m:
        return m[machine_id]
    return max(m.values()) if m else None
