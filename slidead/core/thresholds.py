"""Decision thresholds per machine ID from held-out normal scores.

A gamma distribution (location fixed at 0: scores are positive reconstruction errors or
distances) is fitted to each ID's normal scores; the threshold is its ``quantile`` (0.9 by
default), as the later DCASE baselines do. Scores that can be negative (the ID classifier's
``logit`` score, log((1 - p) / p)) have no gamma with location 0: their threshold is the
empirical quantile (``method="empirical"``).

A model version's :class:`Thresholds` hold one :class:`Fit` per machine ID, the normal scores
the fits rest on (score fusion re-uses them) and each ID's mean error per mel band (what a
flagged clip's explanation compares against). They are stored with the version as
``thresholds.json``::

    {"quantile": 0.9, "per_id": {"00": {"threshold": t, "shape": a, "scale": b, "n": n,
     "method": "gamma", "source": "validation", "fa_expected": ..., ...}, ...},
     "normal_scores": {"00": {clip_id: score, ...}}, "band_error": {"00": [e_1, ..., e_mels]}}
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, replace

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


@dataclass(frozen=True)
class Fit:
    """One machine ID's threshold, how it was fitted and what it promises."""

    threshold: float
    n: int  # the normal scores it rests on
    method: str  # gamma, empirical, constant, or how a fused threshold was set
    source: str = "validation"  # where those scores came from
    shape: float | None = None  # the gamma's, when method is gamma
    scale: float | None = None
    fa_expected: float | None = None  # the false-alarm rate it promises, and its 90% interval
    fa_low: float | None = None
    fa_high: float | None = None
    nights: tuple[str, ...] = ()  # commissioning: the plant nights the scores came from
    n_false_alarms: int | None = None  # ... and how many of their clips were labelled false_alarm

    def to_dict(self) -> dict:
        d = asdict(self)
        d["nights"] = list(self.nights)
        if not self.nights and self.n_false_alarms is None:  # only commissioned fits say so
            del d["nights"], d["n_false_alarms"]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> Fit:
        known = {f.name for f in fields(cls)}
        kw = {k: v for k, v in d.items() if k in known}
        kw["nights"] = tuple(kw.get("nights") or ())
        kw["threshold"], kw["n"] = float(kw["threshold"]), int(kw.get("n", 0))
        kw.setdefault("method", "unknown")
        return cls(**kw)


@dataclass(frozen=True)
class Thresholds:
    """A model version's fitted thresholds: :class:`Fit` per machine ID, the normal scores
    they rest on (``{id: {clip_id: score}}``) and the mean error per mel band of each ID's
    normal clips (``{id: [n_mels floats]}``)."""

    quantile: float = 0.9
    per_id: Mapping[str, Fit] = field(default_factory=dict)
    normal_scores: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    band_error: Mapping[str, list[float]] = field(default_factory=dict)

    @classmethod
    def fit(
        cls, scores_by_id: Mapping[str, np.ndarray], quantile: float = 0.9, source: str = "validation"
    ) -> Thresholds:
        """Per machine ID: the threshold (gamma fit, or empirical), and the false-alarm rate it
        promises with its 90% interval from the number of normal scores it rests on (``fa_*``)."""
        per_id = {}
        for mid, s in sorted(scores_by_id.items()):
            fit = gamma_threshold(s, quantile)
            expected, low, high = false_alarm_interval(fit.n, quantile)
            per_id[mid] = replace(fit, source=source, fa_expected=expected, fa_low=low, fa_high=high)
        return cls(quantile, per_id)

    def with_fits(self, per_id: Mapping[str, Fit]) -> Thresholds:
        """These thresholds with ``per_id``'s fits put in (replacing those IDs' fits)."""
        return replace(self, per_id={**self.per_id, **per_id})

    def map(self) -> dict[str, float]:
        """``{machine_id: threshold}``."""
        return {mid: float(f.threshold) for mid, f in self.per_id.items()}

    def for_id(self, machine_id: str) -> float | None:
        """The ID's own threshold; for an ID the model never saw, the highest known (conservative)."""
        m = self.map()
        if machine_id in m:
            return m[machine_id]
        return max(m.values()) if m else None

    def too_few(self) -> list[str]:
        """One sentence per machine ID whose threshold rests on too few normal scores."""
        out = []
        q = self.quantile
        for mid, fit in sorted(self.per_id.items()):
            if fit.source == "validation+train":
                out.append(
                    f"the threshold of machine {mid} rests on scores of clips the model trained on (too few "
                    f"were held out): expect more false alarms than its target {1 - q:.0%}; give it more "
                    "training clips or train with --thresholds oof"
                )
            elif fit.n < MIN_RELIABLE:
                spread = (
                    f"anywhere from {fit.fa_low:.0%} to {fit.fa_high:.0%}" if fit.fa_low is not None else "far from it"
                )
                out.append(
                    f"the threshold of machine {mid} rests on {fit.n} normal scores: its false-alarm rate "
                    f"(target {1 - q:.0%}) may be {spread}; give it more training clips"
                )
        return out

    def to_dict(self) -> dict:
        """The stored form (``thresholds.json``); empty parts are left out."""
        d = {"quantile": self.quantile, "per_id": {mid: f.to_dict() for mid, f in sorted(self.per_id.items())}}
        if self.normal_scores:
            d["normal_scores"] = {m: dict(v) for m, v in self.normal_scores.items()}
        if self.band_error:
            d["band_error"] = {m: list(v) for m, v in self.band_error.items()}
        return d

    @classmethod
    def from_dict(cls, d: Mapping | None) -> Thresholds:
        d = d or {}
        return cls(
            float(d.get("quantile", 0.9)),
            {str(mid): Fit.from_dict(f) for mid, f in (d.get("per_id") or {}).items()},
            {str(m): {str(c): float(v) for c, v in s.items()} for m, s in (d.get("normal_scores") or {}).items()},
            {str(m): [float(x) for x in v] for m, v in (d.get("band_error") or {}).items()},
        )


def gamma_threshold(scores, quantile: float = 0.9) -> Fit:
    """Fit a gamma to positive ``scores``; threshold at ``quantile``."""
    if not 0 < quantile < 1:
        raise ValueError(f"quantile={quantile!r} must be in (0, 1)")
    s = np.asarray(scores, dtype=np.float64).ravel()
    s = s[np.isfinite(s)]
    if s.size < MIN_FIT:
        raise ValueError(f"need at least {MIN_FIT} normal scores to fit a threshold, got {s.size}")
    if np.ptp(s) == 0:
        return Fit(float(s[0]), int(s.size), "constant")
    if s.min() < 0:
        return _empirical(s, quantile)
    from scipy import stats  # here, not at import: scoring a night needs no scipy (0.9 s of start-up)

    try:
        shape, _, scale = stats.gamma.fit(np.maximum(s, 1e-12), floc=0.0)
        t = float(stats.gamma.ppf(quantile, shape, loc=0.0, scale=scale))
        if not np.isfinite(t):
            raise FloatingPointError
        return Fit(t, int(s.size), "gamma", shape=float(shape), scale=float(scale))
    except (FloatingPointError, RuntimeError, ValueError):
        return _empirical(s, quantile)


def _empirical(s: np.ndarray, quantile: float) -> Fit:
    return Fit(float(np.quantile(s, quantile)), int(s.size), "empirical")
