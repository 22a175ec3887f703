"""The results store: clips, rejected inputs, the drops ledger, scores, runs, model versions,
alarms and labels, in a DuckLake.

The tables of ``sql/schema.sql`` live in a DuckLake: Parquet files under a data path (a folder,
or ``s3://`` beside the features) and a catalog in a database (a SQLite file on one host, in WAL
mode; PostgreSQL for several). Readers (the ``duckdb`` shell, notebooks, ``slidead report``)
never block a night's load and the load never waits for them: each query reads one snapshot,
each write transaction commits a new one.

DuckLake keeps no primary keys, so the keys that ``schema.sql`` declares are kept by the writes
themselves: every write is one transaction that inserts only the rows whose key is absent (or
replaces the rows with that key), and every write transaction also bumps one token row, so two
writers that overlap conflict and the later one is retried from the start on the new snapshot.
Re-running a night changes nothing that was right; two nights loading at once both land. Every
write uses parameters or registered Arrow tables, never SQL built from input.

A ``slidead.duckdb`` file written by an earlier version is moved into the lake once, on first
use (counts checked; the old file is kept as ``slidead.duckdb.moved``, so that no shell reads it
for the current results).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import random
import re
import sqlite3
import sys
import threading
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

# the night's clips and rejected inputs from a registered Arrow table named "batch" (fixed
# strings, no input in them): only the keys not yet present go in (the first uri per clip_id, in
# uri order, is where its bytes were first seen)
_BULK = {
    "clips": "INSERT INTO clips (clip_id, uri, night, split, machine_type, machine_id, label, sample_rate, "
    "channels, duration_s, note, section, domain, attributes) SELECT clip_id, uri, CAST(night AS DATE), split, "
    "machine_type, machine_id, label, CAST(sample_rate AS INTEGER), CAST(channels AS INTEGER), "
    "CAST(duration_s AS DOUBLE), note, section, domain, attributes "
    "FROM (SELECT DISTINCT ON (clip_id) * FROM batch ORDER BY clip_id, uri) b "
    "WHERE NOT EXISTS (SELECT 1 FROM clips c WHERE c.clip_id = b.clip_id)",
    "rejected": "INSERT INTO rejected (uri, night, machine_type, machine_id, reason, detail, clip_id, run_id) "
    "SELECT uri, CAST(night AS DATE), machine_type, machine_id, reason, detail, clip_id, run_id "
    "FROM (SELECT DISTINCT ON (uri) * FROM batch ORDER BY uri) b "
    "WHERE NOT EXISTS (SELECT 1 FROM rejected r WHERE r.uri = b.uri)",
}

_SCORES = (
    "INSERT INTO scores (clip_id, model_name, model_version, family, night, machine_type, "
    "machine_id, score, threshold, is_anomaly, peak_time_s, peak_freq_lo_hz, "
    "peak_freq_hi_hz, run_id, explanation, p_value, provisional) SELECT clip_id, model_name, model_version, "
    "family, CAST(night AS DATE), machine_type, machine_id, score, threshold, is_anomaly, "
    "peak_time_s, peak_freq_lo_hz, peak_freq_hi_hz, run_id, explanation, p_value, provisional "
    "FROM (SELECT DISTINCT ON (clip_id, model_name, model_version) * FROM shard) s "
    "WHERE (s.night IS NULL OR NOT EXISTS (SELECT 1 FROM clips c WHERE c.clip_id = s.clip_id "
    "AND (c.split <> 'drop' OR c.night IS DISTINCT FROM CAST(s.night AS DATE)))) "
    "AND NOT EXISTS (SELECT 1 FROM scores x WHERE x.clip_id = s.clip_id AND x.model_name = s.model_name "
    "AND x.model_version = s.model_version)"
)

# how each table's rows written one by one meet rows with the same key: kept (a re-run adds
# nothing) or replaced (the latest state of a run, a model version, a verdict)
_ON_KEY = {
    "clips": "keep",
    "rejected": "keep",
    "threshold_changes": "keep",
    "model_versions": "replace",
    "runs": "replace",
    "labels": "replace",
    "commissioning": "replace",
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


LABEL_COLUMNS = ("clip_id", "verdict", "note", "labelled_by")

# -- the schema on DuckLake ----------------------------------------------------------------

_CREATE = re.compile(r"CREATE TABLE IF NOT EXISTS (\w+)\s*\((.*?)\n\);", re.S)
_PK_COLUMN = re.compile(r"^\s*(\w+)\s+[A-Z]+\s+PRIMARY KEY", re.M)
_PK_TABLE = re.compile(r",(\s*--[^\n]*)?\s*PRIMARY KEY\s*\(([^)]*)\)")
_CHECK = re.compile(r"\s+CHECK\s*\((?:[^()]|\([^()]*\))*\)")

# the lake's own bookkeeping: the schema applied (its hash) and the write token every write
# transaction bumps (two overlapping writers conflict on it; the later one is retried)
_LAKE_TABLES = """
CREATE TABLE IF NOT EXISTS slidead_schema (schema_hash VARCHAR NOT NULL, applied_at TIMESTAMP);
CREATE TABLE IF NOT EXISTS slidead_writes (n BIGINT NOT NULL);
CREATE TABLE IF NOT EXISTS slidead_moved (source VARCHAR NOT NULL, n_rows BIGINT, moved_at TIMESTAMP);
"""


def lake_schema(text: str | None = None) -> tuple[str, dict[str, tuple[str, ...]]]:
    """``sql/schema.sql`` as DuckLake takes it (no PRIMARY KEY or CHECK constraints), and the
    keys it declares per table, which the writes keep themselves."""
    text = SCHEMA_FILE.read_text() if text is None else text
    keys: dict[str, tuple[str, ...]] = {}
    for m in _CREATE.finditer(text):
        body = m.group(2)
        t = _PK_TABLE.search(body)
        keys[m.group(1)] = tuple(c.strip() for c in t.group(2).split(",")) if t else tuple(_PK_COLUMN.findall(body))
    ddl = _PK_TABLE.sub(lambda m: m.group(1) or "", text)
    ddl = re.sub(r"^(\s*\w+\s+[A-Z]+)\s+PRIMARY KEY", r"\1", ddl, flags=re.M)
    ddl = _CHECK.sub("", ddl)
    return ddl + _LAKE_TABLES, keys


KEYS = lake_schema()[1]


def _column_types(text: str) -> dict[str, dict[str, str]]:
    out = {}
    for m in _CREATE.finditer(text):
        cols = re.findall(r"^\s*(\w+)\s+([A-Z][A-Z0-9_]*(?:\([^)]*\))?(?:\[\])*)", m.group(2), flags=re.M)
        out[m.group(1)] = {c: t for c, t in cols if c != "PRIMARY"}
    for table, col, typ in _ADD_COLUMN.findall(text):  # columns later versions added
        out.setdefault(table, {})[col] = typ
    return out


_ADD_COLUMN = re.compile(r"^ALTER TABLE (\w+) ADD COLUMN IF NOT EXISTS (\w+) ([A-Z][A-Z0-9_]*)", re.M)


# rows written one by one: the columns each table takes (fixed), and its statements, built once
# from the schema's names and types (no input in them) over a registered Arrow table "batch"
_WRITE_COLUMNS = {
    "clips": CLIP_COLUMNS,
    "rejected": REJECTED_COLUMNS,
    "threshold_changes": THRESHOLD_CHANGE_COLUMNS,
    "model_versions": MODEL_VERSION_COLUMNS,
    "runs": RUN_COLUMNS,
    "labels": LABEL_COLUMNS,
    "commissioning": COMMISSIONING_COLUMNS,
}


def _write_statements(table: str) -> list[str]:
    columns, keys, types = _WRITE_COLUMNS[table], KEYS[table], _column_types(SCHEMA_FILE.read_text())[table]
    names = ", ".join(columns)
    staged = "(SELECT " + ", ".join(f"CAST({c} AS {types[c]}) AS {c}" for c in columns) + " FROM batch)"
    match = " AND ".join(f"t.{k} IS NOT DISTINCT FROM s.{k}" for k in keys)
    if _ON_KEY[table] == "replace":
        return [
            f"DELETE FROM {table} t WHERE EXISTS (SELECT 1 FROM {staged} s WHERE {match})",
            f"INSERT INTO {table} ({names}) SELECT {names} FROM {staged} s",
        ]
    return [
        f"INSERT INTO {table} ({names}) SELECT {names} FROM {staged} s WHERE NOT EXISTS (SELECT 1 FROM {table} t WHERE {match})"
    ]


_WRITES = {t: _write_statements(t) for t in _WRITE_COLUMNS}
# moving an earlier version's file: each table by column name (columns it lacked take their defaults)
_MOVE = {t: f"INSERT INTO lake.main.{t} BY NAME SELECT * FROM legacy.main.{t}" for t in KEYS}

# -- extensions from the package files -------------------------------------------------------

_EXTENSION_PACKAGES = {
    "ducklake": "duckdb_extension_ducklake",
    "sqlite_scanner": "duckdb_extension_sqlite_scanner",
    "postgres_scanner": "duckdb_extension_postgres_scanner",
    "httpfs": "duckdb_extension_httpfs",
}


def extension_path(name: str) -> str:
    """The DuckDB extension ``name`` as shipped by its PyPI package (never downloaded)."""
    import importlib.util

    package = _EXTENSION_PACKAGES[name]
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"{package.replace('_', '-')} is not installed")
    path = (
        Path(spec.submodule_search_locations[0]) / "extensions" / f"v{duckdb.__version__}" / f"{name}.duckdb_extension"
    )
    if not path.exists():
        raise FileNotFoundError(f"no {name} extension for DuckDB {duckdb.__version__} at {path}")
    return str(path)


def _quote(text: str) -> str:
    return "'" + str(text).replace("'", "''") + "'"


def is_postgres(catalog: str) -> bool:
    return catalog.startswith(("postgres:", "postgresql://", "postgres://"))


def _ducklake_target(catalog: str) -> str:
    if catalog.startswith("postgres:") and not catalog.startswith("postgres://"):
        return "ducklake:" + catalog
    if is_postgres(catalog):
        return "ducklake:postgres:" + catalog
    return "ducklake:sqlite:" + catalog


def as_of_option(as_of: str | int) -> str:
    """An ATTACH option reading the lake as it was: a snapshot id, or a time (ISO 8601)."""
    import datetime as _dt

    text = str(as_of).strip()
    if text.isdigit():
        return f"SNAPSHOT_VERSION {int(text)}"
    try:
        when = _dt.datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(
            f"--as-of {text!r}: expected a snapshot id (an integer) or a time such as 2026-12-04T02:30"
        ) from None
    return f"SNAPSHOT_TIME {_quote(when.isoformat(sep=' '))}"


def _attach_file_sql(path: str, alias: str) -> str:
    """ATTACH takes no parameters: the path goes in as a quoted literal."""
    return f"ATTACH {_quote(path)} AS {alias} (READ_ONLY)"


def _retryable(e: Exception) -> bool:
    msg = str(e).lower()
    return any(s in msg for s in ("conflict", "database is locked", "failed to commit", "could not serialize"))


def _rollback(con: duckdb.DuckDBPyConnection) -> None:
    with contextlib.suppress(duckdb.Error):
        con.execute("ROLLBACK")


class ResultsDB:
    """slidead's results in a DuckLake. Read with :meth:`query` or :meth:`connect`; every
    write goes through :meth:`write` (one transaction, retried on a conflict).

    ``path`` is where an earlier version kept its single file (``slidead.duckdb``): it is moved
    into the lake on first use. ``catalog`` is a SQLite file (default: ``path`` with the suffix
    ``.ducklake``) or ``postgres:<conninfo>``; ``data_path`` is where a new lake puts its Parquet
    files (a folder or ``s3://``; default ``<catalog>.files/`` beside a SQLite catalog).
    """

    def __init__(
        self,
        path: str | Path,
        *,
        lock_timeout_s: float = 30.0,
        catalog: str | None = None,
        data_path: str | None = None,
        s3_endpoint: str | None = None,
    ):
        self.path = str(path)
        self.catalog = str(catalog) if catalog else str(Path(self.path).with_suffix(".ducklake"))
        if data_path is None and not is_postgres(self.catalog):
            data_path = self.catalog + ".files/"
        if data_path and not data_path.endswith("/"):
            data_path += "/"
        self.data_path = data_path
        self.s3_endpoint = s3_endpoint
        self.lock_timeout_s = lock_timeout_s
        self.compact_above_files: int | None = 120  # see compact_when_due
        self._ready = self._preparing = False
        self._root: duckdb.DuckDBPyConnection | None = None
        self._root_pid = 0
        self._lock = threading.Lock()
        self._local = threading.local()

    def __getstate__(self):  # a copy in another process opens its own connection
        state = dict(self.__dict__)
        state.update(_root=None, _root_pid=0, _ready=False, _preparing=False, _lock=None, _local=None)
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._lock = threading.Lock()
        self._local = threading.local()

    @property
    def shown(self) -> str:
        """The catalog as messages name it: a password in a PostgreSQL conninfo or URI masked
        (better kept in PGPASSWORD or ~/.pgpass, which libpq reads)."""
        text = re.sub(r"(password\s*=\s*)('[^']*'|\S+)", r"\1***", self.catalog, flags=re.I)
        return re.sub(r"(://[^:/@\s]+:)[^@/\s]+@", r"\1***@", text)

    # -- opening ---------------------------------------------------------------------------

    def exists(self) -> bool:
        """Whether there is anything to read (a lake, or a single file still to move)."""
        return is_postgres(self.catalog) or Path(self.catalog).exists() or Path(self.path).is_file()

    def attach_sql(
        self, read_only: bool = True, as_of: str | int | None = None, alias: str = "lake", create: bool = False
    ) -> str:
        """The ATTACH statement for this lake (what ``slidead sql`` and the attach script run);
        ``create`` names the data path (a lake that exists keeps its own)."""
        options = []
        if self.data_path and create:
            options.append(f"DATA_PATH {_quote(self.data_path)}")
        if read_only:
            options.append("READ_ONLY")
        if as_of is not None:
            options.append(as_of_option(as_of))
        opts = f" ({', '.join(options)})" if options else ""
        return f"ATTACH {_quote(_ducklake_target(self.catalog))} AS {alias}{opts}"

    def load_sql(self) -> list[str]:
        """The LOAD statements of the extensions this lake needs, by file path."""
        names = ["ducklake", "postgres_scanner" if is_postgres(self.catalog) else "sqlite_scanner"]
        if self._on_s3():
            names.append("httpfs")
        return [f"LOAD {_quote(extension_path(n))}" for n in names]

    def _on_s3(self) -> bool:
        return bool(self.data_path and self.data_path.startswith("s3://"))

    def _open(self, read_only: bool, as_of: str | int | None = None) -> duckdb.DuckDBPyConnection:
        con = duckdb.connect(config={"autoinstall_known_extensions": False, "autoload_known_extensions": False})
        try:
            for stmt in self.load_sql():
                con.execute(stmt)
            if self._on_s3():
                _s3_settings(con, self.s3_endpoint)
            create = False
            if not is_postgres(self.catalog) and not Path(self.catalog).exists():
                create = True
                if read_only:
                    raise FileNotFoundError(
                        f"no results at {self.catalog}: run `slidead score` or `slidead demo` first"
                    )
                Path(self.catalog).parent.mkdir(parents=True, exist_ok=True)
                with contextlib.closing(sqlite3.connect(self.catalog)) as lite:  # readers never block the writer
                    lite.execute("PRAGMA journal_mode=WAL")
            self._attach(con, read_only, as_of, create)
            con.execute("USE lake")
        except BaseException:
            con.close()
            raise
        return con

    def _attach(self, con: duckdb.DuckDBPyConnection, read_only: bool, as_of: str | int | None, create: bool) -> None:
        """ATTACH the lake; one not made yet is made (a PostgreSQL catalog says so by asking for
        its data path). Two processes making it at the same moment (workers starting on an empty
        catalog) both succeed: the one whose making fails attaches what the other made."""
        try:
            con.execute(self.attach_sql(read_only=read_only, as_of=as_of, create=create))
            return
        except duckdb.Error as e:
            if read_only or as_of is not None or (not create and "data_path" not in str(e).lower()):
                raise
            making_failed = e if create else None
        deadline = time.monotonic() + max(self.lock_timeout_s, 1.0)
        make = making_failed is None
        while True:
            try:
                con.execute(self.attach_sql(read_only=False, create=make))
                return
            except duckdb.Error as e:
                if make:
                    making_failed = e
                if time.monotonic() >= deadline:
                    raise (making_failed or e) from None
                make = False  # made by another process, or being made: attach it once it is there
            time.sleep(0.1 + 0.2 * random.random())

    def _shared(self) -> duckdb.DuckDBPyConnection:
        """This process's connection with the lake attached (cursors of it are cheap)."""
        with self._lock:
            if self._root is None or self._root_pid != os.getpid():
                self._root = self._open(read_only=False)
                self._root_pid = os.getpid()
            return self._root

    def _cursor(self) -> duckdb.DuckDBPyConnection:
        cur = self._shared().cursor()
        cur.execute("USE lake")
        return cur

    def _own_cursor(self) -> duckdb.DuckDBPyConnection:
        """This thread's cursor for :meth:`query` and :meth:`write` (kept: ``USE lake`` starts a
        transaction on the catalog, a cost paid once rather than per statement)."""
        held = getattr(self._local, "cursor", None)
        if held is None or held[0] != os.getpid() or held[1] is not self._root:
            cur = self._cursor()
            self._local.cursor = (os.getpid(), self._root, cur)
            return cur
        return held[2]

    def _ensure(self, read_only: bool) -> None:
        if self._ready and self._root_pid == os.getpid():
            return
        if self._preparing:  # the schema's and the move's own writes
            return
        if read_only and not self.exists():
            raise FileNotFoundError(f"no results at {self.catalog}: run `slidead score` or `slidead demo` first")
        self._preparing = True
        try:
            self._apply_schema()
            if Path(self.path).is_file():
                self._move_single_file()
        finally:
            self._preparing = False
        self._ready = True

    @contextlib.contextmanager
    def connect(self, read_only: bool = False, as_of: str | int | None = None) -> Iterator[duckdb.DuckDBPyConnection]:
        """A connection with the lake attached as ``lake`` (and in use). ``as_of`` (a snapshot id
        or a time) opens the lake read-only as it was then."""
        if as_of is not None:
            self._ensure(read_only=True)
            con = self._open(read_only=True, as_of=as_of)
        else:
            self._ensure(read_only)
            con = self._cursor()
        try:
            yield con
        finally:
            con.close()

    # -- writes ----------------------------------------------------------------------------

    def write(self, fn, *, token: bool = True):
        """Run ``fn(con)`` in one transaction and commit it; returns what ``fn`` returns. A
        commit that meets another writer's is retried from the start on the new snapshot
        (``fn`` runs again), until ``lock_timeout_s`` has passed."""
        if token:
            self._ensure(read_only=False)
        deadline = time.monotonic() + max(self.lock_timeout_s, 1.0)
        delay, tries = 0.05, 0
        while True:
            tries += 1
            con = self._own_cursor()
            try:
                con.execute("BEGIN TRANSACTION")
                if token:
                    con.execute("UPDATE slidead_writes SET n = n + 1")
                out = fn(con)
                con.execute("COMMIT")
                return out
            except duckdb.Error as e:
                _rollback(con)
                if not _retryable(e):
                    raise
                if time.monotonic() >= deadline:
                    raise DatabaseBusyError(
                        f"the results lake at {self.shown} kept meeting other writers' commits: "
                        f"{tries} tries in {self.lock_timeout_s:.0f} s. Re-run: nothing was written."
                    ) from None
            except BaseException:
                _rollback(con)
                raise
            time.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, 1.0)

    def _apply_schema(self) -> None:
        ddl, _ = lake_schema()
        digest = hashlib.sha256(ddl.encode()).hexdigest()

        def current(con) -> bool:
            try:
                rows = con.execute("SELECT schema_hash FROM slidead_schema").fetchall()
            except duckdb.CatalogException:
                return False
            return rows == [(digest,)]

        cur = self._cursor()
        try:
            if current(cur):
                return
        finally:
            cur.close()

        def apply(con) -> None:
            if current(con):
                return
            con.execute(ddl)
            con.execute("INSERT INTO slidead_writes SELECT 0 WHERE NOT EXISTS (SELECT 1 FROM slidead_writes)")
            con.execute("DELETE FROM slidead_schema")
            con.execute("INSERT INTO slidead_schema VALUES (?, now())", [digest])

        self.write(apply, token=False)

    def _move_single_file(self) -> None:
        """Move the single file of an earlier version into the lake, once: every table's rows in
        one transaction, counts checked; the file is kept (and no longer written)."""
        cur = self._cursor()
        try:
            done = cur.execute("SELECT count(*) FROM slidead_moved WHERE source = ?", [self.path]).fetchone()[0]
        finally:
            cur.close()
        if done:
            return
        root = self._shared()
        try:
            root.execute(_attach_file_sql(self.path, "legacy"))
        except duckdb.IOException as e:
            if "lock" in str(e).lower():
                raise DatabaseBusyError(
                    f"{self.path} (the results of an earlier version, to move into the lake) is held open by "
                    "another process; close it and re-run: nothing was written."
                ) from None
            raise

        def move(con) -> tuple[int, int]:
            if con.execute("SELECT count(*) FROM slidead_moved WHERE source = ?", [self.path]).fetchone()[0]:
                return 0, 0
            total, tables = 0, 0
            for table in KEYS:
                if not con.execute(
                    "SELECT count(*) FROM information_schema.tables WHERE table_catalog = 'legacy' AND table_name = ?",
                    [table],
                ).fetchone()[0]:
                    continue
                before = con.execute("SELECT count(*) FROM query_table(?)", [f"lake.main.{table}"]).fetchone()[0]
                n = con.execute("SELECT count(*) FROM query_table(?)", [f"legacy.main.{table}"]).fetchone()[0]
                con.execute(_MOVE[table])
                after = con.execute("SELECT count(*) FROM query_table(?)", [f"lake.main.{table}"]).fetchone()[0]
                if after - before != n:
                    raise RuntimeError(f"moving {table}: {n} rows in {self.path}, {after - before} arrived")
                total, tables = total + n, tables + 1
            con.execute("INSERT INTO slidead_moved VALUES (?, ?, now())", [self.path, total])
            return total, tables

        try:
            total, tables = self.write(move)
        finally:
            root.execute("DETACH legacy")
        if not tables:
            return
        kept = self.path + ".moved"  # kept, under a name no reader mistakes for the current results
        for suffix in ("", ".wal"):
            with contextlib.suppress(OSError):
                if Path(self.path + suffix).exists():
                    os.replace(self.path + suffix, kept + suffix)
        print(
            f"slidead: moved {total} rows in {tables} tables from {self.path} into the results lake "
            f"{self.shown} (counts checked); the old file is kept as {kept}",
            file=sys.stderr,
        )

    def write_rows(self, table: str, rows: Iterable[dict]) -> int:
        """Write rows to ``table`` keyed as ``schema.sql`` declares: a row whose key is present
        is left as it is (clips, rejected, threshold changes) or replaced (runs, model versions,
        labels). Returns how many rows were given."""
        columns, keys, mode = _WRITE_COLUMNS[table], KEYS[table], _ON_KEY[table]
        unique: dict[tuple, tuple] = {}
        for r in rows:
            key = tuple(str(r.get(k)) for k in keys)
            if mode == "replace" or key not in unique:
                unique[key] = tuple(r.get(c) for c in columns)
        if not unique:
            return 0
        batch = _arrow(columns, list(unique.values()))

        def put(con) -> None:
            con.register("batch", batch)
            try:
                for sql in _WRITES[table]:
                    con.execute(sql)
            finally:
                con.unregister("batch")

        self.write(put)
        return len(unique)

    def add_clips(self, rows: Iterable[dict]) -> int:
        return self.write_rows("clips", rows)

    def add_rejected(self, rows: Iterable[dict]) -> int:
        return self.write_rows("rejected", rows)

    def record_model_version(self, row: dict) -> None:
        self.write_rows("model_versions", [row])

    def record_threshold_changes(self, rows: list[dict]) -> int:
        return self.write_rows("threshold_changes", rows)

    def record_commissioning(self, rows: list[dict]) -> int:
        """The nightly commissioning's decisions (one row per night, model version and machine)."""
        return self.write_rows("commissioning", rows)

    def record_run(self, row: dict) -> None:
        self.write_rows("runs", [row])

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
        shards = []
        for table in tables:
            for col, typ in (("explanation", pa.string()), ("p_value", pa.float64()), ("provisional", pa.bool_())):
                if col not in table.column_names:  # a shard written before the column existed
                    table = table.append_column(col, pa.nulls(table.num_rows, typ))
            shards.append(table.select(list(SCORE_COLUMNS)))

        def load(con) -> int:
            before = con.execute("SELECT count(*) FROM scores").fetchone()[0]
            for sql, batch in (
                (_BULK["clips"], clip_batch),
                (_BULK["rejected"], rejected_batch),
                (_ARRIVALS, arrival_batch),
            ):
                if batch is not None:  # bulk through Arrow: executemany goes row by row
                    con.register("batch", batch)
                    con.execute(sql)
                    con.unregister("batch")
            for shard in shards:
                con.register("shard", shard)
                con.execute(_SCORES)
                con.unregister("shard")
            return con.execute("SELECT count(*) FROM scores").fetchone()[0] - before

        new = self.write(load)
        self.compact_when_due()
        return new

    # -- reads -----------------------------------------------------------------------------

    def scored_clip_ids(self, model_name: str, model_version: int) -> set[str]:
        if not self.exists():
            return set()
        _, rows = self.query(
            "SELECT clip_id FROM scores WHERE model_name = ? AND model_version = ?", [model_name, model_version]
        )
        return {r[0] for r in rows}

    def night_ledger_counts(self, night: str) -> dict[str, dict[str, int]]:
        """Per machine (``"<type>/<id>"``; ``"?"`` for keys that break the layout), the night's
        arrivals and their fates: arrivals = scored + duplicates + rejected."""
        if not self.exists():
            return {}
        _, rows = self.query(
            "SELECT coalesce(machine_type || '/' || machine_id, '?'), count(*), "
            "count(*) FILTER (WHERE fate = 'scored'), count(*) FILTER (WHERE fate = 'duplicate'), "
            "count(*) FILTER (WHERE fate = 'rejected') FROM drops WHERE night = ?::DATE GROUP BY 1 ORDER BY 1",
            [night],
        )
        return {m: {"arrivals": a, "scored": s, "duplicates": d, "rejected": r} for m, a, s, d, r in rows}

    def rejected_uris(self) -> set[str]:
        if not self.exists():
            return set()
        _, rows = self.query("SELECT uri FROM rejected")
        return {r[0] for r in rows}

    def snapshots(self) -> list[tuple]:
        """The lake's snapshots: (id, time, changes), oldest first."""
        _, rows = self.query("SELECT snapshot_id, snapshot_time, changes FROM ducklake_snapshots('lake') ORDER BY 1")
        return rows

    def query(
        self, sql: str, params: dict | list | None = None, read_only: bool = True
    ) -> tuple[list[str], list[tuple]]:
        """Run one read query; returns (column names, rows)."""
        self._ensure(read_only)
        con = self._own_cursor()
        cur = con.execute(sql, params) if params else con.execute(sql)
        cols = [d[0] for d in cur.description] if cur.description else []
        return cols, cur.fetchall()

    def compact(self, expire_days: float | None = None) -> dict[str, int]:
        """DuckLake's maintenance: move rows held in the catalog (small writes) into data files,
        rewrite files with many deleted rows, merge the small files that nights leave into
        larger ones and, with ``expire_days``, forget snapshots older than that (time travel
        stops there) and delete the files only they referred to. Returns the data files of the
        lake before and after."""
        self._ensure(read_only=False)
        cur = self._cursor()
        try:
            before = self._data_files(cur)
            cur.execute("CALL ducklake_flush_inlined_data('lake')")
            cur.execute("CALL ducklake_rewrite_data_files('lake')")
            cur.execute("CALL ducklake_merge_adjacent_files('lake')")
            if expire_days is not None:
                cur.execute(
                    "CALL ducklake_expire_snapshots('lake', older_than => now() - to_days(?))", [int(expire_days)]
                )
            cur.execute("CALL ducklake_cleanup_old_files('lake', cleanup_all => true)")
            after = self._data_files(cur)
        finally:
            cur.close()
        return {"files_before": before, "files_after": after}

    @staticmethod
    def _data_files(con: duckdb.DuckDBPyConnection, tables: Iterable[str] = tuple(KEYS)) -> int:
        return sum(
            con.execute("SELECT count(*) FROM ducklake_list_files('lake', ?)", [t]).fetchone()[0] for t in tables
        )

    def compact_when_due(self) -> dict[str, int] | None:
        """Compact when the scores have spread over more than ``compact_above_files`` data files
        (a few weeks of nights); called after every night's load. A compaction that fails (say,
        meeting another writer) is left for the next night: it never fails the load."""
        if not self.compact_above_files:
            return None
        try:
            with self.connect() as con:
                if self._data_files(con, ["scores"]) <= self.compact_above_files:
                    return None
            return self.compact()
        except duckdb.Error as e:
            logging.getLogger(__name__).warning("results lake: compaction left for later (%s)", str(e).splitlines()[0])
            return None


_S3_KEYS = (
    "s3_access_key_id",
    "s3_secret_access_key",
    "s3_session_token",
    "s3_region",
    "s3_endpoint",
    "s3_use_ssl",
    "s3_url_style",
)
# Every SET statement spelled out once, per scope: the values travel as parameters.
_S3_SETS = {
    "GLOBAL": {k: "SET GLOBAL " + k + " = ?" for k in _S3_KEYS},
    "SESSION": {k: "SET " + k + " = ?" for k in _S3_KEYS},
}


def _s3_settings(con: duckdb.DuckDBPyConnection, endpoint_url: str | None, scope: str = "GLOBAL") -> None:
    """Point httpfs at an S3-compatible endpoint with the credentials of the standard AWS chain
    (set as values, never logged). ``scope`` GLOBAL (the lake's connection hands out cursors, and
    a plain SET holds for one connection only) or SESSION."""
    from urllib.parse import urlparse

    import boto3

    sets = _S3_SETS[scope]
    session = boto3.session.Session()
    creds = session.get_credentials()
    if creds is not None:
        frozen = creds.get_frozen_credentials()
        con.execute(sets["s3_access_key_id"], [frozen.access_key])
        con.execute(sets["s3_secret_access_key"], [frozen.secret_key])
        if frozen.token:
            con.execute(sets["s3_session_token"], [frozen.token])
    con.execute(sets["s3_region"], [session.region_name or "us-east-1"])
    if endpoint_url:
        p = urlparse(endpoint_url)
        con.execute(sets["s3_endpoint"], [p.netloc])
        con.execute(sets["s3_use_ssl"], [p.scheme == "https"])
        con.execute(sets["s3_url_style"], ["path"])


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
    con.install_extension(httpfs_extension_path())
    con.load_extension("httpfs")
    _s3_settings(con, endpoint_url, "SESSION")
