"""A new SQLite tracking database made from a cached empty one.

MLflow makes a new SQLite tracking database by creating its tables and running every schema
migration since its first version: about a second on a 2-core machine, paid by every new
``SLIDEAD_HOME`` (and by every test that makes one). The result before MLflow adds anything of
its own (the Default experiment, whose artifact location depends on the store) is always the
same file for one MLflow version, so it is made once, kept under the user's cache folder
(``$XDG_CACHE_HOME/slidead``, else ``~/.cache/slidead``) and copied. MLflow then opens the copy
as an existing database: it checks the schema and adds the Default experiment as it would on a
database it had made itself.

Anything unexpected (no writable cache, another MLflow's internals) leaves the database to
MLflow, as before.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path

log = logging.getLogger(__name__)
PREFIX = "sqlite:///"


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "slidead"


def seed_new_sqlite(tracking_uri: str) -> bool:
    """Copy the cached empty database to ``tracking_uri``'s file when that file does not exist
    yet; True when it did. Never raises."""
    if not tracking_uri.startswith(PREFIX):
        return False
    target = Path(tracking_uri[len(PREFIX) :])
    if not target.is_absolute() or target.exists():
        return False
    try:
        template = _template()
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        shutil.copyfile(template, tmp)
        try:
            os.link(tmp, target)  # never over a database another process made meanwhile
        except FileExistsError:
            return False
        finally:
            tmp.unlink(missing_ok=True)
        return True
    except Exception as e:  # noqa: BLE001 - an optimisation: MLflow makes the database itself
        log.debug(f"tracking database left to MLflow: {e}")
        return False


def _template() -> Path:
    """The empty, migrated database of this MLflow version, made on first use."""
    import mlflow
    import sqlalchemy
    from mlflow.store.db.utils import _initialize_tables

    path = cache_dir() / f"mlflow-{mlflow.__version__}-empty.db"
    if path.is_file():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".mlflow-", suffix=".db")
    os.close(fd)
    os.unlink(tmp)  # sqlite makes it
    try:
        engine = sqlalchemy.create_engine(PREFIX + tmp)
        try:
            _initialize_tables(engine)
        finally:
            engine.dispose()
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return path
