"""Tests for slidead.jobs.fusion: rank normalisation, fusion, fused thresholds (toy scores)."""

from __future__ import annotations

import numpy as np
import pytest

from slidead.core import metrics
from slidead.core.thresholds import Fit, Thresholds
from slidead.jobs.fusion import (
    DEFAULT_METHOD,
    fuse,
    fused_normal_scores,
    fused_thresholds,
    normal_reference,
    rank_normalise,
    tail_normalise,
)


def test_rank_normalise_exact_values():
    ref = [4.0, 1.0, 3.0, 2.0]
    got = rank_normalise([0.0, 1.0, 2.5, 4.0, 10.0, np.nan], ref)
    # (#below + #equal / 2) / n
    np.testing.assert_array_equal(got[:5], [0.0, 0.125, 0.5, 0.875, 1.0])
    assert np.isnan(got[5])
    np.testing.assert_array_equal(rank_normalise([2.0], [1.0, 2.0, 2.0, 3.0]), [0.5])
    np.testing.assert_array_equal(rank_normalise([2.0], [1.0, np.nan, 3.0]), [0.5])  # NaN reference ignored
    assert np.isnan(rank_normalise([1.0], [])).all()


def test_fuse_averages_the_families_ranks_per_machine_id():
    scores = {"a": [1.0, 5.0, 7.0], "b": [30.0, 10.0, 99.0]}
    refs = {
        "a": {"00": [0.0, 2.0, 4.0, 6.0], "02": [6.0, 8.0]},
        "b": {"00": [10.0, 20.0, 30.0, 40.0]},
    }  # b knows no normal clips of 02
    got = fuse(scores, refs, ["00", "00", "02"], "rank")
    # 00: a 1 -> 1/4, 5 -> 3/4; b 30 -> 2.5/4, 10 -> 0.5/4; 02: only a, 7 among [6, 8] -> 1/2
    np.testing.assert_allclose(got, [(0.25 + 0.625) / 2, (0.75 + 0.125) / 2, 0.5])
    assert np.isnan(fuse({"a": [1.0]}, refs, ["09"], "rank")).all()  # no family knows 09
    assert DEFAULT_METHOD == "tail"
    with pytest.raises(ValueError, match="2 scores for 3 clips"):
        fuse({"a": [1.0, 2.0]}, refs, ["00", "00", "00"])
    with pytest.raises(ValueError, match="at least one family"):
        fuse({}, refs, [])


def test_fused_normal_scores_rank_each_clip_leave_one_out():
    normal = {
        "a": {"00": {"c1": 1.0, "c2": 2.0, "c3": 3.0}},
        "b": {"00": {"c1": 30.0, "c2": 10.0, "c3": 20.0, "c4": 5.0}},
    }  # c4: held out by b only
    got = fused_normal_scores(normal, "rank")
    # a: c1 among [2, 3] -> 0, c2 among [1, 3] -> 1/2, c3 -> 1; b: c1 among [10, 20, 5] -> 1,
    # c2 among [30, 20, 5] -> 1/3, c3 among [30, 10, 5] -> 2/3
    np.testing.assert_allclose(got["00"], [(0 + 1) / 2, (0.5 + 1 / 3) / 2, (1 + 2 / 3) / 2])
    th = fused_thresholds(normal, 0.5, "rank")
    assert th.quantile == 0.5
    assert th.per_id["00"].threshold == pytest.approx(0.5) and th.per_id["00"].n == 3
    few = fused_thresholds({"a": {"00": {"c1": 1.0, "c2": 2.0}}}, 0.9, "rank")
    assert few.per_id["00"] == Fit(0.9, 2, "rank quantile", "too few common normal clips")
    with pytest.raises(ValueError, match="quantile"):
        fused_thresholds(normal, 1.0)


def test_normal_reference_is_required():
    assert normal_reference(Thresholds.from_dict({"normal_scores": {"00": {"c": 1}}})) == {"00": {"c": 1.0}}
    with pytest.raises(ValueError, match="retrain"):
        normal_reference(Thresholds.from_dict({"quantile": 0.9, "per_id": {}}), "slidead-slider-ae v1")


def test_tail_normalise_exact_values():
    # gamma with shape 1 is the exponential: -ln P(X >= s) = s / scale
    exp2 = Fit(4.6, 5, "gamma", shape=1.0, scale=2.0)
    np.testing.assert_allclose(tail_normalise([0.0, 2.0, 10.0], [], exp2), [0.0, 1.0, 5.0])
    # no gamma (an empirical threshold): a normal distribution from the reference, mean 2, sd 1
    empirical = Fit(2.8, 5, "empirical")
    np.testing.assert_allclose(
        tail_normalise([2.0, 3.0], [1.0, 2.0, 3.0], empirical), [np.log(2.0), -np.log(0.15865525393145707)]
    )
    assert tail_normalise([50.0], [], exp2)[0] == pytest.approx(25.0)  # no saturation far out


def test_fuse_and_thresholds_with_the_tail_method():
    fits = {
        "a": {"00": Fit(4.6, 5, "gamma", shape=1.0, scale=2.0)},
        "b": {"00": Fit(23, 5, "gamma", shape=1.0, scale=10.0)},
    }
    refs = {"a": {"00": [1.0, 2.0]}, "b": {"00": [5.0, 10.0]}}
    got = fuse({"a": [2.0, 8.0], "b": [10.0, 0.0]}, refs, ["00", "00"], "tail", fits)
    np.testing.assert_allclose(got, [(1.0 + 1.0) / 2, (4.0 + 0.0) / 2])
    normal = {"a": {"00": {"c1": 2.0, "c2": 4.0, "c3": 6.0}}, "b": {"00": {"c1": 10.0, "c2": 0.0, "c3": 20.0}}}
    np.testing.assert_allclose(fused_normal_scores(normal, "tail", fits)["00"], [1.0, 1.0, 2.5])
    assert fused_thresholds(normal, 0.5, "tail", fits).per_id["00"].threshold == pytest.approx(1.0)
    few = fused_thresholds({"a": {"00": {"c1": 1.0}}}, 0.9, "tail")
    assert few.per_id["00"].threshold == pytest.approx(-np.log(0.1))
    with pytest.raises(ValueError, match="method='z'"):
        fuse({"a": [1.0]}, refs, ["00"], "z")


def test_fusing_two_independent_detectors_beats_each():
    rng = np.random.default_rng(0)
    n = 400
    labels = np.r_[np.zeros(n), np.ones(n)].astype(int)
    # two detectors on different scales, each seeing the anomaly through its own noise
    a = np.exp(rng.normal(0, 1, 2 * n) + 0.8 * labels)
    b = 1000 + 50 * (rng.normal(0, 1, 2 * n) + 0.8 * labels)
    ref = {"a": {"00": np.exp(rng.normal(0, 1, 200))}, "b": {"00": 1000 + 50 * rng.normal(0, 1, 200)}}
    ids = ["00"] * (2 * n)
    fused = fuse({"a": a, "b": b}, ref, ids, "rank")
    assert fused.min() >= 0 and fused.max() <= 1
    auc_a, auc_b, auc_f = metrics.auc(labels, a), metrics.auc(labels, b), metrics.auc(labels, fused)
    assert auc_f > max(auc_a, auc_b) + 0.03, (auc_a, auc_b, auc_f)
    tail = fuse({"a": a, "b": b}, ref, ids, "tail")  # normal fits to the references
    assert metrics.auc(labels, tail) > max(auc_a, auc_b) + 0.03
