"""The GPU path agrees with the CPU: log-mel features computed on the GPU, and a night scored
end to end with ``device="cuda"`` (features and model on the GPU), give the CPU's numbers.
Each test skips itself without CUDA; ``make gpu-check`` runs them on a GPU (where a skip counts
as a failure)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from faultkit import MODEL, NIGHT, champion_registry, good_clips, put_night, services

from slidead.core.features import FeatureConfig, LogMel

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")]


@pytest.mark.parametrize("n_mels", [64, 128])
def test_log_mels_on_the_gpu_equal_the_cpus(n_mels):
    cfg = FeatureConfig(n_mels=n_mels)
    audio = np.random.default_rng(0).uniform(-0.3, 0.3, (3, 16000 * 2)).astype(np.float32)
    cpu, gpu = LogMel(cfg, "cpu")(audio), LogMel(cfg, "cuda")(audio)
    assert gpu.shape == cpu.shape == (3, n_mels, 63)
    np.testing.assert_allclose(gpu, cpu, atol=1e-3)  # dB: the same features to a thousandth


def test_a_night_scored_on_the_gpu_gives_the_cpus_scores(tmp_path):
    from slidead.jobs.nightly import run_night

    scores = {}
    for device in ("cpu", "cuda"):
        svc = services(tmp_path / device, tracking_uri=champion_registry())
        svc.device = device
        put_night(svc.store, good_clips(12))
        res = run_night(svc, NIGHT, "ae")
        assert res.n_scored == 12 and res.models == {MODEL: 1}
        with svc.db.connect(read_only=True) as con:
            scores[device] = con.execute(
                "SELECT clip_id, score, peak_freq_lo_hz FROM scores ORDER BY clip_id"
            ).fetchall()
    cpu, gpu = scores["cpu"], scores["cuda"]
    assert [c[0] for c in gpu] == [c[0] for c in cpu]
    np.testing.assert_allclose([g[1] for g in gpu], [c[1] for c in cpu], rtol=1e-3)
    assert [g[2] for g in gpu] == [c[2] for c in cpu]
