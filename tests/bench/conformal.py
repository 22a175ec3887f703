"""What the thresholds promise and what they keep: false-alarm rates on later normal clips.

Not a test (nothing here asserts): prints markdown tables for docs/conformal.md and RESULTS.md.

1. ``plant``: every family at its defaults (auto: cross-conformal below 200 training clips per
   machine, split conformal from 200) against the seed's gamma fit on the validation split, on the
   synthetic session plant (4 machines, later normals exchangeable with the training clips), for
   20 and 200 training clips per machine, pooled over seeds;
2. ``drift``: later normals recorded under other conditions (a new microphone, a heavier load),
   with the training calibration and after commissioning on the machine's first drifted clips;
3. ``real``: the DCASE 2023 valve clips in /work/shared/real (looked at, never a test input): the
   first 30 normal clips of each domain to train (the domain as the machine ID), the other 20 of
   each as later normals.

    .venv/bin/python tests/bench/conformal.py [--only plant|drift|real] [--seeds 0,1,2]

Timings are wall seconds on whatever else the machine runs; compare them within one run only.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # tests/ helpers

import torch  # noqa: E402
from conformal_plant import later_flags, plant_rows, pooled_rate  # noqa: E402

from slidead.core.config import RunConfig  # noqa: E402
from slidead.core.score import score_logmels  # noqa: E402
from slidead.core.thresholds import Thresholds  # noqa: E402

FAMILIES = ("clipstats", "knn", "ae", "vae", "idclf")
REAL = Path("/work/shared/real/valve2023/valve/test")


def plant(seeds, epochs: int) -> None:
    print("\n| family | training clips per machine | scheme | later normals flagged | clips | seconds |")
    print("| --- | --- | --- | --- | --- | --- |")
    for n in (20, 200):
        for family in FAMILIES:
            for scheme in (None, "validation"):
                t0 = time.perf_counter()
                extra = {"threshold_scheme": scheme} if scheme else {}
                s = seeds if n == 20 else seeds[:2]
                r = pooled_rate(family, n, seeds=s, n_later=30 if n == 20 else 60, epochs=epochs, **extra)
                label = ", ".join(r["schemes"]) + (" (the seed's)" if scheme else " (default)")
                print(
                    f"| {family} | {n} | {label} | {r['rate']:.1%} | {r['n']} | {time.perf_counter() - t0:.0f} |",
                    flush=True,
                )


def drift(seeds, epochs: int) -> None:
    print(
        "\n| family | before commissioning (training calibration) | after (split conformal on 40 drifted clips per machine) | clips |"
    )
    print("| --- | --- | --- | --- |")
    ids = ("00", "02", "04", "06")
    for family in ("clipstats", "knn", "ae"):
        before = after = total = 0
        for seed in seeds:
            cfg = RunConfig.default(family, "slider").with_train(epochs=epochs, seed=seed)
            train, _ = plant_rows(cfg.features, ids, 20, 0, seed)
            _, drifted = plant_rows(cfg.features, ids, 20, 80, seed, drift=True)
            first = [r for r in drifted if int(r.clip_id.rsplit("-", 1)[1]) < 60]
            later = [r for r in drifted if int(r.clip_id.rsplit("-", 1)[1]) >= 60]
            out, _p, flags = later_flags(cfg, train, later)
            sc = score_logmels(out.model, [r.logmel for r in first], cfg.features, cfg.score).score
            plant_scores = {}
            for r, s in zip(first, sc):
                plant_scores.setdefault(r.machine_id, {})[r.clip_id] = float(s)
            fits = Thresholds.calibrate(plant_scores, "conformal", cfg.threshold_quantile, "commissioning").per_id
            th = out.thresholds.with_fits(fits, plant_scores)
            s_later = score_logmels(out.model, [r.logmel for r in later], cfg.features, cfg.score).score
            _, after_flags = th.decide([r.machine_id for r in later], s_later)
            before, after, total = before + flags.sum(), after + after_flags.sum(), total + len(later)
        print(f"| {family} | {before / total:.1%} | {after / total:.1%} | {total} |", flush=True)


def real(epochs: int) -> None:
    from slidead.core.features import LogMel
    from slidead.store.features import FeatureRow

    if not REAL.exists():
        print(f"\n(no real clips at {REAL})")
        return
    import soundfile as sf

    files = sorted(REAL.glob("*.wav"))
    commissioned = []
    print("\n| family | scheme | held-out normals flagged (source / target) | anomalies flagged | AUC |")
    print("| --- | --- | --- | --- | --- |")
    for family in FAMILIES:
        for scheme in (None, "validation"):
            cfg = RunConfig.default(family, "valve").with_train(epochs=epochs)
            if scheme:
                cfg = cfg.with_train(threshold_scheme=scheme)
            lm = LogMel(cfg.features)
            train, later, anomalies = [], [], []
            for f in files:
                parts = f.stem.split("_")  # section_00_source_test_normal_0000_pat_00
                domain, label, idx = parts[2], parts[4], int(parts[5])
                audio, _sr = sf.read(f, dtype="float32")
                row = FeatureRow(f.stem, domain, label, lm(audio))
                if label == "anomaly":
                    anomalies.append(row)
                elif idx % 50 < 30:
                    train.append(row)
                else:
                    later.append(row)
            out, _p, flags = later_flags(cfg, train, later + anomalies)
            n = len(later)
            nf, af = flags[:n], flags[n:]
            dom = np.array([r.machine_id for r in later])
            s = score_logmels(
                out.model,
                [r.logmel for r in later + anomalies],
                cfg.features,
                cfg.score,
                machine_ids=[r.machine_id for r in later + anomalies],
            ).score
            from slidead.core.metrics import auc

            a = auc(np.r_[np.zeros(n), np.ones(len(anomalies))], s)
            schemes = ", ".join(sorted({f.method for f in out.thresholds.per_id.values()}))
            if not scheme:  # commissioning on the first 10 held-out normals of each domain, the other 10 later
                first = np.array([int(r.clip_id.split("_")[5]) % 50 < 40 for r in later])
                cal = {}
                for r, x, f in zip(later, s[:n], first):
                    if f:
                        cal.setdefault(r.machine_id, {})[r.clip_id] = float(x)
                fits = Thresholds.calibrate(cal, "conformal", cfg.threshold_quantile, "commissioning").per_id
                _, cf = out.thresholds.with_fits(fits, cal).decide(dom[~first], s[:n][~first])
                commissioned.append(f"{family} {cf.mean():.0%} of {cf.size}")
            print(
                f"| {family} | {schemes}{' (the seed' + chr(39) + 's)' if scheme else ' (default)'} | "
                f"{nf.mean():.0%} ({nf[dom == 'source'].mean():.0%} / {nf[dom == 'target'].mean():.0%}) of {n} | "
                f"{af.mean():.0%} of {len(anomalies)} | {a:.2f} |",
                flush=True,
            )
    print(
        "\nafter commissioning on 10 held-out normals per domain, the other 10 per domain flagged: "
        + "; ".join(commissioned)
    )


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--only", choices=["plant", "drift", "real"], action="append")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--epochs", type=int, default=2)
    a = p.parse_args()
    torch.set_num_threads(1)
    seeds = tuple(int(s) for s in a.seeds.split(","))
    only = a.only or ["plant", "drift", "real"]
    if "plant" in only:
        plant(seeds, a.epochs)
    if "drift" in only:
        drift(seeds, a.epochs)
    if "real" in only:
        real(a.epochs)


if __name__ == "__main__":
    main()
