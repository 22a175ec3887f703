"""Normal clips of a synthetic plant in memory, to measure the false-alarm rate a family's default
calibration keeps on later normal clips (not a test module: tests/test_conformal.py and
tests/bench/conformal.py use it).

Each machine's sound varies between recording sessions (clip ``i`` in session ``i % sessions``);
later clips continue the same sessions (exchangeable with the training clips), or, with ``drift``,
are recorded under other conditions (a new microphone and a heavier load: not exchangeable)."""

from __future__ import annotations

import functools

import numpy as np
import torch

from slidead.core.config import RunConfig
from slidead.core.features import FeatureConfig, LogMel
from slidead.core.score import score_logmels
from slidead.jobs import retrain as steps
from slidead.store.features import FeatureRow
from slidead.synth.sounds import Session, _seed_rng, machine_build, normal_clip, session_conditions

DRIFT = Session(gain_db=6.0, tilt=0.6, load=1.6)  # a new microphone, brighter, and a heavier load


@functools.lru_cache(maxsize=16)
def _audio(mid: str, i: int, seed: int, seconds: float, sessions: int, drift: bool) -> np.ndarray:
    build = machine_build("slider", mid, seed)
    sess = DRIFT if drift else session_conditions(build, i % sessions)
    return normal_clip(build, _seed_rng(seed, "conformal", mid, i, int(drift)), duration_s=seconds, session=sess)


@functools.lru_cache(maxsize=64)
def plant_rows(
    features: FeatureConfig,
    ids: tuple[str, ...],
    n_train: int,
    n_later: int,
    seed: int,
    seconds: float = 1.0,
    sessions: int = 4,
    drift: bool = False,
) -> tuple[tuple[FeatureRow, ...], tuple[FeatureRow, ...]]:
    """``(training rows, later rows)`` of normal clips per machine, log-mels of ``features``."""
    lm = LogMel(features)
    train, later = [], []
    for mid in ids:
        for i in range(n_train + n_later):
            is_later = i >= n_train
            audio = _audio(mid, i, seed, seconds, sessions, drift and is_later)
            (later if is_later else train).append(FeatureRow(f"{mid}-{seed}-{i:04d}", mid, "normal", lm(audio)))
    return tuple(train), tuple(later)


def later_flags(cfg: RunConfig, train, later):
    """Train ``cfg`` on ``train`` with its default calibration; ``(outcome, p-values, flags)`` of ``later``."""
    torch.manual_seed(cfg.train.seed)
    out = steps.train_and_evaluate(cfg, list(train), [])
    ids = [r.machine_id for r in later]
    logmels = [r.logmel for r in later]
    s = score_logmels(out.model, logmels, cfg.features, cfg.score, machine_ids=ids).score
    p, flags = out.thresholds.decide(ids, s, steps.fold_scores(out.fold_models, logmels, cfg, ids))
    return out, p, flags


def pooled_rate(
    family: str,
    n_train: int,
    seeds=(0, 1),
    ids=("00", "02", "04", "06"),
    n_later: int = 30,
    epochs: int = 2,
    seconds: float = 1.0,
    drift: bool = False,
    **train,
) -> dict:
    """The share of later normal clips the family's default calibration flags, pooled over
    machines and seeds, with the scheme it chose and the per-machine rates."""
    flagged, total, per, schemes = 0, 0, {}, set()
    for seed in seeds:
        cfg = RunConfig.default(family, "slider").with_train(epochs=epochs, seed=seed, **train)
        tr, later = plant_rows(cfg.features, tuple(ids), n_train, n_later, seed, seconds, drift=drift)
        out, _p, flags = later_flags(cfg, tr, later)
        schemes |= {f.method for f in out.thresholds.per_id.values()}
        for mid in ids:
            m = np.array([r.machine_id == mid for r in later])
            per[(seed, mid)] = float(flags[m].mean())
        flagged, total = flagged + int(flags.sum()), total + flags.size
    return {"rate": flagged / total, "n": total, "schemes": sorted(schemes), "per_machine": per}
