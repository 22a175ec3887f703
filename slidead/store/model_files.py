"""A model version as files: ``state_dict.pt`` (the weights), ``run_config.json`` and
``thresholds.json``. Training writes them, MLflow holds them (as a pyfunc's artifacts), scoring and
``mlflow.pyfunc.load_model`` rebuild the network from them with ``torch.load(weights_only=True)``:
nothing is unpickled. Their sha256 digests are the version's ``model_files_sha256`` tag, what a
champion cache checks its copy against."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from slidead.core.thresholds import Thresholds

if TYPE_CHECKING:  # torch only when a model is written or rebuilt
    import torch

    from slidead.core.config import RunConfig

# what scoring rebuilds a version from; their sha256 digests are the version's tag DIGEST_TAG
MODEL_FILES = ("state_dict.pt", "run_config.json", "thresholds.json")
DIGEST_TAG = "model_files_sha256"


@dataclass
class LoadedModel:
    model: torch.nn.Module
    config: RunConfig
    thresholds: Thresholds
    name: str
    version: int
    run_id: str


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
    return LoadedModel(model, cfg, thresholds, name, version, run_id)


def file_digests(files) -> dict[str, str]:
    """``{file name: sha256}`` of the given paths."""
    return {Path(f).name: hashlib.sha256(Path(f).read_bytes()).hexdigest() for f in files}


def write_model_files(tmp: Path, cfg: RunConfig, model: torch.nn.Module, thresholds: Thresholds) -> list[Path]:
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
    th.write_text(json.dumps(thresholds.to_dict(), indent=2, sort_keys=True))
    return [sd, rc, th]
