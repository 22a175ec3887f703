"""The ``slidead`` command line.

Commands: ``demo``, ``generate``, ``import dcase|dcase2020|mimii DIR``, ``upload-night DIR``,
``train``, ``evaluate``, ``score``, ``report``, ``sql``, ``models``. ``train``, ``score`` and ``demo`` run
the library recipe in this process, or the Prefect flow when ``PREFECT_API_URL`` names a server
(``--prefect`` / ``--no-prefect`` force either; see :func:`slidead.shell.commands.mode`).
Settings come from ``SLIDEAD_*`` variables (see docs/configuration.md). This module is the
parser (one function per command) and :func:`main`; what each command does is in
:mod:`slidead.shell.actions`.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time

from slidead.core.family_names import built_in_families
from slidead.settings import Settings
from slidead.shell.actions import (
    cmd_commission,
    cmd_demo,
    cmd_evaluate,
    cmd_generate,
    cmd_import,
    cmd_label,
    cmd_models,
    cmd_report,
    cmd_score,
    cmd_serve,
    cmd_sql,
    cmd_train,
    cmd_upload_night,
)
from slidead.shell.failures import error_sentence, save_traceback
from slidead.shell.terminal import to_terminal

log = logging.getLogger("slidead.shell.cli")  # by name: as `python -m slidead.shell.cli` it is __main__

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
    """The command line: each command added by its own function (:data:`COMMANDS`, in help order)."""
    p = argparse.ArgumentParser(prog="slidead", description="Find faulty slide rails by their sound.", epilog=EPILOG)
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in COMMANDS:
        add(sub)
    return p


def _command(sub, name: str, fn, help_: str) -> argparse.ArgumentParser:
    """Command ``name`` running ``fn(args, settings)``, with the ``--debug`` every command has."""
    sp = sub.add_parser(name, help=help_, description=help_, epilog=EPILOG)
    sp.set_defaults(fn=fn)
    sp.add_argument(
        "--debug",
        action="store_true",
        help="print the traceback of an error on the terminal too (also SLIDEAD_DEBUG=1); it is always "
        "written to $SLIDEAD_HOME/logs/",
    )
    return sp


def _add_demo(sub) -> None:
    """``slidead demo``."""
    d = _command(sub, "demo", cmd_demo, "generate a small synthetic plant, train AE and VAE, score a night, report")
    d.add_argument(
        "--epochs", type=int, default=50, help="training epochs per model for the demo (default 50; the seed uses 100)"
    )
    d.add_argument("--fresh", action="store_true", help="delete SLIDEAD_HOME's demo state first")
    add_mode(d, "the retrain and score flows")


def _add_generate(sub) -> None:
    """``slidead generate``."""
    g = _command(sub, "generate", cmd_generate, "write a seeded synthetic slide-rail plant into the store")
    g.add_argument("--machine-type", default="slider")
    g.add_argument("--ids", default="00,02,04", help="comma-separated machine IDs (default 00,02,04)")
    g.add_argument("--n-train", type=int, default=40, help="normal training clips per ID")
    g.add_argument("--n-eval", type=int, default=12, help="normal and anomalous evaluation clips per ID")
    g.add_argument("--night", action="append", default=None, help="a drop night YYYY-MM-DD (repeatable)")
    g.add_argument("--night-normal", type=int, default=8, help="normal clips per ID per night")
    g.add_argument("--night-anomaly", type=int, default=2, help="faulty clips per ID per night")
    g.add_argument("--seed", type=int, default=0)


def _add_import(sub) -> None:
    """``slidead import``."""
    i = _command(sub, "import", cmd_import, "import a DCASE Task 2 (2021-2026 or 2020) or MIMII folder into the store")
    i.add_argument("layout", choices=["dcase", "dcase2020", "mimii"])
    i.add_argument("src", help="the data set folder (root or one machine type)")
    i.add_argument("--night", help="mimii only: import every clip as a drop of this night instead")


def _add_upload_night(sub) -> None:
    """``slidead upload-night``."""
    u = _command(sub, "upload-night", cmd_upload_night, "drop a folder of <type>/id_<NN>/*.wav as a night")
    u.add_argument("src")
    u.add_argument("--night", required=True, help="YYYY-MM-DD")


def _add_train(sub) -> None:
    """``slidead train``."""
    t = _command(
        sub, "train", cmd_train, "train, evaluate and register a model; promote it if no worse than the champion"
    )
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


def _add_evaluate(sub) -> None:
    """``slidead evaluate``."""
    e = _command(sub, "evaluate", cmd_evaluate, "AUC/pAUC per machine ID of the champion (or --version) on eval/")
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


def _add_score(sub) -> None:
    """``slidead score``."""
    s = _command(sub, "score", cmd_score, "score a night's drops with the champion and write DuckDB")
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


def _add_label(sub) -> None:
    """``slidead label``."""
    lb = _command(
        sub,
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


def _add_commission(sub) -> None:
    """``slidead commission``."""
    cm = _command(
        sub,
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
        help="first nights of each machine to fit on (default SLIDEAD_COMMISSION_NIGHTS, 3; 3 when that is 0, nightly commissioning off)",
    )
    cm.add_argument("--json", action="store_true")


def _add_report(sub) -> None:
    """``slidead report``."""
    r = _command(sub, "report", cmd_report, "print the reporting queries in sql/ as tables")
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


def _add_sql(sub) -> None:
    """``slidead sql``."""
    q = _command(
        sub,
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


def _add_serve(sub) -> None:
    """``slidead serve``."""
    sv = _command(
        sub, "serve", cmd_serve, "serve the nightly and retrain deployments from this process (needs PREFECT_API_URL)"
    )
    sv.add_argument(
        "--timezone",
        default=None,
        help="timezone of the 02:00 nightly schedule and of 'the night before' (default SLIDEAD_TIMEZONE or UTC)",
    )
    sv.add_argument("--machine-type", default="slider", help="machine type of the retrain deployments")
    sv.add_argument("--limit", type=int, default=None, help="most flow runs at once")


def _add_models(sub) -> None:
    """``slidead models``."""
    m = _command(sub, "models", cmd_models, "list registered model versions, their metrics and the champion")
    m.add_argument("--machine-type", default="slider")


COMMANDS = (
    _add_demo,
    _add_generate,
    _add_import,
    _add_upload_night,
    _add_train,
    _add_evaluate,
    _add_score,
    _add_label,
    _add_commission,
    _add_report,
    _add_sql,
    _add_serve,
    _add_models,
)


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
