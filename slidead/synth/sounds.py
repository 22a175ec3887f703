"""Seeded synthetic slide-rail sounds, used by the demo and the tests instead of real data.

A :class:`MachineBuild` (from :func:`machine_build`) fixes one machine's character: motor
shaft rate and harmonics, belt and gear-mesh ratios, friction band, structural resonances.
Each clip draws its own carriage motion (a few back-and-forth strokes with dwells), pitch
jitter and gain, mixes in non-stationary factory noise at an SNR of 6, 0 or -6 dB, and is
scaled to the machine's usual loudness, so a fault changes the spectrum, never the level.
``normal_clip`` and ``anomalous_clip`` return ``(round(duration_s * 16000),)`` float32
arrays within [-1, 1]; the same build and rng state give the identical array. Faults:
rail_clicks (impacts at damaged spots on each pass), loose_belt (belt-tone wobble, slip and
sub-harmonic flapping), dry_squeal (gliding narrowband squeal), bearing_tone (defect tone
with shaft-rate sidebands and a ringing resonance); their level grows as severity**1.5.
:func:`generate_plant` (in :mod:`slidead.synth.plant`) writes a DCASE-like
tree of 16-bit WAV files through ``put``.
"""

from __future__ import annotations

import io
import zlib
from dataclasses import dataclass, replace
from functools import reduce

import numpy as np
import soundfile as sf
from scipy.signal import butter, lfilter

FAULTS: tuple[str, ...] = ("rail_clicks", "loose_belt", "dry_squeal", "bearing_tone")
SNRS_DB: tuple[float, ...] = (6.0, 0.0, -6.0)
SAMPLE_RATE = 16000
_FS = SAMPLE_RATE
_CTRL = 500  # rate (Hz) at which the carriage speed profile is drawn
# Fault RMS relative to the machine sound at severity 1, tuned so that a Gaussian on log-mel
# frames scores a mean AUC near 0.75 at severities in [0.3, 1] and mixed SNRs.
_FAULT_LEVEL = {"rail_clicks": 0.7, "loose_belt": 1.3, "dry_squeal": 0.16, "bearing_tone": 1.1}


@dataclass(frozen=True)
class MachineBuild:
    """Per-machine constants; frequencies in Hz, ratios relative to the shaft rate."""

    machine_type: str
    machine_id: str
    seed: int
    shaft_hz: float  # motor shaft rate at full carriage speed
    harmonics: tuple[float, ...]  # amplitudes of shaft harmonics 1..8
    belt_ratio: float  # belt tooth-mesh frequency / shaft rate
    gear_teeth: int  # gear mesh = teeth * shaft rate
    bearing_ratio: float  # outer-race defect frequency / shaft rate
    pwm_hz: float  # drive whine, present also at standstill
    friction_band: tuple[float, float]
    friction_gain: float
    resonances: tuple[tuple[float, float, float], ...]  # (Hz, Q, gain) of the frame
    stroke_s: float  # mean stroke duration
    dwell_s: float  # mean stop between strokes
    ramp_s: float  # acceleration ramp
    squeal_hz: float
    click_hz: float
    mains_hz: float
    level: float  # typical clip RMS


@dataclass(frozen=True)
class Session:
    """Recording conditions that hold for a whole session and change between sessions: a
    machine's normal sound varies more between sessions than within one."""

    speed: float = 1.0  # carriage speed scale: motor, belt and gear tones move with it
    load: float = 1.0  # friction gain scale
    snr_db: float = 0.0  # shift of the background's SNR
    gain_db: float = 0.0  # microphone gain (after the clip's loudness)
    tilt: float = 0.0  # microphone response, -1 dull .. +1 bright (first-order)


def session_conditions(build: "MachineBuild", index: int) -> Session:
    """The conditions of recording session ``index`` of a machine (deterministic)."""
    r = _seed_rng(build.seed, "session", build.machine_type, build.machine_id, int(index))
    return Session(
        float(np.exp(r.normal(0, 0.05))),
        float(np.exp(r.normal(0, 0.35))),
        float(r.normal(0, 3.0)),
        float(r.normal(0, 4.0)),
        float(r.uniform(-0.7, 0.7)),
    )


def _seed_rng(*parts) -> np.random.Generator:
    words = [p % (1 << 64) if isinstance(p, int) else zlib.crc32(str(p).encode()) for p in parts]
    return np.random.default_rng(np.random.SeedSequence(words))


def machine_build(machine_type: str, machine_id: str, seed: int = 0) -> MachineBuild:
    """The deterministic build of one machine (same arguments -> same build)."""
    if not machine_type or not machine_id:
        raise ValueError(f"empty machine_type {machine_type!r} or machine_id {machine_id!r}")
    r = _seed_rng(int(seed), "build", machine_type, machine_id)
    decay = r.uniform(0.15, 0.5)
    harm = tuple(float(np.exp(-k * decay) * r.uniform(0.3, 1.0)) for k in range(8))
    lo = r.uniform(200, 700)
    res = tuple(
        (float(np.exp(r.uniform(np.log(300), np.log(5000)))), float(r.uniform(4, 15)), float(r.uniform(0.5, 2.0)))
        for _ in range(3)
    )
    return MachineBuild(
        machine_type,
        machine_id,
        int(seed),
        float(r.uniform(22, 48)),
        harm,
        float(r.uniform(4.0, 9.0)),
        int(r.integers(14, 40)),
        float(r.uniform(3.0, 5.5)),
        float(r.uniform(2500, 6000)),
        (float(lo), float(min(lo * r.uniform(4, 10), 7000))),
        float(r.uniform(0.8, 2.0)),
        res,
        float(r.uniform(0.9, 2.0)),
        float(r.uniform(0.3, 1.0)),
        float(r.uniform(0.08, 0.25)),
        float(r.uniform(1800, 4500)),
        float(r.uniform(1500, 5000)),
        50.0 if _seed_rng(int(seed), "mains").random() < 0.5 else 60.0,  # one plant, one grid
        float(10 ** (r.uniform(-33, -27) / 20)),
    )


# ---------------------------------------------------------------- signal helpers
def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x)) + 1e-20))


def _wrap(phase: np.ndarray, k: float = 1.0) -> np.ndarray:
    """``k * phase`` wrapped to [0, 2 pi) as float32, so that np.sin runs fast."""
    return np.mod(phase * k, 2 * np.pi).astype(np.float32)


def _lerp(knots: np.ndarray, n: int) -> np.ndarray:
    """Stretch evenly spaced ``knots`` linearly over ``n`` samples."""
    return np.interp(np.arange(n, dtype=np.float64), np.linspace(0, n - 1, len(knots)), knots)


def _slow(rng, n: int, width_s: float) -> np.ndarray:
    """A slow random curve (about unit spread) with a new knot every ``width_s`` seconds."""
    return _lerp(rng.standard_normal(int(n / (width_s * _FS)) + 2), n)


def _biquad(hz: float, q: float) -> tuple[np.ndarray, np.ndarray]:
    """RBJ band-pass biquad (0 dB peak) centred on ``hz``."""
    w0 = 2 * np.pi * min(hz, 0.45 * _FS) / _FS
    alpha = np.sin(w0) / (2 * q)
    return np.array([alpha, 0.0, -alpha]), np.array([1 + alpha, -2 * np.cos(w0), 1 - alpha])


def _body(x: np.ndarray, resonances) -> np.ndarray:
    """``x`` plus its parallel resonances, run as one 6th-order filter (cheaper than three)."""
    bs, as_ = zip(*(_biquad(hz, q) for hz, q, _ in resonances))
    a = reduce(np.polymul, as_)
    b = a
    for i, (_, _, g) in enumerate(resonances):
        b = np.polyadd(b, g * reduce(np.polymul, [aj for j, aj in enumerate(as_) if j != i], bs[i]))
    return lfilter(b, a, x)


def _speed(build: MachineBuild, rng, n: int) -> np.ndarray:
    """Signed carriage speed in [-1, 1] per sample: strokes, dwells, reversals."""
    n_ctrl = n * _CTRL // _FS + 2
    values, lengths = [0.0], [int(rng.uniform(0, 1.2) * _CTRL)]
    direction = rng.choice([-1.0, 1.0])
    while sum(lengths) < n_ctrl:
        values += [direction * rng.uniform(0.75, 1.0), 0.0]
        lengths += [
            int(build.stroke_s * rng.uniform(0.7, 1.3) * _CTRL),
            int(build.dwell_s * rng.uniform(0.5, 1.5) * _CTRL),
        ]
        direction = -direction
    ramp = np.hanning(max(3, int(build.ramp_s * _CTRL)))
    target = np.repeat(values, lengths)[:n_ctrl]
    return _lerp(np.convolve(target, ramp / ramp.sum(), "same")[:n_ctrl], n)


# ---------------------------------------------------------------- sound sources
def _machine(build: MachineBuild, rng, v: np.ndarray, phase: np.ndarray) -> np.ndarray:
    """Motor harmonics, belt and gear tones, friction noise through the frame resonances."""
    n = len(v)
    ph = _wrap(phase)
    amps = np.asarray(build.harmonics) * np.exp(rng.normal(0, 0.15, len(build.harmonics)))
    offsets = rng.uniform(0, 2 * np.pi, len(amps)).astype(np.float32)
    tones = sum(float(a) * np.sin((k + 1) * ph + offsets[k]) for k, a in enumerate(amps))
    ph_belt = _wrap(phase, build.belt_ratio)
    belt = np.sin(ph_belt) + 0.3 * np.sin(2 * ph_belt)
    gear = np.sin(build.gear_teeth * ph) * ((0.2 + 0.8 * v) * v)
    pwm = 0.05 * np.sin(_wrap(np.arange(n), 2 * np.pi * build.pwm_hz * rng.normal(1, 0.002) / _FS))
    b, a = butter(2, build.friction_band, "bandpass", fs=_FS)
    fric = lfilter(b, a, rng.standard_normal(n)) * (v**1.2 * (1 + 0.3 * _slow(rng, n, 0.1)))
    fric *= build.friction_gain * np.exp(rng.normal(0, 0.15))
    body = _body(fric + 0.3 * gear, build.resonances)
    return (0.5 * tones) * v**0.7 + (0.3 * belt) * v + body + pwm


def _background(build: MachineBuild, rng, n: int) -> np.ndarray:
    """Non-stationary factory noise: drifting coloured noise, mains hum, distant impacts."""
    white = rng.standard_normal(n)
    red = lfilter([1.0], [1.0, -rng.uniform(0.95, 0.995)], white)
    col = red * (1 / _rms(red)) + rng.uniform(0.1, 0.6) * white
    col *= np.exp(0.4 * _slow(rng, n, rng.uniform(0.5, 2.0)))
    ph = _wrap(np.arange(n), 2 * np.pi * build.mains_hz / _FS)
    hum = sum(np.sin(k * ph + np.float32(rng.uniform(0, 2 * np.pi))) / k for k in (1, 2, 3))
    hum_env = rng.uniform(0, 0.5) * np.clip(1 + 0.5 * _slow(rng, n, 1.0), 0, None)
    imp = np.zeros(n)
    idx = rng.integers(0, n, rng.poisson(1.5))
    imp[idx] = rng.uniform(1, 4, len(idx))
    env = lfilter([1.0], [1.0, -np.exp(-1 / (rng.uniform(0.03, 0.15) * _FS))], imp)
    boom = lfilter(*_biquad(rng.uniform(80, 600), 2.0), env * white[::-1])
    return col + hum_env * hum + 3 * boom


def _fault(build: MachineBuild, rng, kind: str, s: np.ndarray, shaft: np.ndarray, phase: np.ndarray) -> np.ndarray:
    n, v = len(s), np.abs(s)
    t = np.arange(n, dtype=np.float32) / _FS
    if kind == "rail_clicks":  # damaged spots on the rail, struck each time the carriage passes
        x = np.cumsum(s)
        pos = (x - x.min()) / (np.ptp(x) + 1e-9)
        imp = np.zeros(n)
        for spot in rng.uniform(0.1, 0.9, rng.integers(1, 4)):
            cross = np.flatnonzero(np.diff(np.sign(pos - spot)))
            imp[cross] = rng.uniform(0.5, 1.0, len(cross)) * v[cross]
        rattle = np.flatnonzero(rng.random(n) < v * (3.0 / _FS))  # a few small knocks in motion
        imp[rattle] += rng.uniform(0.1, 0.4, len(rattle))
        env = lfilter([1.0], [1.0, -np.exp(-1 / (rng.uniform(0.002, 0.008) * _FS))], imp)
        return env * rng.standard_normal(n) + 4 * lfilter(*_biquad(build.click_hz, 10.0), env)
    if kind == "loose_belt":  # belt tone wobbles and slips; sub-harmonic flapping
        wobble = 0.06 * np.sin(2 * np.pi * rng.uniform(2, 6) * t + np.float32(rng.uniform(0, 6.3)))
        slip = 0.1 * np.maximum(_slow(rng, n, 0.3) - 1.2, 0)
        half = _wrap(np.cumsum(shaft * (1 + wobble - slip)), np.pi * build.belt_ratio / _FS)
        flap = np.abs(np.sin(np.pi * rng.uniform(6, 15) * t)) ** 4
        b, a = butter(2, 300, fs=_FS)
        flutter = lfilter(b, a, rng.standard_normal(n)) * flap
        return (np.sin(2 * half) + 0.8 * np.sin(half) + 0.5 * np.sin(3 * half) + 2 * flutter) * v
    if kind == "dry_squeal":  # intermittent narrowband squeal gliding in pitch while moving
        env, glide = np.zeros(n), np.zeros(n)
        for _ in range(rng.integers(2, 6)):
            a = int(rng.integers(0, n))
            m = min(int(rng.uniform(0.3, 1.2) * _FS), n - a)
            env[a : a + m] = np.maximum(env[a : a + m], np.hanning(m))
            glide[a : a + m] = np.linspace(0, rng.uniform(-0.15, 0.15), m)
        f = build.squeal_hz * rng.uniform(0.9, 1.1) * (1 + glide) * (0.9 + 0.1 * v)
        f *= 1 + 0.004 * np.sin(2 * np.pi * rng.uniform(4, 8) * t)
        ph = _wrap(np.cumsum(f), 2 * np.pi / _FS)
        return (np.sin(ph) + 0.3 * np.sin(2 * ph)) * (env * np.clip(3 * v, 0, 1))
    if kind == "bearing_tone":  # defect tone and harmonics, amplitude-modulated by the shaft
        ph_b = _wrap(phase, build.bearing_ratio)
        am = 1 + 0.7 * np.cos(_wrap(phase))
        tone = (np.sin(ph_b) + np.sin(2 * ph_b) / 2 + np.sin(3 * ph_b) / 3) * am
        ring = lfilter(*_biquad(build.click_hz * 0.8, 8.0), np.maximum(np.sin(ph_b), 0) ** 8 * am)
        return (tone + 3 * ring) * v
    raise ValueError(f"unknown fault {kind!r}: expected one of {FAULTS}")


def _clip(build, rng, fault, severity, snr_db, duration_s, sess: Session | None = None) -> np.ndarray:
    if not duration_s >= 0.1:
        raise ValueError(f"duration_s={duration_s!r} must be >= 0.1 s")
    if snr_db is not None and not np.isfinite(snr_db):
        raise ValueError(f"snr_db={snr_db!r} must be a finite number of dB or None")
    n = int(round(duration_s * _FS))
    if sess is not None:
        build = replace(build, shaft_hz=build.shaft_hz * sess.speed, friction_gain=build.friction_gain * sess.load)
    s = _speed(build, rng, n)
    shaft = np.abs(s) * (build.shaft_hz * rng.normal(1.0, 0.01)) * (1 + 0.004 * _slow(rng, n, 0.5))
    phase = np.cumsum(shaft) * (2 * np.pi / _FS)
    sig = _machine(build, rng, np.abs(s), phase)
    if fault is not None:
        extra = _fault(build, rng, fault, s, shaft, phase)
        extra *= _FAULT_LEVEL[fault] * severity**1.5 * _rms(sig) / _rms(extra)
        cap = 6 * _rms(sig)  # soft-limit the loudest clicks so that the clip never clips
        sig = sig + np.tanh(extra * (1 / cap)) * cap
    snr = float(rng.choice(SNRS_DB)) if snr_db is None else float(snr_db)
    bg = _background(build, rng, n)
    if sess is not None:
        snr += sess.snr_db
    mix = sig * (1 / _rms(sig)) + bg * (10 ** (-snr / 20) / _rms(bg))
    if sess is not None and sess.tilt:
        mix = lfilter([1.0, -0.6 * sess.tilt], [1.0], mix)  # > 0 brighter, < 0 duller
    gain = 0.0 if sess is None else sess.gain_db
    mix *= build.level * 10 ** ((rng.normal(0, 1.0) + gain) / 20) / _rms(mix)  # same loudness either way
    return np.clip(mix, -1.0, 1.0).astype(np.float32)


def normal_clip(
    build: MachineBuild,
    rng: np.random.Generator,
    snr_db: float | None = None,
    duration_s: float = 10.0,
    session: Session | None = None,
) -> np.ndarray:
    """One normal clip, ``(round(duration_s * 16000),)`` float32; SNR drawn from SNRS_DB if None;
    recorded under ``session``'s conditions when given."""
    return _clip(build, rng, None, 0.0, snr_db, duration_s, session)


def anomalous_clip(
    build: MachineBuild,
    rng: np.random.Generator,
    fault: str,
    severity: float,
    snr_db: float | None = None,
    duration_s: float = 10.0,
    session: Session | None = None,
) -> np.ndarray:
    """Like :func:`normal_clip` with ``fault`` mixed in at ``severity`` in (0, 1]."""
    if fault not in FAULTS:
        raise ValueError(f"unknown fault {fault!r}: expected one of {FAULTS}")
    if not 0.0 < severity <= 1.0:
        raise ValueError(f"severity={severity!r} must be in (0, 1]")
    return _clip(build, rng, fault, float(severity), snr_db, duration_s, session)


def wav_bytes(audio: np.ndarray, sample_rate: int = SAMPLE_RATE) -> bytes:
    """16-bit PCM WAV file contents of a mono clip."""
    audio = np.asarray(audio)
    if audio.ndim != 1:
        raise ValueError(f"audio must be mono (samples,), got shape {audio.shape}")
    buf = io.BytesIO()
    sf.write(buf, np.clip(audio, -1.0, 1.0), int(sample_rate), format="WAV", subtype="PCM_16")
    return buf.getvalue()


# the plant generator lives in synth_plant; its names stay importable from here
