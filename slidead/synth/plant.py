"""A seeded synthetic plant: a DCASE-like tree of train/, eval/ and nightly drop WAVs.

:func:`generate_plant` writes it through ``put(key, data)`` from a :class:`PlantSpec`; the
sounds come from :mod:`slidead.synth.sounds` (one machine build per ID, faults at a severity).
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from typing import Callable

from slidead.synth.sounds import (
    FAULTS,
    _seed_rng,
    anomalous_clip,
    machine_build,
    normal_clip,
    session_conditions,
    wav_bytes,
)


@dataclass(frozen=True)
class PlantSpec:
    machine_type: str = "slider"
    machine_ids: tuple[str, ...] = ("00", "02", "04")
    n_train: int = 40  # normal clips per machine ID under train/
    n_eval_normal: int = 12  # per ID under eval/.../normal
    n_eval_anomaly: int = 12  # per ID under eval/.../anomaly (faults cycle through FAULTS)
    nights: tuple[str, ...] = ("2026-11-23",)  # YYYY-MM-DD drop folders
    night_normal: int = 8  # per ID per night
    night_anomaly: int = 2  # per ID per night (random fault)
    seed: int = 0
    severity: tuple[float, float] = (0.3, 1.0)  # range of anomalous clips' severities
    sessions: int = 1  # > 1: clip i of every split is recorded in session i % sessions (speed, load, SNR, mic)


_NAME = re.compile(r"[A-Za-z0-9_-]+")


def _check_spec(spec: PlantSpec) -> None:
    if not isinstance(spec.machine_type, str) or not _NAME.fullmatch(spec.machine_type):
        raise ValueError(f"bad machine_type {spec.machine_type!r}: use letters, digits, _ or -")
    if isinstance(spec.machine_ids, str) or not spec.machine_ids:
        raise ValueError(f"machine_ids={spec.machine_ids!r}: give a non-empty tuple of IDs")
    for mid in spec.machine_ids:
        if not isinstance(mid, str) or not _NAME.fullmatch(mid):
            raise ValueError(f"bad machine ID {mid!r}: use letters, digits, _ or -")
    counts = ("n_train", "n_eval_normal", "n_eval_anomaly", "night_normal", "night_anomaly")
    if not isinstance(spec.sessions, int) or isinstance(spec.sessions, bool) or spec.sessions < 1:
        raise ValueError(f"sessions={spec.sessions!r} must be an int >= 1")
    for name in counts + ("seed",):
        value = getattr(spec, name)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ValueError(f"{name}={value!r} must be an int >= 0")
    lo, hi = spec.severity
    if not 0.0 < lo <= hi <= 1.0:
        raise ValueError(f"severity={spec.severity!r} must be a range (lo, hi) in (0, 1]")
    if isinstance(spec.nights, str):
        raise ValueError(f"nights={spec.nights!r}: give a tuple of YYYY-MM-DD strings")
    for night in spec.nights:
        try:
            dt.date.fromisoformat(night if re.fullmatch(r"\d{4}-\d{2}-\d{2}", str(night)) else "")
        except (TypeError, ValueError):
            raise ValueError(f"bad night {night!r}: expected a YYYY-MM-DD date") from None
    for name in ("machine_ids", "nights"):
        if len(set(getattr(spec, name))) != len(getattr(spec, name)):
            raise ValueError(f"duplicate entries in {name}={getattr(spec, name)!r}")


def _jobs(spec: PlantSpec):
    """(key, split, machine ID, index, fault or None) of every clip, in writing order."""
    for mid in spec.machine_ids:
        base = f"{spec.machine_type}/id_{mid}"
        for i in range(spec.n_train):
            yield f"train/{base}/normal_{i:04d}.wav", "train", mid, i, None
        for i in range(spec.n_eval_normal):
            yield f"eval/{base}/normal/{i:04d}.wav", "eval_normal", mid, i, None
        for i in range(spec.n_eval_anomaly):
            fault = FAULTS[i % len(FAULTS)]
            yield f"eval/{base}/anomaly/{fault}_{i:04d}.wav", "eval_anomaly", mid, i, fault
        for night in spec.nights:
            split, n_night = f"drops/{night}", spec.night_normal + spec.night_anomaly
            rng = _seed_rng(spec.seed, split, mid, "truth")
            bad = rng.permutation(n_night)[: spec.night_anomaly]
            faults = rng.choice(FAULTS, n_night)
            for i in range(n_night):
                fault = str(faults[i]) if i in bad else None
                yield f"{split}/{base}/{i:04d}.wav", split, mid, i, fault


def night_truth(spec: PlantSpec) -> dict[str, str]:
    """``{drops key: fault name or "normal"}`` of the plant ``spec`` makes, without making it
    (what :func:`generate_plant` returns as ``night_truth``)."""
    _check_spec(spec)
    return {key: fault or "normal" for key, split, _mid, _i, fault in _jobs(spec) if split.startswith("drops/")}


def generate_plant(
    put: Callable[[str, bytes], None], spec: PlantSpec, progress: Callable[[int, int], None] | None = None
) -> dict:
    """Write train/, eval/ and drops/ WAVs through ``put(key, data)``; return counts and truth.

    Returns ``{"train", "eval_normal", "eval_anomaly", "drops", "total": clip counts,
    "night_truth": {drops key: fault name or "normal"}}``. Each clip's rng derives from
    (seed, split, machine ID, index), so adding clips or nights leaves earlier ones unchanged
    (which night clips are faulty depends on that night's night_normal and night_anomaly).
    """
    _check_spec(spec)
    jobs = list(_jobs(spec))
    builds = {mid: machine_build(spec.machine_type, mid, spec.seed) for mid in spec.machine_ids}
    summary = {"train": 0, "eval_normal": 0, "eval_anomaly": 0, "drops": 0, "total": len(jobs), "night_truth": {}}
    for done, (key, split, mid, i, fault) in enumerate(jobs, 1):
        rng = _seed_rng(spec.seed, split, mid, i)
        sess = session_conditions(builds[mid], i % spec.sessions) if spec.sessions > 1 else None
        if fault is None:
            audio = normal_clip(builds[mid], rng, session=sess)
        else:
            audio = anomalous_clip(builds[mid], rng, fault, float(rng.uniform(*spec.severity)), session=sess)
        put(key, wav_bytes(audio))
        if split.startswith("drops/"):
            summary["drops"] += 1
            summary["night_truth"][key] = fault or "normal"
        else:
            summary[split] += 1
        if progress is not None:
            progress(done, len(jobs))
    return summary
