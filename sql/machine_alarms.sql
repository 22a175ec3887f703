-- Machine alarms: which machines need a look, as of the night?
-- One row per alarm active on the night (raised on or before it, not cleared by it):
--   kind 'flagged' - at least k of the machine's last n clips were flagged (SLIDEAD_ALARM_K/_N)
--   kind 'drift'   - the CUSUM of its nightly median score against its own first nights crossed
--                    the limit (slow wear: often before single clips are flagged)
-- with the machine's figures that night (clips, flagged, median, drift_z, cusum from
-- machine_nights). Newest alarms first.
--
-- Variables: night (DATE, optional) -- default: the latest night in scores.
--
-- Example:
--   slidead sql < sql/machine_alarms.sql
--   slidead sql --night 2026-11-23 < sql/machine_alarms.sql
--   duckdb -init attach.sql < sql/machine_alarms.sql    (the plain duckdb shell; attach.sql from `slidead sql --print-init`)
WITH params AS (
    SELECT coalesce(getvariable('night')::DATE, (SELECT max(night) FROM scores)) AS night
)
SELECT a.kind, a.machine_type, a.machine_id, a.night AS raised_night,
       a.model_name || ':' || a.model_version AS model,
       m.n_clips, m.n_flagged, round(m.median_score, 4) AS median_score,
       round(m.drift_z, 2) AS drift_z, round(m.cusum, 2) AS cusum,
       a.detail
FROM alarms a JOIN params p ON a.night <= p.night AND (a.cleared_night IS NULL OR a.cleared_night > p.night)
LEFT JOIN machine_nights m
  ON m.night = p.night AND m.model_name = a.model_name AND m.model_version = a.model_version
 AND m.machine_type = a.machine_type AND m.machine_id = a.machine_id
ORDER BY a.night DESC, a.kind, a.machine_type, a.machine_id;
