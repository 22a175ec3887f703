"""Detection metrics: AUC, pAUC (max FPR 0.1) and decisions at a threshold, per machine ID.

``pauc`` is the standardised partial AUC that ``sklearn.metrics.roc_auc_score(y, s,
max_fpr=0.1)`` returns (McClish correction), computed here in numpy: the DCASE Task 2
evaluators (2020-2025) compute their pAUC with exactly that call. ``pauc_raw`` is the
unstandardised area up to the max FPR divided by it (the definition in the task papers' text).
Labels: 1 = anomaly, 0 = normal; higher scores mean more anomalous.

:func:`official` is the DCASE 2022-2025 evaluator's score for clips that carry a domain: per
section (machine ID) the AUC of each domain (that domain's normal clips against *all* the
section's anomalous clips), the pAUC over both domains' clips, and the harmonic mean of all of
them over sections (each floored at machine epsilon, as the evaluator does).
"""

from __future__ import annotations

import sys

import numpy as np

MAX_FPR = 0.1
OFFICIAL_KEYS = ("auc_source", "auc_target", "pauc")


def _check(y, s):
    y = np.asarray(y).astype(int).ravel()
    s = np.asarray(s, dtype=np.float64).ravel()
    if y.shape != s.shape:
        raise ValueError(f"labels {y.shape} and scores {s.shape} differ in shape")
    if not set(np.unique(y)) <= {0, 1}:
        raise ValueError(f"labels must be 0/1, got {sorted(set(np.unique(y)))}")
    if y.min(initial=1) == y.max(initial=0):
        raise ValueError("need both normal (0) and anomalous (1) clips to compute an AUC")
    return y, s


def roc_curve(y, s) -> tuple[np.ndarray, np.ndarray]:
    """(fpr, tpr) at every distinct threshold, starting at (0, 0)."""
    y, s = _check(y, s)
    order = np.argsort(-s, kind="mergesort")
    s, y = s[order], y[order]
    distinct = np.where(np.diff(s))[0]
    idx = np.r_[distinct, y.size - 1]
    tps = np.cumsum(y)[idx]
    fps = (idx + 1) - tps
    tpr = np.r_[0.0, tps / tps[-1]]
    fpr = np.r_[0.0, fps / fps[-1]]
    return fpr, tpr


def auc(y, s) -> float:
    fpr, tpr = roc_curve(y, s)
    return float(np.trapezoid(tpr, fpr))


def pauc(y, s, max_fpr: float = MAX_FPR) -> float:
    """Standardised partial AUC (McClish), equal to sklearn's ``roc_auc_score(max_fpr=...)``."""
    raw = _partial_area(y, s, max_fpr)
    min_area, max_area = 0.5 * max_fpr**2, max_fpr
    return float(0.5 * (1 + (raw - min_area) / (max_area - min_area)))


def pauc_raw(y, s, max_fpr: float = MAX_FPR) -> float:
    """Area under the ROC up to ``max_fpr`` divided by ``max_fpr`` (the DCASE figure)."""
    return float(_partial_area(y, s, max_fpr) / max_fpr)


def _partial_area(y, s, max_fpr: float) -> float:
    if not 0 < max_fpr <= 1:
        raise ValueError(f"max_fpr={max_fpr!r} must be in (0, 1]")
    fpr, tpr = roc_curve(y, s)
    stop = np.searchsorted(fpr, max_fpr, side="right")
    x = np.r_[fpr[:stop], max_fpr]
    y_interp = np.r_[tpr[:stop], np.interp(max_fpr, fpr, tpr)]
    return float(np.trapezoid(y_interp, x))


AT_THRESHOLD_KEYS = ("auc", "pauc", "precision", "recall", "f1", "accuracy", "false_alarm_rate")


def at_threshold(y, s, threshold: float, flags=None) -> dict[str, float]:
    """Precision, recall, F1, accuracy and the false-alarm rate (flagged normals / normals) when
    ``score > threshold`` is flagged (or the clips ``flags`` says, when given: conformal p-values)."""
    y = np.asarray(y).astype(int).ravel()
    pred = (
        np.asarray(flags, dtype=bool).ravel()
        if flags is not None
        else np.asarray(s, dtype=np.float64).ravel() > threshold
    )
    tp = int(np.sum(pred & (y == 1)))
    fp = int(np.sum(pred & (y == 0)))
    fn = int(np.sum(~pred & (y == 1)))
    tn = int(np.sum(~pred & (y == 0)))
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "accuracy": (tp + tn) / max(y.size, 1),
        "false_alarm_rate": fp / (fp + tn) if fp + tn else 0.0,
    }


def evaluate(machine_ids, labels, scores, thresholds: dict[str, float], flags=None, domains=None) -> dict:
    """Per machine ID metrics and their mean. ``flags`` (one bool per clip): the decisions the
    at-threshold metrics count, when they are not ``score > threshold`` (conformal p-values).
    With ``domains`` (one per clip, ``source``, ``target`` or None) that name any, also
    ``"official"``: :func:`official`'s figures.

    Returns ``{"per_id": {id: {auc, pauc, precision, recall, f1, accuracy, false_alarm_rate,
    n_normal, n_anomaly}}, "mean": {the same but the counts}}``. IDs without both classes
    are reported with counts only (and, for normals with a threshold, their false-alarm rate)
    and left out of the mean of the other metrics.
    """
    ids = np.asarray(machine_ids).astype(str)
    labels, scores = np.asarray(labels).astype(int), np.asarray(scores, dtype=np.float64)
    flags = None if flags is None else np.asarray(flags, dtype=bool)
    per_id: dict[str, dict] = {}
    for mid in sorted(set(ids)):
        m = ids == mid
        y, s = labels[m], scores[m]
        f = None if flags is None else flags[m]
        row: dict = {"n_normal": int(np.sum(y == 0)), "n_anomaly": int(np.sum(y == 1))}
        if row["n_normal"] and row["n_anomaly"]:
            row.update(auc=auc(y, s), pauc=pauc(y, s))
            if mid in thresholds:
                row.update(at_threshold(y, s, thresholds[mid], f))
        elif row["n_normal"] and mid in thresholds:  # normals only: what the threshold costs them
            flagged = f if f is not None else s > thresholds[mid]
            row["false_alarm_rate"] = float(np.mean(flagged[y == 0]))
        per_id[str(mid)] = row
    keys = AT_THRESHOLD_KEYS
    mean = {
        k: float(np.mean([r[k] for r in per_id.values() if k in r]))
        for k in keys
        if any(k in r for r in per_id.values())
    }
    out = {"per_id": per_id, "mean": mean}
    if domains is not None:
        off = official(ids, domains, labels, scores)
        if off is not None:
            out["official"] = off
    return out


def hmean(values) -> float:
    """Harmonic mean, each value floored at machine epsilon (``scipy.stats.hmean`` as the
    DCASE evaluator calls it)."""
    v = np.maximum(np.asarray(list(values), dtype=np.float64), sys.float_info.epsilon)
    if v.size == 0:
        raise ValueError("no values to average")
    return float(v.size / np.sum(1.0 / v))


def official(machine_ids, domains, labels, scores) -> dict | None:
    """The DCASE evaluator's figures for clips with a domain (``source``/``target``).

    Returns ``{"per_section": {id: {auc_source, auc_target, pauc, n_source, n_target,
    n_anomaly}}, "hmean": {auc_source, auc_target, pauc}, "score": h}`` where ``score`` is the
    harmonic mean of every section's AUC source, AUC target and pAUC together (the official
    score), or None when no clip has a domain. A section that lacks normal clips of a domain,
    or anomalous clips, has no figure for it and is left out of the means."""
    doms = np.asarray([d if d in ("source", "target") else "" for d in domains], dtype=object)
    if not np.any(doms != ""):
        return None
    ids = np.asarray(machine_ids).astype(str)
    y, s = np.asarray(labels).astype(int), np.asarray(scores, dtype=np.float64)
    per: dict[str, dict] = {}
    for mid in sorted(set(ids[doms != ""])):
        m = (ids == mid) & (doms != "")
        row: dict = {"n_anomaly": int(np.sum(y[m] == 1))}
        for d in ("source", "target"):
            normal = m & (doms == d) & (y == 0)
            row[f"n_{d}"] = int(np.sum(normal))
            pick = normal | (m & (y == 1))  # this domain's normals, the section's anomalies
            if row[f"n_{d}"] and row["n_anomaly"]:
                row[f"auc_{d}"] = auc(y[pick], s[pick])
        if row["n_anomaly"] and np.any(y[m] == 0):
            row["pauc"] = pauc(y[m], s[m])
        per[str(mid)] = row
    out: dict = {"per_section": per, "hmean": {}}
    for k in OFFICIAL_KEYS:
        vals = [r[k] for r in per.values() if k in r]
        if vals:
            out["hmean"][k] = hmean(vals)
    every = [r[k] for r in per.values() for k in OFFICIAL_KEYS if k in r]
    out["score"] = hmean(every) if every else None
    return out
