"""MLflow: log training runs, register versions, gate promotion, load the champion.

Experiment ``slidead/<machine_type>``; registered model ``slidead-<machine_type>-<family>``;
the version in use carries the alias ``champion``. A version is three files,
``state_dict.pt`` + ``run_config.json`` + ``thresholds.json``, logged as the artifacts of a
models-from-code pyfunc (``slidead/store/mlflow_model.py``): nothing is pickled. Scoring, and
``mlflow.pyfunc.load_model``, rebuild the network from them with ``torch.load(weights_only=True)``.

Beside it: :mod:`slidead.store.model_files` (those files), :mod:`slidead.store.registry_read`
(the registry read without MLflow where it can be) and :mod:`slidead.store.run_record` (what a
run and a version say of themselves).
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from slidead.core.thresholds import Thresholds
from slidead.errors import NoChampionError
from slidead.store.mlflow_db import seed_new_sqlite
from slidead.store.model_files import (
    DIGEST_TAG,
    MODEL_FILES,
    OPTIONAL_FILES,
    LoadedModel,
    file_digests,
    model_from_files,
    write_model_files,
)
from slidead.store.registry_read import CHAMPION, champion_of, quote_name, versions_of
from slidead.store.run_record import feature_datasets, flat_metrics, version_description, version_facts

if TYPE_CHECKING:  # torch and the model registry only when a model is logged or loaded (`slidead models` lists without)
    import torch

    from slidead.core.config import RunConfig

KIND_TAG = "mlflow.experimentKind"  # what the MLflow 3 UI reads: model training, not a GenAI app
KIND = "custom_model_development"
PIP_REQUIREMENTS = ["torch==2.11.*", "numpy", "slidead"]
PYFUNC_CODE = Path(__file__).with_name("mlflow_model.py")  # what mlflow.pyfunc.load_model runs


def model_name(machine_type: str, family: str) -> str:
    return f"slidead-{machine_type}-{family}"


def experiment_name(machine_type: str) -> str:
    return f"slidead/{machine_type}"


@dataclass
class Decision:
    promoted: bool
    reason: str
    champion_version: int | None
    champion_auc: float | None
    champion_pauc: float | None


def _quiet_mlflow() -> None:
    for name in ("mlflow.store.db.utils", "alembic", "alembic.runtime.migration"):
        logging.getLogger(name).setLevel(logging.WARNING)


class Tracker:
    """MLflow on one tracking URI; ``artifact_root`` is used for experiments it creates."""

    def __init__(self, tracking_uri: str, artifact_root: str | None = None):
        import mlflow

        os.environ.setdefault("MLFLOW_ENABLE_ASYNC_LOGGING", "false")
        os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
        _quiet_mlflow()
        self.mlflow = mlflow
        self.uri = tracking_uri
        self.artifact_root = artifact_root
        seed_new_sqlite(tracking_uri)  # a new home's database: copied, not migrated step by step
        mlflow.set_tracking_uri(tracking_uri)
        mlflow.set_registry_uri(tracking_uri)
        self.client = mlflow.MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)

    def experiment_id(self, machine_type: str) -> str:
        """The machine type's experiment, created if need be, tagged as model training (an
        experiment made before the tag existed gets it too, unless it says otherwise)."""
        name = experiment_name(machine_type)
        exp = self.client.get_experiment_by_name(name)
        if exp is not None:
            if KIND_TAG not in exp.tags:
                self.client.set_experiment_tag(exp.experiment_id, KIND_TAG, KIND)
            return exp.experiment_id
        location = None
        if self.artifact_root:
            location = Path(self.artifact_root, machine_type).resolve().as_uri()
        return self.client.create_experiment(name, artifact_location=location, tags={KIND_TAG: KIND})

    def ui_path(self, machine_type: str) -> str:
        """Where the MLflow UI shows the experiment's training runs (append to the server's
        address): the 3.x UI opens an experiment on its GenAI overview unless told otherwise."""
        return f"/#/experiments/{self.experiment_id(machine_type)}/runs?workflowType=machine_learning"

    # -- a training run, opened before its first epoch ----------------------------------

    def start_training(self, cfg: RunConfig) -> str:
        """Open the run of one training of ``cfg`` (status RUNNING) and return its id: the
        epochs log into it as they come (:meth:`epoch_logger`), :meth:`log_training` completes it."""
        tags = {"family": cfg.family, "machine_type": cfg.machine_type, "feature_hash": cfg.features.hash}
        try:
            from mlflow.tracking.context import registry as context

            tags = context.resolve_tags(tags)  # source, user: what mlflow.start_run would add
        except Exception:  # noqa: BLE001 - those are niceties; the run opens without them
            pass
        run = self.client.create_run(
            self.experiment_id(cfg.machine_type), tags=tags, run_name=f"{cfg.family}-{cfg.features.hash}"
        )
        run_id = run.info.run_id
        # the config as params now; the model's own (its class list is set by the data) at the end
        self._log_params(run_id, {k: v for k, v in cfg.flat().items() if not k.startswith("model.")})
        return run_id

    def epoch_logger(
        self, run_id: str, then: Callable[[int, int, float, float], None] | None = None
    ) -> Callable[[int, int, float, float], None]:
        """A per-epoch callback for :func:`slidead.core.train.fit` that logs ``train_loss`` and
        ``val_loss`` at step ``epoch`` into ``run_id`` and then calls ``then``. A failed log
        never stops training: :meth:`log_training` logs the epochs that are missing."""
        from mlflow.entities import Metric

        warned = []

        def on_epoch(epoch: int, epochs: int, train_loss: float, val_loss: float) -> None:
            now = int(time.time() * 1000)
            try:
                self.client.log_batch(
                    run_id,
                    metrics=[
                        Metric("train_loss", float(train_loss), now, epoch),
                        Metric("val_loss", float(val_loss), now, epoch),
                    ],
                    synchronous=True,
                )
            except Exception as e:  # noqa: BLE001 - the training goes on; the run is completed later
                if not warned:
                    warned.append(e)
                    logging.getLogger(__name__).warning("MLflow did not take epoch %d's losses: %s", epoch, e)
            if then is not None:
                then(epoch, epochs, train_loss, val_loss)

        return on_epoch

    def end_failed(self, run_id: str) -> None:
        """Mark an opened run FAILED (its training raised)."""
        try:
            self.client.set_terminated(run_id, "FAILED")
        except Exception:  # noqa: BLE001 - the training's own error is the one to report
            pass

    def _log_params(self, run_id: str, params: dict) -> None:
        """Log ``params`` that the run does not have yet (MLflow refuses to change a param)."""
        from mlflow.entities import Param

        have = self.client.get_run(run_id).data.params
        new = [Param(k, str(v)[:6000]) for k, v in params.items() if k not in have]
        for start in range(0, len(new), 100):
            self.client.log_batch(run_id, params=new[start : start + 100], synchronous=True)

    # -- logging -------------------------------------------------------------------------

    def log_training(
        self,
        cfg: RunConfig,
        model: torch.nn.Module,
        history: dict,
        thresholds: Thresholds,
        report: dict,
        data: dict,
        figures: dict | None = None,
        extra_metrics: dict | None = None,
        run_id: str | None = None,
        features=None,
        folds=(),
    ) -> tuple[str, int]:
        """Everything about one training in one MLflow run; returns (run_id, version).

        ``run_id``: the run :meth:`start_training` opened (None: a new run); epochs already in
        it are not logged again. ``features``: the :class:`~slidead.store.features.FeatureStore`
        the clips came from; with it the training and evaluation sets are logged as MLflow
        datasets (source: their Parquet partitions; digest: their clips and feature config)."""
        mlflow = self.mlflow
        name = model_name(cfg.machine_type, cfg.family)
        if run_id is None:
            run_id = self.start_training(cfg)
        with mlflow.start_run(run_id=run_id) as run:
            self._log_params(run_id, cfg.flat())
            self._log_params(run_id, {f"data.{k}": v for k, v in data.items() if not isinstance(v, (list, dict))})
            self._log_history(run_id, history)
            mlflow.log_metrics(flat_metrics(report))
            if extra_metrics:
                mlflow.log_metrics(extra_metrics)
            if features is not None:
                try:
                    with warnings.catch_warnings():  # MLflow's "source can be interpreted in multiple ways"
                        warnings.simplefilter("ignore", UserWarning)
                        for ds, context in feature_datasets(features, cfg, data):
                            mlflow.log_input(ds, context=context)
                except Exception as e:  # noqa: BLE001 - they describe the run; the version registers without them
                    logging.getLogger(__name__).warning("the run's datasets were not logged: %s", e)
            mlflow.log_dict(thresholds.to_dict(), "thresholds.json")
            mlflow.log_dict(report, "evaluation.json")
            mlflow.log_dict({k: v for k, v in data.items() if isinstance(v, (list, dict))}, "data.json")
            for fname, fig in (figures or {}).items():
                mlflow.log_figure(fig, f"plots/{fname}.png")
            import torch

            with tempfile.TemporaryDirectory() as tmp:
                files = write_model_files(Path(tmp), cfg, model, thresholds, folds)
                digests = file_digests(files)
                example = torch.zeros(2, cfg.features.dim)
                from mlflow.models import infer_signature

                model.eval().cpu()
                with torch.no_grad():
                    signature = infer_signature(example.numpy(), model(example).numpy())
                with contextlib.redirect_stderr(io.StringIO()):  # registry prints "Created version ..."
                    info = mlflow.pyfunc.log_model(
                        name="model",
                        python_model=str(PYFUNC_CODE),  # code, not a pickle: slidead/store/mlflow_model.py
                        artifacts={f.name: str(f) for f in files},
                        signature=signature,
                        pip_requirements=PIP_REQUIREMENTS,
                        registered_model_name=name,
                    )
            version = int(info.registered_model_version)
            tags = {
                "family": cfg.family,
                "score_metric": cfg.score.metric,
                "mean_auc": str(report["mean"].get("auc")),
                "mean_pauc": str(report["mean"].get("pauc")),
                "feature_hash": cfg.features.hash,
                # what a champion cache checks its copy against (slidead.jobs.champions)
                DIGEST_TAG: json.dumps(digests, sort_keys=True),
                **version_facts(cfg, thresholds, report),
            }
            for key, value in tags.items():
                self.client.set_model_version_tag(name, str(version), key, value)
            self.client.update_model_version(name, str(version), description=version_description(cfg, report))
            return run.info.run_id, version

    def _log_history(self, run_id: str, history: dict) -> None:
        """Per-epoch values (step = epoch, 1 first) the run does not have yet."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        for key, values in history.items():
            have = {m.step for m in self.client.get_metric_history(run_id, key)} if values else set()
            new = [Metric(key, float(v), now, e) for e, v in enumerate(values, start=1) if e not in have]
            for start in range(0, len(new), 500):
                self.client.log_batch(run_id, metrics=new[start : start + 500], synchronous=True)

    def register_thresholds(self, loaded: LoadedModel, thresholds: Thresholds, reason: str) -> tuple[str, int]:
        """A new version of ``loaded.name``: ``loaded``'s weights and config with ``thresholds``
        (its evaluation carried over), tagged with ``reason`` and made the champion. Returns
        (run_id, version)."""
        try:
            report = self.mlflow.artifacts.load_dict(f"runs:/{loaded.run_id}/evaluation.json")
        except Exception:  # noqa: BLE001 - an older run without it: the version still registers
            report = {"per_id": {}, "mean": {}}
        run_id, version = self.log_training(
            loaded.config,
            loaded.model,
            {},
            thresholds,
            report,
            {"thresholds_from_version": loaded.version},
            None,
            None,
            folds=loaded.folds,
        )
        for key, value in (("thresholds_from_version", str(loaded.version)), ("threshold_change", reason[:5000])):
            self.client.set_model_version_tag(loaded.name, str(version), key, value)
        self.client.set_tag(run_id, "threshold_change", reason[:5000])
        self.set_champion(loaded.name, version)
        self.log_decision(run_id, Decision(True, reason[:500], loaded.version, None, None))
        return run_id, version

    def log_decision(self, run_id: str, decision: Decision) -> None:
        """The promotion gate's decision on the run and on the versions it registered (tags
        ``gate_decision``/``gate_reason``, and the last line of the version's description)."""
        verdict = "promoted" if decision.promoted else "kept champion"
        self.client.set_tag(run_id, "promotion", verdict)
        self.client.set_tag(run_id, "promotion_reason", decision.reason)
        for mv in self.client.search_model_versions(f"run_id='{quote_name(run_id)}'"):
            self.client.set_model_version_tag(mv.name, mv.version, "gate_decision", verdict)
            self.client.set_model_version_tag(mv.name, mv.version, "gate_reason", decision.reason[:5000])
            text = (mv.description or "").split("\n\nGate: ")[0]
            gate = f"Gate: {'promoted to champion' if decision.promoted else 'not promoted'} ({decision.reason})"
            self.client.update_model_version(mv.name, mv.version, description=f"{text}\n\n{gate}"[:5000])
        for k in ("champion_auc", "champion_pauc"):
            v = getattr(decision, k)
            if v is not None:
                self.client.log_metric(run_id, k, v)

    # -- registry ------------------------------------------------------------------------

    def champion_version(self, name: str):
        """The champion's ``ModelVersion``, or None when ``name`` has none."""
        return champion_of(self.client, name)

    def decide(
        self,
        name: str,
        auc: float,
        pauc: float,
        champion_figures: tuple[float, float] | None,
        tolerance: float = 0.0,
        figure: str = "mean AUC",
    ) -> Decision:
        """Promote unless the new version's mean AUC or pAUC is worse than the champion's by more
        than ``tolerance``. ``champion_figures`` are the champion's (auc, pauc) on the same
        evaluation set; when None, the figures stored on the champion version are used."""
        champ = self.champion_version(name)
        if champ is None:
            return Decision(True, "no champion yet", None, None, None)
        if champion_figures is None:
            champion_figures = (float(champ.tags.get("mean_auc", "nan")), float(champ.tags.get("mean_pauc", "nan")))
        c_auc, c_pauc = champion_figures
        ok = auc >= c_auc - tolerance and pauc >= c_pauc - tolerance
        verdict = "not worse than" if ok else "worse than"
        reason = (
            f"{figure} {auc:.4f} / pAUC {pauc:.4f} {verdict} champion v{champ.version} "
            f"({c_auc:.4f} / {c_pauc:.4f}, tolerance {tolerance})"
        )
        return Decision(ok, reason, int(champ.version), c_auc, c_pauc)

    def set_champion(self, name: str, version: int) -> None:
        self.client.set_registered_model_alias(name, CHAMPION, str(version))

    def load(self, name: str, version: int | None = None) -> LoadedModel:
        """The champion (or a given version), rebuilt from its weights and config."""
        if version is None:
            mv = self.champion_version(name)
            if mv is None:
                raise NoChampionError(name)
        else:
            mv = self.client.get_model_version(name, str(version))
        with tempfile.TemporaryDirectory() as tmp:
            files = self.model_files(name, mv, tmp, champion=version is None)
            return model_from_files(files, name, int(mv.version), mv.run_id)

    def model_files(self, name: str, mv, dst: str, champion: bool = True) -> dict[str, Path]:
        """Download version ``mv`` of ``name`` into ``dst``: its :data:`MODEL_FILES` by file name.
        Some missing: NoChampionError for the champion, else FileNotFoundError."""
        local = Path(
            self.mlflow.artifacts.download_artifacts(
                artifact_uri=f"models:/{name}/{mv.version}", dst_path=dst, tracking_uri=self.uri
            )
        )
        files = {p.name: p for p in local.rglob("*") if p.is_file() and p.name in MODEL_FILES + OPTIONAL_FILES}
        missing = set(MODEL_FILES) - set(files)
        if missing:
            raise (
                NoChampionError(name)
                if champion
                else FileNotFoundError(f"{name} v{mv.version} lacks {sorted(missing)}")
            )
        return files

    def versions(self, name: str) -> list:
        return versions_of(self.client, name)
