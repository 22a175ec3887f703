"""Synthetic nights of a plant where one machine wears out slowly.

``wear_nights(put, spec, worn, severities)`` writes one drop folder per night of ``spec.nights``:
``spec.night_normal`` clips per machine ID, all normal except those of machine ``worn``, whose
clips on night ``k`` all carry ``fault`` at ``severities[k]`` (0 = still normal). Real wear
looks like this: a defect that grows a little every night, present in every clip, long before
any single clip sounds clearly wrong. The clips of the healthy machines are the very ones
:func:`slidead.synth.plant.generate_plant` writes for the same spec with ``night_anomaly=0``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from slidead.synth.plant import PlantSpec, _check_spec
from slidead.synth.sounds import FAULTS, _seed_rng, anomalous_clip, machine_build, normal_clip, wav_bytes


def wear_nights(
    put: Callable[[str, bytes], None],
    spec: PlantSpec,
    worn: str,
    severities: Sequence[float],
    fault: str = "bearing_tone",
) -> dict[str, float]:
    """Write the nights; return ``{drops key: severity}`` (0.0 for normal clips)."""
    _check_spec(spec)
    if worn not in spec.machine_ids:
        raise ValueError(f"worn machine {worn!r} is not one of {spec.machine_ids}")
    if len(severities) != len(spec.nights):
        raise ValueError(f"{len(severities)} severities for {len(spec.nights)} nights")
    if any(not 0.0 <= s <= 1.0 for s in severities):
        raise ValueError(f"severities={tuple(severities)!r} must each be in [0, 1]")
    if fault not in FAULTS:
        raise ValueError(f"unknown fault {fault!r}: expected one of {FAULTS}")
    truth: dict[str, float] = {}
    for mid in spec.machine_ids:
        build = machine_build(spec.machine_type, mid, spec.seed)
        for night, severity in zip(spec.nights, severities):
            split = f"drops/{night}"
            for i in range(spec.night_normal):
                rng = _seed_rng(spec.seed, split, mid, i)
                s = float(severity) if mid == worn else 0.0
                audio = anomalous_clip(build, rng, fault, s) if s > 0 else normal_clip(build, rng)
                key = f"{split}/{spec.machine_type}/id_{mid}/{i:04d}.wav"
                put(key, wav_bytes(audio))
                truth[key] = s
    return truth
