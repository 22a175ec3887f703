"""MLflow: log training runs, register versions, gate promotion, load the champion.

Experiment ``slidead/<machine_type>``; registered model ``slidead-<machine_type>-<family>``;
the version in use carries the alias ``champion``. The model is logged with the PyTorch
flavour in pickle format (``mlflow.pytorch.load_model`` gives back the project's own class,
any batch size) and, beside it, ``state_dict.pt`` + ``run_config.json`` + ``thresholds.json``:
scoring rebuilds the model from those with ``torch.load(weights_only=True)``, so it never
unpickles code. Pickled models are code: load them only from your own registry.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from slidead.errors import NoChampionError

if TYPE_CHECKING:  # torch and the model registry only when a model is logged or loaded (`slidead models` lists without)
    import torch

    from slidead.core.config import RunConfig

CHAMPION = "champion"
# what scoring rebuilds a version from; their sha256 digests are the version's tag DIGEST_TAG
MODEL_FILES = ("state_dict.pt", "run_config.json", "thresholds.json")
DIGEST_TAG = "model_files_sha256"
PIP_REQUIREMENTS = ["torch==2.11.*", "numpy", "slidead"]


def model_name(machine_type: str, family: str) -> str:
    return f"slidead-{machine_type}-{family}"


def experiment_name(machine_type: str) -> str:
    return f"slidead/{machine_type}"


@dataclass
class LoadedModel:
    model: torch.nn.Module
    config: RunConfig
    thresholds: dict
    name: str
    version: int
    run_id: str


@dataclass
class Decision:
    promoted: bool
    reason: str
    champion_version: int | None
    champion_auc: float | None
    champion_pauc: float | None


class _DropPickleNotice(logging.Filter):
    """We log pickle deliberately (own class back, any batch size) and never load it ourselves."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Pickle or CloudPickle" not in record.getMessage()


def _quiet_mlflow() -> None:
    logging.getLogger("mlflow.pytorch").addFilter(_DropPickleNotice())
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
        mlflow.set_tracking_uri(tracking_uri)
        mlflow.set_registry_uri(tracking_uri)
        self.client = mlflow.MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)

    def experiment_id(self, machine_type: str) -> str:
        name = experiment_name(machine_type)
        exp = self.client.get_experiment_by_name(name)
        if exp is not None:
            return exp.experiment_id
        location = None
        if self.artifact_root:
            location = Path(self.artifact_root, machine_type).resolve().as_uri()
        return self.client.create_experiment(name, artifact_location=location)

    # -- logging -------------------------------------------------------------------------

    def log_training(
        self,
        cfg: RunConfig,
        model: torch.nn.Module,
        history: dict,
        thresholds: dict,
        report: dict,
        data: dict,
        figures: dict | None = None,
        extra_metrics: dict | None = None,
    ) -> tuple[str, int]:
        """One MLflow run with everything about this training; returns (run_id, version)."""
        mlflow = self.mlflow
        name = model_name(cfg.machine_type, cfg.family)
        with mlflow.start_run(
            experiment_id=self.experiment_id(cfg.machine_type), run_name=f"{cfg.family}-{cfg.features.hash}"
        ) as run:
            mlflow.set_tags({"family": cfg.family, "machine_type": cfg.machine_type, "feature_hash": cfg.features.hash})
            mlflow.log_params(cfg.flat())
            mlflow.log_params({f"data.{k}": v for k, v in data.items() if not isinstance(v, (list, dict))})
            for key, values in history.items():
                for epoch, v in enumerate(values, start=1):
                    mlflow.log_metric(key, float(v), step=epoch)
            mlflow.log_metrics(flat_metrics(report))
            if extra_metrics:
                mlflow.log_metrics(extra_metrics)
            mlflow.log_dict(thresholds, "thresholds.json")
            mlflow.log_dict(report, "evaluation.json")
            mlflow.log_dict({k: v for k, v in data.items() if isinstance(v, (list, dict))}, "data.json")
            for fname, fig in (figures or {}).items():
                mlflow.log_figure(fig, f"plots/{fname}.png")
            import torch

            with tempfile.TemporaryDirectory() as tmp:
                files = _write_model_files(Path(tmp), cfg, model, thresholds)
                digests = file_digests(files)
                example = torch.zeros(2, cfg.features.dim)
                from mlflow.models import infer_signature

                model.eval().cpu()
                with torch.no_grad():
                    signature = infer_signature(example.numpy(), model(example).numpy())
                with contextlib.redirect_stderr(io.StringIO()):  # registry prints "Created version ..."
                    info = mlflow.pytorch.log_model(
                        model,
                        name="model",
                        serialization_format="pickle",
                        signature=signature,
                        pip_requirements=PIP_REQUIREMENTS,
                        extra_files=[str(f) for f in files],
                        registered_model_name=name,
                    )
            version = int(info.registered_model_version)
            self.client.set_model_version_tag(name, str(version), "mean_auc", str(report["mean"].get("auc")))
            self.client.set_model_version_tag(name, str(version), "mean_pauc", str(report["mean"].get("pauc")))
            self.client.set_model_version_tag(name, str(version), "feature_hash", cfg.features.hash)
            # what a champion cache checks its copy against (slidead.jobs.champions)
            self.client.set_model_version_tag(name, str(version), DIGEST_TAG, json.dumps(digests, sort_keys=True))
            for key, value in version_facts(cfg, thresholds, report).items():
                self.client.set_model_version_tag(name, str(version), key, value)
            return run.info.run_id, version

    def register_thresholds(self, loaded: LoadedModel, thresholds: dict, reason: str) -> tuple[str, int]:
        """A new version of ``loaded.name``: ``loaded``'s weights and config with ``thresholds``
        (its evaluation carried over), tagged with ``reason`` and made the champion. Returns
        (run_id, version)."""
        try:
            report = self.mlflow.artifacts.load_dict(f"runs:/{loaded.run_id}/evaluation.json")
        except Exception:  # noqa: BLE001 - an older run without it: the version still registers
            report = {"per_id": {}, "mean": {}}
        run_id, version = self.log_training(
            loaded.config, loaded.model, {}, thresholds, report, {"thresholds_from_version": loaded.version}, None, None
        )
        for key, value in (("thresholds_from_version", str(loaded.version)), ("threshold_change", reason[:5000])):
            self.client.set_model_version_tag(loaded.name, str(version), key, value)
        self.client.set_tag(run_id, "threshold_change", reason[:5000])
        self.set_champion(loaded.name, version)
        self.log_decision(run_id, Decision(True, reason[:500], loaded.version, None, None))
        return run_id, version

    def log_decision(self, run_id: str, decision: Decision) -> None:
        self.client.set_tag(run_id, "promotion", "promoted" if decision.promoted else "kept champion")
        self.client.set_tag(run_id, "promotion_reason", decision.reason)
        for k in ("champion_auc", "champion_pauc"):
            v = getattr(decision, k)
            if v is not None:
                self.client.log_metric(run_id, k, v)

    # -- registry ------------------------------------------------------------------------

    def champion_version(self, name: str):
        from mlflow.exceptions import MlflowException

        try:
            return self.client.get_model_version_by_alias(name, CHAMPION)
        except MlflowException as e:
            # no such model or alias: no champion; anything else (an outage) is not "no champion"
            if e.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"):
                return None
            raise

    def decide(
        self, name: str, auc: float, pauc: float, champion_figures: tuple[float, float] | None, tolerance: float = 0.0
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
            f"mean AUC {auc:.4f} / pAUC {pauc:.4f} {verdict} champion v{champ.version} "
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
        files = {p.name: p for p in local.rglob("*") if p.is_file() and p.name in MODEL_FILES}
        missing = set(MODEL_FILES) - set(files)
        if missing:
            raise (
                NoChampionError(name)
                if champion
                else FileNotFoundError(f"{name} v{mv.version} lacks {sorted(missing)}")
            )
        return files

    def versions(self, name: str) -> list:
        from mlflow.exceptions import MlflowException

        try:
            return sorted(self.client.search_model_versions(f"name='{_quote(name)}'"), key=lambda v: int(v.version))
        except MlflowException:
            return []


def _quote(name: str) -> str:
    if "'" in name:
        raise ValueError(f"model name {name!r} must not contain quotes")
    return name


def model_from_files(files: dict[str, Path], name: str, version: int, run_id: str) -> LoadedModel:
    """A model version rebuilt from its :data:`MODEL_FILES` (``torch.load(weights_only=True)``:
    the weights are never unpickled as code)."""
    import torch

    from slidead.core.config import RunConfig

    cfg = RunConfig.from_dict(json.loads(files["run_config.json"].read_text()))
    thresholds = json.loads(files["thresholds.json"].read_text())
    model = cfg.build_model()
    model.load_state_dict(torch.load(files["state_dict.pt"], map_location="cpu", weights_only=True))
    model.eval()
    return LoadedModel(model, cfg, thresholds, name, version, run_id)


def file_digests(files) -> dict[str, str]:
    """``{file name: sha256}`` of the given paths."""
    return {Path(f).name: hashlib.sha256(Path(f).read_bytes()).hexdigest() for f in files}


def _write_model_files(tmp: Path, cfg: RunConfig, model: torch.nn.Module, thresholds: dict) -> list[Path]:
    import torch

    sd = tmp / "state_dict.pt"
    torch.save(
        {
            k: v.detach().cpu() if isinstance(v, torch.Tensor) else v  # extra state: plain values
            for k, v in model.state_dict().items()
        },
        sd,
    )
    rc = tmp / "run_config.json"
    rc.write_text(cfg.to_json())
    th = tmp / "thresholds.json"
    th.write_text(json.dumps(thresholds, indent=2, sort_keys=True))
    return [sd, rc, th]


def version_facts(cfg, thresholds: dict, report: dict) -> dict[str, str]:
    """What a version's registry page says of its flags: the false-alarm rate and recall at its
    thresholds on the evaluation set, what the thresholds promise and how many normal scores
    they rest on."""
    mean = report.get("mean", {})
    fits = thresholds.get("per_id", {}).values()
    facts = {
        "threshold_scheme": cfg.train.threshold_scheme,
        "threshold_quantile": str(thresholds.get("quantile")),
        "threshold_min_n": str(min((int(f.get("n", 0)) for f in fits), default=0)),
        "false_alarm_rate": str(mean.get("false_alarm_rate", "")),
        "recall": str(mean.get("recall", "")),
    }
    highs = [f["fa_high"] for f in fits if f.get("fa_high") is not None]
    if highs:
        facts["false_alarm_promise"] = f"{1 - float(thresholds.get('quantile', 0.9)):.0%} (90%: up to {max(highs):.0%})"
    return facts


def flat_metrics(report: dict) -> dict[str, float]:
    """``{"mean_auc": .., "auc_id_00": .., ...}`` from a metrics report."""
    out = {f"mean_{k}": float(v) for k, v in report.get("mean", {}).items()}
    for mid, row in report.get("per_id", {}).items():
        for k, v in row.items():
            out[f"{k}_id_{mid}"] = float(v)
    return out
