"""What each ``slidead`` command does with its parsed arguments: ``cmd_<name>(args, settings)``.

The parser (:mod:`slidead.shell.cli`) names the function; each runs one job of the library
(most through :mod:`slidead.shell.commands`), prints its result on standard output (a table, a
sentence or ``--json``), and logs its progress lines (see :mod:`slidead.shell.terminal`).
"""

from __future__ import annotations

import json
import logging
import os

from slidead.settings import Settings
from slidead.shell.commands import evaluate_version, prefect_env, run_retrain, run_score, services
from slidead.shell.report import format_metrics

log = logging.getLogger(__name__)


def cmd_generate(a, settings: Settings) -> int:
    from slidead.progress import Progress
    from slidead.synth.plant import PlantSpec, generate_plant

    svc = services(settings)
    spec = PlantSpec(
        machine_type=a.machine_type,
        machine_ids=tuple(a.ids.split(",")),
        n_train=a.n_train,
        n_eval_normal=a.n_eval,
        n_eval_anomaly=a.n_eval,
        nights=tuple(a.night) if a.night else PlantSpec.nights,
        night_normal=a.night_normal,
        night_anomaly=a.night_anomaly,
        seed=a.seed,
    )
    summary = generate_plant(svc.store.put, spec, Progress("generate"))
    log.info(
        f"wrote synthetic plant to {svc.store.uri}: "
        + ", ".join(f"{k} {v}" for k, v in summary.items() if isinstance(v, int))
    )
    return 0


def cmd_import(a, settings: Settings) -> int:
    from slidead.jobs.importers import import_dcase, import_dcase2020, import_mimii
    from slidead.progress import Progress

    svc = services(settings)
    if a.layout == "dcase":
        out = import_dcase(svc.store, a.src, Progress("import"))
    elif a.layout == "dcase2020":
        out = import_dcase2020(svc.store, a.src, Progress("import"))
    else:
        out = import_mimii(svc.store, a.src, a.night, Progress("import"))
    for path, why in out["skipped"]:
        log.info(f"skipped {path}: {why}")
    log.info(f"imported {out['uploaded']} clips into {svc.store.uri}")
    return 0


def cmd_upload_night(a, settings: Settings) -> int:
    from slidead.jobs.importers import upload_night
    from slidead.progress import Progress

    svc = services(settings)
    out = upload_night(svc.store, a.src, a.night, Progress("upload"))
    for path, why, _ in out["odd"]:
        log.info(f"uploaded {path} as it is, for the night to reject (bad_key): {why}")
    for path, why in out["skipped"]:
        log.info(f"skipped {path}: {why}")
    for path, what in out.get("sidecars", []):
        log.info(f"sidecar {path}: {what}")
    odd = f", and {len(out['odd'])} files that do not fit the layout" if out["odd"] else ""
    log.info(
        f"uploaded {out['uploaded']} clips{odd} as night {a.night}; every file is listed in the night's ledger "
        "(the drops table) when the night is scored, as a file written to the bucket directly would be"
    )
    return 0


def cmd_train(a, settings: Settings) -> int:
    out = run_retrain(
        settings,
        a.family,
        a.machine_type,
        a.tolerance,
        a.prefect,
        epochs=a.epochs,
        device=a.device,
        patience=a.patience,
        stream=a.stream,
        metric=a.metric,
        thresholds=a.thresholds,
    )
    print(format_metrics({f"{a.family} v{out['model_version']}": out["report"]}))
    log.info(f"{'promoted to champion' if out['promoted'] else 'not promoted'}: {out['decision']}")
    return 0


def cmd_evaluate(a, settings: Settings) -> int:
    if a.family == "fused":
        if a.version is not None:
            raise ValueError("--version names one family's model version; fused uses each family's champion")
        from slidead.jobs.fused_evaluation import evaluate_fused

        out = evaluate_fused(services(settings), a.machine_type)
    else:
        out = evaluate_version(settings, a.family, a.machine_type, a.version)
    if a.json:
        print(json.dumps(out))
    else:
        name = f"{a.family} v{out['model_version']}" if out["model_version"] is not None else a.family
        print(format_metrics({name: out}))
    return 0


def cmd_score(a, settings: Settings) -> int:
    if a.device:  # as SLIDEAD_DEVICE: the score flow reads its own settings
        os.environ["SLIDEAD_DEVICE"] = a.device
        settings = settings.model_copy(update={"device": a.device})
    out = run_score(settings, a.night, a.family, a.machine_type, a.shard_size, a.prefect)
    print(
        json.dumps(out)
        if a.json
        else f"night {out['night']}: {out['n_clips']} clips, {out['n_scored']} newly scored, "
        f"{out['n_skipped']} already scored, {out['n_rejected']} rejected, {out['n_flagged']} flagged "
        f"({', '.join(f'{k} v{v}' for k, v in out['models'].items())}); ledger: {out.get('n_arrivals', 0)} arrivals, "
        f"{out.get('n_duplicates', 0)} duplicates"
        + "".join(f"\n  ALARM: {d}" for d in out.get("alarms", []))
        + "".join(
            f"\n  {c['model_name']} id {c['machine_id']}: "
            + (
                f"commissioned on its first nights (v{c['new_version']})"
                if c["status"] == "commissioned"
                else f"not commissioned, waiting for a person: {c['reason']}"
            )
            for c in out.get("commissioning", [])
        )
    )
    return 0


def cmd_label(a, settings: Settings) -> int:
    from slidead.jobs.labels import label

    row = label(services(settings).db, a.clip, a.verdict, a.note, a.by)
    joins = (
        f"it joins the evaluation set of {row['machine_type']} as {row['eval_label']}"
        if row["eval_label"]
        else "it is left out of evaluation"
    )
    print(f"clip {row['clip_id'][:12]} ({row['uri']}, night {row['night']}) labelled {row['verdict']}: {joins}")
    return 0


def cmd_commission(a, settings: Settings) -> int:
    from slidead.jobs.commission import commission

    family = a.family or settings.family
    ids = [m.strip() for m in a.ids.split(",")] if a.ids else None
    res = commission(services(settings), a.machine_type, family, ids, a.nights or settings.commission_nights or 3)
    if a.json:
        print(json.dumps(res.summary(), default=str))
    else:
        for c in res.changes:
            old = "none" if c["old_threshold"] is None else f"{c['old_threshold']:.4g}"
            print(
                f"{res.model_name} id {c['machine_id']}: threshold {old} -> {c['new_threshold']:.4g} "
                f"({c['n_scores']} plant scores) in v{res.version}"
            )
    return 0


def cmd_report(a, settings: Settings) -> int:
    from slidead.shell.report import format_table, run_report

    if a.html:
        from slidead.jobs.night_report import write_night_report

        svc = services(settings)
        night = a.night or _latest_night(svc)
        print(write_night_report(svc, night))
        return 0
    from slidead.store.services import results_db

    reports = run_report(results_db(settings), a.night, a.only or None, a.machine_type, a.machine_id, a.as_of)
    for title, cols, rows in reports:
        print(f"\n== {title}\n{format_table(cols, rows)}")
    return 0


def cmd_sql(a, settings: Settings) -> int:
    from slidead.shell.sql import duckdb_shell

    return duckdb_shell(settings, a.night, a.as_of, a.write, a.print_init, a.args)


def _latest_night(svc) -> str:
    _, rows = svc.db.query("SELECT max(night) FROM scores")
    if not rows or rows[0][0] is None:
        raise ValueError("no night has been scored yet: run `slidead score --night YYYY-MM-DD` first")
    return rows[0][0].isoformat()


def cmd_models(a, settings: Settings) -> int:
    from slidead.layout import check_name
    from slidead.store.tracking import model_name

    check_name("machine type", a.machine_type)
    from slidead.store.registry_read import list_versions

    # the registry's own list of this type's models (every family ever registered, plug-ins
    # included), not the family registry: listing needs neither torch nor the families' modules
    rows = [
        (
            v.name,
            v.version,
            v.tags.get("mean_auc", ""),
            v.tags.get("mean_pauc", ""),
            v.tags.get("false_alarm_rate", ""),
            v.tags.get("recall", ""),
            v.tags.get("threshold_scheme", ""),
            v.tags.get("threshold_min_n", ""),
            v.tags.get("false_alarm_promise", ""),
            _provisional(v.tags),
            v.tags.get("official_score", ""),
            "champion" if v.champion else "",
            v.run_id,
        )
        for v in list_versions(settings.tracking_uri, model_name(a.machine_type, ""))
    ]
    from slidead.shell.report import format_table

    print(
        format_table(
            [
                "model",
                "version",
                "mean_auc",
                "mean_pauc",
                "false_alarms",
                "recall",
                "scheme",
                "thr_n",
                "promised",
                "provisional",
                "dcase_score",
                "alias",
                "mlflow_run_id",
            ],
            [
                (n, v, _num(a_), _num(p), _num(fa), _num(rc), sc, tn, pr, pv, _num(o), al, r)
                for n, v, a_, p, fa, rc, sc, tn, pr, pv, o, al, r in rows
            ],
        )
    )
    return 0


def _provisional(tags: dict) -> str:
    """Which machines' thresholds rest on training clips only (``provisional_ids``): "ids 00, 02",
    "no" when every machine is commissioned, "" for a version made before the tag existed."""
    if "provisional_ids" not in tags:
        return ""
    ids = [m for m in tags["provisional_ids"].split(",") if m]
    return f"ids {', '.join(ids)}" if ids else "no"


def cmd_serve(a, settings: Settings) -> int:
    if not os.environ.get("PREFECT_API_URL"):
        log.error(
            "slidead serve needs a Prefect server: run `prefect server start` and set "
            "PREFECT_API_URL=http://127.0.0.1:4200/api"
        )
        return 2
    prefect_env(settings)
    from deployments import serve

    tz = a.timezone or settings.timezone
    log.info(
        f"serving score/nightly (cron 0 2 * * *, {tz}), retrain/ae, retrain/vae, retrain/idclf against "
        f"{os.environ['PREFECT_API_URL']}; Ctrl-C to stop"
    )
    serve(tz, a.machine_type, a.limit)
    return 0


def _num(s: str):
    try:
        return round(float(s), 4)
    except ValueError:
        return s


def cmd_demo(a, settings: Settings) -> int:
    from slidead.shell.demo import run_demo

    return run_demo(settings, epochs=a.epochs, use_prefect=a.prefect, fresh=a.fresh)
