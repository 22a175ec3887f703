"""``slidead evaluate --family fused``: the champions of several families fused on ``eval/``.

:func:`evaluate_fused` loads the champions, scores the labelled clips (and the plant clips
operators labelled) with each, fuses the scores per machine ID (:mod:`slidead.jobs.fusion`:
the normalisations, the members chosen from normal clips alone, the thresholds), and reports the
metrics as ``slidead evaluate`` does for one family; the flags come from the members' own
p-values combined.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

from slidead.core import conformal, metrics
from slidead.core.thresholds import Fit, Thresholds
from slidead.jobs.fusion import (
    DEFAULT_METHOD,
    DEVICE,
    METHODS,
    MIX_DB,
    fuse,
    fused_thresholds,
    mix_logmels,
    normal_reference,
    select_members,
)

log = logging.getLogger(__name__)


def evaluate_fused(
    svc,
    machine_type: str,
    families: Sequence[str] | None = None,
    method: str = DEFAULT_METHOD,
    select: bool = True,
    mix_db: float = MIX_DB,
    combination: str = "bonferroni",
) -> dict:
    """Fused metrics of the champions of ``families`` (default: every family with a champion)
    on ``eval/<machine_type>/``, as ``{"family": "fused", "machine_type", "model_version": None,
    "method", "members": {family: version}, "selected": {id: [family, ...]}, "selection":
    {id: criterion}, "per_id": {...}, "mean": {"auc", "pauc"}}``. ``select``: per machine ID
    fuse only the members chosen from normal training clips (module docstring); else all. The
    flags (the at-threshold metrics) come from the members' conformal p-values combined by
    ``combination`` (:func:`slidead.core.conformal.combine`; ``bonferroni`` keeps the promise)."""
    if method not in METHODS:
        raise ValueError(f"method={method!r}: expected one of {METHODS}")
    from slidead.core import models
    from slidead.core.score import fold_scores, score_logmels
    from slidead.errors import NoChampionError, NotEnoughDataError
    from slidead.jobs.ingest import ingest, list_refs
    from slidead.jobs.labels import add_plant_clips
    from slidead.store.tracking import model_name

    if combination not in conformal.COMBINATIONS:
        raise ValueError(f"combination={combination!r}: expected one of {conformal.COMBINATIONS}")
    explicit = families is not None
    loaded = {}
    for family in families or models.families():
        try:
            loaded[family] = svc.tracker.load(model_name(machine_type, family))
        except NoChampionError:
            if explicit:
                raise
    if len(loaded) < 2:
        raise NotEnoughDataError(
            f"fused needs the champions of two or more families for {machine_type}; found "
            f"{sorted(loaded) or 'none'}: train them first (slidead train --family ...)"
        )
    refs, _ = list_refs(svc.store, "eval", machine_type)
    if not refs:
        raise NotEnoughDataError(f"no labelled clips under eval/{machine_type}/ in {svc.store.uri}")
    configs = list({m.config.features.hash: m.config.features for m in loaded.values()}.values())
    res = ingest(svc.store, svc.features, refs, configs, svc.audio)
    add_plant_clips(svc, machine_type, configs, res)  # operators' verdicts on night clips
    clips = sorted(set.intersection(*(set(res.features[m.config.features.hash]) for m in loaded.values())))
    scores, normal, p_values = {}, {}, {}
    rows = None
    for family, m in loaded.items():
        by_clip = res.features[m.config.features.hash]
        rows = [by_clip[c] for c in clips]
        ids = [r.machine_id for r in rows]
        logmels = [r.logmel for r in rows]
        scores[family] = score_logmels(m.model, logmels, m.config.features, m.config.score, DEVICE, ids).score
        normal[family] = normal_reference(m.thresholds, f"{m.name} v{m.version}")
        # each family's own calibration: its p-values are on one scale, whatever its scores' scale
        p_values[family], _ = m.thresholds.decide(
            ids, scores[family], fold_scores(m.folds, logmels, m.config, ids, DEVICE)
        )
        log.info(f"fused: {m.name} v{m.version} scored {len(rows)} eval clips")
    ids = [r.machine_id for r in rows]
    labels = [1 if r.label == "anomaly" else 0 for r in rows]
    fits = {f: m.thresholds.per_id for f, m in loaded.items()}
    quantile = next(iter(loaded.values())).config.threshold_quantile
    selection = _selection(svc, machine_type, loaded, method, mix_db) if select else {}
    refs_all = {f: {mid: list(d.values()) for mid, d in n.items()} for f, n in normal.items()}
    id_arr = np.asarray(ids)
    fused = np.full(id_arr.shape, np.nan)
    chosen: dict[str, Fit] = {}
    for mid in sorted(set(ids) | set(selection)):
        members = selection.get(mid, {}).get("members", tuple(loaded))
        mask = id_arr == mid
        if mask.any():
            fused[mask] = fuse(
                {f: np.asarray(scores[f])[mask] for f in members}, refs_all, _ids_of(mask, ids), method, fits
            )
        part = fused_thresholds({f: normal[f] for f in members}, quantile, method, fits).per_id
        if mid in part:
            chosen[mid] = part[mid]
    thresholds = Thresholds(quantile, chosen)
    # the flags: the members' p-values combined (Bonferroni: at most the target rate whatever the
    # families' dependence); the fused score above only ranks the clips (AUC)
    p_fused = np.full(id_arr.shape, np.nan)
    for mid in sorted(set(ids)):
        mask = id_arr == mid
        members = selection.get(mid, {}).get("members", tuple(loaded))
        p_fused[mask] = conformal.combine([p_values[f][mask] for f in members], combination)
    flags = p_fused <= (1.0 - quantile) + 1e-12
    keep = np.isfinite(fused)
    report = metrics.evaluate(
        np.asarray(ids)[keep], np.asarray(labels)[keep], fused[keep], thresholds.map(), flags[keep]
    )
    per_id = {mid: {k: r[k] for k in metrics.AT_THRESHOLD_KEYS if k in r} for mid, r in report["per_id"].items()}
    return {
        "family": "fused",
        "machine_type": machine_type,
        "model_version": None,
        "method": method,
        "combination": combination,
        "members": {f: m.version for f, m in loaded.items()},
        "selected": {mid: list(sel["members"]) for mid, sel in selection.items()},
        "selection": {mid: {k: v for k, v in sel.items() if k != "members"} for mid, sel in selection.items()},
        "per_id": per_id,
        "mean": {k: report["mean"][k] for k in ("auc", "pauc") if k in report["mean"]},
    }


def _ids_of(mask: np.ndarray, ids: Sequence[str]) -> list[str]:
    return [m for m, k in zip(ids, mask) if k]


def _selection(svc, machine_type: str, loaded: dict, method: str, mix_db: float, most: int = 64) -> dict:
    """:func:`select_members` on pseudo-anomalies made from the normal training clips every
    family held out (at most ``most`` per machine ID, drawn with a fixed seed)."""
    from slidead.core.score import score_logmels
    from slidead.jobs.ingest import ingest, list_refs

    families = list(loaded)
    normal = {f: normal_reference(m.thresholds, f"{m.name} v{m.version}") for f, m in loaded.items()}
    fits = {f: m.thresholds.per_id for f, m in loaded.items()}
    ids = sorted(set.intersection(*(set(normal[f]) for f in families)))
    common = {mid: sorted(set.intersection(*(set(normal[f][mid]) for f in families))) for mid in ids}
    refs, _ = list_refs(svc.store, "train", machine_type)
    configs = list({m.config.features.hash: m.config.features for m in loaded.values()}.values())
    res = ingest(svc.store, svc.features, refs, configs, svc.audio)
    have = set.intersection(*(set(res.features[c.hash]) for c in configs))
    common = {mid: [c for c in cl if c in have] for mid, cl in common.items()}
    rng = np.random.default_rng(0)
    pairs = {}
    for mid, own in common.items():
        partners = [c for other, cl in common.items() if other != mid for c in cl]
        every = [(c, p) for c in own for p in partners]
        pick = sorted(rng.choice(len(every), size=min(most, len(every)), replace=False)) if every else []
        pairs[mid] = [every[i] for i in pick]
    pseudo = {f: {} for f in families}
    for f, m in loaded.items():
        by_clip = res.features[m.config.features.hash]
        for mid, pp in pairs.items():
            if pp:
                mixed = [mix_logmels(by_clip[c].logmel, by_clip[p].logmel, mix_db) for c, p in pp]
                pseudo[f][mid] = score_logmels(
                    m.model, mixed, m.config.features, m.config.score, DEVICE, [mid] * len(pp)
                ).score
    common_normal = {f: {mid: {c: normal[f][mid][c] for c in cl} for mid, cl in common.items()} for f in families}
    # the references stay each family's full normal scores; the candidates are judged on the common clips
    chosen = select_members(common_normal, pseudo, method, fits, references=normal)
    for mid, sel in chosen.items():
        log.info(f"fused: machine {mid}: {' + '.join(sel['members'])} (pseudo-anomaly AUC {sel['auc']})")
    return chosen
