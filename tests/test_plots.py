"""Tests for slidead.core.plots: figure structure, PNG output and the ROC computation."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from matplotlib.figure import Figure

from slidead.core import plots
from slidead.core.metrics import roc_curve

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _scored_clips(seed: int = 0):
    rng = np.random.default_rng(seed)
    ids, labels, scores = [], [], []
    for mid, shift in (("00", 3.0), ("02", 1.0), ("04", 0.3)):
        for label, n in ((0, 40), (1, 15)):
            ids += [mid] * n
            labels += [label] * n
            scores += list(rng.normal(label * shift, 1.0, n))
    return ids, labels, scores


def _assert_png(path):
    data = path.read_bytes()
    assert len(data) > 1000
    assert data[:8] == PNG_SIGNATURE


def _vlines(ax):
    """Lines whose x-data is constant (axvline)."""
    return [ln for ln in ax.get_lines() if np.ptp(np.asarray(ln.get_xdata(), dtype=float)) == 0]


# --- loss curves -------------------------------------------------------------------------


def test_loss_curves_lines_and_best_epoch(tmp_path):
    history = {"train_loss": [1.0, 0.6, 0.4, 0.35], "val_loss": [1.1, 0.7, 0.5, 0.55]}
    fig = plots.loss_curves(history, best_epoch=3)
    assert isinstance(fig, Figure)
    (ax,) = fig.axes
    lines = ax.get_lines()
    assert len(lines) == 3  # train, val, best-epoch marker
    np.testing.assert_array_equal(lines[0].get_xdata(), [1, 2, 3, 4])  # 1-based epochs
    np.testing.assert_allclose(lines[1].get_ydata(), history["val_loss"])
    assert [float(x) for x in _vlines(ax)[0].get_xdata()] == [3.0, 3.0]
    assert ax.get_title() and ax.get_xlabel() == "epoch" and ax.get_ylabel() == "loss"
    assert ax.get_legend() is not None
    plots.save(fig, tmp_path / "loss.png")
    _assert_png(tmp_path / "loss.png")


@pytest.mark.parametrize(
    "history",
    [{}, {"train_loss": [], "val_loss": []}, {"train_loss": [0.5]}, {"train_loss": [0.5], "val_loss": [0.6]}],
)
def test_loss_curves_empty_or_single_epoch(history, tmp_path):
    fig = plots.loss_curves(history)
    assert len(fig.axes) == 1
    n_series = sum(bool(v) for v in history.values())
    assert len(fig.axes[0].get_lines()) == n_series
    plots.save(fig, tmp_path / "loss.png")
    _assert_png(tmp_path / "loss.png")


# --- score distributions -----------------------------------------------------------------


def test_score_distributions_one_axes_per_id_with_threshold(tmp_path):
    ids, labels, scores = _scored_clips()
    thresholds = {"00": 1.5, "02": 0.8}  # none for "04"
    fig = plots.score_distributions(np.array(ids), np.array(labels), np.array(scores), thresholds)
    assert isinstance(fig, Figure)
    assert [ax.get_title() for ax in fig.axes] == ["id 00", "id 02", "id 04"]
    for ax in fig.axes:
        assert len(ax.patches) > 0  # histogram bars
        assert ax.get_xlabel() and ax.get_ylabel()
        assert ax.get_legend() is not None
    assert [float(_vlines(ax)[0].get_xdata()[0]) for ax in fig.axes[:2]] == [1.5, 0.8]
    assert _vlines(fig.axes[2]) == []
    plots.save(fig, tmp_path / "scores.png")
    _assert_png(tmp_path / "scores.png")


def test_score_distributions_grid_and_lists():
    n_ids = 5
    ids = [f"{i:02d}" for i in range(n_ids) for _ in range(4)]
    labels = [0, 0, 1, 1] * n_ids
    scores = list(np.linspace(0, 1, 4 * n_ids))
    fig = plots.score_distributions(ids[::-1], labels[::-1], scores[::-1], {})
    assert len(fig.axes) == n_ids
    assert [ax.get_title() for ax in fig.axes] == [f"id {i:02d}" for i in range(n_ids)]  # sorted
    geometry = fig.axes[0].get_subplotspec().get_geometry()
    assert geometry[:2] == (2, 3)  # 5 panels -> 2 rows x 3 columns


def test_score_distributions_single_class_and_constant_scores():
    fig = plots.score_distributions(["01"] * 3, [0, 0, 0], [2.0, 2.0, 2.0], {"01": 2.0})
    (ax,) = fig.axes
    assert len(ax.patches) > 0 and len(_vlines(ax)) == 1


def test_score_distributions_rejects_mismatched_lengths():
    with pytest.raises(ValueError):
        plots.score_distributions(["00", "00"], [0], [0.1, 0.2], {})


# --- ROC ---------------------------------------------------------------------------------


def test_roc_perfect_separation_passes_through_0_1():
    fpr, tpr = roc_curve([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9])
    np.testing.assert_allclose(fpr, [0, 0, 0, 0.5, 1])
    np.testing.assert_allclose(tpr, [0, 0.5, 1, 1, 1])
    assert np.any((fpr == 0) & (tpr == 1))
    assert np.trapezoid(tpr, fpr) == pytest.approx(1.0)


def test_roc_known_example_with_ties():
    # scores desc: 0.9(1) 0.8(0) 0.5(1) 0.5(0) 0.1(0): the tied pair moves diagonally
    fpr, tpr = roc_curve([1, 0, 1, 0, 0], [0.9, 0.8, 0.5, 0.5, 0.1])
    np.testing.assert_allclose(fpr, [0, 0, 1 / 3, 2 / 3, 1])
    np.testing.assert_allclose(tpr, [0, 0.5, 0.5, 1, 1])
    # AUC = P(anomaly scored above normal), ties count 1/2: 0.9 beats 3, 0.5 beats 1 + ties 1 -> 4.5/6
    assert np.trapezoid(tpr, fpr) == pytest.approx(4.5 / 6)


def test_roc_inverted_scores_give_zero_auc():
    fpr, tpr = roc_curve([0, 0, 1, 1], [0.9, 0.8, 0.2, 0.1])
    assert np.trapezoid(tpr, fpr) == pytest.approx(0.0)


def test_roc_matches_sklearn_if_available():
    sk = pytest.importorskip("sklearn.metrics")
    ids, labels, scores = _scored_clips(seed=3)
    y, s = np.array(labels[:55]), np.array(scores[:55])
    fpr, tpr = roc_curve(y, s)
    assert np.trapezoid(tpr, fpr) == pytest.approx(sk.roc_auc_score(y, s))


def test_roc_curves_one_line_per_id_plus_diagonal(tmp_path):
    ids, labels, scores = _scored_clips()
    # "06" has only normal clips -> skipped
    ids += ["06"] * 5
    labels += [0] * 5
    scores += [0.0] * 5
    fig = plots.roc_curves(ids, labels, scores, aucs={"00": 0.987})
    assert isinstance(fig, Figure)
    (ax,) = fig.axes
    lines = ax.get_lines()
    assert len(lines) == 3 + 1  # three IDs with both classes + chance diagonal
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "id 00 (AUC 0.99)" in legend  # given AUC is used
    assert any(t.startswith("id 02 (AUC ") for t in legend)  # computed AUC otherwise
    assert not any(t.startswith("id 06") for t in legend)
    assert "06" in ax.get_title()
    diag = lines[-1]
    np.testing.assert_array_equal(diag.get_xdata(), [0, 1])
    np.testing.assert_array_equal(diag.get_ydata(), [0, 1])
    assert len(ax.patches) == 1  # the shaded FPR <= 0.1 region
    x0, x1 = ax.patches[0].get_x(), ax.patches[0].get_x() + ax.patches[0].get_width()
    assert (x0, x1) == pytest.approx((0.0, 0.1))
    plots.save(fig, tmp_path / "roc.png")
    _assert_png(tmp_path / "roc.png")


def test_roc_curves_perfect_id_reaches_top_left():
    fig = plots.roc_curves(["00"] * 4, [0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9])
    curve = fig.axes[0].get_lines()[0]
    pts = set(zip(map(float, curve.get_xdata()), map(float, curve.get_ydata())))
    assert (0.0, 1.0) in pts
    assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()][1] == "id 00 (AUC 1.00)"


def test_roc_curves_no_usable_ids():
    fig = plots.roc_curves(["00", "00"], [0, 0], [0.1, 0.2])
    assert len(fig.axes[0].get_lines()) == 1  # only the diagonal


# --- reconstruction ----------------------------------------------------------------------


def test_reconstruction_panels_share_scale(tmp_path):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(64, 40))
    r = x + rng.normal(scale=0.3, size=x.shape)
    fig = plots.reconstruction(x, r, title="id 00 clip 7")
    assert isinstance(fig, Figure)
    panels = [ax for ax in fig.axes if ax.get_images()]
    assert len(panels) == 3
    ims = [ax.get_images()[0] for ax in panels]
    assert ims[0].get_clim() == ims[1].get_clim()
    assert ims[0].get_clim() == pytest.approx((min(x.min(), r.min()), max(x.max(), r.max())))
    np.testing.assert_allclose(ims[2].get_array(), np.abs(x - r))
    assert all(im.origin == "lower" for im in ims)
    assert ims[0].get_array().shape == (64, 40)
    assert panels[-1].get_xlabel() == "frame"
    assert all(ax.get_ylabel() == "mel bin" for ax in panels)
    assert fig.get_suptitle() == "id 00 clip 7"
    plots.save(fig, tmp_path / "recon.png")
    _assert_png(tmp_path / "recon.png")


def test_reconstruction_accepts_batch_axis_and_rejects_mismatch():
    x = np.zeros((1, 8, 5))
    fig = plots.reconstruction(x, x.tolist())
    assert len([ax for ax in fig.axes if ax.get_images()]) == 3
    with pytest.raises(ValueError):
        plots.reconstruction(np.zeros((8, 5)), np.zeros((8, 6)))


# --- general -----------------------------------------------------------------------------


def test_all_figures_save_to_png(tmp_path):
    ids, labels, scores = _scored_clips()
    figs = [
        plots.loss_curves({"train_loss": [1.0]}),
        plots.score_distributions(ids, labels, scores, {}),
        plots.roc_curves(ids, labels, scores),
        plots.reconstruction(np.ones((4, 4)), np.ones((4, 4))),
    ]
    for i, fig in enumerate(figs):
        assert fig.get_dpi() == plots.DPI
        plots.save(fig, str(tmp_path / f"f{i}.png"))  # str paths too
        _assert_png(tmp_path / f"f{i}.png")


def test_import_is_light():
    """Importing the module pulls in neither pyplot, mlflow nor prefect (checked in a fresh interpreter)."""
    code = (
        "import sys, slidead.core.plots; "
        "bad = [m for m in ('matplotlib.pyplot', 'mlflow', 'prefect') if m in sys.modules]; "
        "sys.exit(str(bad) if bad else 0)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
