-- Nightly summary: for one night, how did each machine do?
-- One row per machine and scoring model: the night's arrivals (every object listed under the
-- night's drop folder, from the ledger table drops), clips scored by the model, duplicates
-- (bytes seen before: not scored again), inputs rejected, clips flagged, anomaly rate, median
-- and max score. Arrivals, duplicates and rejections belong to the machine, not to a model, so
-- they repeat on each model's row when two models scored the night; on every row
-- arrivals = scored + duplicates + rejected once the model has scored the whole night.
-- Machines whose every clip was rejected still appear, with scored = 0 and model NULL;
-- objects whose machine could not be told appear with machine_id NULL.
-- Nights scored before the ledger existed have no drops rows: arrivals is then scored + rejected.
--
-- Variables: night (DATE, optional) -- default: the latest night in scores.
--
-- Example:
--   slidead sql < sql/nightly_summary.sql
--   slidead sql --night 2026-11-23 < sql/nightly_summary.sql
--   duckdb -init attach.sql < sql/nightly_summary.sql    (the plain duckdb shell; attach.sql from `slidead sql --print-init`)
-- or inside the duckdb shell:
--   SET VARIABLE night = DATE '2026-11-23';
--   .read sql/nightly_summary.sql
WITH params AS (
    SELECT coalesce(getvariable('night')::DATE, (SELECT max(night) FROM scores)) AS night
), sc AS (
    SELECT s.machine_type, s.machine_id,
           s.model_name || ':' || s.model_version AS model,
           count(*) AS scored,
           count(*) FILTER (WHERE s.is_anomaly) AS flagged,
           median(s.score) AS median_score,
           max(s.score) AS max_score
    FROM scores s JOIN params p ON s.night = p.night
    GROUP BY ALL
), rj AS (
    SELECT r.machine_type, r.machine_id, count(*) AS rejected
    FROM rejected r JOIN params p ON r.night = p.night
    GROUP BY ALL
), ar AS (
    SELECT d.machine_type, d.machine_id,
           count(*) AS arrivals,
           count(*) FILTER (WHERE d.fate = 'duplicate') AS duplicates,
           count(*) FILTER (WHERE d.fate = 'rejected') AS rejected
    FROM drops d JOIN params p ON d.night = p.night
    GROUP BY ALL
), machines AS (
    SELECT machine_type, machine_id FROM sc
    UNION SELECT machine_type, machine_id FROM rj
    UNION SELECT machine_type, machine_id FROM ar
)
SELECT (SELECT night FROM params)                                 AS night,
       m.machine_type,
       m.machine_id,
       sc.model,
       coalesce(ar.arrivals, coalesce(sc.scored, 0) + coalesce(rj.rejected, 0)) AS arrivals,
       coalesce(sc.scored, 0)                                     AS scored,
       coalesce(ar.duplicates, 0)                                 AS duplicates,
       coalesce(ar.rejected, rj.rejected, 0)                      AS rejected,
       coalesce(sc.flagged, 0)                                    AS flagged,
       round(sc.flagged / sc.scored, 4)                           AS anomaly_rate,
       sc.median_score,
       sc.max_score
FROM machines m
LEFT JOIN sc ON sc.machine_type IS NOT DISTINCT FROM m.machine_type AND sc.machine_id IS NOT DISTINCT FROM m.machine_id
LEFT JOIN rj ON rj.machine_type IS NOT DISTINCT FROM m.machine_type AND rj.machine_id IS NOT DISTINCT FROM m.machine_id
LEFT JOIN ar ON ar.machine_type IS NOT DISTINCT FROM m.machine_type AND ar.machine_id IS NOT DISTINCT FROM m.machine_id
ORDER BY m.machine_type NULLS LAST, m.machine_id NULLS LAST, sc.model NULLS LAST;
