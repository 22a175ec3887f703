"""Tests for slidead.core.train: clip splits, seeding, learning, early stopping and best-epoch weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from slidead.core.models import AE, VAE, AEConfig, VAEConfig, family
from slidead.core.train import TrainConfig, evaluate_loss, fit, resolve_device, split_clips

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# --- split_clips ----------------------------------------------------------------------------


def test_split_per_machine_id_both_sides():
    ids = ["00"] * 10 + ["02"] * 2 + ["04"] * 1 + ["06"] * 30
    val = split_clips(ids, 0.1, seed=0)
    assert val.dtype == bool and val.shape == (43,)
    ids = np.array(ids)
    assert val[ids == "00"].sum() == 1
    assert val[ids == "02"].sum() == 1 and (~val[ids == "02"]).sum() == 1
    assert val[ids == "04"].sum() == 0  # a lone clip stays in training
    assert val[ids == "06"].sum() == 3


def test_split_never_empties_training_side():
    val = split_clips(["00"] * 3, 0.9, seed=0)
    assert val.sum() == 2


def test_split_deterministic_by_seed():
    ids = [f"{i % 3:02d}" for i in range(60)]
    a, b = split_clips(ids, 0.5, seed=1), split_clips(ids, 0.5, seed=1)
    assert np.array_equal(a, b)
    assert any(not np.array_equal(a, split_clips(ids, 0.5, seed=s)) for s in (2, 3, 4))
    assert a.sum() == 30


def test_split_accepts_integer_like_ids():
    assert split_clips(np.array([0, 0, 1, 1]), 0.5, seed=0).sum() == 2


# --- config and device ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "kw, name",
    [
        ({"epochs": 0}, "epochs"),
        ({"batch_size": 0}, "batch_size"),
        ({"val_fraction": 0.0}, "val_fraction"),
        ({"val_fraction": 1.0}, "val_fraction"),
        ({"lr": 0.0}, "lr"),
        ({"device": "tpu"}, "tpu"),
    ],
)
def test_train_config_validation(kw, name):
    with pytest.raises(ValueError, match=name):
        TrainConfig(**kw)


def test_batch_for_family():
    assert TrainConfig().batch_for("ae") == 128 == family("ae").batch_size
    assert TrainConfig().batch_for("vae") == 512 == family("vae").batch_size
    assert TrainConfig(batch_size=7).batch_for("vae") == 7
    assert TrainConfig().to_dict()["patience"] == 10


def test_resolve_device():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ValueError, match="'tpu'"):
        resolve_device("tpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error raised without CUDA")
def test_cuda_without_gpu_raises():
    with pytest.raises(ValueError, match="CUDA"):
        resolve_device("cuda")
    with pytest.raises(ValueError, match="CUDA"):
        resolve_device("cuda:1")
    cfg = TrainConfig(device="cuda")  # a config may name CUDA; using it here fails clearly
    x = np.zeros((4, 320), np.float32)
    with pytest.raises(ValueError, match="CUDA"):
        fit(AE(), x, x, cfg)


# --- fit ------------------------------------------------------------------------------------


def _toy(n_train=256, n_val=64, dim=16, seed=0):
    """Train and validation windows on one 2-d subspace: an AE with a 4-d bottleneck learns them."""
    rng = np.random.default_rng(seed)
    basis = rng.normal(size=(2, dim))
    x = (rng.normal(size=(n_train + n_val, 2)) @ basis).astype(np.float32)
    return x[:n_train], x[n_train:]


def _small_ae():
    return AE(AEConfig(input_dim=16, hidden=16, bottleneck=4))


def test_fit_is_seeded():
    x, v = _toy()
    cfg = TrainConfig(epochs=5, batch_size=32, seed=3, device="cpu")
    runs = []
    for _ in range(2):
        torch.manual_seed(0)
        runs.append(fit(_small_ae(), x, v, cfg))
    assert runs[0].history == runs[1].history
    for k in runs[0].state_dict:
        assert torch.equal(runs[0].state_dict[k], runs[1].state_dict[k])
    torch.manual_seed(0)
    other = fit(_small_ae(), x, v, TrainConfig(epochs=5, batch_size=32, seed=4, device="cpu"))
    assert other.history["train_loss"] != runs[0].history["train_loss"]


def test_fit_learns_a_toy_problem():
    x, v = _toy()
    torch.manual_seed(0)
    model = _small_ae()
    calls = []
    res = fit(
        model,
        x,
        v,
        TrainConfig(epochs=20, batch_size=32, lr=1e-2, patience=20, device="cpu"),
        progress=lambda *a: calls.append(a),
    )
    tl, vl = res.history["train_loss"], res.history["val_loss"]
    assert res.epochs_run == len(tl) == len(vl) == len(calls) == 20
    assert [c[0] for c in calls] == list(range(1, 21)) and calls[0][1] == 20
    assert calls[-1][2:] == (tl[-1], vl[-1])
    assert vl[-1] < 0.05 * vl[0] and tl[-1] < 0.05 * tl[0]
    assert res.device == "cpu" and res.seconds > 0
    assert res.best_epoch == int(np.argmin(vl)) + 1


class _Pull(nn.Module):
    """One parameter p; loss mean((x - p)^2). Training data pulls p to 1, validation likes 0.3,
    so the validation loss falls, then rises: the best epoch is in the middle."""

    family = "toy"

    def __init__(self):
        super().__init__()
        self.p = nn.Parameter(torch.zeros(()))

    def loss(self, x):
        loss = torch.mean((x - self.p) ** 2)
        return loss, {"mse": loss.detach()}


def test_early_stopping_keeps_best_epoch_weights():
    train = np.ones((8, 1), np.float32)
    val = np.full((4, 1), 0.3, np.float32)
    model = _Pull()
    res = fit(model, train, val, TrainConfig(epochs=50, batch_size=8, lr=0.1, patience=3, device="cpu"))
    vl = res.history["val_loss"]
    assert res.best_epoch == int(np.argmin(vl)) + 1
    assert 1 < res.best_epoch < res.epochs_run < 50
    assert res.epochs_run == res.best_epoch + 3
    assert all(v >= vl[res.best_epoch - 1] for v in vl[res.best_epoch :])
    # the returned (and loaded) weights are the best epoch's, not the last epoch's
    assert torch.equal(res.state_dict["p"], model.p.detach())
    best_val = evaluate_loss(model, torch.as_tensor(val))
    assert best_val == pytest.approx(min(vl), rel=1e-6)
    assert best_val < vl[-1]


def test_early_stopping_when_validation_never_improves():
    x, v = _toy(32, 16)
    torch.manual_seed(0)
    model = _small_ae()
    before = {k: t.clone() for k, t in model.state_dict().items()}
    # lr so small that float32 weights cannot move: validation loss is flat from epoch 1
    res = fit(model, x, v, TrainConfig(epochs=40, lr=1e-30, patience=4, device="cpu"))
    assert res.best_epoch == 1 and res.epochs_run == 5
    assert len(set(res.history["val_loss"])) == 1
    for k in before:
        assert torch.equal(res.state_dict[k], before[k])


def test_fit_vae_with_a_batch_of_one_left_over():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(9, 6)).astype(np.float32)  # batches of 4, 4, 1: the 1 is skipped
    torch.manual_seed(0)
    model = VAE(VAEConfig(input_dim=6, hidden=8, latent=2))
    res = fit(model, x, x[:3], TrainConfig(epochs=3, batch_size=4, device="cpu"))
    assert res.epochs_run == 3
    assert all(np.isfinite(res.history["train_loss"] + res.history["val_loss"]))
    assert not model.training  # left in eval mode, ready to score


def test_fit_rejects_bad_arrays():
    x = np.zeros((4, 16), np.float32)
    with pytest.raises(ValueError, match="non-empty"):
        fit(_small_ae(), x, x[:0], TrainConfig(epochs=1, device="cpu"))
    with pytest.raises(ValueError, match=r"\(N, dim\) array"):
        fit(_small_ae(), x.ravel(), x, TrainConfig(epochs=1, device="cpu"))


def test_fit_raises_value_error_when_validation_loss_is_never_finite():
    x = np.ones((8, 16), np.float32)
    with pytest.raises(ValueError, match="diverged"):
        fit(_small_ae(), x, np.full((4, 16), np.nan, np.float32), TrainConfig(epochs=5, patience=2, device="cpu"))


def test_frame_windows_equal_materialised_windows():
    from slidead.core.features import windows
    from slidead.core.train import FrameWindows

    rng = np.random.default_rng(0)
    clips = [rng.normal(size=(8, t)).astype(np.float32) for t in (7, 5, 9)]
    fw = FrameWindows(clips, frames=5)
    expected = np.concatenate([windows(c, 5) for c in clips])
    assert len(fw) == len(expected) == 3 + 1 + 5
    got = fw.batch(torch.arange(len(fw))).numpy()
    np.testing.assert_array_equal(got, expected)
    # memory: frames, not windows
    assert fw.data.numel() == sum(c.size for c in clips) < expected.size


def test_frame_windows_labels_and_stride():
    from slidead.core.train import FrameWindows

    rng = np.random.default_rng(0)
    clips = [rng.normal(size=(4, t)).astype(np.float32) for t in (9, 3, 12)]
    fw = FrameWindows(clips, frames=3, labels=[5, 6, 7], stride=3)
    # windows start at frames 0, 3, 6 of clip 0; 0 of clip 1; 0, 3, 6, 9 of clip 2
    assert len(fw) == 3 + 1 + 4
    assert fw.targets(torch.arange(len(fw))).tolist() == [5] * 3 + [6] + [7] * 4
    np.testing.assert_array_equal(fw.batch(torch.tensor([1])).numpy()[0], clips[0][:, 3:6].T.ravel())
    unlabelled = FrameWindows(clips, frames=3, stride=3)
    assert unlabelled.targets(torch.arange(2)) is None
    relabelled = unlabelled.with_labels([0, 1, 2])
    assert relabelled.data is unlabelled.data and unlabelled.labels is None
    assert relabelled.targets(torch.tensor([3, 4])).tolist() == [1, 2]
    with pytest.raises(ValueError, match="2 labels for 3 clips"):
        FrameWindows(clips, frames=3, labels=[0, 1])
    with pytest.raises(ValueError, match="stride"):
        FrameWindows(clips, frames=3, stride=0)


class _Labelled(nn.Module):
    """Logistic regression on one feature: learns labels y from x; loss(x) alone is an error."""

    family = "toy"

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(1, 2)

    def loss(self, x, y=None):
        assert y is not None, "fit must pass the labels"
        loss = nn.functional.cross_entropy(self.lin(x), y)
        return loss, {"ce": loss.detach()}


def test_fit_passes_labels_when_the_windows_have_them():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    x = (y[:, None] * 4.0 - 2.0 + rng.normal(0, 0.5, (200, 1))).astype(np.float32)
    torch.manual_seed(0)
    res = fit(
        _Labelled(),
        (x[:150], y[:150]),
        (x[150:], y[150:]),
        TrainConfig(epochs=30, batch_size=32, lr=0.05, device="cpu"),
    )
    assert res.history["val_loss"][res.best_epoch - 1] < 0.1
    with pytest.raises(ValueError, match="do not match"):
        fit(_Labelled(), (x, y[:3]), (x, y), TrainConfig(epochs=1, device="cpu"))


def test_fit_keeps_a_modules_extra_state():
    from slidead.core.models import SelectiveMahalanobis

    x, v = _toy()
    model = _small_ae()
    model.stats = SelectiveMahalanobis(2, ("00",))  # buffers and extra state, no parameters
    res = fit(model, x, v, TrainConfig(epochs=2, batch_size=64, device="cpu"))
    assert res.state_dict["stats._extra_state"] == {"ids": ["00"]}
