-- Rejected inputs by reason: what kinds of bad input arrived, how many, and an example of each?
-- One row per reason: count, machines affected, an example uri (the most recent rejection),
-- when a rejection of that kind was last seen, and the first and last drop night it occurred.
--
-- Variables: night (DATE, optional) -- when set, that night only; when unset, ALL TIME
--            (unlike the other reports, there is no fallback to the latest night).
--
-- Example:
--   slidead sql < sql/rejected_by_reason.sql
--   slidead sql --night 2026-11-23 < sql/rejected_by_reason.sql
--   duckdb -init attach.sql < sql/rejected_by_reason.sql    (the plain duckdb shell; attach.sql from `slidead sql --print-init`)
WITH params AS (
    SELECT getvariable('night')::DATE AS night
)
SELECT r.reason,
       count(*) AS n,
       count(DISTINCT (r.machine_type, r.machine_id)) FILTER (WHERE r.machine_id IS NOT NULL) AS machines,
       arg_max(r.uri, (r.rejected_at, r.uri)) AS example_uri,
       max(r.rejected_at) AS last_seen,
       min(r.night) AS first_night,
       max(r.night) AS last_night
FROM rejected r, params p
WHERE p.night IS NULL OR r.night = p.night
GROUP BY r.reason
ORDER BY n DESC, r.reason;
