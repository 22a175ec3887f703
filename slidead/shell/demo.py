"""``slidead demo``: a small synthetic plant, trained and scored end to end on one machine.

Generates the plant (unless the store already has one), retrains the AE and the VAE with a
short schedule, scores the demo night, and prints the per-ID AUC/pAUC table, the night's flagged
clips and the commands to look further. Retrain and score run where ``slidead train`` and
``slidead score`` run them (:func:`slidead.shell.commands.mode`): the Prefect flows when
``PREFECT_API_URL`` is set or ``use_prefect`` is True, else the same recipes in this process. It ends with
where the night's HTML report is.
"""

from __future__ import annotations

import shutil
import sys

from slidead.progress import Progress
from slidead.settings import Settings
from slidead.shell.commands import run_retrain, run_score
from slidead.shell.report import format_metrics, format_table
from slidead.store.services import Services
from slidead.synth.plant import PlantSpec, generate_plant

DEMO_NIGHT = "2026-11-23"
MACHINE_TYPE = "slider"


def say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


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
    say(f"slidead demo: state under {home}")
    if next(iter(svc.store.list("train/")), None) is None:
        spec = PlantSpec(machine_type=MACHINE_TYPE, nights=(DEMO_NIGHT,))
        say(
            f"[1/4] generating a synthetic plant: IDs {', '.join(spec.machine_ids)}, {spec.n_train} training clips each"
        )
        generate_plant(svc.store.put, spec, Progress("generate", say))
    else:
        say("[1/4] synthetic plant already in the store (use --fresh to start over)")
    reports = {}
    for step, family in ((2, "ae"), (3, "vae")):
        say(f"[{step}/4] retrain {family}: {epochs} epochs (the seed's default is 100)")
        out = run_retrain(settings, family, MACHINE_TYPE, epochs=epochs, use_prefect=use_prefect)
        reports[f"{family} v{out['model_version']}"] = out["report"]
        say(
            f"      {family} v{out['model_version']}: {'champion' if out['promoted'] else 'not promoted'} ({out['decision']})"
        )
    say(f"[4/4] score night {DEMO_NIGHT} with the champion VAE")
    night = run_score(settings, DEMO_NIGHT, "vae", use_prefect=use_prefect)

    print("\nEvaluation on eval/ (AUC and pAUC at max FPR 0.1, per machine ID):\n")
    print(format_metrics(reports))
    cols, rows = svc.db.query(
        "SELECT machine_id, regexp_extract(uri, '[^/]+$') AS clip, left(clip_id, 10) AS clip_id, "
        "round(score, 3) AS score, round(ratio, 2) AS ratio, explanation "
        "FROM anomalies WHERE night = ?::DATE AND model_name = ANY(?) ORDER BY ratio DESC",
        [DEMO_NIGHT, list(night["models"])],
    )
    print(
        f"\nNight {DEMO_NIGHT}: {night['n_clips']} clips, {night['n_flagged']} flagged "
        f"({night['n_rejected']} rejected):\n"
    )
    print(format_table(cols, rows))
    if night.get("alarms"):
        print("\nMachine alarms raised:\n" + "\n".join(f"  {d}" for d in night["alarms"]))
    report = night.get("report")
    if not report:  # scored without the flow (or the flow could not write it)
        from slidead.jobs.night_report import write_night_report

        report = write_night_report(svc, DEMO_NIGHT, log=say)
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
