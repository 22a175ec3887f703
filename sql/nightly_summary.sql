-- Nightly summary: for one night, how did each machine do?
-- One row per machine and scoring model: clips scored, clips flagged, anomaly rate, median
-- and max score, and inputs rejected for that machine (rejections belong to the machine, not
-- to a model, so the count repeats on each model's row when two models scored the night).
-- Machines whose every clip was rejected still appear, with scored = 0 and model NULL;
-- rejected inputs whose machine could not be told appear with machine_id NULL.
--
-- Variables: night (DATE, optional) -- default: the latest night in scores.
--
-- Example:
--   duckdb -readonly $SLIDEAD_HOME/slidead.duckdb < sql/nightly_summary.sql
--   duckdb -readonly -cmd "SET VARIABLE night = DATE '2026-11-23'" $SLIDEAD_HOME/slidead.duckdb < sql/nightly_summary.sql
-- or inside the duckdb shell:
--   SET VARIABLE night = DATE '2026-11-23';
--   .read sql/nightly_summary.sql
WITH params AS (
    SELECT coalesce(getvariable('night')::DATE, (SELECT max(night) FROM scores)) AS night
), sc AS (
    SELECT s.night, s.machine_type, s.machine_id,
           s.model_name || ':' || s.model_version AS model,
           count(*) AS scored,
           count(*) FILTER (WHERE s.is_anomaly) AS flagged,
           median(s.score) AS median_score,
           max(s.score) AS max_score
    FROM scores s JOIN params p ON s.night = p.night
    GROUP BY ALL
), rj AS (
    SELECT r.night, r.machine_type, r.machine_id, count(*) AS rejected
    FROM rejected r JOIN params p ON r.night = p.night
    GROUP BY ALL
)
SELECT coalesce(sc.night, rj.night)               AS night,
       coalesce(sc.machine_type, rj.machine_type) AS machine_type,
       coalesce(sc.machine_id, rj.machine_id)     AS machine_id,
       sc.model,
       coalesce(sc.scored, 0)                     AS scored,
       coalesce(sc.flagged, 0)                    AS flagged,
       round(sc.flagged / sc.scored, 4)           AS anomaly_rate,
       sc.median_score,
       sc.max_score,
       coalesce(rj.rejected, 0)                   AS rejected
FROM sc FULL OUTER JOIN rj
  ON rj.machine_type IS NOT DISTINCT FROM sc.machine_type
 AND rj.machine_id IS NOT DISTINCT FROM sc.machine_id
ORDER BY machine_type NULLS LAST, machine_id NULLS LAST, model NULLS LAST;
