-- Night ledger: every object that arrived under a night's drop folder and what became of it.
-- One row per arrival (a key that later held other bytes has one row per version): its machine,
-- size, fate (scored | duplicate | rejected), and why: the rejection reason and detail, or
-- where the bytes were first seen for a duplicate (another name tonight, an earlier night, a
-- training or evaluation clip), and for scored clips the champion's score and flag.
-- The counts per fate add up to the arrivals, always.
--
-- Variables: night (DATE, optional) -- default: the latest night in drops.
--
-- Example:
--   slidead sql --night 2026-11-23 < sql/night_ledger.sql
--   duckdb -init attach.sql < sql/night_ledger.sql    (the plain duckdb shell; attach.sql from `slidead sql --print-init`)
WITH params AS (
    SELECT coalesce(getvariable('night')::DATE, (SELECT max(night) FROM drops)) AS night
), best AS (  -- the newest model version's score of each clip that night
    SELECT DISTINCT ON (s.clip_id) s.clip_id, s.model_name || ':' || s.model_version AS model,
           s.score, s.is_anomaly
    FROM scores s JOIN params p ON s.night = p.night
    ORDER BY s.clip_id, s.scored_at DESC
)
SELECT d.night, d.machine_type, d.machine_id, d.uri, d.version, d.size_bytes, d.fate,
       d.reason, d.detail, d.duplicate_of, d.duplicate_of_night, d.note,
       b.model, round(b.score, 4) AS score, b.is_anomaly AS flagged,
       d.clip_id, d.first_seen_at
FROM drops d JOIN params p ON d.night = p.night
LEFT JOIN best b ON d.fate = 'scored' AND b.clip_id = d.clip_id
ORDER BY d.machine_type NULLS LAST, d.machine_id NULLS LAST, d.uri, d.version;
