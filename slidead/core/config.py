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

from slidead.core.features import FeatureConfig
from slidead.core.models import family as family_of_name
from slidead.core.models.mahalanobis import SelectiveMahalanobis
from slidead.core.score import ScoreConfig
from slidead.core.train import TrainConfig


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
        fam = family_of_name(self.family)
        if self.score.metric not in fam.metrics:
            raise ValueError(
                f"score metric {self.score.metric!r} does not apply to family {self.family!r}: "
                f"expected one of {fam.metrics}"
            )
        fam.check(self.model, self.features)

    @classmethod
    def default(cls, family: str, machine_type: str, metric: str | None = None, **train_overrides) -> "RunConfig":
        """The family's default config; ``metric`` overrides its score metric (``ae``/``vae``:
        ``mse`` or ``mahalanobis``; ``idclf``: ``mahalanobis`` or ``logit``)."""
        fam = family_of_name(family)
        feats = fam.feature_config()
        return cls(
            family=family,
            machine_type=machine_type,
            features=feats,
            model=fam.model_config(feats),
            train=TrainConfig(**{**fam.train, **train_overrides}),
            score=ScoreConfig(metric=metric or fam.metrics[0]),
        )

    def with_train(self, **overrides) -> "RunConfig":
        return replace(self, train=replace(self.train, **overrides))

    def with_classes(self, machine_ids) -> "RunConfig":
        """For a family that learns machine IDs (``idclf``): the config with its class list set
        to the sorted distinct ``machine_ids``; any other family's config unchanged."""
        if not family_of_name(self.family).learns_ids:
            return self
        return replace(self, model=replace(self.model, classes=tuple(sorted({str(m) for m in machine_ids}))))

    def build_model(self):
        """A fresh network for this config, with an (empty) Mahalanobis statistics module when
        the score metric needs one: a state dict saved after training loads into it."""
        model = family_of_name(self.family).build(self.model)
        if self.score.metric == "mahalanobis":
            model.mahalanobis = SelectiveMahalanobis()
        return model

    def to_dict(self) -> dict:
        return {
            "family": self.family,
            "machine_type": self.machine_type,
            "features": self.features.to_dict(),
            "model": self.model.to_dict(),
            "train": self.train.to_dict(),
            "score": self.score.to_dict(),
            "threshold_quantile": self.threshold_quantile,
        }

    @classmethod
    def from_dict(cls, d: dict) -> "RunConfig":
        return cls(
            family=d["family"],
            machine_type=d["machine_type"],
            features=FeatureConfig(**d["features"]),
            model=family_of_name(d["family"]).model_config(**d["model"]),
            train=TrainConfig(**d["train"]),
            score=ScoreConfig(**d["score"]),
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
