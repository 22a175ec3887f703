"""One run config combining each component's frozen dataclass.

It is saved with every model version (``run_config.json``), so scoring rebuilds the exact
model and features from the registry alone. ``RunConfig.default(family, machine_type)`` is
the seed's configuration; ``flat()`` gives MLflow params.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace

from .features import FeatureConfig, for_family
from .models import model_config
from .score import ScoreConfig
from .train import TrainConfig


@dataclass(frozen=True)
class RunConfig:
    family: str
    machine_type: str
    features: FeatureConfig
    model: object
    train: TrainConfig = field(default_factory=TrainConfig)
    score: ScoreConfig = field(default_factory=ScoreConfig)
    threshold_quantile: float = 0.9

    @classmethod
    def default(cls, family: str, machine_type: str, **train_overrides) -> "RunConfig":
        feats = for_family(family)
        return cls(family=family, machine_type=machine_type, features=feats,
                   model=model_config(family, input_dim=feats.dim),
                   train=TrainConfig(**train_overrides))

    def with_train(self, **overrides) -> "RunConfig":
        return replace(self, train=replace(self.train, **overrides))

    def to_dict(self) -> dict:
        return {
            "family": self.family, "machine_type": self.machine_type,
            "features": self.features.to_dict(), "model": self.model.to_dict(),
            "train": self.train.to_dict(), "score": self.score.to_dict(),
            "threshold_quantile": self.threshold_quantile,
        }

    @classmethod
    def from_dict(cls, d: dict) -> "RunConfig":
        return cls(
            family=d["family"], machine_type=d["machine_type"],
            features=FeatureConfig(**d["features"]), model=model_config(d["family"], **d["model"]),
            train=TrainConfig(**d["train"]), score=ScoreConfig(**d["score"]),
            threshold_quantile=d.get("threshold_quantile", 0.9),
        )

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    def flat(self) -> dict[str, str]:
        """``section.field -> value`` for MLflow params."""
        out: dict[str, str] = {}
        for k, v in self.to_dict().items():
            if isinstance(v, dict):
                out.update({f"{k}.{kk}": str(vv) for kk, vv in v.items()})
            else:
                out[k] = str(v)
        out["features.hash"] = self.features.hash
        return out
