-- Flagged anomalies: which clips were flagged on the night, and where did their error peak?
-- One row per flagged (clip, model): uri, machine, score, threshold, margin (score - threshold),
-- ratio (score / threshold), when in the 10 s clip (peak_time_s) and in which mel band
-- (peak_freq_lo_hz .. peak_freq_hi_hz) the reconstruction error peaked, and the one-sentence
-- explanation ("error peaks at 3.2-4.1 kHz between 4.5 and 4.9 s, 2.3x the threshold").
-- Worst first (ratio desc).
--
-- Variables: night (DATE, optional) -- default: the latest night in scores.
--
-- Example:
--   slidead sql < sql/flagged_anomalies.sql
--   slidead sql --night 2026-11-23 < sql/flagged_anomalies.sql
--   duckdb -init attach.sql < sql/flagged_anomalies.sql    (the plain duckdb shell; attach.sql from `slidead sql --print-init`)
WITH params AS (
    SELECT coalesce(getvariable('night')::DATE, (SELECT max(night) FROM scores)) AS night
)
SELECT a.night, a.machine_type, a.machine_id, a.uri,
       a.model_name || ':' || a.model_version AS model,
       a.score, a.threshold, a.margin, a.ratio,
       a.peak_time_s, a.peak_freq_lo_hz, a.peak_freq_hi_hz,
       a.explanation, a.clip_id
FROM anomalies a JOIN params p ON a.night = p.night
ORDER BY a.ratio DESC NULLS LAST, a.margin DESC NULLS LAST, a.uri;
