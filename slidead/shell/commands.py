"""The jobs behind the command line and the demo: train, evaluate and score.

``run_retrain`` and ``run_score`` run one library recipe each (:func:`slidead.jobs.retrain.retrain`,
:func:`slidead.jobs.nightly.run_night`), in this process or through the Prefect flow that wraps
it (:func:`mode` decides: the flow when ``PREFECT_API_URL`` names a server or the caller asks for
it, else the recipe in this process, with no temporary Prefect API to start). Each takes
:class:`~slidead.settings.Settings`, says in one line which mode ran, and returns a plain dict
(what ``--json`` prints).
"""

from __future__ import annotations

import logging
import os

from slidead.core.metrics import AT_THRESHOLD_KEYS
from slidead.errors import NotEnoughDataError
from slidead.settings import Settings

log = logging.getLogger(__name__)


def prefect_env(settings: Settings) -> None:
    """Keep Prefect's own state under SLIDEAD_HOME unless the user points it elsewhere."""
    os.environ.setdefault("PREFECT_HOME", str(settings.home_dir / "prefect"))
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "INFO")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("DO_NOT_TRACK", "1")
    # the temporary local API migrates a new database on its first start: on a loaded 2-core
    # machine that took longer than Prefect's 20 s default, and a fresh clone's demo failed
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    # `slidead serve` asks the server for runs to start every 2 s instead of Prefect's 10: a run
    # started with `prefect deployment run` waited 5 s on average before its process started
    os.environ.setdefault("PREFECT_RUNNER_POLL_FREQUENCY", "2")


class _NoTraceback(logging.Formatter):
    """Formats a record as ``inner`` does, without its traceback (on a copy: the handlers after
    this one, such as the one sending the flow run's log to the Prefect server, keep it)."""

    def __init__(self, inner: logging.Formatter | None):
        super().__init__()
        self.inner = inner or logging.Formatter()

    def format(self, record: logging.LogRecord) -> str:
        r = logging.makeLogRecord(record.__dict__)
        r.exc_info = r.exc_text = r.stack_info = None
        return self.inner.format(r)


def quiet_tracebacks() -> None:
    """Prefect's console lines without tracebacks, unless ``SLIDEAD_DEBUG`` is set: a failed flow
    run says why in its state, the command line says it once as a sentence, and the traceback is
    in the flow run's log on the server and in ``$SLIDEAD_HOME/logs/``."""
    if os.environ.get("SLIDEAD_DEBUG", "") not in ("", "0"):
        return
    for name in ("prefect", "prefect.flow_runs", "prefect.task_runs", ""):
        for h in logging.getLogger(name).handlers:
            if isinstance(h, logging.StreamHandler) and not isinstance(h.formatter, _NoTraceback):
                h.setFormatter(_NoTraceback(h.formatter))


def mode(use_prefect: bool | None) -> tuple[bool, str]:
    """``(run the flow?, the line that says so)``. ``use_prefect`` None (the command line's default):
    the flow when ``PREFECT_API_URL`` is set, else the recipe in this process; True forces the flow
    (on a temporary local Prefect API when no server is named); False forces this process."""
    url = os.environ.get("PREFECT_API_URL")
    if use_prefect is None:
        use_prefect = bool(url)
    if not use_prefect:
        why = "PREFECT_API_URL is unset" if not url else "--no-prefect"
        return False, f"mode: in this process, no Prefect ({why}; --prefect runs the flow)"
    if url:
        from slidead.errors import redact

        return True, f"mode: Prefect flow against {redact(url)}"
    return True, "mode: Prefect flow on a temporary local Prefect API (no PREFECT_API_URL; starting it takes ~20 s)"


def services(settings: Settings):
    from slidead.store.services import Services

    return Services.from_settings(settings)


RETRAIN_OPTIONS = ("epochs", "device", "patience", "stream", "metric", "thresholds")  # None: the default


def run_retrain(
    settings: Settings, family: str, machine_type: str, tolerance=0.0, use_prefect: bool | None = None, **options
) -> dict:
    """Train ``family`` for ``machine_type`` as ``slidead train`` does; ``options`` are the command's
    (:data:`RETRAIN_OPTIONS`: ``epochs``, ``device``, ``patience``, ``stream``, ``metric``,
    ``thresholds``), each left at its default when None."""
    unknown = sorted(set(options) - set(RETRAIN_OPTIONS))
    if unknown:
        raise TypeError(f"run_retrain() got unexpected options {unknown}; expected some of {RETRAIN_OPTIONS}")
    options = {k: v for k, v in options.items() if v is not None}
    use_prefect, line = mode(use_prefect)
    log.info(line)
    if use_prefect:
        prefect_env(settings)
        from flows.retrain import retrain

        quiet_tracebacks()
        return retrain(family=family, machine_type=machine_type, tolerance=tolerance, **options)
    from slidead.jobs import retrain as job
    from slidead.progress import Progress
    from slidead.progress import epochs as epoch_progress

    metric, device, scheme = options.pop("metric", None), options.pop("device", None), options.pop("thresholds", None)
    cfg = job.run_config(settings, family, machine_type, metric, device, threshold_scheme=scheme, **options)
    res = job.retrain(services(settings), cfg, tolerance, Progress("ingest"), epoch_progress(family))
    return res.summary()


def evaluate_version(settings: Settings, family: str, machine_type: str, version: int | None = None) -> dict:
    from slidead.jobs import retrain as job
    from slidead.jobs.ingest import ingest, list_refs
    from slidead.jobs.labels import add_plant_clips
    from slidead.store.tracking import model_name

    svc = services(settings)
    loaded = svc.tracker.load(model_name(machine_type, family), version)
    refs, _ = list_refs(svc.store, "eval", machine_type)
    if not refs:
        raise NotEnoughDataError(f"no labelled clips under eval/{machine_type}/ in {svc.store.uri}")
    res = ingest(svc.store, svc.features, refs, [loaded.config.features], svc.audio)
    add_plant_clips(svc, machine_type, [loaded.config.features], res)
    rows = [res.features[loaded.config.features.hash][c] for c in sorted(res.features[loaded.config.features.hash])]
    report, _ = job.evaluate(loaded.model, loaded.config, rows, loaded.thresholds, folds=loaded.folds)
    per_id = {mid: {k: r[k] for k in AT_THRESHOLD_KEYS if k in r} for mid, r in report["per_id"].items()}
    out = {
        "family": family,
        "machine_type": machine_type,
        "model_version": loaded.version,
        "per_id": per_id,
        "mean": {k: report["mean"][k] for k in ("auc", "pauc") if k in report["mean"]},
    }
    if "official" in report:  # clips with a domain: the DCASE evaluator's figures
        out["official"] = report["official"]
    return out


def run_score(
    settings: Settings,
    night: str,
    family: str | None,
    machine_type=None,
    shard_size=256,
    use_prefect: bool | None = None,
) -> dict:
    from slidead.layout import check_night

    check_night(night)
    use_prefect, line = mode(use_prefect)
    log.info(line)
    if use_prefect:
        prefect_env(settings)
        from flows.score import score

        quiet_tracebacks()
        return score(night=night, family=family, machine_type=machine_type, shard_size=shard_size)
    from slidead.jobs import nightly
    from slidead.progress import Progress

    res = nightly.run_night(
        services(settings),
        night,
        family or settings.family,
        machine_type,
        shard_size,
        progress=Progress("score"),
    )
    return res.summary()
