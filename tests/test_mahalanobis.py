"""Tests for the selective Mahalanobis statistics and the ``mahalanobis`` score metric."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch

from slidead.core.config import RunConfig
from slidead.core.features import FeatureConfig, windows
from slidead.core.models import AE, AEConfig, SelectiveMahalanobis, n_parameters
from slidead.core.score import ScoreConfig, fit_normal_statistics, score_logmels
from slidead.core.train import FrameWindows

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _stats(mean, precision, ids=("00",)):
    m = SelectiveMahalanobis(mean.shape[1], ids)
    m.mean = mean.float()
    m.precision = precision.float()
    return m


def test_identity_covariance_gives_the_squared_norm():
    v = torch.tensor([[3.0, 4.0], [1.0, -1.0], [0.0, 0.0]])
    m = _stats(torch.zeros(2, 2), torch.eye(2).repeat(2, 1, 1))
    torch.testing.assert_close(m.distance(v, torch.tensor([0, 0, -1])), torch.tensor([25.0, 2.0, 0.0]))


def test_distance_uses_each_rows_own_statistics_and_pooled_for_unknown():
    mean = torch.tensor([[1.0, 0.0], [0.0, 0.0]])  # ID "00", then pooled
    precision = torch.stack([torch.diag(torch.tensor([4.0, 1.0])), torch.eye(2)])
    m = _stats(mean, precision)
    v = torch.tensor([[1.5, 2.0], [1.5, 2.0]])
    # ID 00: 4 * (1.5 - 1)^2 + 2^2 = 5; unknown ID, pooled: 1.5^2 + 2^2 = 6.25
    torch.testing.assert_close(m.distance(v, m.index(["00", "07"])), torch.tensor([4 * 0.25 + 4.0, 2.25 + 4.0]))
    assert m.index(["07", "00"]).tolist() == [-1, 0]
    with pytest.raises(ValueError, match="3 dimensions"):
        m.distance(torch.zeros(1, 3), torch.tensor([0]))


def test_fit_recovers_mean_and_covariance_per_id_and_pooled():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(4000, 3, generator=g) @ torch.tensor([[2.0, 0, 0], [0.5, 1.0, 0], [0, 0, 0.3]]) + 5.0
    b = torch.randn(3000, 3, generator=g) - 2.0
    x, row = torch.cat([a, b]), torch.cat([torch.zeros(4000), torch.ones(3000)]).long()
    batches = [(x[i : i + 512], row[i : i + 512]) for i in range(0, len(x), 512)]
    m = SelectiveMahalanobis().fit(batches, ["00", "02"], shrinkage=0.0)
    assert m.ids == ("00", "02") and m.mean.shape == (3, 3) and m.precision.shape == (3, 3, 3)
    for k, part in enumerate((a, b, x)):
        torch.testing.assert_close(m.mean[k], part.mean(dim=0), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(
            torch.linalg.inv(m.precision[k].double()).float(), torch.cov(part.T), rtol=1e-3, atol=1e-4
        )
    # on their own ID's statistics, normal vectors score about dim on average (chi-square, 3 dof)
    d = m.distance(a, torch.zeros(len(a), dtype=torch.long))
    assert abs(float(d.mean()) - 3.0) < 0.1


def test_shrinkage_and_an_id_with_one_window():
    x = torch.tensor([[0.0, 0.0], [2.0, 0.0], [0.0, 2.0], [2.0, 2.0], [9.0, 9.0]])
    row = torch.tensor([0, 0, 0, 0, 1])
    m = SelectiveMahalanobis().fit([(x, row)], ["00", "02"], shrinkage=0.5)
    cov = torch.cov(x[:4].T)  # diag 4/3, off-diagonal 0
    shrunk = 0.5 * cov + 0.5 * cov.diagonal().mean() * torch.eye(2)
    torch.testing.assert_close(m.precision[0], torch.linalg.inv(shrunk))
    torch.testing.assert_close(m.mean[1], m.mean[2])  # "02" has one window: pooled
    torch.testing.assert_close(m.precision[1], m.precision[2])
    with pytest.raises(ValueError, match="shrinkage"):
        SelectiveMahalanobis().fit([(x, row)], ["00"], shrinkage=2.0)
    with pytest.raises(ValueError, match="two normal windows"):
        SelectiveMahalanobis().fit([], ["00"])


def test_statistics_travel_in_the_state_dict_weights_only():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(300, 4, generator=g)
    m = SelectiveMahalanobis().fit([(x, torch.arange(300) % 3)], ["00", "02", "04"])
    buf = io.BytesIO()
    torch.save(m.state_dict(), buf)
    buf.seek(0)
    fresh = SelectiveMahalanobis()  # dim 0, no IDs: takes the stored shapes
    fresh.load_state_dict(torch.load(buf, weights_only=True))
    assert fresh.ids == ("00", "02", "04") and fresh.precision.shape == (4, 4, 4)
    idx = fresh.index(["02", "zz"] * 5)
    torch.testing.assert_close(fresh.distance(x[:10], idx), m.distance(x[:10], idx))


# --- the AE with the mahalanobis score metric --------------------------------------------------

CFG = FeatureConfig(n_mels=8)  # dim 40


def _lms(n, t=20, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.normal(-40, 5, (8, t)).astype(np.float32) for _ in range(n)]


def test_identity_statistics_score_dim_times_the_mse_score():
    torch.manual_seed(0)
    model = AE(AEConfig(input_dim=40, hidden=16, bottleneck=4))
    model.mahalanobis = _stats(torch.zeros(1, 40), torch.eye(40)[None], ids=())
    lms = _lms(3)
    mse = score_logmels(model, lms, CFG)
    maha = score_logmels(model, lms, CFG, ScoreConfig(metric="mahalanobis"), machine_ids=["00"] * 3)
    np.testing.assert_allclose(maha.score, 40 * mse.score, rtol=1e-5)
    np.testing.assert_array_equal(maha.peak_time_s, mse.peak_time_s)  # peaks from the squared errors
    np.testing.assert_array_equal(maha.peak_freq_lo_hz, mse.peak_freq_lo_hz)


def test_fit_normal_statistics_on_reconstruction_errors():
    torch.manual_seed(0)
    model = AE(AEConfig(input_dim=40, hidden=16, bottleneck=4)).eval()
    lms = _lms(6, seed=1)
    data = FrameWindows(lms, 5).with_labels([0, 0, 0, 1, 1, 1])
    fit_normal_statistics(model, data, ["00", "02"], ScoreConfig(metric="mahalanobis"), batch=7)
    stats = model.mahalanobis
    with torch.no_grad():
        w = torch.as_tensor(np.concatenate([windows(m, 5) for m in lms[:3]]))
        err = (model(w) - w).double()
    torch.testing.assert_close(stats.mean[0], err.mean(dim=0).float(), rtol=1e-4, atol=1e-4)
    s = score_logmels(model, lms, CFG, ScoreConfig(metric="mahalanobis"), machine_ids=["00"] * 3 + ["02"] * 3)
    assert np.all(np.isfinite(s.score)) and np.all(s.score > 0)
    # the windows of the fit, measured against their own statistics: mean distance ~ trace(P C)
    assert s.score[:3].mean() < 2 * 40


def test_mse_default_keeps_the_seeds_ae_and_its_state_dict():
    plain = RunConfig.default("ae", "slider")
    assert plain.score.metric == "mse"
    assert list(plain.build_model().state_dict()) == list(AE().state_dict())
    maha = RunConfig.default("ae", "slider", metric="mahalanobis").build_model()
    assert n_parameters(maha) == 50_760 and isinstance(maha.mahalanobis, SelectiveMahalanobis)
    with pytest.raises(ValueError, match="use_kl"):
        ScoreConfig(metric="mahalanobis", use_kl=True)
    with pytest.raises(ValueError, match="metric='l1'"):
        ScoreConfig(metric="l1")
