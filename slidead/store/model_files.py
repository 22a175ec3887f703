"""A model version as files: ``state_dict.pt`` (the weights), ``run_config.json`` and
``thresholds.json``. Training writes them, MLflow holds them (as a pyfunc's artifacts), scoring and
``mlflow.pyfunc.load_model`` rebuild the network from them with ``torch.load(weights_only=True)``:
nothing is unpickled. Their sha256 digests are the version's ``model_files_sha256`` tag, what a
champion cache checks its copy against."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from slidead.core.thresholds import Thresholds

if TYPE_CHECKING:  # torch only when a model is written or rebuilt
    import torch

    from slidead.core.config import RunConfig

# what scoring rebuilds a version from; their sha256 digests are the version's tag DIGEST_TAG
MODEL_FILES = ("state_dict.pt", "run_config.json", "thresholds.json")
# a cross-conformal version also ships its fold models' weights (a list of state dicts): a clip's
# p-value needs its score under each of them (slidead.core.thresholds)
FOLDS_FILE = "folds.pt"
OPTIONAL_FILES = (FOLDS_FILE,)
DIGEST_TAG = "model_files_sha256"


@dataclass
class LoadedModel:
    model: torch.nn.Module
    config: RunConfig
    thresholds: Thresholds
    name: str
    version: int
    run_id: str
    folds: list = field(default_factory=list)  # cross-conformal: the fold models (same config)


def model_from_files(files: dict[str, Path], name: str, version: int, run_id: str) -> LoadedModel:
    """A model version rebuilt from its :data:`MODEL_FILES` (``torch.load(weights_only=True)``:
    the weights are never unpickled as code)."""
    import torch

    from slidead.core.config import RunConfig

    cfg = RunConfig.from_dict(json.loads(files["run_config.json"].read_text()))
    thresholds = Thresholds.from_dict(json.loads(files["thresholds.json"].read_text()))
    model = cfg.build_model()
    model.load_state_dict(torch.load(files["state_dict.pt"], map_location="cpu", weights_only=True))
    model.eval()
    folds = []
    if FOLDS_FILE in files:
        for sd in torch.load(files[FOLDS_FILE], map_location="cpu", weights_only=True):
            fm = cfg.build_model()
            fm.load_state_dict(sd)
            folds.append(fm.eval())
    return LoadedModel(model, cfg, thresholds, name, version, run_id, folds)


def file_digests(files) -> dict[str, str]:
    """``{file name: sha256}`` of the given paths."""
    return {Path(f).name: hashlib.sha256(Path(f).read_bytes()).hexdigest() for f in files}


def _state(model) -> dict:
    import torch

    return {
        k: v.detach().cpu() if isinstance(v, torch.Tensor) else v  # extra state: plain values
        for k, v in model.state_dict().items()
    }


def write_model_files(
    tmp: Path, cfg: RunConfig, model: torch.nn.Module, thresholds: Thresholds, folds=()
) -> list[Path]:
    """The version's files; ``folds`` (cross-conformal fold models) add :data:`FOLDS_FILE`."""
    import torch

    sd = tmp / "state_dict.pt"
    torch.save(_state(model), sd)
    rc = tmp / "run_config.json"
    rc.write_text(cfg.to_json())
    th = tmp / "thresholds.json"
    th.write_text(json.dumps(thresholds.to_dict(), indent=2, sort_keys=True))
    if not folds:
        return [sd, rc, th]
    fp = tmp / FOLDS_FILE
    torch.save([_state(m) for m in folds], fp)
    return [sd, rc, th, fp]
