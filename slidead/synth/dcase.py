"""A synthetic plant with operating conditions and a target domain, written in the DCASE
2023 Task 2 layout.

Each section (machine) runs in the *source* domain under several conditions, every pair of
``speeds`` and ``loads`` (the carriage speed and the friction load scale of
:class:`~slidead.synth.sounds.Session`), with plenty of normal clips, and in the *target*
domain under a new speed and load, heard through another microphone (gain and tilt), with
``n_target_train`` (ten, as in DCASE) normal training clips. :func:`write_dcase` writes::

    <type>/train/section_<SS>_<source|target>_train_normal_<NNNN>_spd_<s>_load_<l>.wav
    <type>/test/section_<SS>_<source|target>_test_<normal|anomaly>_<NNNN>_spd_<s>_load_<l>.wav
    <type>/attributes_<SS>.csv            (file_name, d1p, d1v, d2p, d2v)

through ``put(relative path, bytes)`` (:func:`folder_writer` writes under a folder), which
``slidead import dcase`` reads as it reads a real DCASE set. Each clip's rng derives from
(seed, section, domain, split, index), so the same spec writes the same bytes.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from slidead.synth.sounds import (
    FAULTS,
    Session,
    _seed_rng,
    anomalous_clip,
    machine_build,
    normal_clip,
    session_conditions,
    wav_bytes,
)


@dataclass(frozen=True)
class DcaseSpec:
    machine_type: str = "slider"
    sections: tuple[str, ...] = ("00", "01")
    speeds: tuple[float, ...] = (0.8, 1.2)  # source-domain carriage speed scales
    loads: tuple[float, ...] = (0.5, 2.0)  # source-domain friction load scales
    target_speed: float = 1.6  # the target domain's new condition
    target_load: float = 1.0
    n_source_train: int = 40  # normal training clips per section, dealt over the source conditions
    n_target_train: int = 10  # normal training clips per section in the target domain
    n_test: int = 10  # per section and domain: normal clips, and as many anomalous ones
    duration_s: float = 10.0
    severity: tuple[float, float] = (0.3, 1.0)
    seed: int = 0

    def __post_init__(self):
        if not self.sections or not self.speeds or not self.loads:
            raise ValueError("give at least one section, one speed and one load")
        for name in ("n_source_train", "n_target_train", "n_test"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}={getattr(self, name)!r} must be >= 0")

    def source_conditions(self) -> list[tuple[float, float]]:
        return list(itertools.product(self.speeds, self.loads))


def _session(build, domain: str, speed: float, load: float) -> Session:
    """The recording conditions: the speed and load, and the section's microphone of that domain."""
    mic = session_conditions(build, 0 if domain == "source" else 1)
    return Session(speed=speed, load=load, snr_db=0.0, gain_db=mic.gain_db, tilt=mic.tilt)


def _fmt(x: float) -> str:
    return f"{x:.1f}"


def _jobs(spec: DcaseSpec):
    """(relative path, section, domain, split, index, speed, load, fault or None)."""
    src = spec.source_conditions()
    for sec in spec.sections:
        counts = {
            ("source", "train", "normal"): spec.n_source_train,
            ("target", "train", "normal"): spec.n_target_train,
            ("source", "test", "normal"): spec.n_test,
            ("source", "test", "anomaly"): spec.n_test,
            ("target", "test", "normal"): spec.n_test,
            ("target", "test", "anomaly"): spec.n_test,
        }
        for (domain, split, label), n in counts.items():
            for i in range(n):
                speed, load = src[i % len(src)] if domain == "source" else (spec.target_speed, spec.target_load)
                fault = FAULTS[i % len(FAULTS)] if label == "anomaly" else None
                number = i if label == "normal" else i + n  # DCASE numbers a section's test clips apart
                name = f"section_{sec}_{domain}_{split}_{label}_{number:04d}_spd_{_fmt(speed)}_load_{_fmt(load)}.wav"
                yield f"{spec.machine_type}/{split}/{name}", sec, domain, split, i, speed, load, fault


def write_dcase(put: Callable[[str, bytes], None], spec: DcaseSpec = DcaseSpec()) -> dict:
    """Write the set through ``put(relative path, data)``; returns clip counts per (domain, split, label)."""
    builds = {sec: machine_build(spec.machine_type, sec, spec.seed) for sec in spec.sections}
    rows: dict[str, list[str]] = {sec: [] for sec in spec.sections}
    counts: dict[str, int] = {}
    for path, sec, domain, split, i, speed, load, fault in _jobs(spec):
        rng = _seed_rng(spec.seed, "dcase", sec, domain, split, "anomaly" if fault else "normal", i)
        sess = _session(builds[sec], domain, speed, load)
        if fault is None:
            audio = normal_clip(builds[sec], rng, duration_s=spec.duration_s, session=sess)
        else:
            sev = float(rng.uniform(*spec.severity))
            audio = anomalous_clip(builds[sec], rng, fault, sev, duration_s=spec.duration_s, session=sess)
        put(path, wav_bytes(audio))
        rows[sec].append(f"{path},spd,{_fmt(speed)},load,{_fmt(load)}")
        key = f"{domain}_{split}_{'anomaly' if fault else 'normal'}"
        counts[key] = counts.get(key, 0) + 1
    for sec, lines in rows.items():
        put(
            f"{spec.machine_type}/attributes_{sec}.csv",
            ("file_name,d1p,d1v,d2p,d2v\n" + "\n".join(lines) + "\n").encode(),
        )
    return counts


def folder_writer(root: str | Path) -> Callable[[str, bytes], None]:
    """``put`` that writes under the folder ``root``."""
    root = Path(root)

    def put(rel: str, data: bytes) -> None:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)

    return put
