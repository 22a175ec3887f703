"""Fusion's member selection from normal clips alone (toy scores; pure functions)."""

from __future__ import annotations

import numpy as np

from slidead.core.thresholds import Fit
from slidead.jobs.fusion import mix_logmels, select_members


def test_mix_adds_power_below_the_clip():
    a = np.full((2, 4), 10.0, dtype=np.float32)  # 10 dB everywhere
    b = np.full((2, 6), -20.0, dtype=np.float32)
    got = mix_logmels(a, b, -10.0)
    assert got.shape == (2, 4)  # the shorter clip's length
    np.testing.assert_allclose(got, 10 * np.log10(10.0 + 1.0), rtol=1e-6)  # 10 dB below 10 dB power: +1


def _normal(rng, families, n=8, ids=("00", "02")):
    return {f: {m: {f"c{i}": float(rng.gamma(4.0, 1.0)) for i in range(n)} for m in ids} for f in families}


def test_the_chosen_members_are_never_worse_than_the_best_single_family_on_the_criterion():
    rng = np.random.default_rng(0)
    fams = ("good", "weak", "noisy")
    normal = _normal(rng, fams)
    fits = {f: {m: Fit(4.0, 5, "gamma", shape=4.0, scale=1.0) for m in ("00", "02")} for f in fams}
    # pseudo-anomalies: "good" sees them clearly, "weak" not at all, "noisy" half the time
    pseudo = {
        "good": {m: rng.gamma(4.0, 1.0, 30) + 8.0 for m in ("00", "02")},
        "weak": {m: rng.gamma(4.0, 1.0, 30) for m in ("00", "02")},
        "noisy": {m: rng.gamma(4.0, 1.0, 30) + 8.0 * (rng.random(30) < 0.5) for m in ("00", "02")},
    }
    got = select_members(normal, pseudo, "tail", fits)
    for mid, sel in got.items():
        assert "weak" not in sel["members"], sel
        assert sel["auc"] >= max(sel["single"].values()) and sel["single"]["weak"] < 0.8 < sel["single"]["good"]
        assert sel["n_normal"] == 8 and sel["n_pseudo"] == 30


def test_too_few_common_clips_or_no_pseudo_anomalies_keep_every_family():
    rng = np.random.default_rng(1)
    normal = _normal(rng, ("a", "b"), n=2)
    got = select_members(normal, {"a": {"00": [9.0]}, "b": {"00": [9.0]}}, "tail")
    assert got["00"]["members"] == ("a", "b") and got["00"]["auc"] is None
    normal = _normal(rng, ("a", "b"))
    assert select_members(normal, {"a": {}, "b": {}}, "rank")["02"]["members"] == ("a", "b")


def test_a_tie_goes_to_fewer_members():
    rng = np.random.default_rng(2)
    normal = _normal(rng, ("a", "b"))
    same = {m: np.full(10, 100.0) for m in ("00", "02")}  # both separate perfectly, equally
    got = select_members(normal, {"a": same, "b": same}, "tail")
    # the pair's median surprise is the mean of the two: one family alone is more surprised
    assert all(len(sel["members"]) == 1 and sel["auc"] == 1.0 for sel in got.values()), got
    fits = {f: {m: Fit(4.0, 5, "gamma", shape=4.0, scale=1.0) for m in ("00", "02")} for f in ("a", "b")}
    got = select_members(normal, {"a": same, "b": same}, "tail", fits)  # the very same fit: a true tie
    assert all(sel["members"] == ("a",) for sel in got.values()), got
    # rank saturates: a pseudo-anomaly ties at 1 with the top normal clip of one family, not with
    # the mean of two families' ranks, so there the pair wins on the criterion itself
    got = select_members(normal, {"a": same, "b": same}, "rank")
    assert all(sel["members"] == ("a", "b") and sel["auc"] > sel["single"]["a"] for sel in got.values()), got
