"""The night's CPU scoring: a shard scored in parts on threads gives the scores of one call, and
the error profiles computed without the frame map equal the map's."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from slidead.core.config import RunConfig
from slidead.core.models import build
from slidead.core.models.reconstruction import profiles
from slidead.core.thresholds import Thresholds
from slidead.jobs.nightly import score_shards_clips
from slidead.store.model_files import LoadedModel

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _profiles_by_map(e: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The frame map itself: every window's error spread onto its frames, averaged."""
    b, w, frames, n_mels = e.shape
    fmap = torch.zeros(b, w + frames - 1, n_mels, dtype=torch.float64)
    cover = torch.zeros(w + frames - 1, 1, dtype=torch.float64)
    for k in range(frames):
        fmap[:, k : k + w] += e[:, :, k, :].double()
        cover[k : k + w] += 1
    fmap /= cover
    return fmap.mean(dim=2), fmap.mean(dim=1)


@pytest.mark.parametrize("shape", [(3, 309, 5, 64), (2, 1, 5, 8), (4, 20, 3, 16)])
def test_profiles_without_the_frame_map_equal_the_maps(shape):
    e = torch.rand(*shape, generator=torch.Generator().manual_seed(0)) ** 3
    t_prof, f_prof = profiles(e)
    t_ref, f_ref = _profiles_by_map(e)
    np.testing.assert_allclose(t_prof.numpy(), t_ref.numpy(), rtol=1e-5)
    np.testing.assert_allclose(f_prof.numpy(), f_ref.numpy(), rtol=1e-5)
    assert torch.equal(t_prof.argmax(dim=1), t_ref.argmax(dim=1))
    assert torch.equal(f_prof.argmax(dim=1), f_ref.argmax(dim=1))


@pytest.mark.parametrize("family", ["ae", "vae"])
def test_a_shard_scored_in_parts_on_threads_gives_the_scores_of_one_call(family):
    torch.manual_seed(0)
    cfg = RunConfig.default(family, "slider")
    model = build(family, cfg.model).eval()
    n_mels = cfg.features.n_mels
    rng = np.random.default_rng(1)
    # 2 lengths (batched apart), 25 clips: shares of 8, 8 and 9 clips
    logmels = [rng.normal(-30, 5, (n_mels, 40 if i % 4 else 25)).astype(np.float32) for i in range(25)]
    ids = ["00", "02"] * 12 + ["04"]
    bands = {"00": list(rng.uniform(1, 2, n_mels))}
    loaded = LoadedModel(model, cfg, Thresholds(band_error=bands), "m", 1, "run")
    one = score_shards_clips(loaded, logmels, ids, "cpu", parts=1)
    three = score_shards_clips(loaded, logmels, ids, "cpu", parts=3)
    np.testing.assert_allclose(three.score, one.score, rtol=1e-5)
    for name in ("peak_time_s", "peak_freq_lo_hz", "span_start_s", "span_end_s", "span_freq_lo_hz"):
        np.testing.assert_array_equal(getattr(three, name), getattr(one, name), err_msg=name)
    np.testing.assert_allclose(three.band_error, one.band_error, rtol=1e-5)
    assert len(three) == 25 and torch.get_num_threads() == 1
