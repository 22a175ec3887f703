"""Every model family and score metric on one synthetic plant: the comparison tables of docs/models.md.

Not a test: it prints a markdown table of AUC and pAUC (max FPR 0.1) per machine ID and their
mean. It generates the plant ``slidead generate`` makes by default (IDs 00/02/04, 40 normal
training clips and 12 + 12 labelled evaluation clips per ID, seed 0) into a fresh
``--home``, trains ``ae``, ``vae`` and ``idclf`` with their default score metrics, registers
them (they become the champions) and evaluates ``fused`` over those champions exactly as
``slidead evaluate --family fused`` does (its default ``tail`` normalisation, and ``rank``);
then trains the AE and the VAE again with the ``mahalanobis`` metric and the ID classifier
with ``logit``, evaluated only (not registered).
The same rows come from the CLI:

    export SLIDEAD_HOME=/tmp/slidead-families
    slidead generate
    slidead train --family ae --no-prefect      # likewise vae, idclf
    slidead evaluate --family fused --json

    python tests/bench/families.py [--home DIR] [--epochs 100] [--seed 0] [--n-train 40]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

import torch

ROWS = [("ae", None), ("vae", None), ("idclf", None), ("ae", "mahalanobis"), ("vae", "mahalanobis"), ("idclf", "logit")]


# The comparison plant: three machines whose normal sound varies between recording sessions
# (slidead.synth's Session: speed, load, background level, microphone gain and tilt), with faults
# that change the spectrum slowly (a band of friction noise that fades in over the clip), briefly
# (rail clicks; a dry squeal, which is also narrowband) or in one band (a bearing tone).
FAULT_KINDS = ("slow_rise", "rail_clicks", "dry_squeal", "bearing_tone")


def slow_rise(build, rng, session, severity: float):
    """A normal clip with band-limited friction noise fading in from nothing over the clip: the
    spectrum changes slowly, no single second sounds wrong."""
    import numpy as np
    from scipy.signal import butter, lfilter

    from slidead.synth.sounds import SAMPLE_RATE, normal_clip

    x = normal_clip(build, rng, session=session).astype(np.float64)
    lo = float(rng.uniform(1500, 4000))
    b, a = butter(2, (lo, lo * 1.5), "bandpass", fs=SAMPLE_RATE)
    noise = lfilter(b, a, rng.standard_normal(x.size))
    ramp = np.linspace(0.0, 1.0, x.size) ** 2
    rms = lambda v: float(np.sqrt(np.mean(v**2)) + 1e-20)  # noqa: E731
    x = x + noise * ramp * (0.6 * severity**1.5 * rms(x) / rms(noise * ramp))
    return np.clip(x, -1, 1).astype(np.float32)


def write_plant(put, machine_type: str, ids, n_train: int, n_eval: int, sessions: int, seed: int) -> None:
    """``train/`` (``n_train`` normal clips per ID) and ``eval/`` (``n_eval`` normal and ``n_eval``
    faulty per ID, severities 0.3-1, the faults cycling through FAULT_KINDS); clip ``i`` of each
    split is recorded in session ``i % sessions``."""
    from slidead.synth.sounds import (
        _seed_rng,
        anomalous_clip,
        machine_build,
        normal_clip,
        session_conditions,
        wav_bytes,
    )

    for mid in ids:
        build = machine_build(machine_type, mid, seed)
        base = f"{machine_type}/id_{mid}"
        for split, n in (("train", n_train), ("eval_normal", n_eval), ("eval_anomaly", n_eval)):
            for i in range(n):
                rng = _seed_rng(seed, "families-bench", split, mid, i)
                sess = session_conditions(build, i % sessions)
                if split == "eval_anomaly":
                    kind, severity = FAULT_KINDS[i % len(FAULT_KINDS)], float(rng.uniform(0.3, 1.0))
                    if kind == "slow_rise":
                        audio = slow_rise(build, rng, sess, severity)
                    else:
                        audio = anomalous_clip(build, rng, kind, severity, session=sess)
                    key = f"eval/{base}/anomaly/{kind}_{i:04d}.wav"
                else:
                    audio = normal_clip(build, rng, session=sess)
                    key = f"train/{base}/normal_{i:04d}.wav" if split == "train" else f"eval/{base}/normal/{i:04d}.wav"
                put(key, wav_bytes(audio))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--home", default="/tmp/slidead-families", help="a fresh SLIDEAD_HOME (deleted first)")
    p.add_argument("--epochs", type=int, default=100, help="most epochs per model (early stopping, patience 10)")
    p.add_argument("--seed", type=int, default=0, help="the plant's seed")
    p.add_argument("--n-train", type=int, default=40, help="normal training clips per ID")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument(
        "--plant",
        choices=("default", "sessions"),
        default="default",
        help="default: slidead generate's plant (the first table); sessions: the comparison plant (FAULT_KINDS)",
    )
    p.add_argument("--n-eval", type=int, default=24, help="sessions plant: normal and faulty evaluation clips per ID")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    if a.plant == "sessions":
        return sessions_bench(a)

    from slidead.core.config import RunConfig
    from slidead.jobs.fusion import evaluate_fused
    from slidead.settings import Settings
    from slidead.store.services import Services
    from slidead.synth.plant import PlantSpec, generate_plant

    home = Path(a.home)
    shutil.rmtree(home, ignore_errors=True)
    settings = Settings(home=home, device="cpu")
    svc = Services.from_settings(settings)
    spec = PlantSpec(machine_type="slider", n_train=a.n_train, nights=(), seed=a.seed)
    generate_plant(svc.store.put, spec)
    print(
        f"plant: IDs {', '.join(spec.machine_ids)}, {spec.n_train} training clips, {spec.n_eval_normal} normal + "
        f"{spec.n_eval_anomaly} anomalous evaluation clips per ID, seed {spec.seed}; at most {a.epochs} epochs, "
        f"patience 10, torch threads {a.threads}",
        file=sys.stderr,
    )
    results = {}
    for family, metric in ROWS:
        cfg = RunConfig.default(family, "slider", metric=metric, epochs=a.epochs, device="cpu")
        label = f"{family} ({cfg.score.metric})"
        results[label] = _trained(svc, cfg, label, register=metric is None)
    for method in ("tail", "rank"):  # the mean of all members (select=False), as this table was measured
        results[f"fused {method} (ae + vae + idclf)"] = evaluate_fused(
            svc, "slider", ("ae", "vae", "idclf"), method=method, select=False
        )
    ids = sorted({m for r in results.values() for m in r["per_id"]})
    print("| model (score) | " + " | ".join(f"id {m} AUC / pAUC" for m in ids) + " | mean AUC / pAUC |")
    print("| --- " * (len(ids) + 2) + "|")
    for label, r in results.items():
        cells = [f"{r['per_id'][m]['auc']:.3f} / {r['per_id'][m]['pauc']:.3f}" for m in ids]
        print(f"| {label} | " + " | ".join(cells) + f" | **{r['mean']['auc']:.3f}** / {r['mean']['pauc']:.3f} |")
    return 0


SESSION_ROWS = [
    ("ae", None),
    ("vae", None),
    ("idclf", None),
    ("clipstats", None),
    ("knn", None),
    ("clipstats", "oof"),
    ("knn", "oof"),
]
FUSED = ("ae", "vae", "idclf", "clipstats", "knn")


def _trained(svc, cfg, label: str, register: bool) -> dict:
    """``cfg`` trained and evaluated on the plant's sets (registered, if asked): its report."""
    from slidead.jobs import retrain as steps

    data = steps.ingest_sets(svc, "slider", [cfg.features])
    t0 = time.perf_counter()
    out = steps.train_and_evaluate(cfg, data.rows(cfg.features, "train"), data.rows(cfg.features, "eval"))
    if register:
        steps.register(svc, out, data.rows(cfg.features, "eval"))
    print(
        f"{label}: {out.epochs_run} epochs (best {out.best_epoch}), {time.perf_counter() - t0:.0f} s, "
        f"mean AUC {out.report['mean']['auc']:.3f}",
        file=sys.stderr,
    )
    return out.report


def _mean(report: dict, key: str) -> float:
    import numpy as np

    return float(np.mean([r[key] for r in report["per_id"].values()]))


def sessions_bench(a) -> int:
    """The comparison plant: every family with the default (validation) thresholds, registered,
    the statistics families also with out-of-fold thresholds (5 folds), and the fusion of the
    five champions with members selected from normal clips (the default) and of all five."""
    from slidead.core.config import RunConfig
    from slidead.jobs.fusion import evaluate_fused
    from slidead.settings import Settings
    from slidead.shell.terminal import to_terminal
    from slidead.store.services import Services

    home = Path(a.home)
    shutil.rmtree(home, ignore_errors=True)
    svc = Services.from_settings(Settings(home=home, device="cpu"))
    ids, sessions = ("00", "02", "04"), 4
    t0 = time.perf_counter()
    write_plant(svc.store.put, "slider", ids, a.n_train, a.n_eval, sessions, a.seed)
    print(
        f"plant: IDs {', '.join(ids)}, {a.n_train} training clips, {a.n_eval} normal + {a.n_eval} faulty evaluation "
        f"clips per ID ({', '.join(FAULT_KINDS)}), {sessions} sessions, seed {a.seed} ({time.perf_counter() - t0:.0f} s); "
        f"at most {a.epochs} epochs, patience 10, torch threads {a.threads}",
        file=sys.stderr,
    )
    results = {}
    for family, scheme in SESSION_ROWS:
        train = {"threshold_scheme": scheme, "threshold_folds": 5} if scheme else {}
        cfg = RunConfig.default(family, "slider", epochs=a.epochs, device="cpu", **train)
        label = f"{family} ({cfg.score.metric}, {cfg.train.threshold_scheme} thresholds)"
        results[label] = _trained(svc, cfg, label, register=scheme is None)
    for select in (True, False):
        t0 = time.perf_counter()
        with to_terminal():  # the members chosen per machine, on stderr
            out = evaluate_fused(svc, "slider", FUSED, select=select)
        label = "fused (tail, " + ("members selected from normal clips)" if select else "all five)")
        results[label] = out
        print(f"{label}: {time.perf_counter() - t0:.0f} s, selected {out.get('selected')}", file=sys.stderr)
    ids = sorted({m for r in results.values() for m in r["per_id"]})
    print(
        "| family (score, thresholds) | "
        + " | ".join(f"id {m} AUC" for m in ids)
        + " | mean AUC | mean pAUC | false alarms | recall |"
    )
    print("| --- " * (len(ids) + 5) + "|")
    for label, r in results.items():
        cells = [f"{r['per_id'][m]['auc']:.3f}" for m in ids]
        print(
            f"| {label} | "
            + " | ".join(cells)
            + f" | **{_mean(r, 'auc'):.3f}** | {_mean(r, 'pauc'):.3f} | {_mean(r, 'false_alarm_rate'):.0%} | "
            f"{_mean(r, 'recall'):.0%} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
