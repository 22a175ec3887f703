"""Alarms in the results database: read the clip scores, write ``machine_nights`` and ``alarms``.

:func:`update` recomputes both for the given registered models from every night in ``scores``
(see :mod:`slidead.core.alarms`) and replaces what it computed before, in one transaction; an
alarm raised earlier keeps its ``raised_at``. Returns the alarms raised by this call.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pyarrow as pa

from slidead.core.alarms import (
    Alarm,
    AlarmConfig,
    MachineNight,
    NightStats,
    WindowRow,
    drift_from_stats,
    flagged_from_windows,
)
from slidead.store.results import ResultsDB

# Only what the alarms need leaves DuckDB: each clip's k-of-n window where it can matter
# (count >= k, or the machine's last clip of a night), per-night aggregates, and the clip scores
# of each model version's warm-up nights. A year of nights stays a few thousand rows.
_WINDOWS = """
WITH newest AS (
    SELECT s.model_name, s.machine_type, s.machine_id, s.night, s.clip_id, s.model_version,
           CAST(coalesce(s.is_anomaly, false) AS INTEGER) AS flag, coalesce(c.uri, s.clip_id) AS uri
    FROM scores s LEFT JOIN clips c USING (clip_id)
    WHERE s.night IS NOT NULL AND list_contains($names, s.model_name)
    QUALIFY row_number() OVER (PARTITION BY s.model_name, s.clip_id ORDER BY s.model_version DESC) = 1
), w AS (
    SELECT model_name, machine_type, machine_id, night, clip_id, model_version, uri,
           sum(flag) OVER win AS n_flag, count(*) OVER win AS n_win,
           lead(night) OVER (PARTITION BY model_name, machine_type, machine_id ORDER BY night, uri, clip_id)
               IS DISTINCT FROM night AS night_end
    FROM newest
    WINDOW win AS (PARTITION BY model_name, machine_type, machine_id ORDER BY night, uri, clip_id
                   ROWS BETWEEN {preceding} PRECEDING AND CURRENT ROW)
)
SELECT model_name, machine_type, machine_id, CAST(night AS VARCHAR), clip_id, model_version,
       CAST(n_flag AS INTEGER), CAST(n_win AS INTEGER), night_end
FROM w WHERE n_flag >= $k OR night_end
ORDER BY model_name, machine_type, machine_id, night, uri, clip_id
"""

_STATS = """
SELECT model_name, model_version, machine_type, machine_id, CAST(night AS VARCHAR), count(*),
       count(*) FILTER (WHERE is_anomaly), median(score)
FROM scores WHERE night IS NOT NULL AND list_contains($names, model_name)
GROUP BY ALL ORDER BY ALL
"""

_WARM = """
WITH nights AS (
    SELECT model_name, model_version, machine_type, machine_id, night,
           row_number() OVER (PARTITION BY model_name, model_version, machine_type, machine_id ORDER BY night) AS k
    FROM (SELECT DISTINCT model_name, model_version, machine_type, machine_id, night FROM scores
          WHERE night IS NOT NULL AND list_contains($names, model_name))
)
SELECT s.model_name, s.model_version, s.machine_type, s.machine_id, list(s.score)
FROM scores s JOIN nights n USING (model_name, model_version, machine_type, machine_id, night)
WHERE n.k <= $warmup GROUP BY ALL
"""


_NIGHT_COLUMNS = (
    "night",
    "machine_type",
    "machine_id",
    "model_name",
    "model_version",
    "n_clips",
    "n_flagged",
    "median_score",
    "reference_median",
    "reference_sd",
    "drift_z",
    "cusum",
)
_ALARM_COLUMNS = (
    "alarm_id",
    "kind",
    "night",
    "machine_type",
    "machine_id",
    "model_name",
    "model_version",
    "clip_id",
    "value",
    "threshold",
    "detail",
    "cleared_night",
)


def evaluate_db(db: ResultsDB, names: list[str], config: AlarmConfig) -> tuple[list[MachineNight], list[Alarm]]:
    """:func:`slidead.core.alarms.evaluate` computed from the database, reading only what it needs."""
    return _evaluate(lambda sql, params: db.query(sql, params)[1], names, config)


def _evaluate(rows_of, names: list[str], config: AlarmConfig) -> tuple[list[MachineNight], list[Alarm]]:
    sql = _WINDOWS.format(preceding=int(config.n) - 1)
    rows = rows_of(sql, {"names": names, "k": int(config.k)})
    flagged = flagged_from_windows([WindowRow(*r[:6], int(r[6]), int(r[7]), bool(r[8])) for r in rows], config)
    rows = rows_of(_STATS, {"names": names})
    stats = [NightStats(r[0], int(r[1]), r[2], r[3], r[4], int(r[5]), int(r[6]), float(r[7])) for r in rows]
    rows = rows_of(_WARM, {"names": names, "warmup": int(config.warmup_nights)})
    warm = {(r[0], int(r[1]), r[2], r[3]): np.asarray(r[4], dtype=np.float64) for r in rows}
    nights, drift_alarms = drift_from_stats(stats, warm, config)
    return nights, flagged + drift_alarms


def _nights_table(rows: list[MachineNight]) -> pa.Table:
    return pa.table({c: pa.array([getattr(r, c) for r in rows], type=_type(c)) for c in _NIGHT_COLUMNS})


def _alarms_table(rows: list[Alarm]) -> pa.Table:
    return pa.table({c: pa.array([getattr(r, c) for r in rows], type=_type(c)) for c in _ALARM_COLUMNS})


def _type(column: str) -> pa.DataType:
    if column in ("model_version", "n_clips", "n_flagged"):
        return pa.int32()
    if column in ("median_score", "reference_median", "reference_sd", "drift_z", "cusum", "value", "threshold"):
        return pa.float64()
    return pa.string()


def update(db: ResultsDB, model_names: Iterable[str], config: AlarmConfig = AlarmConfig()) -> list[Alarm]:
    """Recompute the machine nights and alarms of ``model_names`` from their scores, in one
    transaction that reads the snapshot it writes over (a concurrent night's load makes it
    start again). Returns the alarms that are new."""
    names = sorted(set(model_names))
    if not names:
        return []

    def recompute(con) -> tuple[set[str], list[Alarm]]:
        nights, alarms = _evaluate(lambda sql, params: con.execute(sql, params).fetchall(), names, config)
        before = {
            r[0]
            for r in con.execute("SELECT alarm_id FROM alarms WHERE list_contains(?, model_name)", [names]).fetchall()
        }
        con.execute("DELETE FROM machine_nights WHERE list_contains(?, model_name)", [names])
        con.register("batch", _nights_table(nights))
        con.execute(
            "INSERT INTO machine_nights (night, machine_type, machine_id, model_name, model_version, "
            "n_clips, n_flagged, median_score, reference_median, reference_sd, drift_z, cusum) "
            "SELECT CAST(night AS DATE), machine_type, machine_id, model_name, model_version, n_clips, "
            "n_flagged, median_score, reference_median, reference_sd, drift_z, cusum FROM batch"
        )
        con.unregister("batch")
        keep = [a.alarm_id for a in alarms]
        con.execute(
            "DELETE FROM alarms WHERE list_contains(?, model_name) AND NOT list_contains(?, alarm_id)",
            [names, keep],
        )
        # an alarm still raised keeps its row (night raised, raised_at) and takes the new figures
        con.register("batch", _alarms_table(alarms))
        con.execute(
            "UPDATE alarms SET value = b.value, threshold = b.threshold, detail = b.detail, "
            "cleared_night = CAST(b.cleared_night AS DATE), clip_id = b.clip_id, model_version = b.model_version "
            "FROM batch b WHERE alarms.alarm_id = b.alarm_id"
        )
        con.execute(
            "INSERT INTO alarms (alarm_id, kind, night, machine_type, machine_id, model_name, "
            "model_version, clip_id, value, threshold, detail, cleared_night) "
            "SELECT alarm_id, kind, CAST(night AS DATE), machine_type, machine_id, model_name, "
            "model_version, clip_id, value, threshold, detail, CAST(cleared_night AS DATE) "
            "FROM (SELECT DISTINCT ON (alarm_id) * FROM batch) b "
            "WHERE NOT EXISTS (SELECT 1 FROM alarms a WHERE a.alarm_id = b.alarm_id)"
        )
        con.unregister("batch")
        return before, alarms

    before, alarms = db.write(recompute)
    return [a for a in alarms if a.alarm_id not in before]
