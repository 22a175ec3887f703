"""Tests for slidead.core.metrics: AUC and pAUC equal sklearn's, decisions at a threshold, per-ID means."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score
from sklearn.metrics import roc_curve as sk_roc_curve

from slidead.core.metrics import at_threshold, auc, evaluate, pauc, pauc_raw, roc_curve


def _cases(n_cases=200):
    rng = np.random.default_rng(0)
    for i in range(n_cases):
        n_neg = int(rng.choice([1, 2, 3, 10, 20, 37, 100]))
        n_pos = int(rng.integers(1, 40))
        y = np.r_[np.zeros(n_neg, int), np.ones(n_pos, int)]
        rng.shuffle(y)
        kind = i % 3
        if kind == 0:  # continuous, no ties
            s = rng.normal(y * rng.uniform(0, 2), 1.0)
        elif kind == 1:  # heavy ties
            s = rng.integers(0, 4, y.size).astype(float) + y * rng.integers(0, 2)
        else:  # a few distinct values
            s = np.round(rng.normal(y, 1.0), 1)
        yield y, s


def test_auc_and_pauc_equal_sklearn_on_many_cases_with_ties():
    for y, s in _cases():
        assert auc(y, s) == pytest.approx(roc_auc_score(y, s), abs=1e-12)
        assert pauc(y, s) == pytest.approx(roc_auc_score(y, s, max_fpr=0.1), abs=1e-12)
        assert pauc(y, s, 0.3) == pytest.approx(roc_auc_score(y, s, max_fpr=0.3), abs=1e-12)
        assert pauc(y, s, 1.0) == pytest.approx(roc_auc_score(y, s), abs=1e-12)


def test_roc_curve_matches_sklearn_without_dropping_points():
    for y, s in list(_cases(60)):
        fpr, tpr = roc_curve(y, s)
        sk_fpr, sk_tpr, _ = sk_roc_curve(y, s, drop_intermediate=False)
        np.testing.assert_allclose(fpr, sk_fpr, atol=1e-15)
        np.testing.assert_allclose(tpr, sk_tpr, atol=1e-15)


def test_hand_computed_auc_and_pauc():
    y = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1]
    s = [0, 1, 2, 3, 4, 5, 6, 7, 8, 10, 9, 11]
    # one positive above every negative, one below the top negative: AUC = (10 + 9) / 20
    assert auc(y, s) == pytest.approx(0.95)
    # up to FPR 0.1: TPR 0.5 until FPR 0.1 -> area 0.05; raw = 0.5
    assert pauc_raw(y, s) == pytest.approx(0.5)
    assert pauc(y, s) == pytest.approx(0.5 * (1 + (0.05 - 0.005) / (0.1 - 0.005)))


def test_perfect_and_reversed():
    y = np.array([0, 0, 0, 1, 1])
    s = np.array([0.1, 0.2, 0.3, 0.8, 0.9])
    assert auc(y, s) == 1.0 and pauc(y, s) == pytest.approx(1.0) and pauc_raw(y, s) == pytest.approx(1.0)
    assert auc(y, -s) == 0.0 and pauc_raw(y, -s) == 0.0
    assert pauc(y, -s) == pytest.approx(roc_auc_score(y, -s, max_fpr=0.1), abs=1e-12)


def test_pauc_raw_is_standardisation_inverse():
    for y, s in list(_cases(50)):
        raw_area = pauc_raw(y, s) * 0.1
        standard = roc_auc_score(y, s, max_fpr=0.1)
        assert 0.5 * (1 + (raw_area - 0.005) / (0.1 - 0.005)) == pytest.approx(standard, abs=1e-12)


def test_at_threshold_hand_computed():
    y = [0, 0, 1, 1, 1]
    s = [0.1, 0.6, 0.4, 0.7, 0.9]
    # flagged (score > 0.5): clips 1, 3, 4 -> tp 2, fp 1, fn 1, tn 1
    m = at_threshold(y, s, 0.5)
    assert m == pytest.approx(
        {"precision": 2 / 3, "recall": 2 / 3, "f1": 2 / 3, "accuracy": 3 / 5, "false_alarm_rate": 1 / 2}
    )
    # strictly greater: a score equal to the threshold is not flagged
    m = at_threshold(y, s, 0.9)
    assert m == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "accuracy": 0.4, "false_alarm_rate": 0.0}
    m = at_threshold(y, s, 0.0)
    assert m == pytest.approx({"precision": 0.6, "recall": 1.0, "f1": 0.75, "accuracy": 0.6, "false_alarm_rate": 1.0})


def test_evaluate_per_id_and_mean():
    ids = ["00"] * 4 + ["02"] * 4 + ["04"] * 2
    labels = [0, 0, 1, 1, 0, 1, 0, 1, 0, 0]
    scores = [0.1, 0.2, 0.8, 0.9, 0.5, 0.4, 0.3, 0.6, 0.1, 0.2]
    out = evaluate(ids, labels, scores, {"00": 0.5, "04": 0.15})
    p = out["per_id"]
    assert list(p) == ["00", "02", "04"]
    assert p["00"] == pytest.approx(
        {
            "n_normal": 2,
            "n_anomaly": 2,
            "auc": 1.0,
            "pauc": 1.0,
            "precision": 1.0,
            "recall": 1.0,
            "f1": 1.0,
            "accuracy": 1.0,
            "false_alarm_rate": 0.0,
        }
    )
    assert p["02"]["auc"] == pytest.approx(0.75) and "precision" not in p["02"]  # no threshold for 02
    # normals only: counts, and what the threshold costs them (0.2 > 0.15)
    assert p["04"] == {"n_normal": 2, "n_anomaly": 0, "false_alarm_rate": 0.5}
    assert out["mean"]["auc"] == pytest.approx(0.875)
    assert out["mean"]["pauc"] == pytest.approx(
        (1.0 + roc_auc_score([0, 1, 0, 1], [0.5, 0.4, 0.3, 0.6], max_fpr=0.1)) / 2
    )
    assert out["mean"]["precision"] == 1.0 and out["mean"]["false_alarm_rate"] == pytest.approx(0.25)
    assert set(out["mean"]) == {"auc", "pauc", "precision", "recall", "f1", "accuracy", "false_alarm_rate"}


def test_evaluate_with_no_scorable_id_has_empty_mean():
    out = evaluate(["00", "00"], [0, 0], [0.1, 0.2], {})
    assert out == {"per_id": {"00": {"n_normal": 2, "n_anomaly": 0}}, "mean": {}}


def test_missing_class_and_bad_inputs_raise():
    with pytest.raises(ValueError, match="both"):
        auc([0, 0, 0], [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="both"):
        pauc([1, 1], [0.1, 0.2])
    with pytest.raises(ValueError, match="shape"):
        auc([0, 1], [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="0/1"):
        auc([0, 2], [0.1, 0.2])
    with pytest.raises(ValueError, match="max_fpr"):
        pauc([0, 1], [0.1, 0.2], max_fpr=0.0)
