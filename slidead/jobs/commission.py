"""Commissioning: a machine's calibration re-fitted on its own plant scores, recorded, never silent.

The calibration a model version ships with comes from its training clips: it is *provisional*.
A machine on the plant may sound different (another room, another microphone, another load), and
then its later clips are not exchangeable with the training clips and no promise made on them
holds. Its first nights, and the clips an operator labelled ``false_alarm``, tell what its normal
sound scores. :func:`commission` calibrates each asked machine split-conformally on the
champion's scores of that machine's first ``nights`` nights plus every clip of it labelled
``false_alarm``, leaving out clips labelled ``fault`` (the champion never trained on these clips,
so for later nights recorded as those were the promise holds again: at most the target rate);
it registers the result as a new model version (the same weights, new ``thresholds.json``,
tagged with why), makes it the champion, and writes one ``threshold_changes`` row per machine to
DuckDB. Nights after that are scored with the new calibration; rows already written stay.

:func:`commission_due` is the nightly flow's step: after a night's load, every machine whose
provisional calibration has heard ``SLIDEAD_COMMISSION_NIGHTS`` nights is commissioned, unless
a machine alarm was raised for it in those nights: then it waits for a person (a faulty machine's
nights are no normal reference), and a ``commissioning`` row says why, every night until someone
runs ``slidead commission``.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field, replace

import numpy as np

from slidead.core import conformal
from slidead.core.thresholds import MIN_FIT, Thresholds
from slidead.errors import NotEnoughDataError
from slidead.store.services import Services
from slidead.store.tracking import model_name

log = logging.getLogger(__name__)


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
    # fewer scores than a p-value needs to reach the target would give a threshold nothing can
    # pass: the machine would go silent, so it is left as it is and said why
    need = max(MIN_FIT, conformal.min_calibration(1 - q))
    old = loaded.thresholds.map()
    new_per_id, new_scores = {}, {}
    for mid in machine_ids:
        scores, used, n_fa = plant_scores(svc, name, loaded.version, mid, nights)
        if len(scores) < need:
            res.skipped[mid] = (
                f"{len(scores)} plant scores by {name} v{loaded.version} (need {need} for a p-value to reach {1 - q:.0%})"
            )
            log.info(f"machine {mid}: not commissioned: {res.skipped[mid]}")
            continue
        fit = Thresholds.calibrate({mid: scores}, "conformal", q, "commissioning", provisional=False).per_id[mid]
        fit = replace(fit, nights=tuple(used), n_false_alarms=n_fa)
        new_per_id[mid] = fit
        new_scores[mid] = scores
        res.changes.append(
            {
                "model_name": name,
                "from_version": loaded.version,
                "machine_id": mid,
                "old_threshold": old.get(mid),
                "new_threshold": fit.threshold if np.isfinite(fit.threshold) else None,
                "n_scores": fit.n,
                "nights": ",".join(used),
                "n_false_alarms": n_fa,
                "reason": (
                    f"commissioning: split conformal on {fit.n} plant scores of machine {mid} ({len(used)} first nights"
                    f"{f', {n_fa} labelled false_alarm' if n_fa else ''}), target {1 - q:.0%}"
                ),
            }
        )
        log.info(
            f"machine {mid}: threshold {old.get(mid, float('nan')):.4g} -> {fit.threshold:.4g} (p <= {1 - q:.2g}) "
            f"({fit.n} plant scores, nights {', '.join(used) or '-'}, {n_fa} false alarms)"
        )
    if not res.changes:
        raise NotEnoughDataError(
            f"no machine of {name} v{loaded.version} has {need} or more plant scores to commission from: "
            "score its first nights first"
        )
    thresholds = loaded.thresholds.with_fits(new_per_id, new_scores)
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
            "thresholds": json.dumps(thresholds.finite_map()),
        }
    )
    log.info(f"{name} v{res.version} (v{loaded.version}'s weights, new thresholds) is the champion now")
    return res


def commission_due(svc: Services, family: str, models: dict[str, int], night: str, nights: int):
    """The nightly flow's commissioning step, after ``night``'s load: for each model of the night
    (``{name: version}``), every machine still provisional under that version that has been scored
    on ``nights`` or more nights is commissioned (:func:`commission`), except a machine with a
    machine alarm in those nights or one already waiting: it waits for a person. Each decision is
    a ``commissioning`` row. Returns ``[{"model_name", "machine_id", "status", "new_version",
    "reason"}]``."""
    if nights < 1:
        return []
    decided = []
    for name, version in sorted(models.items()):
        if version is None or not name.endswith(f"-{family}"):
            continue
        machine_type = name[len("slidead-") : -len(family) - 1]
        _, rows = svc.db.query(
            "SELECT machine_id, count(DISTINCT night) FROM scores "
            "WHERE model_name = ? AND model_version = ? AND night IS NOT NULL AND provisional "
            "GROUP BY 1 ORDER BY 1",
            [name, version],
        )
        due, waiting = [], {}
        for mid, n_nights in rows:
            _, before = svc.db.query(
                "SELECT night, reason FROM commissioning WHERE model_name = ? AND machine_id = ? "
                "AND status = 'waiting' AND night < ?::DATE ORDER BY night LIMIT 1",
                [name, mid, night],
            )
            if before:  # a person has not looked yet: it keeps saying so, whatever version scores it
                waiting[mid] = f"waiting since {before[0][0]}: {before[0][1]}"
                continue
            if n_nights < nights:
                continue
            _, first = svc.db.query(
                "SELECT DISTINCT night FROM scores WHERE model_name = ? AND model_version = ? AND machine_id = ? "
                "AND night IS NOT NULL ORDER BY night LIMIT ?",
                [name, version, mid, nights],
            )
            _, alarms = svc.db.query(
                "SELECT kind, night, detail FROM alarms WHERE model_name = ? AND machine_id = ? "
                "AND model_version = ? AND night <= ?::DATE ORDER BY night LIMIT 1",
                [name, mid, version, str(max(r[0] for r in first))],
            )
            if alarms:
                kind, when, detail = alarms[0]
                waiting[mid] = (
                    f"a {kind} machine alarm was raised on {when} in its first {nights} nights ({detail}): "
                    "they are no normal reference; after a look, run `slidead commission --ids "
                    f"{mid} --family {family} --machine-type {machine_type}`"
                )
            else:
                due.append(mid)
        rows_out = [
            {"model_name": name, "machine_id": m, "status": "waiting", "new_version": None, "reason": r}
            for m, r in sorted(waiting.items())
        ]
        for mid, why in sorted(waiting.items()):
            log.info(f"{name} machine {mid}: not commissioned automatically: {why}")
        if due:
            try:
                res = commission(svc, machine_type, family, due, nights)
            except NotEnoughDataError as e:
                res = None
                rows_out += [
                    {"model_name": name, "machine_id": m, "status": "waiting", "new_version": None, "reason": str(e)}
                    for m in due
                ]
            if res is not None:
                for c in res.changes:
                    rows_out.append(
                        {
                            "model_name": name,
                            "machine_id": c["machine_id"],
                            "status": "commissioned",
                            "new_version": res.version,
                            "reason": c["reason"],
                        }
                    )
                for mid, why in res.skipped.items():
                    rows_out.append(
                        {"model_name": name, "machine_id": mid, "status": "waiting", "new_version": None, "reason": why}
                    )
        for r in rows_out:
            r.update(night=night, model_version=version)
        svc.db.record_commissioning(rows_out)
        decided += rows_out
    return decided
