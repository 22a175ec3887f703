-- slidead's results: the tables and views of the results lake (DuckLake). Applied idempotently
-- when it changes (CREATE ... IF NOT EXISTS / CREATE OR REPLACE VIEW). DuckLake keeps no PRIMARY
-- KEY or CHECK constraints: they are dropped when the schema is applied, and the writes keep the
-- keys declared here themselves (slidead/store/results.py), so re-runs add nothing.

CREATE TABLE IF NOT EXISTS clips (
    clip_id       VARCHAR PRIMARY KEY,   -- SHA-256 of the WAV bytes
    uri           VARCHAR NOT NULL,      -- where it was first seen
    night         DATE,                  -- drop night, NULL for train/eval clips
    split         VARCHAR NOT NULL,      -- 'drop' | 'train' | 'eval'
    machine_type  VARCHAR NOT NULL,
    machine_id    VARCHAR NOT NULL,
    label         VARCHAR,               -- 'normal' | 'anomaly' when known
    sample_rate   INTEGER,               -- as recorded, before resampling
    channels      INTEGER,
    duration_s    DOUBLE,
    note          VARCHAR,               -- e.g. 'resampled from 44100 Hz', 'longer than 10 s'
    ingested_at   TIMESTAMP DEFAULT current_timestamp
);
-- the clip's DCASE section, domain ('source' | 'target') and operating conditions (a JSON object),
-- when its name or a sidecar gives them (databases made before they existed gain them here)
ALTER TABLE clips ADD COLUMN IF NOT EXISTS section VARCHAR;
ALTER TABLE clips ADD COLUMN IF NOT EXISTS domain VARCHAR;
ALTER TABLE clips ADD COLUMN IF NOT EXISTS attributes VARCHAR;

CREATE TABLE IF NOT EXISTS rejected (
    uri           VARCHAR PRIMARY KEY,
    night         DATE,
    machine_type  VARCHAR,
    machine_id    VARCHAR,
    reason        VARCHAR NOT NULL,      -- short slug: empty, not_wav, truncated, silent, ...
    detail        VARCHAR,
    clip_id       VARCHAR,               -- when the bytes could be read
    run_id        VARCHAR,
    rejected_at   TIMESTAMP DEFAULT current_timestamp
);

-- The night's ledger: one row per object listed under drops/<night>/ (an arrival) and what became
-- of it. fate: 'scored' (its bytes were first seen here and scored), 'duplicate' (bytes seen
-- before: duplicate_of says where; not scored again) or 'rejected' (reason, detail). Every
-- arrival has exactly one fate, so arrivals = scored + duplicates + rejected. A re-run adds
-- nothing; a key that later holds different bytes is a new version of the arrival (kept).
CREATE TABLE IF NOT EXISTS drops (
    night              DATE NOT NULL,
    uri                VARCHAR NOT NULL,
    version            INTEGER NOT NULL,     -- 1; 2, 3, ... when the same key later holds other bytes
    machine_type       VARCHAR,              -- as parsed from the key; NULL when it breaks the layout
    machine_id         VARCHAR,
    size_bytes         BIGINT,
    etag               VARCHAR,              -- the object's ETag (S3), or size-mtime_ns (local folder)
    clip_id            VARCHAR,              -- SHA-256 of the bytes, when they were read
    fate               VARCHAR NOT NULL CHECK (fate IN ('scored', 'duplicate', 'rejected')),
    reason             VARCHAR,              -- rejected: the reason slug, as in rejected
    detail             VARCHAR,
    duplicate_of       VARCHAR,              -- duplicate: the uri where these bytes were first seen
    duplicate_of_night DATE,                 -- its night (NULL for a training or evaluation clip)
    duplicate_of_split VARCHAR,              -- 'drop' | 'train' | 'eval'
    note               VARCHAR,              -- e.g. 'bytes equal an evaluation clip: ...'
    run_id             VARCHAR,
    first_seen_at      TIMESTAMP DEFAULT current_timestamp,
    PRIMARY KEY (night, uri, version)
);

CREATE TABLE IF NOT EXISTS scores (
    clip_id         VARCHAR NOT NULL,
    model_name      VARCHAR NOT NULL,    -- slidead-<machine_type>-<family>
    model_version   INTEGER NOT NULL,
    family          VARCHAR NOT NULL,
    night           DATE,
    machine_type    VARCHAR NOT NULL,
    machine_id      VARCHAR NOT NULL,
    score           DOUBLE NOT NULL,
    threshold       DOUBLE,
    is_anomaly      BOOLEAN,
    peak_time_s     DOUBLE,              -- where in time the error peaked
    peak_freq_lo_hz DOUBLE,              -- the mel band where the error peaked
    peak_freq_hi_hz DOUBLE,
    run_id          VARCHAR,
    scored_at       TIMESTAMP DEFAULT current_timestamp,
    explanation     VARCHAR,             -- flagged clips: "error peaks at 3.2-4.1 kHz between 4.5 and 4.9 s, 2.3x the threshold"
    PRIMARY KEY (clip_id, model_name, model_version)
);
-- databases made before explanations existed
ALTER TABLE scores ADD COLUMN IF NOT EXISTS explanation VARCHAR;
-- ... and before conformal calibration: the clip's p-value under its version's calibration (for a
-- conformal one, its score ranked among normal scores of the same model: one scale for every family),
-- and whether the machine's threshold was still provisional (fitted on training clips only)
ALTER TABLE scores ADD COLUMN IF NOT EXISTS p_value DOUBLE;
ALTER TABLE scores ADD COLUMN IF NOT EXISTS provisional BOOLEAN;

CREATE TABLE IF NOT EXISTS runs (
    run_id        VARCHAR PRIMARY KEY,
    flow          VARCHAR NOT NULL,      -- 'score' | 'retrain'
    night         DATE,
    machine_type  VARCHAR,
    family        VARCHAR,
    model_name    VARCHAR,
    model_version INTEGER,
    status        VARCHAR NOT NULL,      -- 'running' | 'completed' | 'failed'
    n_clips       INTEGER,
    n_scored      INTEGER,
    n_skipped     INTEGER,               -- already scored by this model version
    n_rejected    INTEGER,
    n_flagged     INTEGER,
    started_at    TIMESTAMP,
    finished_at   TIMESTAMP,
    seconds       DOUBLE,
    detail        VARCHAR
);

CREATE TABLE IF NOT EXISTS model_versions (
    model_name     VARCHAR NOT NULL,
    version        INTEGER NOT NULL,
    family         VARCHAR NOT NULL,
    machine_type   VARCHAR NOT NULL,
    mlflow_run_id  VARCHAR,
    feature_hash   VARCHAR,
    mean_auc       DOUBLE,
    mean_pauc      DOUBLE,
    champion_auc   DOUBLE,               -- the champion's figures it was compared with
    champion_pauc  DOUBLE,
    promoted       BOOLEAN,
    decision       VARCHAR,
    thresholds     VARCHAR,              -- JSON: machine_id -> threshold
    baseline       VARCHAR,              -- JSON: machine_id -> {median, p90} of normal training scores
    created_at     TIMESTAMP DEFAULT current_timestamp,
    PRIMARY KEY (model_name, version)
);

-- Operator verdicts (slidead label): fault -> anomaly, false_alarm -> normal, maintenance -> left out
-- of evaluation. The latest verdict of a clip wins.
CREATE TABLE IF NOT EXISTS labels (
    clip_id      VARCHAR PRIMARY KEY,
    verdict      VARCHAR NOT NULL CHECK (verdict IN ('fault', 'false_alarm', 'maintenance')),
    note         VARCHAR,
    labelled_by  VARCHAR,
    labelled_at  TIMESTAMP DEFAULT current_timestamp
);

CREATE OR REPLACE VIEW anomalies AS
SELECT s.night, s.machine_type, s.machine_id, s.clip_id, c.uri,
       s.model_name, s.model_version, s.score, s.threshold,
       s.score - s.threshold AS margin,
       s.score / nullif(s.threshold, 0) AS ratio,
       s.peak_time_s, s.peak_freq_lo_hz, s.peak_freq_hi_hz, s.scored_at, s.explanation,
       l.verdict, l.note AS verdict_note, s.p_value, s.provisional
FROM scores s LEFT JOIN clips c USING (clip_id) LEFT JOIN labels l USING (clip_id)
WHERE s.is_anomaly;

-- Per night, machine and model: the night's arrivals and their fates (from the ledger, drops),
-- and the model's flags and scores. arrivals = scored + duplicates + rejected on every row.
CREATE OR REPLACE VIEW nightly_summary AS
WITH sc AS (
    SELECT night, machine_type, machine_id, model_name, model_version,
           count(*) AS n_model_scored,
           count(*) FILTER (WHERE is_anomaly) AS n_flagged,
           median(score) AS median_score,
           max(score) AS max_score
    FROM scores WHERE night IS NOT NULL GROUP BY ALL
), ar AS (
    SELECT night, machine_type, machine_id,
           count(*) AS n_arrivals,
           count(*) FILTER (WHERE fate = 'scored') AS n_scored,
           count(*) FILTER (WHERE fate = 'duplicate') AS n_duplicates,
           count(*) FILTER (WHERE fate = 'rejected') AS n_rejected
    FROM drops GROUP BY ALL
)
SELECT coalesce(sc.night, ar.night) AS night,
       coalesce(sc.machine_type, ar.machine_type) AS machine_type,
       coalesce(sc.machine_id, ar.machine_id) AS machine_id,
       sc.model_name, sc.model_version,
       coalesce(ar.n_arrivals, sc.n_model_scored) AS n_arrivals,
       coalesce(ar.n_scored, sc.n_model_scored) AS n_scored,
       coalesce(ar.n_duplicates, 0) AS n_duplicates,
       coalesce(ar.n_rejected, 0) AS n_rejected,
       coalesce(sc.n_flagged, 0) AS n_flagged,
       round(sc.n_flagged / sc.n_model_scored, 4) AS anomaly_rate,
       sc.median_score, sc.max_score
FROM sc FULL OUTER JOIN ar
  ON ar.night = sc.night
 AND ar.machine_type IS NOT DISTINCT FROM sc.machine_type
 AND ar.machine_id IS NOT DISTINCT FROM sc.machine_id;

-- Machine-level alarms (slidead.alarms), recomputed from scores after every night's load.
CREATE TABLE IF NOT EXISTS machine_nights (
    night             DATE NOT NULL,
    machine_type      VARCHAR NOT NULL,
    machine_id        VARCHAR NOT NULL,
    model_name        VARCHAR NOT NULL,
    model_version     INTEGER NOT NULL,
    n_clips           INTEGER,
    n_flagged         INTEGER,
    median_score      DOUBLE,
    reference_median  DOUBLE,            -- from the machine's first nights with this version; NULL in them
    reference_sd      DOUBLE,            -- robust spread of those nights' clip scores
    drift_z           DOUBLE,            -- (median - reference) / standard error of the night's median
    cusum             DOUBLE,            -- Page's CUSUM of drift_z; 'drift' is raised above the limit
    PRIMARY KEY (night, model_name, model_version, machine_type, machine_id)
);

CREATE TABLE IF NOT EXISTS alarms (
    alarm_id       VARCHAR PRIMARY KEY,
    kind           VARCHAR NOT NULL,     -- 'flagged' (k of the last n clips) | 'drift' (CUSUM of nightly medians)
    night          DATE NOT NULL,        -- the night it was raised
    machine_type   VARCHAR NOT NULL,
    machine_id     VARCHAR NOT NULL,
    model_name     VARCHAR NOT NULL,
    model_version  INTEGER,
    clip_id        VARCHAR,              -- flagged: the clip that completed the k of n
    value          DOUBLE,               -- flagged clips in the window, or the CUSUM statistic
    threshold      DOUBLE,               -- k, or the CUSUM limit
    detail         VARCHAR,
    cleared_night  DATE,                 -- the night the condition stopped holding; NULL while active
    raised_at      TIMESTAMP DEFAULT current_timestamp
);

CREATE OR REPLACE VIEW active_alarms AS
SELECT a.night AS raised_night, a.kind, a.machine_type, a.machine_id, a.model_name, a.model_version,
       a.value, a.threshold, a.detail, c.uri AS clip_uri, a.raised_at, a.alarm_id
FROM alarms a LEFT JOIN clips c USING (clip_id)
WHERE a.cleared_night IS NULL
ORDER BY a.night DESC, a.kind, a.machine_type, a.machine_id;

-- Every threshold change a person or commissioning made, with why (never silent).
CREATE TABLE IF NOT EXISTS threshold_changes (
    model_name     VARCHAR NOT NULL,
    version        INTEGER NOT NULL,     -- the new model version that carries the threshold
    from_version   INTEGER NOT NULL,     -- the version whose threshold it replaced
    machine_id     VARCHAR NOT NULL,
    old_threshold  DOUBLE,
    new_threshold  DOUBLE NOT NULL,
    n_scores       INTEGER NOT NULL,     -- plant scores of that machine it rests on
    nights         VARCHAR,              -- the nights those scores come from
    n_false_alarms INTEGER,              -- clips operators labelled false_alarm among them
    reason         VARCHAR NOT NULL,
    changed_at     TIMESTAMP DEFAULT current_timestamp,
    PRIMARY KEY (model_name, version, machine_id)
);

-- The nightly flow's commissioning of each machine (slidead.jobs.commission.commission_due): a row
-- when it commissioned one, and one each night a machine waits for a person (why, e.g. a machine
-- alarm in its first nights).
CREATE TABLE IF NOT EXISTS commissioning (
    night          DATE NOT NULL,
    model_name     VARCHAR NOT NULL,
    model_version  INTEGER NOT NULL,     -- the version whose first nights were heard
    machine_id     VARCHAR NOT NULL,
    status         VARCHAR NOT NULL CHECK (status IN ('commissioned', 'waiting')),
    new_version    INTEGER,              -- commissioned: the version carrying the new calibration
    reason         VARCHAR NOT NULL,
    decided_at     TIMESTAMP DEFAULT current_timestamp,
    PRIMARY KEY (night, model_name, model_version, machine_id)
);
