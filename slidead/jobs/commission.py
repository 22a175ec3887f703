"""Commissioning: a machine's threshold re-fitted from its own plant scores, recorded, never silent.

The thresholds a model version ships with come from its training clips. A machine on the plant
may sound different (another room, another microphone, another load): its first nights, or the
clips an operator labelled ``false_alarm``, tell what its normal sound scores. :func:`commission`
fits each asked machine's threshold (the version's own quantile, the same gamma fit) on the
champion's scores of that machine's first ``nights`` nights plus every clip of it labelled
``false_alarm``, leaving out clips labelled ``fault``; it registers the result as a new model
version (the same weights, new ``thresholds.json``, tagged with why), makes it the champion,
and writes one ``threshold_changes`` row per machine to DuckDB. Nights after that are scored
with the new thresholds; rows already written stay as they were.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace

import numpy as np

from slidead.core.thresholds import MIN_FIT, Thresholds
from slidead.errors import NotEnoughDataError
from slidead.jobs.steps import Log
from slidead.jobs.steps import quiet as _quiet
from slidead.store.services import Services
from slidead.store.tracking import model_name


@dataclass
class CommissionResult:
    model_name: str
    from_version: int
    version: int | None = None  # the new version, None when no machine had enough scores
    changes: list[dict] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)  # machine_id -> why

    def summary(self) -> dict:
        return {
            "model_name": self.model_name,
            "from_version": self.from_version,
            "version": self.version,
            "changes": self.changes,
            "skipped": self.skipped,
        }


def plant_scores(svc: Services, name: str, version: int, machine_id: str, nights: int) -> tuple[dict, list, int]:
    """``({clip_id: score}, nights used, n false alarms)``: the version's scores of the machine's
    first ``nights`` nights and of its clips labelled false_alarm, without clips labelled fault."""
    _, rows = svc.db.query(
        "SELECT DISTINCT night FROM scores WHERE model_name = ? AND model_version = ? AND machine_id = ? "
        "ORDER BY night LIMIT ?",
        [name, version, machine_id, nights],
    )
    first = [str(r[0]) for r in rows]
    _, rows = svc.db.query(
        "SELECT s.clip_id, s.score, l.verdict FROM scores s LEFT JOIN labels l USING (clip_id) "
        "WHERE s.model_name = ? AND s.model_version = ? AND s.machine_id = ? "
        "AND (list_contains(?, CAST(s.night AS VARCHAR)) OR l.verdict = 'false_alarm') "
        "AND (l.verdict IS NULL OR l.verdict <> 'fault')",
        [name, version, machine_id, first],
    )
    return {cid: float(s) for cid, s, _ in rows}, first, sum(1 for *_, v in rows if v == "false_alarm")


def commission(
    svc: Services,
    machine_type: str,
    family: str,
    machine_ids: list[str] | None = None,
    nights: int = 3,
    log: Log = _quiet,
) -> CommissionResult:
    """Re-fit the champion's thresholds of ``machine_ids`` (default: every machine it scored)."""
    if nights < 1:
        raise ValueError(f"nights={nights!r} must be >= 1")
    name = model_name(machine_type, family)
    loaded = svc.tracker.load(name)
    res = CommissionResult(name, loaded.version)
    if machine_ids is None:
        _, rows = svc.db.query(
            "SELECT DISTINCT machine_id FROM scores WHERE model_name = ? AND model_version = ? ORDER BY 1",
            [name, loaded.version],
        )
        machine_ids = [r[0] for r in rows]
    q = loaded.config.threshold_quantile
    old = loaded.thresholds.map()
    new_per_id = {}
    for mid in machine_ids:
        scores, used, n_fa = plant_scores(svc, name, loaded.version, mid, nights)
        if len(scores) < MIN_FIT:
            res.skipped[mid] = f"{len(scores)} plant scores by {name} v{loaded.version} (need {MIN_FIT})"
            log(f"machine {mid}: not commissioned: {res.skipped[mid]}")
            continue
        fit = Thresholds.fit({mid: np.array(list(scores.values()))}, q, "commissioning").per_id[mid]
        fit = replace(fit, nights=tuple(used), n_false_alarms=n_fa)
        new_per_id[mid] = fit
        res.changes.append(
            {
                "model_name": name,
                "from_version": loaded.version,
                "machine_id": mid,
                "old_threshold": old.get(mid),
                "new_threshold": fit.threshold,
                "n_scores": fit.n,
                "nights": ",".join(used),
                "n_false_alarms": n_fa,
                "reason": (
                    f"commissioning: {fit.n} plant scores of machine {mid} ({len(used)} first nights"
                    f"{f', {n_fa} labelled false_alarm' if n_fa else ''}) at the {q:.2f} quantile"
                ),
            }
        )
        log(
            f"machine {mid}: threshold {old.get(mid, float('nan')):.4g} -> {fit.threshold:.4g} "
            f"({fit.n} plant scores, nights {', '.join(used) or '-'}, {n_fa} false alarms)"
        )
    if not res.changes:
        raise NotEnoughDataError(
            f"no machine of {name} v{loaded.version} has {MIN_FIT} or more plant scores to commission from: "
            "score its first nights first"
        )
    thresholds = loaded.thresholds.with_fits(new_per_id)
    reason = "; ".join(c["reason"] for c in res.changes)
    run_id, res.version = svc.tracker.register_thresholds(loaded, thresholds, reason)
    for c in res.changes:
        c["version"] = res.version
    svc.db.record_threshold_changes(res.changes)
    svc.db.record_model_version(
        {
            "model_name": name,
            "version": res.version,
            "family": family,
            "machine_type": machine_type,
            "mlflow_run_id": run_id,
            "feature_hash": loaded.config.features.hash,
            "promoted": True,
            "decision": reason[:1000],
            "thresholds": json.dumps(thresholds.map()),
        }
    )
    log(f"{name} v{res.version} (v{loaded.version}'s weights, new thresholds) is the champion now")
    return res
