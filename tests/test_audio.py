"""Tests for slidead.core.audio: WAV decoding, channel choice, resampling and every rejection reason."""

from __future__ import annotations

import struct

import numpy as np
import pytest
import soundfile as sf
from conftest import sine, wav_bytes
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from slidead.core.audio import MAX_RATE, AudioConfig, Decoded, decode, read_file, resample
from slidead.errors import AudioError, SlideadError


def _reason(data: bytes, config: AudioConfig = AudioConfig()) -> str:
    with pytest.raises(AudioError) as info:
        decode(data, config)
    assert isinstance(info.value, SlideadError)
    assert info.value.reason in str(info.value)
    return info.value.reason


def _peak_hz(x: np.ndarray, rate: int) -> float:
    spec = np.abs(np.fft.rfft(x * np.hanning(x.size)))
    return float(np.fft.rfftfreq(x.size, 1 / rate)[np.argmax(spec)])


# --- formats -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "subtype, tol",
    [
        ("PCM_U8", 1 / 128),
        ("PCM_16", 1 / 32768),
        ("PCM_24", 2**-23),
        ("PCM_32", 2**-31),
        ("FLOAT", 0.0),
        ("DOUBLE", 0.0),
    ],
)
def test_decode_formats_roundtrip(subtype, tol):
    x = sine(440.0, 0.5)
    d = decode(wav_bytes(x, 16000, subtype))
    assert isinstance(d, Decoded)
    assert d.audio.dtype == np.float32 and d.audio.shape == x.shape
    assert d.sample_rate == 16000 and d.channels == 1
    assert d.duration_s == pytest.approx(0.5)
    assert d.notes == () and d.note is None
    assert np.max(np.abs(d.audio - x)) <= tol + 1e-7


def test_decode_pcm16_exact_values():
    ints = np.array([0, 1, -1, 16384, -32768, 32767] * 400, dtype=np.int16)
    d = decode(wav_bytes(ints, 16000, "PCM_16"))
    np.testing.assert_array_equal(d.audio, ints.astype(np.float32) / 32768.0)


def test_read_file_reads_a_path(tmp_path):
    x = sine(1000.0, 0.25)
    p = tmp_path / "a.wav"
    p.write_bytes(wav_bytes(x, 16000, "FLOAT"))
    np.testing.assert_array_equal(read_file(p).audio, x)
    np.testing.assert_array_equal(read_file(str(p)).audio, x)


def test_channel_choice_on_synthetic_multichannel():
    rng = np.random.default_rng(0)
    x = (rng.uniform(-0.5, 0.5, (3000, 3))).astype(np.float32)
    data = wav_bytes(x, 16000, "FLOAT")
    d0 = decode(data)
    np.testing.assert_array_equal(d0.audio, x[:, 0])
    assert d0.channels == 3 and "channel 0 of 3" in d0.note
    np.testing.assert_array_equal(decode(data, AudioConfig(channel=2)).audio, x[:, 2])
    assert _reason(data, AudioConfig(channel=3)) == "no_such_channel"


def test_mono_file_ignores_channel_setting():
    x = sine(300.0, 0.25)
    np.testing.assert_array_equal(decode(wav_bytes(x, subtype="FLOAT"), AudioConfig(channel=5)).audio, x)


def test_clipping_beyond_full_scale_is_noted():
    x = sine(300.0, 0.25, amp=2.0)
    d = decode(wav_bytes(x, subtype="FLOAT"))
    assert d.audio.max() == 1.0 and d.audio.min() == -1.0
    assert "clipped" in d.note


# --- real MIMII clips -----------------------------------------------------------------------


def _mimii_files(root):
    files = sorted((root / "slider").glob("id_*/*/00000000.wav"))
    assert len(files) == 8
    return files


def test_mimii_clips_decode_channel_zero(mimii_dir):
    for path in _mimii_files(mimii_dir):
        ref, rate = sf.read(path, dtype="float32", always_2d=True)
        assert ref.shape == (160000, 8) and rate == 16000
        d = read_file(path)
        assert d.channels == 8 and d.sample_rate == 16000
        assert d.duration_s == pytest.approx(10.0)
        np.testing.assert_array_equal(d.audio, ref[:, 0])
        assert d.note == "channel 0 of 8"


def test_mimii_clip_other_channel_and_missing_channel(mimii_dir):
    path = _mimii_files(mimii_dir)[0]
    ref, _ = sf.read(path, dtype="float32", always_2d=True)
    data = path.read_bytes()
    d = decode(data, AudioConfig(channel=5))
    np.testing.assert_array_equal(d.audio, ref[:, 5])
    assert not np.array_equal(ref[:, 5], ref[:, 0])
    assert d.note == "channel 5 of 8"
    assert _reason(data, AudioConfig(channel=8)) == "no_such_channel"


# --- resampling -----------------------------------------------------------------------------


@pytest.mark.parametrize("rate, freq", [(44100, 1000.0), (8000, 440.0), (22050, 2500.0), (48000, 3000.0)])
def test_resample_keeps_length_and_frequency(rate, freq):
    x = sine(freq, 1.0, rate)
    d = decode(wav_bytes(x, rate, "FLOAT"))
    assert d.sample_rate == rate
    assert d.audio.size == 16000
    assert d.duration_s == pytest.approx(1.0)
    assert d.note == f"resampled from {rate} Hz"
    assert _peak_hz(d.audio, 16000) == pytest.approx(freq, abs=1.0)
    # amplitude is kept (away from the edges)
    assert np.max(np.abs(d.audio[2000:-2000])) == pytest.approx(0.5, abs=0.02)


def test_resample_odd_rate_is_fast_and_correct():
    # 44101 Hz reduces to 44101:16000; a dense sinc kernel would take ~12 GB. The polyphase
    # fallback gives the same length and frequency.
    x = sine(1000.0, 1.0, 44101)
    y = resample(x, 44101, 16000)
    assert y.dtype == np.float32 and y.size == 16000
    assert _peak_hz(y, 16000) == pytest.approx(1000.0, abs=1.0)


def test_resample_common_rate_matches_torchaudio():
    import torch
    import torchaudio.functional as AF

    x = sine(700.0, 0.2, 44100)
    np.testing.assert_array_equal(resample(x, 44100, 16000), AF.resample(torch.from_numpy(x), 44100, 16000).numpy())


# --- rejections -----------------------------------------------------------------------------


def test_reject_empty():
    assert _reason(b"") == "empty"


@pytest.mark.parametrize(
    "data", [b"hello world, not audio at all", b"OggS" + bytes(100), b"RIFF\x24\x00\x00\x00AVI " + bytes(64), b"RIFF"]
)
def test_reject_not_wav(data):
    assert _reason(data) == "not_wav"


def _valid() -> bytes:
    return wav_bytes(sine(440.0, 0.5), 16000, "PCM_16")


def test_reject_garbled_fmt_chunk():
    g = bytearray(_valid())
    g[20:36] = b"\xff" * 16
    assert _reason(bytes(g)) == "unreadable"


def test_reject_zero_channels_in_header():
    g = bytearray(_valid())
    g[22:24] = b"\x00\x00"
    assert _reason(bytes(g)) == "unreadable"


def test_reject_header_without_data_chunk():
    assert _reason(_valid()[:40]) == "unreadable"


def test_truncated_file_decodes_what_is_there_with_a_note():
    data = _valid()  # 8000 frames of PCM16 after a 44-byte header
    assert len(data) == 44 + 16000
    d = decode(data[: 44 + 2 * 5000 + 1])  # half a sample too: the odd byte is ignored
    assert d.audio.size == 5000
    np.testing.assert_array_equal(d.audio, decode(data).audio[:5000])
    assert d.note == "truncated: 5000 of 8000 frames present"
    assert decode(data).note is None


def test_truncated_to_header_only_is_rejected():
    assert _reason(_valid()[:44]) == "silent"


def test_truncated_below_one_window_is_too_short():
    assert _reason(_valid()[: 44 + 2 * 1000]) == "too_short"


def test_reject_nan_and_inf():
    x = sine(440.0, 0.5)
    x[100] = np.nan
    assert _reason(wav_bytes(x, subtype="FLOAT")) == "non_finite"
    x[100] = np.inf
    assert _reason(wav_bytes(x, subtype="DOUBLE")) == "non_finite"


def test_reject_digital_silence():
    assert _reason(wav_bytes(np.zeros(16000, np.int16))) == "silent"
    assert _reason(wav_bytes(np.zeros(16000, np.float32), subtype="FLOAT")) == "silent"
    # one non-zero sample is not silence
    x = np.zeros(16000, np.int16)
    x[7] = 1
    assert decode(wav_bytes(x)).audio[7] == pytest.approx(1 / 32768)


def test_reject_silent_chosen_channel_only():
    x = np.zeros((4000, 2), np.float32)
    x[:, 1] = sine(300.0, 0.25)
    data = wav_bytes(x, subtype="FLOAT")
    assert _reason(data) == "silent"
    assert decode(data, AudioConfig(channel=1)).audio.size == 4000


def test_reject_too_short_for_one_context_window():
    assert _reason(wav_bytes(sine(440.0, 1.0)[:2047])) == "too_short"
    with pytest.raises(AudioError, match="2047 samples"):
        decode(wav_bytes(sine(440.0, 1.0)[:2047]))
    assert decode(wav_bytes(sine(440.0, 1.0)[:2048])).audio.size == 2048
    # measured after resampling: 1023 samples at 8 kHz are 2046 at 16 kHz
    assert _reason(wav_bytes(sine(440.0, 1.0, 8000)[:1023], 8000)) == "too_short"


def test_reject_sample_rate_below_minimum():
    assert _reason(wav_bytes(sine(200.0, 1.0, 4000), 4000)) == "sample_rate_too_low"
    assert _reason(wav_bytes(sine(200.0, 1.0, 7999), 7999)) == "sample_rate_too_low"
    assert decode(wav_bytes(sine(200.0, 1.0, 8000), 8000)).sample_rate == 8000


def test_reject_sample_rate_above_maximum():
    rate = MAX_RATE + 1
    assert _reason(wav_bytes(sine(200.0, 0.05, rate), rate)) == "sample_rate_too_high"


def test_reject_too_long():
    assert _reason(wav_bytes(sine(440.0, 1.0)), AudioConfig(max_seconds=0.5)) == "too_long"


def test_audio_config_validation():
    with pytest.raises(ValueError, match="channel"):
        AudioConfig(channel=-1)
    with pytest.raises(ValueError, match="rates"):
        AudioConfig(target_rate=0)


# --- property: nothing but AudioError -------------------------------------------------------


def _decode_or_audio_error(data: bytes) -> None:
    try:
        d = decode(data)
    except AudioError as e:
        assert e.reason and isinstance(e.reason, str)
        return
    assert d.audio.dtype == np.float32 and d.audio.ndim == 1
    assert np.all(np.isfinite(d.audio)) and np.max(np.abs(d.audio)) <= 1.0
    assert d.audio.size >= AudioConfig().min_samples


_FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
_HEADER = wav_bytes(sine(440.0, 0.5))[:44]


@_FAST
@given(st.binary(max_size=512))
def test_random_bytes_raise_only_audio_error(data):
    _decode_or_audio_error(data)


@_FAST
@given(st.binary(min_size=0, max_size=8192))
def test_random_bytes_after_valid_header_raise_only_audio_error(body):
    _decode_or_audio_error(_HEADER + body)


@_FAST
@given(
    fmt=st.sampled_from([1, 3, 0, 0xFFFE, 7]),
    channels=st.integers(0, 9),
    rate=st.sampled_from(
        [0, 1, 7999, 8000, 11025, 16000, 22050, 44100, 44101, 48000, 96000, MAX_RATE + 1, 2**31 - 1, 2**32 - 1]
    ),
    bits=st.sampled_from([0, 8, 16, 24, 32, 64, 7]),
    declared=st.one_of(st.none(), st.integers(0, 2**32 - 1)),
    body=st.binary(min_size=0, max_size=6000),
)
def test_random_header_fields_raise_only_audio_error(fmt, channels, rate, bits, declared, body):
    block = max(channels * bits // 8, 0)
    fmt_chunk = struct.pack("<HHIIHH", fmt, channels, rate, (rate * block) & 0xFFFFFFFF, block & 0xFFFF, bits)
    size = len(body) if declared is None else declared
    data = (
        b"RIFF"
        + struct.pack("<I", 36 + len(body))
        + b"WAVE"
        + b"fmt "
        + struct.pack("<I", 16)
        + fmt_chunk
        + b"data"
        + struct.pack("<I", size)
        + body
    )
    _decode_or_audio_error(data)
