"""Tests for slidead.core.models: the seed's AE and VAE tables, shapes, losses and window errors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from slidead.core.models import AE, VAE, AEConfig, VAEConfig, build, model_config, n_parameters

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _layers(model: nn.Module) -> list[tuple]:
    out = []
    for m in model.modules():
        if isinstance(m, nn.Linear):
            out.append(("Linear", m.in_features, m.out_features))
        elif isinstance(m, nn.BatchNorm1d):
            out.append(("BatchNorm", m.num_features))
        elif isinstance(m, nn.ReLU):
            out.append(("ReLU",))
    return out


def test_ae_parameter_count():
    assert n_parameters(AE()) == 50_760
    assert n_parameters(build("ae")) == 50_760


def test_vae_parameter_count():
    assert n_parameters(VAE()) == 861_480
    assert n_parameters(build("vae")) == 861_480


def test_n_parameters_counts_trainable_only():
    m = AE()
    m.decoder.requires_grad_(False)
    assert n_parameters(m) == 320 * 64 + 64 + 64 * 64 + 64 + 64 * 8 + 8


def test_ae_layer_table():
    L, R = "Linear", ("ReLU",)
    assert _layers(AE()) == [
        (L, 320, 64),
        R,
        (L, 64, 64),
        R,
        (L, 64, 8),
        R,
        (L, 8, 64),
        R,
        (L, 64, 64),
        R,
        (L, 64, 320),
    ]


def test_vae_layer_table():
    L, R = "Linear", ("ReLU",)
    bn = ("BatchNorm", 400)
    assert _layers(VAE()) == [
        (L, 640, 400),
        bn,
        R,
        (L, 400, 400),
        bn,
        R,  # encoder
        (L, 400, 20),  # mu
        (L, 400, 20),  # log sigma^2
        (L, 20, 400),
        bn,
        R,
        (L, 400, 400),
        bn,
        R,
        (L, 400, 640),  # decoder
    ]


def test_ae_last_layer_is_linear_and_bottleneck_is_relu():
    torch.manual_seed(0)
    m = AE().eval()
    x = torch.randn(64, 320)
    z = m.encoder(x)
    assert z.shape == (64, 8) and (z >= 0).all()
    assert (m(x) < 0).any()  # no ReLU after the output layer


@pytest.mark.parametrize("batch", [1, 2, 7, 130])
def test_output_shapes(batch):
    torch.manual_seed(0)
    ae, vae = AE().eval(), VAE().eval()
    assert ae(torch.randn(batch, 320)).shape == (batch, 320)
    assert vae(torch.randn(batch, 640)).shape == (batch, 640)
    if batch > 1:  # BatchNorm needs two windows in training mode
        vae.train()
        assert vae(torch.randn(batch, 640)).shape == (batch, 640)


def test_custom_configs_and_build():
    m = build("ae", {"input_dim": 40, "hidden": 16, "bottleneck": 4})
    assert isinstance(m, AE) and m(torch.randn(3, 40)).shape == (3, 40)
    v = build("vae", VAEConfig(input_dim=30, hidden=12, latent=3))
    assert isinstance(v, VAE) and v.eval()(torch.randn(3, 30)).shape == (3, 30)
    assert model_config("ae", hidden=32) == AEConfig(hidden=32)
    assert AEConfig().to_dict() == {"input_dim": 320, "hidden": 64, "bottleneck": 8}
    with pytest.raises(ValueError, match="'gan'"):
        build("gan")
    with pytest.raises(ValueError, match="'gan'"):
        model_config("gan")


def test_vae_deterministic_in_eval_random_in_training():
    torch.manual_seed(0)
    m = VAE()
    x = torch.randn(16, 640)
    m.eval()
    a, b = m(x), m(x)
    assert torch.equal(a, b)
    mu, _ = m.encode(x)
    assert torch.equal(a, m.decoder(mu))
    m.train()
    assert not torch.allclose(m(x), m(x))


def test_kl_exact_values():
    mu = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 0.0]])
    logvar = torch.tensor([[0.0, 0.0], [0.0, 0.0], [1.0, 0.0]])
    # KL(N(mu, e^lv) || N(0,1)) = 0.5 * (e^lv + mu^2 - 1 - lv), summed over latent dims
    expected = torch.tensor([0.0, 0.5, 0.5 * (torch.e - 2.0)])
    torch.testing.assert_close(VAE.kl(mu, logvar), expected)


def test_ae_loss_and_window_errors():
    torch.manual_seed(0)
    m = AE().eval()
    x = torch.randn(5, 320)
    loss, parts = m.loss(x)
    recon = m(x)
    torch.testing.assert_close(loss, ((recon - x) ** 2).mean())
    assert set(parts) == {"mse"}
    err, extra = m.window_errors(x)
    assert err.shape == (5, 320) and extra.shape == (5,)
    torch.testing.assert_close(err, (recon - x) ** 2)
    assert torch.equal(extra, torch.zeros(5))
    _, extra_kl = m.window_errors(x, use_kl=True)
    assert torch.equal(extra_kl, torch.zeros(5))  # the AE has no KL term


def test_vae_window_errors_and_kl_switch():
    torch.manual_seed(0)
    m = VAE().eval()
    x = torch.randn(6, 640)
    err, extra = m.window_errors(x, use_kl=False)
    assert err.shape == (6, 640) and extra.shape == (6,)
    torch.testing.assert_close(err, (m(x) - x) ** 2)
    assert torch.equal(extra, torch.zeros(6))
    err2, extra_kl = m.window_errors(x, use_kl=True)
    assert torch.equal(err, err2)
    mu, logvar = m.encode(x)
    torch.testing.assert_close(extra_kl, VAE.kl(mu, logvar) / 640)
    assert (extra_kl > 0).all()


def test_vae_loss_is_mse_plus_weighted_kl():
    torch.manual_seed(0)
    x = torch.randn(8, 640)
    for w in (0.0, 1.0, 3.0):
        m = VAE(VAEConfig(kl_weight=w)).eval()
        loss, parts = m.loss(x)
        mu, logvar = m.encode(x)
        torch.testing.assert_close(parts["mse"], ((m(x) - x) ** 2).mean())
        torch.testing.assert_close(parts["kl"], VAE.kl(mu, logvar).mean() / 640)
        torch.testing.assert_close(loss, parts["mse"] + w * parts["kl"])
