"""Shared fixtures: WAV bytes made with soundfile, and the real MIMII sample clips."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

MIMII_SAMPLES = Path(__file__).resolve().parents[2] / "shared" / "samples" / "mimii"


def wav_bytes(audio: np.ndarray, rate: int = 16000, subtype: str = "PCM_16") -> bytes:
    """``audio`` (samples,) or (samples, channels) written as a WAV file in memory."""
    buf = io.BytesIO()
    sf.write(buf, audio, rate, subtype=subtype, format="WAV")
    return buf.getvalue()


def sine(freq: float, seconds: float, rate: int = 16000, amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(round(seconds * rate))) / rate
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


@pytest.fixture
def make_wav():
    return wav_bytes


@pytest.fixture
def make_sine():
    return sine


@pytest.fixture(scope="session")
def mimii_dir() -> Path:
    """The folder holding ``slider/id_<NN>/{normal,abnormal}/00000000.wav``; skips if absent."""
    if not (MIMII_SAMPLES / "slider").is_dir():
        pytest.skip(f"real MIMII sample clips not found at {MIMII_SAMPLES}")
    return MIMII_SAMPLES


@pytest.fixture
def one_torch_thread():
    """Run torch on one intra-op thread for the test. Tiny models gain nothing from more, and on a
    busy 2-core machine OpenMP's spinning threads make them 30x slower."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
