"""The ``slidead`` command line.

Commands: ``demo``, ``generate``, ``import dcase|dcase2020|mimii DIR``, ``upload-night DIR``,
``train``, ``evaluate``, ``score``, ``report``, ``sql``, ``models``. ``train``, ``score`` and ``demo`` run
the library recipe in this process, or the Prefect flow when ``PREFECT_API_URL`` names a server
(``--prefect`` / ``--no-prefect`` force either; see :func:`slidead.shell.commands.mode`).
Settings come from ``SLIDEAD_*`` variables (see docs/configuration.md).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time

from slidead.core.family_names import built_in_families
from slidead.settings import Settings
from slidead.shell.commands import evaluate_version, prefect_env, run_retrain, run_score, services
from slidead.shell.failures import error_sentence, save_traceback
from slidead.shell.report import format_metrics
from slidead.shell.terminal import to_terminal

log = logging.getLogger(__name__)

EPILOG = (
    "environment: SLIDEAD_HOME (default ./slidead-data), SLIDEAD_STORE, SLIDEAD_S3_ENDPOINT, "
    "SLIDEAD_MLFLOW_URI, SLIDEAD_CATALOG, SLIDEAD_LAKE_DATA, SLIDEAD_FAMILY (default vae), SLIDEAD_DEVICE (auto|cpu|cuda)"
)


def family_help() -> str:
    """``--family``'s help: the built-in families by name (read from their files, no torch)."""
    return f"a registered model family: {', '.join(built_in_families())}, or one a plug-in registers"


def family_name(value: str, extra: tuple[str, ...] = ()) -> str:
    """``--family``: a family in the registry (looked up only for a name that is not built in:
    the registry imports torch)."""
    if value in extra or value in built_in_families():
        return value
    from slidead.core.models import families

    if value not in families():
        raise argparse.ArgumentTypeError(f"unknown family {value!r}: expected one of {', '.join(families() + extra)}")
    return value


# -- commands ------------------------------------------------------------------------------


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
        from slidead.jobs.fusion import evaluate_fused

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
    res = commission(services(settings), a.machine_type, family, ids, a.nights or settings.commission_nights)
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


# -- parser --------------------------------------------------------------------------------


def add_mode(sp: argparse.ArgumentParser, flow: str) -> None:
    """``--prefect`` / ``--no-prefect``: where the recipe runs (default: the flow only when
    PREFECT_API_URL names a server; see slidead.shell.commands.mode)."""
    g = sp.add_mutually_exclusive_group()
    g.add_argument(
        "--prefect",
        dest="prefect",
        action="store_true",
        default=None,
        help=f"run {flow} (against PREFECT_API_URL, or on a temporary local Prefect API that takes ~20 s "
        "to start when it is unset); default: the flow only when PREFECT_API_URL is set, else this process",
    )
    g.add_argument(
        "--no-prefect",
        dest="prefect",
        action="store_false",
        help="run the library recipe in this process even when PREFECT_API_URL is set",
    )


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="slidead", description="Find faulty slide rails by their sound.", epilog=EPILOG)
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name, fn, help_):
        sp = sub.add_parser(name, help=help_, description=help_, epilog=EPILOG)
        sp.set_defaults(fn=fn)
        sp.add_argument(
            "--debug",
            action="store_true",
            help="print the traceback of an error on the terminal too (also SLIDEAD_DEBUG=1); it is always "
            "written to $SLIDEAD_HOME/logs/",
        )
        return sp

    d = add("demo", cmd_demo, "generate a small synthetic plant, train AE and VAE, score a night, report")
    d.add_argument(
        "--epochs", type=int, default=50, help="training epochs per model for the demo (default 50; the seed uses 100)"
    )
    d.add_argument("--fresh", action="store_true", help="delete SLIDEAD_HOME's demo state first")
    add_mode(d, "the retrain and score flows")

    g = add("generate", cmd_generate, "write a seeded synthetic slide-rail plant into the store")
    g.add_argument("--machine-type", default="slider")
    g.add_argument("--ids", default="00,02,04", help="comma-separated machine IDs (default 00,02,04)")
    g.add_argument("--n-train", type=int, default=40, help="normal training clips per ID")
    g.add_argument("--n-eval", type=int, default=12, help="normal and anomalous evaluation clips per ID")
    g.add_argument("--night", action="append", default=None, help="a drop night YYYY-MM-DD (repeatable)")
    g.add_argument("--night-normal", type=int, default=8, help="normal clips per ID per night")
    g.add_argument("--night-anomaly", type=int, default=2, help="faulty clips per ID per night")
    g.add_argument("--seed", type=int, default=0)

    i = add("import", cmd_import, "import a DCASE Task 2 (2021-2026 or 2020) or MIMII folder into the store")
    i.add_argument("layout", choices=["dcase", "dcase2020", "mimii"])
    i.add_argument("src", help="the data set folder (root or one machine type)")
    i.add_argument("--night", help="mimii only: import every clip as a drop of this night instead")

    u = add("upload-night", cmd_upload_night, "drop a folder of <type>/id_<NN>/*.wav as a night")
    u.add_argument("src")
    u.add_argument("--night", required=True, help="YYYY-MM-DD")

    t = add("train", cmd_train, "train, evaluate and register a model; promote it if no worse than the champion")
    t.add_argument("--family", type=family_name, required=True, help=family_help())
    t.add_argument("--machine-type", default="slider")
    t.add_argument("--epochs", type=int, default=None, help="default 100 (the seed's schedule)")
    t.add_argument("--patience", type=int, default=None, help="early-stopping patience in epochs (default 10)")
    t.add_argument("--device", choices=["auto", "cpu", "cuda"], default=None)
    t.add_argument("--tolerance", type=float, default=0.0, help="promotion gate tolerance on mean AUC/pAUC")
    t.add_argument(
        "--stream",
        choices=["auto", "memory", "parquet"],
        default=None,
        help="training clips in memory, or streamed from the Parquet feature store (default auto: "
        "streamed when their frames exceed 1 GB)",
    )
    t.add_argument(
        "--metric",
        choices=["mse", "mahalanobis", "logit", "cosine"],
        default=None,
        help="how clips are scored: ae/vae mse (the seed's, default) or mahalanobis (selective Mahalanobis "
        "distance of the reconstruction errors); idclf mahalanobis (default) or logit; attrclf cosine",
    )
    t.add_argument(
        "--thresholds",
        choices=["auto", "split", "cross", "validation", "oof"],
        default=None,
        help="how the thresholds are calibrated (docs/conformal.md): auto (default: split conformal when every "
        "machine has 200 or more training clips, else cross-conformal with 5 fold models), split, cross; or "
        "the seed's gamma fit on the validation split's scores (validation) or on out-of-fold scores (oof)",
    )
    add_mode(t, "the retrain flow")

    e = add("evaluate", cmd_evaluate, "AUC/pAUC per machine ID of the champion (or --version) on eval/")
    e.add_argument(
        "--family",
        type=lambda v: family_name(v, ("fused",)),
        required=True,
        help=family_help() + "; fused: the champions of the other families, each normalised against its normal scores "
        "per machine ID, averaged",
    )
    e.add_argument("--machine-type", default="slider")
    e.add_argument("--version", type=int, default=None)
    e.add_argument("--json", action="store_true", help="print one JSON object")

    s = add("score", cmd_score, "score a night's drops with the champion and write DuckDB")
    s.add_argument("--night", required=True, help="YYYY-MM-DD")
    s.add_argument("--family", type=family_name, default=None, help=family_help() + "; default: SLIDEAD_FAMILY (vae)")
    s.add_argument("--machine-type", default=None, help="default: every type in the night")
    s.add_argument("--shard-size", type=int, default=256)
    s.add_argument(
        "--device",
        choices=["auto", "cpu", "cuda"],
        default=None,
        help="where the features and the model run (default: SLIDEAD_DEVICE, auto)",
    )
    s.add_argument("--json", action="store_true")
    add_mode(s, "the score flow")

    lb = add(
        "label",
        cmd_label,
        "record an operator's verdict on a night's clip; labelled clips join the "
        "evaluation set of later training runs and evaluations",
    )
    lb.add_argument(
        "clip", metavar="CLIP_ID", help="a clip_id (or a unique prefix of 8+ characters, or the clip's uri)"
    )
    lb.add_argument(
        "verdict",
        choices=["fault", "false_alarm", "maintenance"],
        help="fault: an anomaly; false_alarm: normal; maintenance: left out of evaluation",
    )
    lb.add_argument("--note", default=None, help="free text kept with the verdict")
    lb.add_argument("--by", default=None, help="who gave the verdict (default: the login name)")

    cm = add(
        "commission",
        cmd_commission,
        "re-fit machines' thresholds from their own first nights and false_alarm labels; "
        "registers a new version (the same weights) and records every change",
    )
    cm.add_argument("--machine-type", default="slider")
    cm.add_argument("--family", type=family_name, default=None, help=family_help() + "; default: SLIDEAD_FAMILY (vae)")
    cm.add_argument("--ids", default=None, help="machine IDs, comma-separated (default: every machine it scored)")
    cm.add_argument(
        "--nights",
        type=int,
        default=None,
        help="first nights of each machine to fit on (default SLIDEAD_COMMISSION_NIGHTS, 3)",
    )
    cm.add_argument("--json", action="store_true")

    r = add("report", cmd_report, "print the reporting queries in sql/ as tables")
    r.add_argument("--night", default=None, help="YYYY-MM-DD (default: the latest scored night)")
    r.add_argument("--only", action="append", help="one report by name (repeatable)")
    r.add_argument("--machine-type", default=None, help="only this machine type's rows (letters, digits, _ . -)")
    r.add_argument("--machine-id", default=None, help="only this machine ID's rows (digits, e.g. 00)")
    r.add_argument(
        "--as-of",
        default=None,
        help="read the results as they were at a snapshot id or a time (YYYY-MM-DDTHH:MM): the night as reported",
    )
    r.add_argument(
        "--html",
        action="store_true",
        help="write the night's page for people (flagged clips with pictures and sound, 30-night trend) "
        "to reports/ in the store and print where it is",
    )

    q = add(
        "sql",
        cmd_sql,
        "open the duckdb shell on the results lake (read-only; --night sets the night variable): "
        "`slidead sql < sql/night_ledger.sql`",
    )
    q.add_argument("--night", default=None, help="YYYY-MM-DD for the night variable (default: the latest scored night)")
    q.add_argument("--as-of", default=None, help="the lake as it was at a snapshot id or a time")
    q.add_argument("--write", action="store_true", help="attach the lake read-write (default read-only)")
    q.add_argument(
        "--print-init",
        action="store_true",
        help="print the attach script instead, for `duckdb -init attach.sql` in the plain shell",
    )
    q.add_argument(
        "args", nargs=argparse.REMAINDER, help="further arguments for duckdb (after --), e.g. -- -c 'FROM runs'"
    )

    sv = add("serve", cmd_serve, "serve the nightly and retrain deployments from this process (needs PREFECT_API_URL)")
    sv.add_argument(
        "--timezone",
        default=None,
        help="timezone of the 02:00 nightly schedule and of 'the night before' (default SLIDEAD_TIMEZONE or UTC)",
    )
    sv.add_argument("--machine-type", default="slider", help="machine type of the retrain deployments")
    sv.add_argument("--limit", type=int, default=None, help="most flow runs at once")

    m = add("models", cmd_models, "list registered model versions, their metrics and the champion")
    m.add_argument("--machine-type", default="slider")
    return p


def main(argv: list[str] | None = None) -> int:
    """Run one command. An error reaches the terminal as one sentence (what, why, what to do) and
    a non-zero exit: 2 for a domain error or bad input, 1 for anything unforeseen. Its traceback
    goes to ``$SLIDEAD_HOME/logs/<command>-<time>.log``, and to the terminal only with
    ``--debug`` or ``SLIDEAD_DEBUG=1``. The library's progress lines reach standard error through
    one log handler (:func:`slidead.shell.terminal.to_terminal`; debug records too with ``--debug``)."""
    args = build_parser().parse_args(argv)
    debug = getattr(args, "debug", False) or os.environ.get("SLIDEAD_DEBUG", "") not in ("", "0")
    if debug:
        os.environ["SLIDEAD_DEBUG"] = "1"  # the flows' console keeps its tracebacks too
    with to_terminal(debug):
        return _run(args, debug)


def _run(args: argparse.Namespace, debug: bool) -> int:
    from slidead.errors import SlideadError

    settings = None
    try:
        settings = Settings()
        t0 = time.perf_counter()
        rc = args.fn(args, settings)
        if args.command in ("demo", "train", "score"):
            log.info(f"done in {time.perf_counter() - t0:.0f} s")
        return rc
    except KeyboardInterrupt:
        log.error(f"slidead {args.command}: interrupted; what was written so far is kept, and a re-run carries on")
        return 130
    except Exception as e:  # noqa: BLE001 - every error ends here, as one sentence
        expected = isinstance(e, (SlideadError, ValueError, FileNotFoundError, PermissionError))
        saved = save_traceback(settings, args.command)
        if debug:
            import traceback

            traceback.print_exc()
        what = "error" if expected else f"unexpected error ({type(e).__name__})"
        log.error(f"slidead {args.command}: {what}: {error_sentence(e, settings)}")
        if saved and not debug:
            log.error(f"the traceback is in {saved} (--debug prints it here)")
        return 2 if expected else 1


if __name__ == "__main__":
    sys.exit(main())
