-- Model comparison: do two model versions agree on the same clips?
-- One row per pair of (model_name, model_version) that scored common clips (all nights; clips
-- are matched by clip_id): number of common clips, machines, nights covered, each one's
-- flagged count, how many both flagged, agreement rate (share of common clips where the two
-- flags are equal), each one's mean score, and the Spearman rank correlation of their scores
-- (Pearson correlation of average ranks; 1 = same ordering). Scores of different versions may
-- be on different scales, so compare ranks and flags rather than raw means.
--
-- Variables: model_a, model_b (VARCHAR 'model_name:version', optional, set both or neither),
--            e.g. SET VARIABLE model_a = 'slidead-slider-ae:1'; SET VARIABLE model_b = 'slidead-slider-ae:2';
--            Default (both unset): for each model_name, its second most recent version (model_a)
--            against its most recent version (model_b), by version number among versions in scores.
--            The night variable is not read: the comparison uses every common clip.
--
-- Example:
--   slidead sql < sql/model_comparison.sql
--   slidead sql -- -cmd "SET VARIABLE model_a = 'slidead-slider-ae:1'" -cmd "SET VARIABLE model_b = 'slidead-slider-vae:1'" \
--       < sql/model_comparison.sql
--   duckdb -init attach.sql < sql/model_comparison.sql    (the plain duckdb shell; attach.sql from `slidead sql --print-init`)
WITH vars AS (
    SELECT getvariable('model_a')::VARCHAR AS a, getvariable('model_b')::VARCHAR AS b
), params AS (
    SELECT a, b,
           nullif(regexp_extract(a, '^(.+):v?([0-9]+)$', 1), '') AS a_name,
           TRY_CAST(regexp_extract(a, '^(.+):v?([0-9]+)$', 2) AS INTEGER) AS a_version,
           nullif(regexp_extract(b, '^(.+):v?([0-9]+)$', 1), '') AS b_name,
           TRY_CAST(regexp_extract(b, '^(.+):v?([0-9]+)$', 2) AS INTEGER) AS b_version
    FROM vars
), checked AS (
    SELECT *,
           CASE
               WHEN (a IS NULL) <> (b IS NULL)
                   THEN error('model_comparison: set both model_a and model_b, or neither')
               WHEN a IS NOT NULL AND (a_name IS NULL OR a_version IS NULL OR b_name IS NULL OR b_version IS NULL)
                   THEN error('model_comparison: model_a and model_b must look like ''model_name:version'', e.g. ''slidead-slider-ae:2''; got '
                              || coalesce(a, 'NULL') || ' and ' || coalesce(b, 'NULL'))
               ELSE a IS NOT NULL
           END AS explicit
    FROM params
), versions AS (
    SELECT DISTINCT model_name, model_version FROM scores
), ranked_versions AS (
    SELECT model_name, model_version,
           row_number() OVER (PARTITION BY model_name ORDER BY model_version DESC) AS rn
    FROM versions
), pairs AS (
    SELECT a_name, a_version, b_name, b_version FROM checked WHERE explicit
    UNION ALL
    SELECT o.model_name, o.model_version, n.model_name, n.model_version
    FROM ranked_versions n
    JOIN ranked_versions o ON o.model_name = n.model_name AND o.rn = 2 AND n.rn = 1
    WHERE NOT (SELECT explicit FROM checked)
), common AS (
    SELECT p.a_name, p.a_version, p.b_name, p.b_version,
           sa.clip_id, sa.machine_type, sa.machine_id, sa.night,
           sa.score AS score_a, sb.score AS score_b,
           sa.is_anomaly AS flag_a, sb.is_anomaly AS flag_b
    FROM pairs p
    JOIN scores sa ON sa.model_name = p.a_name AND sa.model_version = p.a_version
    JOIN scores sb ON sb.model_name = p.b_name AND sb.model_version = p.b_version
                  AND sb.clip_id = sa.clip_id
), with_ranks AS (
    -- average rank for ties: (lowest rank + highest rank) / 2
    SELECT *,
           (rank() OVER (PARTITION BY a_name, a_version, b_name, b_version ORDER BY score_a)
            + count(*) OVER (PARTITION BY a_name, a_version, b_name, b_version)
            - rank() OVER (PARTITION BY a_name, a_version, b_name, b_version ORDER BY score_a DESC) + 1) / 2.0 AS rank_a,
           (rank() OVER (PARTITION BY a_name, a_version, b_name, b_version ORDER BY score_b)
            + count(*) OVER (PARTITION BY a_name, a_version, b_name, b_version)
            - rank() OVER (PARTITION BY a_name, a_version, b_name, b_version ORDER BY score_b DESC) + 1) / 2.0 AS rank_b
    FROM common
)
SELECT a_name || ':' || a_version AS model_a,
       b_name || ':' || b_version AS model_b,
       count(*) AS n_common,
       count(DISTINCT (machine_type, machine_id)) AS machines,
       min(night) AS first_night,
       max(night) AS last_night,
       count(*) FILTER (WHERE flag_a) AS flagged_a,
       count(*) FILTER (WHERE flag_b) AS flagged_b,
       count(*) FILTER (WHERE flag_a AND flag_b) AS flagged_both,
       round(avg(CASE WHEN coalesce(flag_a, false) = coalesce(flag_b, false) THEN 1.0 ELSE 0.0 END), 4) AS agreement,
       avg(score_a) AS mean_score_a,
       avg(score_b) AS mean_score_b,
       round(corr(rank_a, rank_b), 4) AS rank_corr
FROM with_ranks
GROUP BY a_name, a_version, b_name, b_version
ORDER BY model_a, model_b;
