"""Detection metrics: AUC, pAUC (max FPR 0.1) and decisions at a threshold, per machine ID.

``pauc`` is the standardised partial AUC that ``sklearn.metrics.roc_auc_score(y, s,
max_fpr=0.1)`` returns (McClish correction), computed here in numpy. ``pauc_raw`` is the
unstandardised area up to the max FPR divided by it, as the DCASE challenge reports it.
Labels: 1 = anomaly, 0 = normal; higher scores mean more anomalous.
"""

from __future__ import annotations

import numpy as np

MAX_FPR = 0.1


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


def evaluate(machine_ids, labels, scores, thresholds: dict[str, float], flags=None) -> dict:
    """Per machine ID metrics and their mean. ``flags`` (one bool per clip): the decisions the
    at-threshold metrics count, when they are not ``score > threshold`` (conformal p-values).

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
    return {"per_id": per_id, "mean": mean}
