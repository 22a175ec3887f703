"""A model version's calibration: per machine ID, how a score becomes a p-value and a flag.

One object, :class:`Thresholds`, fitted from normal scores and a scheme by
:meth:`Thresholds.calibrate` (training, fusion and commissioning all go through it), stored one
way (``thresholds.json``), and applied one way by :meth:`Thresholds.decide` (the night, the
evaluation, fusion). The schemes (``Fit.method``):

- ``conformal`` (split conformal, :mod:`slidead.core.conformal`): the p-value ranks a score among
  the calibration scores (``normal_scores``) of the same model; a clip is flagged when ``p <=
  alpha``, the target false-alarm rate. For clips exchangeable with the calibration clips the
  share of normal clips flagged is at most ``alpha``.
- ``cross-conformal``: each calibration clip was scored by the fold model that did not train on
  it (``folds`` says which); a new clip needs its score under every fold model (the version
  ships them). At most ``2 alpha`` in the worst case, about ``alpha`` in practice.
- ``gamma`` (the seed's method, kept as an option): a gamma fitted to the normal scores, the
  threshold at its ``quantile``; the p-value is the gamma's tail. No finite-sample promise.

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

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields, replace

import numpy as np

from slidead.core import conformal

MIN_FIT = 3
MIN_RELIABLE = 20  # fewer normal scores than this: the false-alarm rate is too uncertain to promise
# how a version's thresholds are fitted (TrainConfig.threshold_scheme): auto (split conformal when
# every machine has SPLIT_MIN held-out clips, else cross-conformal), split, cross, and the gamma fit of
# the seed on the validation split's scores (validation) or on out-of-fold scores (oof)
SCHEMES = ("auto", "split", "cross", "validation", "oof")
CONFORMAL = ("conformal", "cross-conformal")
SPLIT_MIN = 50  # held-out clips per machine from which auto calibrates split rather than cross


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
    alpha: float | None = None  # conformal: the target false-alarm rate (flag when p <= alpha)
    provisional: bool = False  # fitted on training clips only: the plant has not been heard yet

    @property
    def conformal(self) -> bool:
        return self.method in CONFORMAL

    def to_dict(self) -> dict:
        d = asdict(self)
        d["nights"] = list(self.nights)
        if not self.nights and self.n_false_alarms is None:  # only commissioned fits say so
            del d["nights"], d["n_false_alarms"]
        if self.alpha is None:
            del d["alpha"]
        if not self.provisional:
            del d["provisional"]
        if not math.isfinite(self.threshold):  # JSON has no infinity: nothing can be flagged
            d["threshold"] = None
        return d

    @classmethod
    def from_dict(cls, d: dict) -> Fit:
        known = {f.name for f in fields(cls)}
        kw = {k: v for k, v in d.items() if k in known}
        kw["nights"] = tuple(kw.get("nights") or ())
        t = kw.get("threshold")
        kw["threshold"], kw["n"] = (math.inf if t is None else float(t)), int(kw.get("n", 0))
        kw["provisional"] = bool(kw.get("provisional", False))
        kw.setdefault("method", "unknown")
        return cls(**kw)


@dataclass(frozen=True)
class Thresholds:
    """A model version's calibration: :class:`Fit` per machine ID, the normal (calibration)
    scores they rest on (``{id: {clip_id: score}}``), for cross-conformal fits the fold that
    scored each of them (``{id: {clip_id: k}}``), and the mean error per mel band of each ID's
    normal clips (``{id: [n_mels floats]}``)."""

    quantile: float = 0.9
    per_id: Mapping[str, Fit] = field(default_factory=dict)
    normal_scores: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    band_error: Mapping[str, list[float]] = field(default_factory=dict)
    folds: Mapping[str, Mapping[str, int]] = field(default_factory=dict)

    @property
    def alpha(self) -> float:
        """The target false-alarm rate per clip."""
        return 1.0 - self.quantile

    @classmethod
    def fit(
        cls, scores_by_id: Mapping[str, np.ndarray], quantile: float = 0.9, source: str = "validation"
    ) -> Thresholds:
        """The seed's gamma fit per machine ID (:func:`gamma_threshold`), and the false-alarm rate
        it promises with its 90% interval from the number of normal scores it rests on (``fa_*``)."""
        per_id = {}
        for mid, s in sorted(scores_by_id.items()):
            fit = gamma_threshold(s, quantile)
            expected, low, high = false_alarm_interval(fit.n, quantile)
            per_id[mid] = replace(fit, source=source, fa_expected=expected, fa_low=low, fa_high=high)
        return cls(quantile, per_id)

    @classmethod
    def calibrate(
        cls,
        scores: Mapping[str, Mapping[str, float]],
        method: str,
        quantile: float = 0.9,
        source: str = "validation",
        folds: Mapping[str, Mapping[str, int]] | None = None,
        provisional: bool = True,
        band_error: Mapping[str, list[float]] | None = None,
    ) -> Thresholds:
        """The one way a version's thresholds are fitted: per machine ID from its normal scores
        (``{id: {clip_id: score}}``) by ``method``: ``conformal`` (split), ``cross-conformal``
        (``folds`` gives each clip's fold) or ``gamma`` (the seed's). The scores are kept as the
        calibration set (``normal_scores``, which score fusion reads too)."""
        if not 0 < quantile < 1:
            raise ValueError(f"quantile={quantile!r} must be in (0, 1)")
        alpha = 1.0 - quantile
        per_id, kept_folds = {}, {}
        for mid, by_clip in sorted(scores.items()):
            s = np.array([float(v) for v in by_clip.values()])
            if method == "gamma":
                fit = cls.fit({mid: s}, quantile, source).per_id[mid]
            elif method in CONFORMAL:
                if np.isfinite(s).sum() < MIN_FIT:
                    raise ValueError(f"need at least {MIN_FIT} normal scores to fit a threshold, got {s.size}")
                expected, low, high = conformal.rate_interval(int(np.isfinite(s).sum()), alpha)
                fit = Fit(
                    conformal.split_threshold(s, alpha),
                    int(np.isfinite(s).sum()),
                    method,
                    source,
                    fa_expected=expected,
                    fa_low=low,
                    fa_high=high,
                    alpha=alpha,
                )
                if method == "cross-conformal":
                    if not folds or mid not in folds or set(folds[mid]) != set(by_clip):
                        raise ValueError(f"cross-conformal calibration of machine {mid} needs every clip's fold")
                    kept_folds[mid] = {str(c): int(folds[mid][c]) for c in by_clip}
            else:
                raise ValueError(f"method={method!r}: expected gamma, conformal or cross-conformal")
            per_id[mid] = replace(fit, provisional=provisional)
        normal = {str(m): {str(c): float(v) for c, v in d.items()} for m, d in scores.items()}
        return cls(quantile, per_id, normal, dict(band_error or {}), kept_folds)

    def with_fits(self, per_id: Mapping[str, Fit], normal_scores: Mapping[str, Mapping[str, float]] | None = None):
        """These thresholds with ``per_id``'s fits put in (replacing those IDs' fits), and with
        their calibration scores when given (a commissioned machine's plant scores)."""
        normal = {**self.normal_scores, **(normal_scores or {})}
        folds = {m: f for m, f in self.folds.items() if m not in per_id or per_id[m].method == "cross-conformal"}
        return replace(self, per_id={**self.per_id, **per_id}, normal_scores=normal, folds=folds)

    @property
    def n_folds(self) -> int:
        """How many fold models a clip must be scored by (0: none of the fits is cross-conformal)."""
        if not any(f.method == "cross-conformal" for f in self.per_id.values()):
            return 0
        return 1 + max((k for d in self.folds.values() for k in d.values()), default=-1)

    def p_values(self, machine_ids: Sequence[str], scores, fold_scores=None) -> np.ndarray:
        """Each clip's p-value under its machine's fit (``fold_scores`` ``(K, m)``: the clips'
        scores under the version's fold models, needed by cross-conformal fits). A machine the
        version never saw gets the largest p-value any known machine gives (conservative)."""
        ids = np.asarray([str(m) for m in machine_ids])
        s = np.asarray(scores, dtype=np.float64)
        out = np.full(s.shape, np.nan)
        for mid in np.unique(ids):
            m = ids == mid
            if mid in self.per_id:
                out[m] = self._p(mid, s[m], None if fold_scores is None else np.asarray(fold_scores)[:, m])
            elif self.per_id:
                fs = None if fold_scores is None else np.asarray(fold_scores)[:, m]
                out[m] = np.nanmax([self._p(k, s[m], fs) for k in self.per_id], axis=0)
        return out

    def _p(self, mid: str, s: np.ndarray, fold_scores) -> np.ndarray:
        fit = self.per_id[mid]
        cal = self.normal_scores.get(mid, {})
        if fit.method == "cross-conformal":
            if fold_scores is None:
                raise ValueError(f"machine {mid}'s cross-conformal p-values need the clips' scores by every fold model")
            fold_of = self.folds[mid]
            k = np.asarray(fold_scores).shape[0]
            per_fold = [[v for c, v in cal.items() if fold_of.get(c) == j] for j in range(k)]
            return conformal.p_cross(per_fold, fold_scores)
        if fit.method == "gamma" and fit.shape and fit.scale:
            from scipy import stats

            return stats.gamma.sf(s, fit.shape, scale=fit.scale)
        if cal:
            return conformal.p_split(list(cal.values()), s)
        return np.where(s > fit.threshold, 0.0, 1.0)  # a bare threshold (an old version): flagged or not

    def decide(self, machine_ids: Sequence[str], scores, fold_scores=None) -> tuple[np.ndarray, np.ndarray]:
        """``(p-values, flags)`` for clips: conformal fits flag ``p <= alpha``; the others flag
        scores above their threshold (the seed's rule)."""
        ids = [str(m) for m in machine_ids]
        s = np.asarray(scores, dtype=np.float64)
        p = self.p_values(ids, s, fold_scores)
        flags = np.zeros(s.shape, dtype=bool)
        for i, mid in enumerate(ids):
            fit = self.per_id.get(mid)
            if fit is None:  # never seen: flagged only when every known machine would flag it
                t = self.for_id(mid)
                flags[i] = t is not None and bool(p[i] <= self.alpha + 1e-12 if self._all_conformal() else s[i] > t)
            elif fit.conformal:
                flags[i] = bool(p[i] <= (fit.alpha if fit.alpha is not None else self.alpha) + 1e-12)
            else:
                flags[i] = bool(s[i] > fit.threshold)
        return p, flags

    def _all_conformal(self) -> bool:
        return bool(self.per_id) and all(f.conformal for f in self.per_id.values())

    def map(self) -> dict[str, float]:
        """``{machine_id: threshold}`` (in the main model's score scale; infinite where nothing
        can be flagged; for cross-conformal fits the pooled fold scores' split threshold, shown
        for reading only: their flags come from p-values)."""
        return {mid: float(f.threshold) for mid, f in self.per_id.items()}

    def finite_map(self) -> dict[str, float | None]:
        """:meth:`map` with None where nothing can be flagged (JSON has no infinity)."""
        return {mid: (t if math.isfinite(t) else None) for mid, t in self.map().items()}

    def for_id(self, machine_id: str) -> float | None:
        """The ID's own threshold; for an ID the model never saw, the highest known (conservative)."""
        m = self.map()
        if machine_id in m:
            return m[machine_id]
        return max(m.values()) if m else None

    def describe(self) -> dict[str, dict]:
        """Per machine ID what ``slidead models`` shows: scheme, n, the promised rate, provisional."""
        return {
            mid: {
                "scheme": f.method,
                "source": f.source,
                "n": f.n,
                "promised": (f.alpha if f.alpha is not None else 1.0 - self.quantile),
                "bound": (2 * f.alpha if f.method == "cross-conformal" and f.alpha is not None else f.alpha),
                "provisional": f.provisional,
            }
            for mid, f in sorted(self.per_id.items())
        }

    def too_few(self) -> list[str]:
        """One sentence per machine ID whose threshold rests on too few normal scores."""
        out = []
        q = self.quantile
        for mid, fit in sorted(self.per_id.items()):
            if fit.conformal:
                if fit.n < conformal.min_calibration(1 - q):
                    out.append(
                        f"the threshold of machine {mid} rests on {fit.n} calibration scores: a p-value cannot "
                        f"reach its target {1 - q:.0%} with fewer than {conformal.min_calibration(1 - q)}, so it "
                        "flags nothing; give it more training clips"
                    )
            elif fit.source == "validation+train":
                out.append(
                    f"the threshold of machine {mid} rests on scores of clips the model trained on (too few "
                    f"were held out): expect more false alarms than its target {1 - q:.0%}; give it more "
                    "training clips or train with the default (conformal) thresholds"
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
        if self.folds:
            d["folds"] = {m: dict(v) for m, v in self.folds.items()}
        return d

    @classmethod
    def from_dict(cls, d: Mapping | None) -> Thresholds:
        d = d or {}
        return cls(
            float(d.get("quantile", 0.9)),
            {str(mid): Fit.from_dict(f) for mid, f in (d.get("per_id") or {}).items()},
            {str(m): {str(c): float(v) for c, v in s.items()} for m, s in (d.get("normal_scores") or {}).items()},
            {str(m): [float(x) for x in v] for m, v in (d.get("band_error") or {}).items()},
            {str(m): {str(c): int(k) for c, k in f.items()} for m, f in (d.get("folds") or {}).items()},
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
