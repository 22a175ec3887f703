-- Trend over 30 nights: is a machine wearing slowly?
-- Anomaly rate and median score per machine, model and night over the 30 nights ending on
-- the night (night - 29 days .. night), with a 7-night rolling mean of the median score
-- (nights present in that window only) so a slow rise stands out from nightly noise.
-- Compare rows of the same model only: scores of different model versions are on different scales.
--
-- Variables: night (DATE, optional) -- the last night of the window; default: the latest night in scores.
--
-- Example:
--   slidead sql < sql/trend_30_nights.sql
--   slidead sql --night 2026-11-23 < sql/trend_30_nights.sql
--   duckdb -init attach.sql < sql/trend_30_nights.sql    (the plain duckdb shell; attach.sql from `slidead sql --print-init`)
WITH params AS (
    SELECT coalesce(getvariable('night')::DATE, (SELECT max(night) FROM scores)) AS night
), nightly AS (
    SELECT s.machine_type, s.machine_id,
           s.model_name || ':' || s.model_version AS model,
           s.night,
           count(*) AS scored,
           count(*) FILTER (WHERE s.is_anomaly) AS flagged,
           median(s.score) AS median_score
    FROM scores s JOIN params p
      ON s.night BETWEEN p.night - INTERVAL 29 DAY AND p.night
    GROUP BY ALL
)
SELECT machine_type, machine_id, model, night, scored, flagged,
       round(flagged / scored, 4) AS anomaly_rate,
       median_score,
       avg(median_score) OVER (
           PARTITION BY machine_type, machine_id, model ORDER BY night
           RANGE BETWEEN INTERVAL 6 DAY PRECEDING AND CURRENT ROW
       ) AS median_score_7n
FROM nightly
ORDER BY machine_type, machine_id, model, night;
