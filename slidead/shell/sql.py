"""``slidead sql``: the duckdb shell on the results lake, the same SQL for people.

The shell opens with the lake attached as ``lake`` (read-only unless ``--write``; in use, so
``FROM scores`` works) and, with ``--night``, the variable ``night`` set (unset, each file takes
its own default, the latest night), so every file in ``sql/`` runs unchanged:
``slidead sql < sql/night_ledger.sql``. ``--as-of`` opens the lake as it was at a snapshot or a
time. ``--print-init`` prints the attach script instead, for the plain shell:
``slidead sql --print-init > attach.sql; duckdb -init attach.sql``. The shell itself reads
the script with ``-cmd .read`` (``-init`` prints a line with colour escapes on stderr).
Extensions load from the installed packages' files; nothing is downloaded.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from slidead.settings import Settings
from slidead.shell.report import _validate_night
from slidead.store.results import ResultsDB
from slidead.store.services import results_db


def init_script(db: ResultsDB, night: str | None = None, as_of: str | int | None = None, write: bool = False) -> str:
    """The statements that attach the lake in a plain duckdb shell (no secrets in them: S3
    credentials come from the shell's own environment)."""
    lines = [
        "-- slidead's results lake (the tables of sql/schema.sql), attached as `lake`",
        "SET autoinstall_known_extensions = false;",
        "SET autoload_known_extensions = false;",
        *[s + ";" for s in db.load_sql()],
    ]
    if db.data_path and db.data_path.startswith("s3://") and db.s3_endpoint:
        from urllib.parse import urlparse

        p = urlparse(db.s3_endpoint)
        lines += [
            f"SET s3_endpoint = '{p.netloc}';",
            f"SET s3_use_ssl = {'true' if p.scheme == 'https' else 'false'};",
            "SET s3_url_style = 'path';",
        ]
    lines.append(db.attach_sql(read_only=not write, as_of=as_of) + ";")
    lines.append("USE lake;")
    if night is not None:
        lines.append(f"SET VARIABLE night = DATE '{night}';")
    return "\n".join(lines) + "\n"


def duckdb_cli() -> str:
    cli = Path(sys.executable).parent / "duckdb"
    found = str(cli) if cli.exists() else shutil.which("duckdb")
    if not found:
        raise FileNotFoundError("no duckdb shell: install the duckdb-cli package (it comes with slidead)")
    return found


def duckdb_shell(
    settings: Settings,
    night: str | None = None,
    as_of: str | None = None,
    write: bool = False,
    print_init: bool = False,
    args: list[str] | None = None,
) -> int:
    db = results_db(settings)
    night = _validate_night(night)
    if print_init:
        print(init_script(db, night, as_of, write), end="")
        return 0
    with db.connect(read_only=True, as_of=as_of):  # moves an earlier version's file, once
        pass
    args = list(args or [])
    if args[:1] == ["--"]:
        args = args[1:]
    with tempfile.TemporaryDirectory(prefix="slidead-sql-") as tmp:
        script = Path(tmp) / "attach.sql"
        script.write_text(init_script(db, night, as_of, write))
        # `.read` through -cmd rather than -init: -init announces "-- Loading resources from ..."
        # on stderr wrapped in colour escapes, which landed in front of every output
        # the shell colours results (DESCRIBE's, for one) even into a pipe or a file: not there
        plain = [] if sys.stdout.isatty() else ["-cmd", ".highlight off"]
        return subprocess.run([duckdb_cli(), *plain, "-cmd", f".read {_dot_arg(script)}", *args]).returncode


def _dot_arg(path: Path) -> str:
    """A path as one argument of a duckdb dot command (quoted, so a space in it is kept)."""
    text = str(path)
    return f'"{text}"' if "'" in text else f"'{text}'"
