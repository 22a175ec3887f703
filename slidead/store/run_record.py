"""What a training run and its registered version say of themselves in MLflow: flat metrics,
the version's description and its facts about flags (false-alarm rate, what the thresholds
promise), and the run's datasets (the feature store's partitions, digested by clip IDs)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from slidead.core.config import RunConfig
    from slidead.core.thresholds import Thresholds


def version_facts(cfg, thresholds: Thresholds, report: dict) -> dict[str, str]:
    """What a version's registry page says of its flags: the false-alarm rate and recall at its
    thresholds on the evaluation set, what the thresholds promise and how many normal scores
    they rest on."""
    mean = report.get("mean", {})
    fits = thresholds.per_id.values()
    schemes = sorted({f.method for f in fits})
    facts = {
        # what the thresholds are (conformal, cross-conformal, gamma), not what was asked (auto)
        "threshold_scheme": ",".join(schemes) if schemes else cfg.train.threshold_scheme,
        "threshold_asked": cfg.train.threshold_scheme,
        "provisional_ids": ",".join(sorted(m for m, f in thresholds.per_id.items() if f.provisional)),
        "threshold_quantile": str(thresholds.quantile),
        "threshold_min_n": str(min((f.n for f in fits), default=0)),
        "false_alarm_rate": str(mean.get("false_alarm_rate", "")),
        "recall": str(mean.get("recall", "")),
    }
    off = report.get("official") or {}
    if off.get("score") is not None:  # clips with domains: the DCASE evaluator's score
        facts["official_score"] = str(off["score"])
    highs = [f.fa_high for f in fits if f.fa_high is not None]
    if any(f.method == "cross-conformal" for f in fits):
        facts["false_alarm_promise"] = (
            f"{1 - thresholds.quantile:.0%} (cross-conformal: at most {2 * (1 - thresholds.quantile):.0%})"
        )
    elif fits and all(f.conformal for f in fits):
        facts["false_alarm_promise"] = f"at most {1 - thresholds.quantile:.0%} (split conformal)"
    elif highs:
        facts["false_alarm_promise"] = f"{1 - thresholds.quantile:.0%} (90%: up to {max(highs):.0%})"
    return facts


def flat_metrics(report: dict) -> dict[str, float]:
    """``{"mean_auc": .., "auc_id_00": .., ...}`` from a metrics report."""
    out = {f"mean_{k}": float(v) for k, v in report.get("mean", {}).items()}
    for mid, row in report.get("per_id", {}).items():
        for k, v in row.items():
            out[f"{k}_id_{mid}"] = float(v)
    off = report.get("official")
    if off:  # the DCASE evaluator's figures: official_score, official_hmean_auc_source, ...
        if off.get("score") is not None:
            out["official_score"] = float(off["score"])
        for k, v in off.get("hmean", {}).items():
            out[f"official_hmean_{k}"] = float(v)
        for sec, row in off.get("per_section", {}).items():
            for k, v in row.items():
                if not k.startswith("n_"):
                    out[f"official_{k}_id_{sec}"] = float(v)
    return out


def version_description(cfg: RunConfig, report: dict) -> str:
    """What a registered version's page says first: which model, how it scores, how it did."""
    mean = report.get("mean", {})
    figures = ", ".join(
        f"{label} {float(mean[k]):.3f}"
        for k, label in (("auc", "mean AUC"), ("pauc", "pAUC"), ("false_alarm_rate", "false-alarm rate"))
        if mean.get(k) is not None
    )
    text = (
        f"{cfg.family} for {cfg.machine_type}, scored by {cfg.score.metric}, on log-mel features {cfg.features.hash} "
        f"({cfg.features.n_mels} mels, {cfg.features.frames} frames); threshold at the {cfg.threshold_quantile:.0%} "
        f"quantile of normal scores ({cfg.train.threshold_scheme})."
    )
    off = report.get("official") or {}
    if off.get("score") is not None:
        h = off.get("hmean", {})
        figures += (
            f"; official DCASE score {off['score']:.3f} (AUC source {h.get('auc_source', float('nan')):.3f}, "
            f"AUC target {h.get('auc_target', float('nan')):.3f}, pAUC {h.get('pauc', float('nan')):.3f})"
        )
    return text + (f" Evaluation: {figures}." if figures else " No labelled evaluation set.")


def _digest(clip_ids, feature_hash: str) -> str:
    import hashlib

    h = hashlib.sha256(feature_hash.encode())
    for cid in sorted(clip_ids):
        h.update(b"\n" + str(cid).encode())
    return h.hexdigest()[:16]


def feature_datasets(features, cfg: RunConfig, data: dict) -> list:
    """``(dataset, context)`` for the training set (the clips trained and validated on, context
    ``training``) and the evaluation set (``evaluation``), as MLflow datasets whose source is
    the feature store's Parquet partition and whose digest is a hash of the clip IDs and the
    feature config: two runs on the same clips show the same digest."""
    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.meta_dataset import MetaDataset
    from mlflow.types import ColSpec, DataType, Schema

    schema = Schema(
        [
            ColSpec(DataType.string, "clip_id"),
            ColSpec(DataType.string, "machine_id"),
            ColSpec(DataType.string, "label", required=False),
            ColSpec(DataType.integer, "n_frames"),
        ]
    )
    out = []
    for split, context, ids in (
        ("train", "training", list(data.get("train_clip_ids", [])) + list(data.get("val_clip_ids", []))),
        ("eval", "evaluation", list(data.get("eval_clip_ids", []))),
    ):
        if not ids:
            continue
        source = resolve_dataset_source(features.uri(cfg.features, f"set={split}", cfg.machine_type))
        name = f"{cfg.machine_type}-{split}-{len(ids)}clips"
        out.append((MetaDataset(source, name=name, digest=_digest(ids, cfg.features.hash), schema=schema), context))
    return out
