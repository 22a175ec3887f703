"""The results lake on a PostgreSQL catalog, as several hosts share it: a real PostgreSQL (Debian's
package) started by the test on 127.0.0.1; two processes make the lake at the same moment, two
nights loaded at once from two processes both land exactly once, and the reports read them.
Skips with the reason when the binaries are absent."""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from lakekit import two_nights_at_once

from slidead.shell.report import run_report

pytestmark = pytest.mark.integration


def _binary(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"))
    return str(candidates[-1]) if candidates else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def postgres():
    initdb, server, ready = _binary("initdb"), _binary("postgres"), _binary("pg_isready")
    if not (initdb and server and ready):
        pytest.skip("PostgreSQL binaries (initdb, postgres, pg_isready) not found: install Debian's postgresql package")
    as_user: list[str] = []
    data = Path(tempfile.mkdtemp(prefix="slidead-pg-"))
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root: run it as the package's user
        try:
            user = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and there is no 'postgres' user to run PostgreSQL as")
        os.chown(data, user.pw_uid, user.pw_gid)
        as_user = ["runuser", "-u", "postgres", "--"]
    port = _free_port()
    proc = None
    try:
        subprocess.run(
            [*as_user, initdb, "-D", str(data / "db"), "-A", "trust", "-U", "slidead", "--no-sync"],
            check=True,
            capture_output=True,
        )
        proc = subprocess.Popen(
            [*as_user, server, "-D", str(data / "db"), "-h", "127.0.0.1", "-p", str(port), "-k", str(data), "-F"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 60
        while subprocess.run([ready, "-h", "127.0.0.1", "-p", str(port), "-q"]).returncode != 0:
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.monotonic() < deadline, "PostgreSQL did not start in 60 s"
            time.sleep(0.2)
        yield f"postgres:dbname=postgres host=127.0.0.1 port={port} user=slidead"
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=30)
        shutil.rmtree(data, ignore_errors=True)


# two workers starting on an empty catalog: both make the lake at once
CREATE = """
import sys
from slidead.store.results import ResultsDB
ResultsDB(sys.argv[1], catalog=sys.argv[2], data_path=sys.argv[3]).load_scores([], [], [], [])
"""


def test_two_hosts_load_two_nights_into_one_postgres_catalog(tmp_path, postgres):
    path = tmp_path / "results.duckdb"
    makers = [
        subprocess.Popen(
            [sys.executable, "-c", CREATE, str(path), postgres, str(tmp_path / "lake")],
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    for p in makers:
        assert p.wait(timeout=120) == 0, p.stderr.read()
    db = two_nights_at_once(path, catalog=postgres)
    assert (tmp_path / "lake").is_dir() and not Path(db.catalog).exists()  # no SQLite file: the catalog is PostgreSQL
    [(_, cols, rows)] = run_report(db, "2026-11-20", ["nightly_summary"])
    row = dict(zip(cols, rows[0]))
    assert (row["arrivals"], row["scored"], row["duplicates"]) == (201, 200, 1)
