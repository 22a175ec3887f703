"""``slidead demo``: a small synthetic plant, trained and scored end to end on one machine.

Generates the plant (unless the store already has one), retrains the AE and the VAE with a
short schedule, scores the demo night, and prints the per-ID AUC/pAUC table, the night's flagged
clips and the commands to look further. Retrain and score run where ``slidead train`` and
``slidead score`` run them (:func:`slidead.shell.commands.mode`): the Prefect flows when
``PREFECT_API_URL`` is set or ``use_prefect`` is True, else the same recipes in this process. It ends with
where the night's HTML report is.
"""

from __future__ import annotations

import logging
import shutil

from slidead.progress import Progress
from slidead.settings import Settings
from slidead.shell.commands import run_retrain, run_score
from slidead.shell.report import format_metrics, format_table
from slidead.store.services import Services
from slidead.synth.plant import PlantSpec, generate_plant, night_truth

DEMO_NIGHT = "2026-11-23"
MACHINE_TYPE = "slider"


log = logging.getLogger(__name__)


def run_demo(settings: Settings, epochs: int = 50, use_prefect: bool | None = None, fresh: bool = False) -> int:
    home = settings.home_dir
    if fresh and home.exists():
        for name in (
            "store",
            "mlflow.db",
            "mlartifacts",
            "slidead.duckdb",
            "slidead.ducklake",
            "slidead.ducklake-wal",
            "slidead.ducklake-shm",
            "slidead.ducklake.files",
            "prefect",
        ):
            p = home / name
            shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
    home.mkdir(parents=True, exist_ok=True)
    svc = Services.from_settings(settings)
    log.info(f"slidead demo: state under {home}")
    if next(iter(svc.store.list("train/")), None) is None:
        spec = PlantSpec(machine_type=MACHINE_TYPE, nights=(DEMO_NIGHT,))
        log.info(
            f"[1/4] generating a synthetic plant: IDs {', '.join(spec.machine_ids)}, {spec.n_train} training clips each"
        )
        generate_plant(svc.store.put, spec, Progress("generate"))
    else:
        log.info("[1/4] synthetic plant already in the store (use --fresh to start over)")
    reports = {}
    for step, family in ((2, "ae"), (3, "vae")):
        # split conformal: a quarter of each machine's 40 clips held out to calibrate (10, enough for a
        # 10% target); the default (cross-conformal) would train five fold models more per family
        log.info(
            f"[{step}/4] retrain {family}: {epochs} epochs (the seed's default is 100), split-conformal thresholds"
        )
        out = run_retrain(settings, family, MACHINE_TYPE, epochs=epochs, use_prefect=use_prefect, thresholds="split")
        reports[f"{family} v{out['model_version']}"] = out["report"]
        log.info(
            f"      {family} v{out['model_version']}: {'champion' if out['promoted'] else 'not promoted'} ({out['decision']})"
        )
    log.info(f"[4/4] score night {DEMO_NIGHT} with the champion VAE")
    night = run_score(settings, DEMO_NIGHT, "vae", use_prefect=use_prefect)

    print("\nEvaluation on eval/ (AUC and pAUC at max FPR 0.1, per machine ID):\n")
    print(format_metrics(reports))
    cols, rows = svc.db.query(
        "SELECT machine_id, regexp_extract(uri, '[^/]+$') AS clip, left(clip_id, 10) AS clip_id, "
        "round(score, 3) AS score, round(p_value, 3) AS p_value, explanation "
        "FROM anomalies WHERE night = ?::DATE AND model_name = ANY(?) ORDER BY p_value, score DESC",
        [DEMO_NIGHT, list(night["models"])],
    )
    print(
        f"\nNight {DEMO_NIGHT}: {night['n_clips']} clips, {night['n_flagged']} flagged "
        f"({night['n_rejected']} rejected):\n"
    )
    print(format_table(cols, rows))
    alpha = 1.0 - settings.threshold_quantile()
    print(
        "\n"
        + truth_summary(svc, night["models"], alpha)
        + calibration_spread(calibration_counts(svc, night["models"]), alpha)
    )
    if night.get("alarms"):
        print("\nMachine alarms raised:\n" + "\n".join(f"  {d}" for d in night["alarms"]))
    report = night.get("report")
    if not report:  # scored without the flow (or the flow could not write it)
        from slidead.jobs.night_report import write_night_report

        report = write_night_report(svc, DEMO_NIGHT)
    uri = settings.tracking_uri
    print(f"""
Look further:
  MLflow UI:   .venv/bin/mlflow ui --backend-store-uri {uri} --host 127.0.0.1 --port 5000
               then open http://127.0.0.1:5000{svc.tracker.ui_path(MACHINE_TYPE)}
  SQL:         .venv/bin/slidead sql < sql/flagged_anomalies.sql   (the duckdb shell on the results lake)
               .venv/bin/slidead sql -- -c "SELECT * FROM nightly_summary"
               (plain shell: .venv/bin/slidead sql --print-init > attach.sql; .venv/bin/duckdb -init attach.sql)
  Reports:     .venv/bin/slidead report --night {DEMO_NIGHT}
  A verdict:   .venv/bin/slidead label <clip_id> fault|false_alarm|maintenance --note "..."
               (labelled clips join the evaluation set of the next `slidead train`)
  Night page:  .venv/bin/slidead report --night {DEMO_NIGHT} --html  (rewrites it)
""")
    print(f"Night report (open it in a browser): {report}")
    return 0


def calibration_counts(svc: Services, models) -> list[int]:
    """How many calibration scores each conformal machine of ``models`` rests on."""
    ns = []
    for name in models:
        try:
            fits = svc.tracker.load(name).thresholds.per_id.values()
        except Exception:  # noqa: BLE001 - a sentence of the demo's summary, never its failure
            continue
        ns += [f.n for f in fits if f.conformal and f.n]
    return ns


def calibration_spread(counts: list[int], alpha: float) -> str:
    """How far one calibration's own false-alarm rate may be from the promise, for the fewest
    calibration scores of ``counts`` ("" when there are none)."""
    from slidead.core.conformal import rate_interval

    if not counts:
        return ""
    n = min(counts)
    _, lo, hi = rate_interval(n, alpha)
    return (
        f" That promise is an average over calibrations: a calibration on {n} normal clips of a machine "
        f"puts its own rate anywhere from {lo:.0%} to {hi:.0%} (9 calibrations in 10); more training "
        "clips, or `slidead commission` on the plant's first nights, narrow it."
    )


def truth_summary(svc: Services, models, alpha: float = 0.1) -> str:
    """What the synthetic plant knows and a real one does not: how many of the night's flagged
    clips are real faults and how many false alarms, against the rate the calibration promises."""
    truth = night_truth(PlantSpec(machine_type=MACHINE_TYPE, nights=(DEMO_NIGHT,)))
    _, rows = svc.db.query(
        "SELECT c.uri, s.is_anomaly FROM scores s JOIN clips c USING (clip_id) "
        "WHERE s.night = ?::DATE AND s.model_name = ANY(?)",
        [DEMO_NIGHT, list(models)],
    )
    fate = {}
    for uri, flagged in rows:
        key = next((k for k in truth if uri.endswith("/" + k) or uri == k), None)
        if key is not None:
            fate[key] = bool(flagged)
    faults = [k for k in fate if truth[k] != "normal"]
    normals = [k for k in fate if truth[k] == "normal"]
    caught = sum(fate[k] for k in faults)
    false_alarms = sum(fate[k] for k in normals)
    rate = false_alarms / len(normals) if normals else 0.0
    return (
        f"The plant knows: of {caught + false_alarms} flagged clips, {caught} are real faults (of {len(faults)} "
        f"faulty clips in the night) and {false_alarms} are false alarms ({false_alarms} of {len(normals)} normal "
        f"clips, {rate:.0%}; the thresholds promise at most {alpha:.0%} on normal clips recorded as the training ones were)."
    )
