"""Read a WAV (bytes or file) into float32 mono at 16 kHz, or say why it cannot be scored.

``decode(data) -> Decoded`` with ``audio`` of shape ``(samples,)`` float32 in [-1, 1] at
``target_rate``. Multichannel files (MIMII clips are 8-channel WAVE_FORMAT_EXTENSIBLE) give
one configurable channel; other rates are resampled with torchaudio. Anything that cannot be
scored raises :class:`~slidead.errors.AudioError` with a short ``reason``. A truncated file
(less data than its header declares) decodes what is there, with a ``truncated`` note; a
header that declares zero data bytes before audio that is there (a recorder stopped before it
fixed its header) decodes the audio present, with a note. Saturated recordings (flat runs at
full scale) and clips longer than 15 s are scored, with a note.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf

from slidead.errors import AudioError

NOMINAL_SECONDS = 10.0
CLIP_LEVEL = 0.99  # |sample| at or above this is full scale (8-bit PCM peaks at 127/128)
CLIP_RUN = 3  # consecutive equal full-scale samples that make a flat top
CLIP_FRACTION = 1e-3  # more than this share of samples in flat tops: noted as clipped
MAX_RATE = 384_000  # above this a header is corrupt, and resampling would blow up memory
_EXACT_RESAMPLE_MAX = 1000  # torchaudio's kernel grows as (new/g) x (orig/g): use it only when small


@dataclass(frozen=True)
class AudioConfig:
    target_rate: int = 16000
    channel: int = 0
    min_rate: int = 8000  # below this, resampling up would invent the spectrum: reject
    min_samples: int = 2048  # one context window of 5 frames at hop 512
    max_seconds: float = 600.0  # guards against absurd files
    max_bytes: int = 64_000_000  # larger objects are judged from their first HEAD_BYTES, never read whole

    def __post_init__(self):
        if self.target_rate <= 0 or self.min_rate <= 0:
            raise ValueError(f"AudioConfig rates must be > 0, got {self.target_rate}, {self.min_rate}")
        if self.channel < 0:
            raise ValueError(f"AudioConfig.channel={self.channel!r} must be >= 0")


@dataclass(frozen=True)
class Decoded:
    audio: np.ndarray  # (samples,) float32 at target rate
    sample_rate: int  # the file's own rate
    channels: int
    duration_s: float
    notes: tuple[str, ...] = field(default=())

    @property
    def note(self) -> str | None:
        return "; ".join(self.notes) or None


def read_file(path: str | Path, config: AudioConfig = AudioConfig()) -> Decoded:
    return decode(Path(path).read_bytes(), config)


def decode(data: bytes, config: AudioConfig = AudioConfig()) -> Decoded:
    """Decode WAV bytes. Raises AudioError(reason, detail) for anything unscorable."""
    if not data:
        raise AudioError("empty", "zero bytes")
    if data[:4] not in (b"RIFF", b"RIFX", b"RF64") or data[8:12] != b"WAVE":
        raise AudioError("not_wav", f"no RIFF/WAVE header (starts with {data[:12]!r})")
    data, repaired = _repair_zero_data_size(data)
    try:
        with sf.SoundFile(io.BytesIO(data)) as f:
            rate, channels, frames = f.samplerate, f.channels, f.frames
            if rate <= 0 or channels <= 0:
                raise AudioError("corrupt_header", f"sample rate {rate}, channels {channels}")
            if frames > config.max_seconds * rate:
                raise AudioError("too_long", f"{frames / rate:.0f} s is over the {config.max_seconds:.0f} s limit")
            x = f.read(dtype="float32", always_2d=True)
    except AudioError:
        raise
    except Exception as e:  # soundfile raises LibsndfileError/RuntimeError with a message
        raise AudioError("unreadable", str(e).strip() or type(e).__name__) from None
    notes: list[str] = [repaired] if repaired else []
    expected = max(frames, _declared_frames(data))  # libsndfile counts only the frames present
    if x.shape[0] < expected:
        notes.append(f"truncated: {x.shape[0]} of {expected} frames present")
    if channels > 1:
        if config.channel >= channels:
            raise AudioError("no_such_channel", f"channel {config.channel} asked for, file has {channels}")
        notes.append(f"channel {config.channel} of {channels}")
    audio = np.ascontiguousarray(x[:, config.channel if channels > 1 else 0])
    if not np.all(np.isfinite(audio)):
        raise AudioError("non_finite", f"{int(np.sum(~np.isfinite(audio)))} NaN/Inf samples")
    if audio.size == 0 or not np.any(audio):
        raise AudioError("silent", "digital silence (every sample is zero)" if audio.size else "no samples")
    if rate < config.min_rate:
        raise AudioError("sample_rate_too_low", f"{rate} Hz is below the {config.min_rate} Hz minimum")
    if rate > MAX_RATE:
        raise AudioError("sample_rate_too_high", f"{rate} Hz is above the {MAX_RATE} Hz maximum")
    flat = _flat_top_samples(audio)
    if flat > CLIP_FRACTION * audio.size:
        notes.append(f"clipped: {flat} samples ({100.0 * flat / audio.size:.1f}%) in flat runs at full scale")
    if rate != config.target_rate:
        audio = resample(audio, rate, config.target_rate)
        notes.append(f"resampled from {rate} Hz")
    if audio.size < config.min_samples:
        raise AudioError(
            "too_short",
            f"{audio.size} samples ({audio.size / config.target_rate:.3f} s) are fewer than one "
            f"context window needs ({config.min_samples})",
        )
    duration = audio.size / config.target_rate
    if duration > NOMINAL_SECONDS * 1.5:
        notes.append(f"long clip: {duration:.1f} s")
    peak = float(np.max(np.abs(audio)))
    if peak > 1.0:
        audio = np.clip(audio, -1.0, 1.0)
        notes.append("samples beyond full scale clipped")
    return Decoded(audio.astype(np.float32, copy=False), rate, channels, duration, tuple(notes))


def resample(audio: np.ndarray, orig_rate: int, new_rate: int) -> np.ndarray:
    """Band-limited resampling. torchaudio's sinc kernel for rates whose ratio reduces to small
    integers (every common rate); a polyphase filter otherwise (44101 Hz would need a 12 GB kernel)."""
    import math

    g = math.gcd(orig_rate, new_rate)
    if max(orig_rate, new_rate) // g > _EXACT_RESAMPLE_MAX:
        from scipy.signal import resample_poly

        return resample_poly(np.asarray(audio, dtype=np.float64), new_rate // g, orig_rate // g).astype(np.float32)
    import torch
    import torchaudio.functional as AF

    y = AF.resample(torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32)), orig_rate, new_rate)
    return y.numpy()


def _flat_top_samples(audio: np.ndarray) -> int:
    """Samples in runs of at least CLIP_RUN consecutive equal full-scale values (a saturated recording)."""
    hot = np.abs(audio) >= CLIP_LEVEL
    if not hot.any():
        return 0
    same = np.concatenate(([False], audio[1:] == audio[:-1]))
    flat = hot & (same | np.concatenate((same[1:], [False])))  # part of a run of equal values
    edges = np.diff(np.concatenate(([0], flat.view(np.int8), [0])))
    lengths = np.flatnonzero(edges == -1) - np.flatnonzero(edges == 1)
    return int(lengths[lengths >= CLIP_RUN].sum())


def _data_chunk(data: bytes) -> tuple[int, int, int] | None:
    """(offset, declared size, block align) of a plain RIFF file's ``data`` chunk, or None."""
    if data[:4] != b"RIFF":
        return None
    pos, block_align = 12, 0
    while pos + 8 <= len(data):
        cid, size = data[pos : pos + 4], int.from_bytes(data[pos + 4 : pos + 8], "little")
        if cid == b"fmt " and pos + 22 <= len(data):
            block_align = int.from_bytes(data[pos + 20 : pos + 22], "little")
        elif cid == b"data":
            return pos, size, block_align
        pos += 8 + size + (size & 1)
    return None


HEAD_BYTES = 64 * 1024  # what is read of an object over max_bytes: the RIFF header is in it


def oversized(head: bytes, size: int, config: AudioConfig = AudioConfig()) -> AudioError:
    """Why an object of ``size`` bytes, over ``config.max_bytes``, is rejected, judged from its
    first bytes (``head``) alone: ``too_long`` when its header says it lasts longer than
    ``max_seconds``, else ``too_large``. Its samples are never read."""
    mb = size / 1e6
    limit = f"the {config.max_bytes / 1e6:.0f} MB limit (SLIDEAD_MAX_CLIP_MB)"
    fmt = _fmt(head)
    if head[:4] not in (b"RIFF", b"RIFX", b"RF64") or head[8:12] != b"WAVE":
        return AudioError("not_wav", f"no RIFF/WAVE header (starts with {head[:12]!r}); {mb:.0f} MB, over {limit}")
    if fmt is None:
        return AudioError("too_large", f"{mb:.0f} MB is over {limit}; its header names no format")
    channels, rate, block_align = fmt
    chunk = _data_chunk(head)
    payload = size - (chunk[0] + 8 if chunk else 44)
    seconds = payload / (block_align * rate) if block_align > 0 and rate > 0 else None
    what = f"{channels} channel(s) at {rate} Hz, {mb:.0f} MB"
    if seconds is not None and seconds > config.max_seconds:
        return AudioError(
            "too_long",
            f"{seconds:.0f} s ({what}) is over the {config.max_seconds:.0f} s limit; judged from the header, not read",
        )
    return AudioError("too_large", f"{what} is over {limit}; judged from the header, not read")


def _fmt(data: bytes) -> tuple[int, int, int] | None:
    """(channels, sample rate, block align) from a plain RIFF file's ``fmt `` chunk, or None."""
    if data[:4] != b"RIFF":
        return None
    pos = 12
    while pos + 8 <= len(data):
        cid, size = data[pos : pos + 4], int.from_bytes(data[pos + 4 : pos + 8], "little")
        if cid == b"fmt " and pos + 24 <= len(data):
            channels = int.from_bytes(data[pos + 10 : pos + 12], "little")
            rate = int.from_bytes(data[pos + 12 : pos + 16], "little")
            return channels, rate, int.from_bytes(data[pos + 20 : pos + 22], "little")
        pos += 8 + size + (size & 1)
    return None


def _repair_zero_data_size(data: bytes) -> tuple[bytes, str | None]:
    """A RIFF ``data`` chunk that declares 0 bytes with bytes after it: declare what is there."""
    chunk = _data_chunk(data)
    if chunk is None:
        return data, None
    pos, size, block_align = chunk
    present = len(data) - (pos + 8)
    if size != 0 or present <= 0 or block_align <= 0:
        return data, None
    present -= present % block_align
    fixed = bytearray(data)
    fixed[pos + 4 : pos + 8] = present.to_bytes(4, "little")
    fixed[4:8] = min(pos + present, 0xFFFFFFFF).to_bytes(4, "little")
    return bytes(fixed), f"header declared 0 data bytes; read the {present // block_align} frames present"


def _declared_frames(data: bytes) -> int:
    """Frames the RIFF header's ``data`` chunk declares (0 when unknown or not plain RIFF)."""
    chunk = _data_chunk(data)
    if chunk is None:
        return 0
    _, size, block_align = chunk
    if block_align <= 0 or size in (0, 0xFFFFFFFF):  # streaming writers leave these
        return 0
    return size // block_align
