"""The family contract: every family declares how it fits and scores its windows through the
registry, so the jobs and the scoring ask no network what it is, and every list of families
(the command line's help, the SLIDEAD_FAMILY check) comes from the registry's files."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch

from slidead.core.family_names import built_in_families
from slidead.core.features import windows
from slidead.core.models import CLIPS, EPOCHS, Family, families, family, register
from slidead.core.models.registry import FITS
from slidead.core.score import ScoreConfig, fit_normal_statistics, score_logmels
from slidead.core.train import FrameWindows

ROOT = Path(__file__).resolve().parents[1]


def test_the_jobs_and_the_scoring_ask_no_model_what_it_is():
    asking = re.compile(r"hasattr\(\s*model")
    found = [
        f"{p.relative_to(ROOT)}:{n}"
        for folder in ("slidead/jobs", "slidead/core")
        for p in sorted((ROOT / folder).rglob("*.py"))
        for n, line in enumerate(p.read_text().splitlines(), 1)
        if asking.search(line)
    ]
    assert found == []


def test_the_built_in_names_read_from_the_family_files_are_the_registrys():
    in_package = {n for n in families() if family(n).network.__module__.startswith("slidead.core.models.")}
    assert set(built_in_families()) == in_package
    assert {"ae", "vae", "idclf", "clipstats", "knn"} <= in_package


def test_the_command_line_and_the_settings_name_every_built_in_family(monkeypatch):
    from slidead.settings import Settings
    from slidead.shell.cli import family_help, family_name

    for name in built_in_families():
        assert name in family_help() and family_name(name) == name
        monkeypatch.setenv("SLIDEAD_FAMILY", name)
        assert Settings().family == name
    monkeypatch.setenv("SLIDEAD_FAMILY", "nosuch")
    with pytest.raises(ValueError, match="SLIDEAD_FAMILY='nosuch': expected one of"):
        Settings()


@pytest.mark.parametrize("name", ["ae", "vae", "idclf", "clipstats", "knn"])
def test_every_built_in_family_declares_how_it_fits_and_offers_what_that_needs(name):
    fam = family(name)
    net = fam.build()
    assert fam.fits in FITS
    if fam.fits == CLIPS:
        assert callable(net.fit_clips) and not fam.needs_statistics("mahalanobis")
    else:
        assert fam.needs_statistics("mahalanobis")
    if fam.reconstructs:
        assert callable(net.window_errors)
    else:
        assert callable(net.score_windows)
    if "mahalanobis" in fam.metrics and fam.fits == EPOCHS and not fam.reconstructs:
        assert callable(net.embed)


def test_a_family_that_fits_in_some_other_way_is_refused():
    ae = family("ae")
    with pytest.raises(ValueError, match="fits='boosting'"):
        register(Family("odd", ae.network, ae.config, features={}, batch_size=8, metrics=("mse",), fits="boosting"))
    assert "odd" not in families()


def test_the_shared_reconstruction_default_scores_the_seeds_window_error():
    """mse: a clip's score is the mean over its windows of (mean squared error + the extra term)."""
    fam = family("vae")
    torch.manual_seed(0)
    model = fam.build(fam.model_config(fam.feature_config())).eval()
    feats = fam.feature_config()
    rng = np.random.default_rng(1)
    clips = [rng.normal(-30, 5, (feats.n_mels, 12)).astype(np.float32) for _ in range(2)]
    for use_kl in (False, True):
        got = score_logmels(model, clips, feats, ScoreConfig(use_kl=use_kl)).score
        for clip, score in zip(clips, got):
            x = torch.as_tensor(windows(clip, feats.frames))
            with torch.no_grad():
                err, extra = model.window_errors(x, use_kl=use_kl)
            assert score == pytest.approx(float((err.mean(dim=1) + extra).mean()), rel=1e-5)


def test_the_id_classifiers_band_profiles_are_each_ids_mean_and_spread_of_patch_levels():
    fam = family("idclf")
    cfg = fam.model_config(fam.feature_config(), classes=("00", "02"), channels=(4, 8))
    torch.manual_seed(0)
    model = fam.build(cfg)
    rng = np.random.default_rng(2)
    clips = [rng.normal(-30 + 10 * (i % 2), 4, (cfg.n_mels, 48)).astype(np.float32) for i in range(4)]
    labels = [0, 1, 0, 1]
    data = FrameWindows(clips, cfg.frames, labels, cfg.patch_hop)
    fit_normal_statistics(model, data, ("00", "02"), ScoreConfig(metric="logit"), batch=3)
    for k in (0, 1):
        levels = np.stack(
            [
                c[:, s : s + cfg.frames].mean(axis=1)
                for c, y in zip(clips, labels)
                if y == k
                for s in range(0, c.shape[1] - cfg.frames + 1, cfg.patch_hop)
            ]
        )
        np.testing.assert_allclose(model.band_mean[k].numpy(), levels.mean(axis=0), rtol=1e-5)
        np.testing.assert_allclose(model.band_std[k].numpy(), levels.std(axis=0, ddof=1).clip(1e-3), rtol=1e-4)
