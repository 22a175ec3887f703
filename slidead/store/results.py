"""The DuckDB results database: clips, rejected inputs, scores, runs, model versions.

One writer at a time: a connection that finds the file locked (an analyst's ``duckdb``
shell, another run) retries with backoff, then raises :class:`DatabaseBusyError` naming the
holder. Every write uses parameters or registered Arrow tables, never SQL built from strings.
Rows go in with ``ON CONFLICT DO NOTHING`` keyed on the primary keys, so re-running a night
changes nothing that was right.
"""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

import duckdb
import pyarrow as pa

from slidead.errors import DatabaseBusyError

SQL_DIR = Path(__file__).resolve().parents[1] / "sql"  # package data: slidead/sql (links to ./sql in a checkout)
SCHEMA_FILE = SQL_DIR / "schema.sql"

CLIP_COLUMNS = (
    "clip_id",
    "uri",
    "night",
    "split",
    "machine_type",
    "machine_id",
    "label",
    "sample_rate",
    "channels",
    "duration_s",
    "note",
    "section",  # the DCASE section a clip's name gives (its machine ID); conditions, see core/conditions.py
    "domain",
    "attributes",
)
REJECTED_COLUMNS = ("uri", "night", "machine_type", "machine_id", "reason", "detail", "clip_id", "run_id")
# what a shard says of each object it listed; the fate is decided at load (see _ARRIVALS)
ARRIVAL_COLUMNS = (
    "night",
    "uri",
    "machine_type",
    "machine_id",
    "size_bytes",
    "etag",
    "clip_id",
    "reason",
    "detail",
    "run_id",
)
FATES = ("scored", "duplicate", "rejected")
SCORE_COLUMNS = (
    "clip_id",
    "model_name",
    "model_version",
    "family",
    "night",
    "machine_type",
    "machine_id",
    "score",
    "threshold",
    "is_anomaly",
    "peak_time_s",
    "peak_freq_lo_hz",
    "peak_freq_hi_hz",
    "run_id",
    "explanation",
    "p_value",
    "provisional",
)
RUN_COLUMNS = (
    "run_id",
    "flow",
    "night",
    "machine_type",
    "family",
    "model_name",
    "model_version",
    "status",
    "n_clips",
    "n_scored",
    "n_skipped",
    "n_rejected",
    "n_flagged",
    "started_at",
    "finished_at",
    "seconds",
    "detail",
)
MODEL_VERSION_COLUMNS = (
    "model_name",
    "version",
    "family",
    "machine_type",
    "mlflow_run_id",
    "feature_hash",
    "mean_auc",
    "mean_pauc",
    "champion_auc",
    "champion_pauc",
    "promoted",
    "decision",
    "thresholds",
    "baseline",
)

# Insert statements are fixed strings chosen from this table, never built from input.
THRESHOLD_CHANGE_COLUMNS = (
    "model_name",
    "version",
    "from_version",
    "machine_id",
    "old_threshold",
    "new_threshold",
    "n_scores",
    "nights",
    "n_false_alarms",
    "reason",
)

COMMISSIONING_COLUMNS = ("night", "model_name", "model_version", "machine_id", "status", "new_version", "reason")

_INSERT = {
    "commissioning": "INSERT OR REPLACE INTO commissioning ("
    + ", ".join(COMMISSIONING_COLUMNS)
    + ") VALUES ("
    + ",".join("?" * len(COMMISSIONING_COLUMNS))
    + ")",
    "threshold_changes": "INSERT INTO threshold_changes ("
    + ", ".join(THRESHOLD_CHANGE_COLUMNS)
    + ") VALUES ("
    + ",".join("?" * len(THRESHOLD_CHANGE_COLUMNS))
    + ") ON CONFLICT DO NOTHING",
    "clips": "INSERT INTO clips (clip_id, uri, night, split, machine_type, machine_id, label, "
    "sample_rate, channels, duration_s, note, section, domain, attributes) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?) "
    "ON CONFLICT DO NOTHING",
    "rejected": "INSERT INTO rejected (uri, night, machine_type, machine_id, reason, detail, clip_id, "
    "run_id) VALUES (?,?,?,?,?,?,?,?) ON CONFLICT DO NOTHING",
    "model_versions": "INSERT OR REPLACE INTO model_versions (model_name, version, family, machine_type, "
    "mlflow_run_id, feature_hash, mean_auc, mean_pauc, champion_auc, champion_pauc, "
    "promoted, decision, thresholds, baseline) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
    "runs": "INSERT OR REPLACE INTO runs (run_id, flow, night, machine_type, family, model_name, "
    "model_version, status, n_clips, n_scored, n_skipped, n_rejected, n_flagged, started_at, "
    "finished_at, seconds, detail) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
}

# A night's arrivals (registered as "batch") into the ledger, after the night's clips are in:
# rejected when a reason came with it; scored when its bytes were first seen at this very uri;
# else a duplicate of where they were first seen (another arrival, an earlier night, a training
# or evaluation clip). An arrival equal to the latest row of its (night, uri) adds nothing (a
# re-run); different bytes under the same key are a new version of the arrival.
_ARRIVALS = """
INSERT INTO drops (night, uri, version, machine_type, machine_id, size_bytes, etag, clip_id, fate,
                   reason, detail, duplicate_of, duplicate_of_night, duplicate_of_split, note, run_id)
WITH a AS (
    SELECT DISTINCT ON (CAST(night AS DATE), uri) CAST(night AS DATE) AS night, uri, machine_type, machine_id,
           CAST(size_bytes AS BIGINT) AS size_bytes, etag, clip_id, reason, detail, run_id
    FROM batch ORDER BY CAST(night AS DATE), uri, reason NULLS FIRST
), latest AS (
    SELECT DISTINCT ON (night, uri) night, uri, version, clip_id, etag FROM drops ORDER BY night, uri, version DESC
), j AS (
    SELECT a.*, coalesce(l.version, 0) + 1 AS version, c.uri AS first_uri, c.night AS first_night,
           c.split AS first_split,
           CASE WHEN a.reason IS NOT NULL THEN 'rejected'
                WHEN c.uri = a.uri OR c.uri IS NULL THEN 'scored' ELSE 'duplicate' END AS fate
    FROM a
    LEFT JOIN latest l ON l.night = a.night AND l.uri = a.uri
    LEFT JOIN clips c ON c.clip_id = a.clip_id
    WHERE l.uri IS NULL
       OR l.clip_id IS DISTINCT FROM a.clip_id
       OR (a.clip_id IS NULL AND l.etag IS DISTINCT FROM a.etag)
)
SELECT night, uri, version, machine_type, machine_id, size_bytes, etag, clip_id, fate, reason, detail,
       CASE WHEN fate = 'duplicate' THEN first_uri END,
       CASE WHEN fate = 'duplicate' THEN first_night END,
       CASE WHEN fate = 'duplicate' THEN first_split END,
       CASE WHEN fate <> 'duplicate' THEN NULL
            WHEN first_split = 'train' THEN 'bytes equal a training clip: a recorder replaying old files, or training data in production'
            WHEN first_split = 'eval' THEN 'bytes equal an evaluation clip: a test clip leaking into production, or a recorder replaying old files'
            WHEN first_night IS DISTINCT FROM night THEN 'sent again: these bytes first arrived on ' || CAST(first_night AS VARCHAR)
            ELSE 'the same bytes arrived under another name this night' END,
       run_id
FROM j
"""

# the same inserts from a registered Arrow table named "batch" (fixed strings, no input in them)
_BULK = {
    "clips": "INSERT INTO clips (clip_id, uri, night, split, machine_type, machine_id, label, sample_rate, "
    "channels, duration_s, note, section, domain, attributes) SELECT clip_id, uri, CAST(night AS DATE), "
    "split, machine_type, machine_id, label, CAST(sample_rate AS INTEGER), CAST(channels AS INTEGER), "
    "CAST(duration_s AS DOUBLE), note, section, domain, attributes FROM (SELECT DISTINCT ON (clip_id) * FROM batch ORDER BY clip_id, uri) "
    "ON CONFLICT DO NOTHING",
    "rejected": "INSERT INTO rejected (uri, night, machine_type, machine_id, reason, detail, clip_id, run_id) "
    "SELECT uri, CAST(night AS DATE), machine_type, machine_id, reason, detail, clip_id, run_id "
    "FROM batch ON CONFLICT DO NOTHING",
}


def _arrow(columns: tuple[str, ...], values: list[tuple]) -> pa.Table:
    cols = {}
    for i, c in enumerate(columns):
        vals = [v[i] for v in values]
        if c in (
            "night",
            "uri",
            "clip_id",
            "detail",
            "note",
            "reason",
            "run_id",
            "label",
            "section",
            "domain",
            "attributes",
        ):
            vals = [None if x is None else str(x) for x in vals]
            cols[c] = pa.array(vals, type=pa.string())
        else:
            cols[c] = pa.array(vals)
    return pa.table(cols)


def _batch(columns: tuple[str, ...], rows: Iterable[dict] | pa.Table) -> pa.Table | None:
    """Rows to load as one Arrow table with ``columns`` (None when there are none): a shard's
    Arrow table goes in as it is, without a round trip through Python values."""
    if isinstance(rows, pa.Table):
        for c in columns:  # a shard written before a column existed: nulls
            if c not in rows.column_names:
                rows = rows.append_column(c, pa.nulls(rows.num_rows, pa.string()))
        return rows.select(list(columns)) if rows.num_rows else None
    values = [tuple(r.get(c) for c in columns) for r in rows]
    return _arrow(columns, values) if values else None


_HOLDER = re.compile(r"\(PID (\d+)\)")


class ResultsDB:
    """A DuckDB file with slidead's schema. Open short connections with :meth:`connect`."""

    def __init__(self, path: str | Path, *, lock_timeout_s: float = 30.0):
        self.path = str(path)
        self.lock_timeout_s = lock_timeout_s
        self._schema_applied = False

    @contextlib.contextmanager
    def connect(self, read_only: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
        if not read_only:
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        elif not Path(self.path).exists():
            raise FileNotFoundError(f"no results database at {self.path}: run `slidead score` or `slidead demo` first")
        con = self._open(read_only)
        try:
            if not read_only and not self._schema_applied:
                con.execute(SCHEMA_FILE.read_text())
                self._schema_applied = True
            yield con
        finally:
            con.close()

    def _open(self, read_only: bool) -> duckdb.DuckDBPyConnection:
        deadline = time.monotonic() + self.lock_timeout_s
        delay = 0.1
        while True:
            try:
                return duckdb.connect(self.path, read_only=read_only)
            except duckdb.IOException as e:
                msg = str(e)
                if "lock" not in msg.lower() or time.monotonic() >= deadline:
                    if "lock" in msg.lower():
                        m = _HOLDER.search(msg)
                        holder = f"process {m.group(1)}" if m else "another process"
                        raise DatabaseBusyError(
                            f"{self.path} is held open by {holder} (a duckdb shell or another run?); "
                            f"waited {self.lock_timeout_s:.0f} s. Close it and re-run: nothing was written."
                        ) from None
                    raise
                time.sleep(delay)
                delay = min(delay * 2, 2.0)

    # -- writes --------------------------------------------------------------------------

    def _insert_rows(self, table: str, columns: tuple[str, ...], rows: Iterable[dict]) -> int:
        values = [tuple(r.get(c) for c in columns) for r in rows]
        if not values:
            return 0
        with self.connect() as con:
            con.execute("BEGIN TRANSACTION")
            con.executemany(_INSERT[table], values)
            con.execute("COMMIT")
        return len(values)

    def add_clips(self, rows: Iterable[dict]) -> int:
        return self._insert_rows("clips", CLIP_COLUMNS, rows)

    def add_rejected(self, rows: Iterable[dict]) -> int:
        return self._insert_rows("rejected", REJECTED_COLUMNS, rows)

    def record_model_version(self, row: dict) -> None:
        self._insert_rows("model_versions", MODEL_VERSION_COLUMNS, [row])

    def record_threshold_changes(self, rows: list[dict]) -> int:
        return self._insert_rows("threshold_changes", THRESHOLD_CHANGE_COLUMNS, rows)

    def record_commissioning(self, rows: list[dict]) -> int:
        """The nightly commissioning's decisions (one row per night, model version and machine)."""
        return self._insert_rows("commissioning", COMMISSIONING_COLUMNS, rows)

    def record_run(self, row: dict) -> None:
        self._insert_rows("runs", RUN_COLUMNS, [row])

    def load_scores(
        self,
        tables: Iterable[pa.Table],
        clips: Iterable[dict] | pa.Table = (),
        rejected: Iterable[dict] | pa.Table = (),
        arrivals: Iterable[dict] | pa.Table = (),
    ) -> int:
        """Load shard results (Arrow tables with SCORE_COLUMNS), their clips, their rejected
        inputs and their arrivals (Arrow tables with CLIP_COLUMNS / REJECTED_COLUMNS /
        ARRIVAL_COLUMNS, or rows as dicts) in one transaction: all of it or, on any failure,
        none of it. Clips go in first (the first uri per clip_id, in uri order, is where its
        bytes were first seen); a drop score of a clip first seen elsewhere (another night, a
        training or evaluation clip) is not loaded: its arrival is a duplicate.

        Returns the number of score rows that were new.
        """
        clip_batch = _batch(CLIP_COLUMNS, clips)
        if clip_batch is not None:
            clip_batch = clip_batch.sort_by("uri")
        rejected_batch = _batch(REJECTED_COLUMNS, rejected)
        arrival_batch = _batch(ARRIVAL_COLUMNS, arrivals)
        with self.connect() as con:
            before = con.execute("SELECT count(*) FROM scores").fetchone()[0]
            con.execute("BEGIN TRANSACTION")
            try:
                if clip_batch is not None:  # bulk through Arrow: executemany goes row by row
                    con.register("batch", clip_batch)
                    con.execute(_BULK["clips"])
                    con.unregister("batch")
                if rejected_batch is not None:
                    con.register("batch", rejected_batch)
                    con.execute(_BULK["rejected"])
                    con.unregister("batch")
                if arrival_batch is not None:
                    con.register("batch", arrival_batch)
                    con.execute(_ARRIVALS)
                    con.unregister("batch")
                for table in tables:
                    for col, typ in (
                        ("explanation", pa.string()),
                        ("p_value", pa.float64()),
                        ("provisional", pa.bool_()),
                    ):
                        if col not in table.column_names:  # a shard written before the column existed
                            table = table.append_column(col, pa.nulls(table.num_rows, typ))
                    shard = table.select(list(SCORE_COLUMNS))
                    con.register("shard", shard)
                    con.execute(
                        "INSERT INTO scores (clip_id, model_name, model_version, family, night, machine_type, "
                        "machine_id, score, threshold, is_anomaly, peak_time_s, peak_freq_lo_hz, "
                        "peak_freq_hi_hz, run_id, explanation, p_value, provisional) SELECT clip_id, model_name, "
                        "model_version, family, CAST(night AS DATE), machine_type, machine_id, score, threshold, "
                        "is_anomaly, peak_time_s, peak_freq_lo_hz, peak_freq_hi_hz, run_id, explanation, p_value, "
                        "provisional FROM shard s "
                        "WHERE s.night IS NULL OR NOT EXISTS (SELECT 1 FROM clips c WHERE c.clip_id = s.clip_id "
                        "AND (c.split <> 'drop' OR c.night IS DISTINCT FROM CAST(s.night AS DATE))) "
                        "ON CONFLICT DO NOTHING"
                    )
                    con.unregister("shard")
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")
                raise
            return con.execute("SELECT count(*) FROM scores").fetchone()[0] - before

    # -- reads ---------------------------------------------------------------------------

    def scored_clip_ids(self, model_name: str, model_version: int) -> set[str]:
        if not Path(self.path).exists():
            return set()
        with self.connect() as con:
            rows = con.execute(
                "SELECT clip_id FROM scores WHERE model_name = ? AND model_version = ?",
                [model_name, model_version],
            ).fetchall()
        return {r[0] for r in rows}

    def night_ledger_counts(self, night: str) -> dict[str, dict[str, int]]:
        """Per machine (``"<type>/<id>"``; ``"?"`` for keys that break the layout), the night's
        arrivals and their fates: arrivals = scored + duplicates + rejected."""
        if not Path(self.path).exists():
            return {}
        with self.connect(read_only=True) as con:
            rows = con.execute(
                "SELECT coalesce(machine_type || '/' || machine_id, '?'), count(*), "
                "count(*) FILTER (WHERE fate = 'scored'), count(*) FILTER (WHERE fate = 'duplicate'), "
                "count(*) FILTER (WHERE fate = 'rejected') FROM drops WHERE night = ?::DATE GROUP BY 1 ORDER BY 1",
                [night],
            ).fetchall()
        return {m: {"arrivals": a, "scored": s, "duplicates": d, "rejected": r} for m, a, s, d, r in rows}

    def rejected_uris(self) -> set[str]:
        if not Path(self.path).exists():
            return set()
        with self.connect() as con:
            return {r[0] for r in con.execute("SELECT uri FROM rejected").fetchall()}

    def query(
        self, sql: str, params: dict | list | None = None, read_only: bool = True
    ) -> tuple[list[str], list[tuple]]:
        """Run one read query; returns (column names, rows)."""
        with self.connect(read_only=read_only) as con:
            cur = con.execute(sql, params) if params else con.execute(sql)
            cols = [d[0] for d in cur.description] if cur.description else []
            return cols, cur.fetchall()


def httpfs_extension_path() -> str:
    """The httpfs extension shipped by the ``duckdb-extension-httpfs`` package (no download)."""
    import importlib.util

    spec = importlib.util.find_spec("duckdb_extension_httpfs")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("duckdb-extension-httpfs is not installed")
    path = (
        Path(spec.submodule_search_locations[0]) / "extensions" / f"v{duckdb.__version__}" / "httpfs.duckdb_extension"
    )
    if not path.exists():
        raise FileNotFoundError(f"no httpfs extension for DuckDB {duckdb.__version__} at {path}")
    return str(path)


def enable_httpfs(con: duckdb.DuckDBPyConnection, endpoint_url: str | None = None) -> None:
    """Install and load httpfs from the package file; point it at an S3-compatible endpoint
    with the credentials of the standard AWS chain (set as values, never logged)."""
    from urllib.parse import urlparse

    import boto3

    con.install_extension(httpfs_extension_path())
    con.load_extension("httpfs")
    session = boto3.session.Session()
    creds = session.get_credentials()
    if creds is not None:
        frozen = creds.get_frozen_credentials()
        con.execute("SET s3_access_key_id = ?", [frozen.access_key])
        con.execute("SET s3_secret_access_key = ?", [frozen.secret_key])
        if frozen.token:
            con.execute("SET s3_session_token = ?", [frozen.token])
    con.execute("SET s3_region = ?", [session.region_name or "us-east-1"])
    if endpoint_url:
        p = urlparse(endpoint_url)
        con.execute("SET s3_endpoint = ?", [p.netloc])
        con.execute("SET s3_use_ssl = ?", [p.scheme == "https"])
        con.execute("SET s3_url_style = 'path'")
