"""Tests for slidead.synth.sounds, the seeded synthetic slide-rail sound generator."""

from __future__ import annotations

import io
import re
import time

import numpy as np
import pytest
import soundfile as sf
from scipy.signal import stft

from slidead.synth.plant import PlantSpec, generate_plant
from slidead.synth.sounds import FAULTS, SAMPLE_RATE, SNRS_DB, anomalous_clip, machine_build, normal_clip, wav_bytes

N = 10 * SAMPLE_RATE


def rng(*words: int) -> np.random.Generator:
    return np.random.default_rng(list(words))


def _bands(x: np.ndarray, n_bands: int = 40) -> np.ndarray:
    """Log power in ``n_bands`` log-spaced bands per frame: ``(frames, n_bands)``."""
    _, _, z = stft(x, nperseg=1024, noverlap=512, boundary=None, padded=False)
    power = np.abs(z) ** 2
    edges = np.unique(np.geomspace(2, power.shape[0], n_bands + 1).astype(int))
    bands = np.add.reduceat(power, edges[:-1], axis=0)
    return np.log10(bands + 1e-12).T


def _rms_db(x: np.ndarray) -> float:
    return 20 * np.log10(np.sqrt(np.mean(np.square(x, dtype=np.float64))))


@pytest.fixture(scope="module")
def build():
    return machine_build("slider", "00", seed=0)


def test_public_constants():
    assert FAULTS == ("rail_clicks", "loose_belt", "dry_squeal", "bearing_tone")
    assert SNRS_DB == (6.0, 0.0, -6.0)
    assert SAMPLE_RATE == 16000


def test_machine_build_is_deterministic_and_per_id():
    a, b = machine_build("slider", "00", 0), machine_build("slider", "00", 0)
    assert a == b and hash(a) == hash(b)
    others = [machine_build("slider", "02", 0), machine_build("slider", "00", 1), machine_build("fan", "00", 0)]
    assert all(o != a and o.shaft_hz != a.shaft_hz for o in others)
    with pytest.raises(ValueError):
        machine_build("slider", "", 0)


def test_clips_are_deterministic(build):
    x, y = normal_clip(build, rng(1)), normal_clip(build, rng(1))
    assert np.array_equal(x, y)
    assert not np.array_equal(x, normal_clip(build, rng(2)))
    a = anomalous_clip(build, rng(3), "dry_squeal", 0.5, snr_db=0.0)
    assert np.array_equal(a, anomalous_clip(build, rng(3), "dry_squeal", 0.5, snr_db=0.0))


@pytest.mark.parametrize("fault", (None,) + FAULTS)
def test_shape_dtype_and_range(build, fault):
    r = rng(4)
    x = normal_clip(build, r) if fault is None else anomalous_clip(build, r, fault, 1.0, snr_db=6.0)
    assert x.shape == (N,) and x.dtype == np.float32
    assert np.all(np.isfinite(x)) and np.max(np.abs(x)) <= 1.0
    assert np.max(np.abs(x)) < 0.99  # headroom: no clipping even with loud clicks
    short = normal_clip(build, r, snr_db=-6.0, duration_s=1.5)
    assert short.shape == (24000,) and short.dtype == np.float32


def test_machine_ids_sound_different():
    """Each ID's clips sit nearer their own mean spectrum than any other ID's."""
    spectra = {}
    for mid in ("00", "02", "04"):
        b = machine_build("slider", mid, 0)
        spectra[mid] = np.array([_bands(normal_clip(b, rng(5, i), snr_db=6.0)).mean(0) for i in range(4)])
    means = {mid: s.mean(0) for mid, s in spectra.items()}
    for mid, s in spectra.items():
        for clip in s:
            dist = {other: np.linalg.norm(clip - m) for other, m in means.items()}
            assert min(dist, key=dist.get) == mid


def test_faults_are_not_a_loudness_change(build):
    normal = np.array([_rms_db(normal_clip(build, rng(6, i))) for i in range(16)])
    lo, hi = normal.min(), normal.max()
    for fault in FAULTS:
        for i, sev in enumerate((0.3, 1.0)):
            level = _rms_db(anomalous_clip(build, rng(7, i), fault, sev))
            assert lo - 1.5 < level < hi + 1.5, (fault, sev, level, lo, hi)
    # and the machine loudness itself is the build's, not the fault's
    assert abs(np.mean(normal) - 20 * np.log10(build.level)) < 1.5


def test_each_fault_changes_the_spectrum_measurably(build):
    """A Gaussian on band-energy frames, fit on normals, scores every fault above its absence.

    The same rng with severity 1 and with a negligible severity gives the same motion and
    background, so the pair isolates what the fault does to the spectrum.
    """
    train = np.concatenate([_bands(normal_clip(build, rng(8, i), snr_db=6.0)) for i in range(10)])
    mu, inv = train.mean(0), np.linalg.inv(np.cov(train.T) + 1e-3 * np.eye(train.shape[1]))

    def score(x):
        d = _bands(x) - mu
        return float(np.mean(np.einsum("ti,ij,tj->t", d, inv, d)))

    normal = np.mean([score(normal_clip(build, rng(9, i), snr_db=6.0)) for i in range(3)])
    for fault in FAULTS:
        ratios = [
            score(anomalous_clip(build, rng(10, i), fault, 1.0, snr_db=6.0))
            / score(anomalous_clip(build, rng(10, i), fault, 1e-3, snr_db=6.0))
            for i in range(3)
        ]
        assert min(ratios) > 1.0 and np.mean(ratios) > 1.05, (fault, ratios)
        faint = np.mean([score(anomalous_clip(build, rng(11, i), fault, 1e-3, snr_db=6.0)) for i in range(2)])
        assert faint < 1.3 * normal  # a negligible fault looks like the normals


def test_wav_bytes_round_trip(build):
    x = normal_clip(build, rng(12), duration_s=2.0)
    data = wav_bytes(x)
    assert data[:4] == b"RIFF" and data[8:12] == b"WAVE"
    info = sf.info(io.BytesIO(data))
    assert info.samplerate == SAMPLE_RATE and info.channels == 1 and info.subtype == "PCM_16"
    y, sr = sf.read(io.BytesIO(data), dtype="float32")
    assert sr == SAMPLE_RATE and y.shape == x.shape
    assert np.max(np.abs(y - x)) <= 1.0 / 32768 + 1e-7
    with pytest.raises(ValueError):
        wav_bytes(np.zeros((2, 100), np.float32))


SMALL = PlantSpec(
    machine_ids=("00", "02"),
    n_train=2,
    n_eval_normal=1,
    n_eval_anomaly=4,
    nights=("2026-11-23", "2026-11-24"),
    night_normal=2,
    night_anomaly=1,
    seed=3,
)


@pytest.fixture(scope="module")
def small_plant():
    store, calls = {}, []
    summary = generate_plant(store.__setitem__, SMALL, progress=lambda d, t: calls.append((d, t)))
    return store, calls, summary


def test_generate_plant_layout_and_counts(small_plant):
    store, calls, summary = small_plant
    expected = set()
    for mid in ("00", "02"):
        expected |= {f"train/slider/id_{mid}/normal_{i:04d}.wav" for i in range(2)}
        expected.add(f"eval/slider/id_{mid}/normal/0000.wav")
        expected |= {f"eval/slider/id_{mid}/anomaly/{f}_{i:04d}.wav" for i, f in enumerate(FAULTS)}
        for night in SMALL.nights:
            expected |= {f"drops/{night}/slider/id_{mid}/{i:04d}.wav" for i in range(3)}
    assert set(store) == expected
    assert summary["train"] == 4 and summary["eval_normal"] == 2
    assert summary["eval_anomaly"] == 8 and summary["drops"] == 12
    assert summary["total"] == len(store) == 26
    assert calls == [(i, 26) for i in range(1, 27)]
    for data in store.values():
        y, sr = sf.read(io.BytesIO(data))
        assert sr == SAMPLE_RATE and y.shape == (N,)


def test_generate_plant_night_truth(small_plant):
    store, _, summary = small_plant
    truth = summary["night_truth"]
    assert set(truth) == {k for k in store if k.startswith("drops/")}
    assert all(re.fullmatch(r"drops/\d{4}-\d{2}-\d{2}/slider/id_\d\d/\d{4}\.wav", k) for k in truth)
    values = list(truth.values())
    assert values.count("normal") == 8 and len(values) == 12
    assert all(v in FAULTS for v in values if v != "normal")


def test_generate_plant_is_stable_when_growing():
    """More clips or more nights leave the earlier clips byte-identical."""
    base = PlantSpec(
        machine_ids=("04",),
        n_train=1,
        n_eval_normal=0,
        n_eval_anomaly=1,
        nights=("2026-11-23",),
        night_normal=1,
        night_anomaly=1,
        seed=5,
    )
    more = PlantSpec(
        machine_ids=("04",),
        n_train=2,
        n_eval_normal=0,
        n_eval_anomaly=2,
        nights=("2026-11-23", "2026-11-24"),
        night_normal=1,
        night_anomaly=1,
        seed=5,
    )
    a, b = {}, {}
    truth_a = generate_plant(a.__setitem__, base)["night_truth"]
    truth_b = generate_plant(b.__setitem__, more)["night_truth"]
    assert set(a) < set(b)
    assert all(a[k] == b[k] for k in a)
    assert all(truth_b[k] == v for k, v in truth_a.items())


@pytest.mark.parametrize(
    "call, word",
    [
        (lambda b: anomalous_clip(b, rng(0), "rusty_nail", 0.5), "rusty_nail"),
        (lambda b: anomalous_clip(b, rng(0), "loose_belt", 0.0), "severity"),
        (lambda b: anomalous_clip(b, rng(0), "loose_belt", 1.5), "1.5"),
        (lambda b: anomalous_clip(b, rng(0), "loose_belt", float("nan")), "nan"),
        (lambda b: normal_clip(b, rng(0), snr_db=float("inf")), "snr_db"),
        (lambda b: normal_clip(b, rng(0), duration_s=0.0), "duration_s"),
    ],
)
def test_clip_argument_errors(build, call, word):
    with pytest.raises(ValueError, match=re.escape(word)):
        call(build)


@pytest.mark.parametrize(
    "changes, word",
    [
        ({"machine_ids": ()}, "machine_ids"),
        ({"machine_ids": ("00", "00")}, "duplicate"),
        ({"machine_ids": ("0/0",)}, "0/0"),
        ({"machine_type": "sli der"}, "sli der"),
        ({"nights": ("2026-13-01",)}, "2026-13-01"),
        ({"nights": ("20261123",)}, "20261123"),
        ({"nights": "2026-11-23"}, "nights"),
        ({"n_train": -1}, "n_train"),
        ({"night_anomaly": 1.5}, "night_anomaly"),
        ({"severity": (0.0, 1.0)}, "severity"),
        ({"severity": (0.8, 0.5)}, "severity"),
    ],
)
def test_generate_plant_argument_errors(changes, word):
    spec = PlantSpec(**{**SMALL.__dict__, **changes})
    written = []
    with pytest.raises(ValueError, match=re.escape(word)):
        generate_plant(lambda k, d: written.append(k), spec)
    assert written == []


def test_clip_generation_is_fast(build):
    r = rng(13)
    anomalous_clip(build, r, "rail_clicks", 0.5)  # warm up
    start = time.perf_counter()
    for fault in FAULTS:
        anomalous_clip(build, r, fault, 0.5)
    assert (time.perf_counter() - start) / len(FAULTS) < 0.25  # ~30 ms here; loose for slow CI
