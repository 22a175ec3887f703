"""Tests for slidead.core.thresholds: gamma fit per machine ID, and a version's Thresholds and their stored form."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import stats

from slidead.core.thresholds import Fit, Thresholds, gamma_threshold


@pytest.mark.parametrize("shape, scale, q", [(2.0, 3.0, 0.9), (5.0, 0.01, 0.9), (1.5, 10.0, 0.95)])
def test_gamma_fit_recovers_the_quantile(shape, scale, q):
    s = stats.gamma.rvs(shape, scale=scale, size=3000, random_state=np.random.default_rng(0))
    fit = gamma_threshold(s, q)
    assert fit.method == "gamma" and fit.n == 3000
    assert fit.threshold == pytest.approx(stats.gamma.ppf(q, shape, scale=scale), rel=0.05)
    assert fit.shape == pytest.approx(shape, rel=0.1)
    assert fit.scale == pytest.approx(scale, rel=0.1)
    # the threshold is exactly the fitted distribution's quantile
    assert fit.threshold == pytest.approx(stats.gamma.ppf(q, fit.shape, scale=fit.scale), rel=1e-12)


def test_higher_quantile_higher_threshold():
    s = stats.gamma.rvs(3.0, size=200, random_state=np.random.default_rng(1))
    assert gamma_threshold(s, 0.5).threshold < gamma_threshold(s, 0.9).threshold < gamma_threshold(s, 0.99).threshold


def test_constant_scores():
    fit = gamma_threshold([0.25] * 7)
    assert fit == Fit(0.25, 7, "constant")


def test_zero_score_is_allowed():
    fit = gamma_threshold([0.0, 1.0, 2.0, 1.5, 0.5])
    assert fit.method == "gamma" and np.isfinite(fit.threshold) and fit.threshold > 0


def test_non_finite_scores_are_dropped():
    fit = gamma_threshold([1.0, np.nan, 2.0, np.inf, 3.0])
    assert fit.n == 3


def test_too_few_scores():
    with pytest.raises(ValueError, match="at least 3"):
        gamma_threshold([1.0, 2.0])
    with pytest.raises(ValueError, match="got 2"):
        gamma_threshold([1.0, np.nan, 2.0, np.nan])
    with pytest.raises(ValueError, match="at least 3"):
        Thresholds.fit({"00": np.arange(10.0) + 1, "02": np.array([1.0])})


@pytest.mark.parametrize("q", [0.0, 1.0, -0.1, 1.5])
def test_bad_quantile(q):
    with pytest.raises(ValueError, match="quantile"):
        gamma_threshold([1.0, 2.0, 3.0], q)


def test_fitted_thresholds_structure_and_lookup():
    rng = np.random.default_rng(2)
    th = Thresholds.fit({"02": rng.gamma(2.0, 2.0, 50), "00": rng.gamma(2.0, 1.0, 50)}, 0.9, source="eval")
    assert th.quantile == 0.9
    assert list(th.per_id) == ["00", "02"]
    assert all(v.source == "eval" and v.n == 50 for v in th.per_id.values())
    m = th.map()
    assert m == {"00": th.per_id["00"].threshold, "02": th.per_id["02"].threshold}
    assert th.for_id("00") == m["00"]
    # an ID the model never saw gets the highest known threshold (conservative)
    assert th.for_id("99") == max(m.values())


def test_thresholds_round_trip_through_their_stored_json():
    rng = np.random.default_rng(3)
    th = Thresholds.fit({"00": rng.gamma(2.0, 1.0, 30), "02": np.full(5, 0.5)}, 0.9)
    th = Thresholds(th.quantile, th.per_id, {"00": {"c1": 0.25}}, {"00": [1.0, 2.0]})
    th = th.with_fits({"02": Fit(0.7, 12, "gamma", "commissioning", nights=("2026-01-01",), n_false_alarms=1)})
    stored = json.loads(json.dumps(th.to_dict()))  # thresholds.json
    assert Thresholds.from_dict(stored) == th
    assert stored["per_id"]["02"]["nights"] == ["2026-01-01"] and "nights" not in stored["per_id"]["00"]
    assert set(stored) == {"quantile", "per_id", "normal_scores", "band_error"}
    assert set(Thresholds(0.9, th.per_id).to_dict()) == {"quantile", "per_id"}  # empty parts are left out
    # a version stored before a field existed still loads: what it lacks takes its default
    old = Thresholds.from_dict({"quantile": 0.8, "per_id": {"00": {"threshold": 2, "n": 9, "extra": 1}}})
    assert old.per_id["00"] == Fit(2.0, 9, "unknown") and old.normal_scores == {} and old.quantile == 0.8


def test_for_id_with_nothing_stored():
    assert Thresholds().for_id("00") is None
    assert Thresholds.from_dict({"per_id": {}}).for_id("00") is None
    assert Thresholds.from_dict(None).map() == {}


def test_negative_scores_take_the_empirical_quantile():
    s = np.linspace(-3.0, 1.0, 41)  # e.g. the ID classifier's log((1 - p) / p)
    fit = gamma_threshold(s, 0.9)
    assert fit.method == "empirical" and fit.threshold == pytest.approx(np.quantile(s, 0.9))


# --- what a threshold promises, and how sure that promise is -----------------------------------

from slidead.core.thresholds import MIN_RELIABLE, false_alarm_interval  # noqa: E402
from slidead.core.train import TrainConfig  # noqa: E402


def test_false_alarm_interval_matches_the_order_statistic_by_simulation():
    rng = np.random.default_rng(5)
    for n in (5, 45):
        expected, lo, hi = false_alarm_interval(n, 0.9)
        # the realised false-alarm rate of an empirical 0.9-quantile threshold over n normal scores
        r = int(np.ceil(0.9 * n))
        fa = np.array([1 - np.sort(rng.random(n))[r - 1] for _ in range(20000)])  # uniform scores
        assert expected == pytest.approx(fa.mean(), abs=0.005)
        assert lo == pytest.approx(np.quantile(fa, 0.05), abs=0.01)
        assert hi == pytest.approx(np.quantile(fa, 0.95), abs=0.01)
    assert false_alarm_interval(5, 0.9)[2] > 0.4 > 0.2 > false_alarm_interval(45, 0.9)[2]


def test_fitted_thresholds_carry_their_promise_and_too_few_scores_are_named():
    rng = np.random.default_rng(2)
    t = Thresholds.fit({"00": rng.gamma(3.0, size=4), "02": rng.gamma(3.0, size=60)}, 0.9)
    for mid, n in (("00", 4), ("02", 60)):
        fit = t.per_id[mid]
        assert fit.n == n and fit.fa_low < fit.fa_expected < fit.fa_high
        assert (fit.fa_expected, fit.fa_low, fit.fa_high) == pytest.approx(false_alarm_interval(n, 0.9))
    warnings = t.too_few()
    assert len(warnings) == 1 and "machine 00 rests on 4 normal scores" in warnings[0] and "target 10%" in warnings[0]
    assert 4 < MIN_RELIABLE <= 60
    json.dumps(t.to_dict())  # stored with the version as thresholds.json


def test_threshold_scheme_is_checked():
    assert TrainConfig().threshold_scheme == "auto" and TrainConfig().threshold_folds == 5
    for scheme in ("auto", "split", "cross", "validation", "oof"):
        assert TrainConfig(threshold_scheme=scheme).threshold_scheme == scheme
    with pytest.raises(ValueError, match="threshold_scheme"):
        TrainConfig(threshold_scheme="gamma")
    with pytest.raises(ValueError, match="calibration_fraction"):
        TrainConfig(calibration_fraction=1.0)
    with pytest.raises(ValueError, match="threshold_folds"):
        TrainConfig(threshold_folds=1)
