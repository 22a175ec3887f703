"""Alarms in the results database: read the clip scores, write ``machine_nights`` and ``alarms``.

:func:`update` recomputes both for the given registered models from every night in ``scores``
(see :mod:`slidead.alarms`) and replaces what it computed before, in one transaction; an
alarm raised earlier keeps its ``raised_at``. Returns the alarms raised by this call.
"""

from __future__ import annotations

from collections.abc import Iterable

import pyarrow as pa

from ..alarms import Alarm, AlarmConfig, ClipRecord, MachineNight, evaluate
from .results import ResultsDB

_CLIPS = """
SELECT CAST(s.night AS VARCHAR), s.machine_type, s.machine_id, s.model_name, s.model_version, s.clip_id,
       coalesce(c.uri, s.clip_id), s.score, coalesce(s.is_anomaly, false)
FROM scores s LEFT JOIN clips c USING (clip_id)
WHERE s.night IS NOT NULL AND list_contains(?, s.model_name)
"""

_NIGHT_COLUMNS = ("night", "machine_type", "machine_id", "model_name", "model_version", "n_clips", "n_flagged",
                  "median_score", "reference_median", "reference_sd", "drift_z", "cusum")
_ALARM_COLUMNS = ("alarm_id", "kind", "night", "machine_type", "machine_id", "model_name", "model_version",
                  "clip_id", "value", "threshold", "detail", "cleared_night")


def records(db: ResultsDB, model_names: Iterable[str]) -> list[ClipRecord]:
    _, rows = db.query(_CLIPS, [sorted(set(model_names))], read_only=False)
    return [ClipRecord(*r[:7], float(r[7]), bool(r[8])) for r in rows]


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
    names = sorted(set(model_names))
    if not names:
        return []
    nights, alarms = evaluate(records(db, names), config)
    with db.connect() as con:
        before = {r[0] for r in con.execute("SELECT alarm_id FROM alarms WHERE list_contains(?, model_name)",
                                            [names]).fetchall()}
        con.execute("BEGIN TRANSACTION")
        try:
            con.execute("DELETE FROM machine_nights WHERE list_contains(?, model_name)", [names])
            con.register("batch", _nights_table(nights))
            con.execute("INSERT INTO machine_nights (night, machine_type, machine_id, model_name, model_version, "
                        "n_clips, n_flagged, median_score, reference_median, reference_sd, drift_z, cusum) "
                        "SELECT CAST(night AS DATE), machine_type, machine_id, model_name, model_version, n_clips, "
                        "n_flagged, median_score, reference_median, reference_sd, drift_z, cusum FROM batch")
            con.unregister("batch")
            keep = [a.alarm_id for a in alarms]
            con.execute("DELETE FROM alarms WHERE list_contains(?, model_name) AND NOT list_contains(?, alarm_id)",
                        [names, keep])
            con.register("batch", _alarms_table(alarms))
            con.execute("INSERT INTO alarms (alarm_id, kind, night, machine_type, machine_id, model_name, "
                        "model_version, clip_id, value, threshold, detail, cleared_night) "
                        "SELECT alarm_id, kind, CAST(night AS DATE), machine_type, machine_id, model_name, "
                        "model_version, clip_id, value, threshold, detail, CAST(cleared_night AS DATE) FROM batch "
                        "ON CONFLICT (alarm_id) DO UPDATE SET value = excluded.value, threshold = excluded.threshold, "
                        "detail = excluded.detail, cleared_night = excluded.cleared_night, clip_id = excluded.clip_id, "
                        "model_version = excluded.model_version")
            con.unregister("batch")
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
    return [a for a in alarms if a.alarm_id not in before]
