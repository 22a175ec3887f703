"""The options measured on DCASE-style data: clip statistics that keep brief events (each band's
90th percentile and maximum over time), and the AE/VAE's per-domain Mahalanobis statistics, which
is an option, off unless asked for."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from slidead.core.config import RunConfig
from slidead.core.models.clipstats import ClipStats, ClipStatsConfig, clip_statistics, statistics_width
from slidead.core.models.knn import KNN, KNNConfig
from slidead.core.models.mahalanobis import TARGET
from slidead.core.score import ScoreConfig
from slidead.jobs.retrain import run_config
from slidead.jobs.training import stats_rows
from slidead.settings import Settings
from slidead.store.features import FeatureRow


def _clips(n: int, seed: int, click: bool = False) -> list[np.ndarray]:
    """``n`` (64, 100) log-mels of noise whose spread varies from clip to clip and band to band;
    with ``click``, one loud frame in a few bands."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        m = (-40.0 + rng.uniform(0.5, 3.0, (64, 1)) * rng.normal(0.0, 1.0, (64, 100))).astype(np.float32)
        if click:
            m[20:26, 50] += 25.0  # 32 ms of a click: a mean over 100 frames moves by 0.25
        out.append(m)
    return out


def test_statistics_width_and_order():
    x = torch.arange(12, dtype=torch.float32).reshape(1, 6, 2)  # 6 frames, 2 bands
    v = clip_statistics(x, deltas=True, events=True, onsets=True)
    assert v.shape == (1, 2 * statistics_width(True, True, True)) == (1, 14)
    assert torch.equal(v[0, 8:10], x[0].amax(dim=0))  # mean, std, delta, q90, then the maximum
    assert ClipStatsConfig().dim == 64 * 5 and ClipStatsConfig(events=False).dim == 64 * 3


@pytest.mark.parametrize("family", [(ClipStats, ClipStatsConfig), (KNN, KNNConfig)], ids=["clipstats", "knn"])
def test_a_brief_click_stands_out_only_with_events(family):
    net, config = family
    normal, clicks = _clips(30, 0), _clips(5, 1, click=True)
    fresh = _clips(5, 2)
    got = {}
    for events in (False, True):
        model = net(config(events=events)).fit_clips(("00", m) for m in normal)
        vec = lambda ms: torch.stack([clip_statistics(torch.as_tensor(m.T)[None], True, events)[0] for m in ms])  # noqa: E731
        got[events] = (model.clip_scores(vec(fresh), ["00"] * 5), model.clip_scores(vec(clicks), ["00"] * 5))
    fresh_off, click_off = got[False]
    fresh_on, click_on = got[True]
    assert float(click_on.min()) > 2 * float(fresh_on.max())  # every click clip well above every normal one
    assert float(click_off.min()) < float(fresh_off.max())  # the mean, spread and change alone blur it


def test_a_version_stored_before_events_scores_as_trained():
    old = ClipStats(ClipStatsConfig(events=False)).fit_clips(("00", m) for m in _clips(12, 0))
    x = torch.as_tensor(_clips(2, 3, click=True)[0].T)[None]
    want = old.score_windows(None, x, ["00"], "mahalanobis")[0]
    new = ClipStats(ClipStatsConfig())  # the default config of a run_config.json without the field
    new.load_state_dict(old.state_dict())
    assert new.config.events is False and torch.allclose(new.score_windows(None, x, ["00"], "mahalanobis")[0], want)


def test_per_domain_statistics_only_when_asked():
    rows = [FeatureRow(f"c{i}", "00", "normal", None, "target" if i >= 8 else "source", None) for i in range(10)]
    plain = RunConfig.default("ae", "slider", "mahalanobis")
    assert stats_rows(plain, ["00"], rows, [0] * 10) == (["00"], [0] * 10)  # the default: one row per ID
    apart = run_config(Settings(domain_statistics=True), "ae", "slider", "mahalanobis")
    assert apart.score.domain_statistics
    assert stats_rows(apart, ["00"], rows, [0] * 10) == (["00", "00" + TARGET], [0] * 8 + [1] * 2)
    # where it does not apply, the setting leaves the config alone
    assert not run_config(Settings(domain_statistics=True), "ae", "slider", "mse").score.domain_statistics
    assert not run_config(Settings(domain_statistics=True), "knn", "slider").score.domain_statistics
    with pytest.raises(ValueError, match="domain_statistics"):
        ScoreConfig(metric="mse", domain_statistics=True)
    assert RunConfig.from_dict(apart.to_dict()) == apart
