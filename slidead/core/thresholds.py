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
    per_id = {}
    for mid, s in sorted(scores_by_id.items()):
        fit = gamma_threshold(s, quantile)
        fit["source"] = source
        per_id[mid] = fit
    return {"quantile": quantile, "per_id": per_id}


def threshold_map(thresholds: dict) -> dict[str, float]:
    """``{machine_id: threshold}`` from a stored thresholds dict."""
    return {mid: float(v["threshold"]) for mid, v in thresholds.get("per_id", {}).items()}


def threshold_for(thresholds: dict, machine_id: str) -> float | None:
    """The ID's own threshold; for an ID the model never saw, the highest known (conservative)."""
    m = threshold_map(thresholds)
    if machine_id in m:
        return m[machine_id]
    return max(m.values()) if m else None
