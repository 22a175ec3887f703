"""One run config combining each component's frozen dataclass.

It is saved with every model version (``run_config.json``), so scoring rebuilds the exact
model and features from the registry alone. ``RunConfig.default(family, machine_type)`` is
the seed's configuration (for ``idclf``: 64 mels in 32-frame patches, scored with the selective
Mahalanobis distance of its embeddings); ``flat()`` gives MLflow params. ``build_model()``
makes the network with the scoring statistics its score metric needs, so a state dict saved
from a trained model loads into it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace

from .features import FeatureConfig, for_family
from .models import build, model_config
from .models.mahalanobis import SelectiveMahalanobis
from .score import METRICS, ScoreConfig
from .train import TrainConfig


# score metrics per family, the default first
FAMILY_METRICS = {"ae": ("mse", "mahalanobis"), "vae": ("mse", "mahalanobis"), "idclf": ("mahalanobis", "logit")}


@dataclass(frozen=True)
class RunConfig:
    family: str
    machine_type: str
    features: FeatureConfig
    model: object
    train: TrainConfig = field(default_factory=TrainConfig)
    score: ScoreConfig = field(default_factory=ScoreConfig)
    threshold_quantile: float = 0.9

    def __post_init__(self):
        allowed = FAMILY_METRICS.get(self.family, METRICS)
        if self.score.metric not in allowed:
            raise ValueError(f"score metric {self.score.metric!r} does not apply to family {self.family!r}: "
                             f"expected one of {allowed}")
        if self.family == "idclf" and (self.model.n_mels, self.model.frames) != \
                (self.features.n_mels, self.features.frames):
            raise ValueError(f"idclf patches of {self.model.n_mels} mels x {self.model.frames} frames need features "
                             f"with the same, got {self.features.n_mels} x {self.features.frames}")

    @classmethod
    def default(cls, family: str, machine_type: str, metric: str | None = None, **train_overrides) -> "RunConfig":
        """The family's default config; ``metric`` overrides its score metric (``ae``/``vae``:
        ``mse`` or ``mahalanobis``; ``idclf``: ``mahalanobis`` or ``logit``)."""
        feats = for_family(family)
        if family == "idclf":
            model = model_config(family, n_mels=feats.n_mels, frames=feats.frames)
        else:
            model = model_config(family, input_dim=feats.dim)
        metric = metric or FAMILY_METRICS.get(family, ("mse",))[0]
        return cls(family=family, machine_type=machine_type, features=feats, model=model,
                   train=TrainConfig(**train_overrides), score=ScoreConfig(metric=metric))

    def with_train(self, **overrides) -> "RunConfig":
        return replace(self, train=replace(self.train, **overrides))

    def with_classes(self, machine_ids) -> "RunConfig":
        """For a family that learns machine IDs (``idclf``): the config with its class list set
        to the sorted distinct ``machine_ids``; any other family's config unchanged."""
        if not hasattr(self.model, "classes"):
            return self
        return replace(self, model=replace(self.model, classes=tuple(sorted({str(m) for m in machine_ids}))))

    def build_model(self):
        """A fresh network for this config, with an (empty) Mahalanobis statistics module when
        the score metric needs one: a state dict saved after training loads into it."""
        model = build(self.family, self.model)
        if self.score.metric == "mahalanobis":
            model.mahalanobis = SelectiveMahalanobis()
        return model

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
