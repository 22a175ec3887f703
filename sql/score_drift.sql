-- Score drift: which machines' scores on the night drifted away from their training baseline?
-- For each machine and the model version that scored it on the night: the night's median
-- (and 90th percentile) score against that model version's baseline for the machine, taken
-- from model_versions.baseline (JSON {"<machine_id>": {"median": .., "p90": ..}, ...}: the
-- median and p90 of the normal training clips' scores).
--   ratio   = night median / baseline median
--   drifted = night median > baseline p90   (the rule: half the night's clips score above
--             what 90 % of normal training clips did; NULL when there is no baseline)
-- status is 'drifted', 'ok' or 'no baseline'. Drifted machines first, then by ratio.
-- A machine drifting without flags usually means slow wear, a moved microphone or a changed
-- environment: check its trend (trend_30_nights.sql).
--
-- Variables: night (DATE, optional) -- default: the latest night in scores.
--
-- Example:
--   slidead sql < sql/score_drift.sql
--   slidead sql --night 2026-11-23 < sql/score_drift.sql
--   duckdb -init attach.sql < sql/score_drift.sql    (the plain duckdb shell; attach.sql from `slidead sql --print-init`)
WITH params AS (
    SELECT coalesce(getvariable('night')::DATE, (SELECT max(night) FROM scores)) AS night
), nightly AS (
    SELECT s.night, s.machine_type, s.machine_id, s.model_name, s.model_version,
           count(*) AS scored,
           median(s.score) AS median_score,
           quantile_cont(s.score, 0.9) AS p90_score
    FROM scores s JOIN params p ON s.night = p.night
    GROUP BY ALL
), baseline AS (
    SELECT mv.model_name, mv.version AS model_version, j.key AS machine_id,
           TRY_CAST(j.value ->> 'median' AS DOUBLE) AS baseline_median,
           TRY_CAST(j.value ->> 'p90' AS DOUBLE) AS baseline_p90
    FROM model_versions mv,
         json_each(CASE WHEN json_valid(mv.baseline) THEN mv.baseline END) AS j
), joined AS (
    SELECT n.*, b.baseline_median, b.baseline_p90
    FROM nightly n
    LEFT JOIN baseline b
      ON b.model_name = n.model_name AND b.model_version = n.model_version AND b.machine_id = n.machine_id
)
SELECT night, machine_type, machine_id,
       model_name || ':' || model_version AS model,
       scored, median_score, p90_score, baseline_median, baseline_p90,
       round(median_score / nullif(baseline_median, 0), 4) AS ratio,
       median_score > baseline_p90 AS drifted,
       CASE WHEN baseline_p90 IS NULL THEN 'no baseline'
            WHEN median_score > baseline_p90 THEN 'drifted'
            ELSE 'ok' END AS status
FROM joined
ORDER BY drifted DESC NULLS LAST, ratio DESC NULLS LAST, machine_type, machine_id, model;
