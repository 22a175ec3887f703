"""Reporting queries over the results database, for the terminal and for Python callers.

Each report is one plain-SQL file in ``sql/`` (``sql/<name>.sql``) that an engineer can also run
by hand with ``slidead sql < sql/<name>.sql`` (the duckdb shell with the results lake attached). The files read the DuckDB
variable ``night`` (``SET VARIABLE night = DATE '2026-11-23';``) and fall back to the latest night
in ``scores`` when it is unset (``rejected_by_reason`` falls back to all time instead).

:func:`run_report` opens the database read-only, sets ``night`` with a bound parameter (never by
pasting text into SQL), runs the chosen files and returns their rows; :func:`format_table` turns
one result into an aligned text table. ``machine_type``/``machine_id`` keep only that machine's
rows (validated first; they filter the result rows and never reach the SQL). This module is
library code: it does not import prefect.
"""

from __future__ import annotations

import datetime as _dt
import math
import re
from collections.abc import Iterable, Sequence
from decimal import Decimal
from pathlib import Path

from slidead.layout import check_name
from slidead.store.results import SQL_DIR, ResultsDB

REPORTS: tuple[str, ...] = (
    "nightly_summary",
    "night_ledger",
    "flagged_anomalies",
    "machine_alarms",
    "score_drift",
    "trend_30_nights",
    "rejected_by_reason",
    "model_comparison",
)

_TITLES = {
    "nightly_summary": "Nightly summary per machine",
    "night_ledger": "Night ledger: every arrival and what became of it",
    "flagged_anomalies": "Flagged anomalies, worst first",
    "machine_alarms": "Machine alarms active",
    "score_drift": "Score drift against the training baseline",
    "trend_30_nights": "Trend over the 30 nights up to",
    "rejected_by_reason": "Rejected inputs by reason",
    "model_comparison": "Model versions compared on common clips",
}

_NIGHT_RE = re.compile(r"\d{4}-\d{2}-\d{2}")
_MACHINE_ID_RE = re.compile(r"(?:id_)?(\d{2,})")


def _validate_night(night: str | _dt.date | None) -> str | None:
    if night is None:
        return None
    if isinstance(night, _dt.datetime):
        raise ValueError(f"night must be a date YYYY-MM-DD, got a datetime {night!r}")
    if isinstance(night, _dt.date):
        return night.isoformat()
    if not isinstance(night, str) or not _NIGHT_RE.fullmatch(night):
        raise ValueError(f"night must be a date YYYY-MM-DD, got {night!r}")
    try:
        _dt.date.fromisoformat(night)
    except ValueError:
        raise ValueError(f"night must be a valid date YYYY-MM-DD, got {night!r}") from None
    return night


def _validate_machine(machine_type: str | None, machine_id: str | None) -> tuple[str | None, str | None]:
    """A machine type is a plain name; a machine ID is digits (``00``; ``id_00`` is accepted)."""
    if machine_type is not None:
        check_name("machine_type", machine_type)
    if machine_id is not None:
        m = _MACHINE_ID_RE.fullmatch(machine_id) if isinstance(machine_id, str) else None
        if not m:
            raise ValueError(f"machine_id={machine_id!r}: expected digits like 00 (or id_00)")
        machine_id = m.group(1)
    return machine_type, machine_id


def _for_machine(
    columns: list[str], rows: list[tuple], machine_type: str | None, machine_id: str | None
) -> tuple[list[tuple], bool]:
    """Rows of the chosen machine, and whether the report has the machine columns to filter on
    (a report without them, e.g. a summary over all machines, is returned whole)."""
    wanted = [(c, v) for c, v in (("machine_type", machine_type), ("machine_id", machine_id)) if v is not None]
    if any(c not in columns for c, _ in wanted):
        return rows, False
    checks = [(columns.index(c), v) for c, v in wanted]
    return [r for r in rows if all(r[i] == v for i, v in checks)], True


def _validate_names(names: Iterable[str] | None) -> list[str]:
    if names is None:
        return list(REPORTS)
    if isinstance(names, str):
        names = [names]
    chosen: list[str] = []
    unknown: list[str] = []
    for name in names:
        stem = name[:-4] if isinstance(name, str) and name.endswith(".sql") else name
        if stem in REPORTS:
            if stem not in chosen:
                chosen.append(stem)
        else:
            unknown.append(name)
    if unknown:
        raise ValueError(f"unknown report(s) {', '.join(map(repr, unknown))}; valid reports: {', '.join(REPORTS)}")
    return chosen


def report_path(name: str) -> Path:
    """The SQL file of one report."""
    return SQL_DIR / f"{name}.sql"


def _title(name: str, night: str | None, latest: str | None) -> str:
    base = _TITLES[name]
    if name == "model_comparison":
        return f"{base} (all nights)"
    if name == "rejected_by_reason" and night is None:
        return f"{base} (all nights)"
    shown = night or (f"{latest} (latest)" if latest else "no scored nights")
    if name == "trend_30_nights":
        return f"{base} {shown}"
    return f"{base}, night {shown}"


def run_report(
    db: str | ResultsDB,
    night: str | None = None,
    names: Iterable[str] | None = None,
    machine_type: str | None = None,
    machine_id: str | None = None,
    as_of: str | int | None = None,
) -> list[tuple[str, list[str], list[tuple]]]:
    """Run reports on the results lake ``db`` (or the one beside ``slidead.duckdb`` at a path);
    returns (title, columns, rows) per report. ``as_of`` (a snapshot id or a time) reads the
    lake as it was then: the night as it was reported.

    ``night`` is ``YYYY-MM-DD`` or None for the latest scored night; ``names`` are report names
    from :data:`REPORTS` (default: all of them, in that order); ``machine_type``/``machine_id``
    keep one machine's rows. Raises ValueError for a bad night, machine or report name,
    FileNotFoundError when there is no database.
    """
    night = _validate_night(night)
    machine_type, machine_id = _validate_machine(machine_type, machine_id)
    chosen = _validate_names(names)
    sql = {name: report_path(name).read_text() for name in chosen}
    out: list[tuple[str, list[str], list[tuple]]] = []
    db = db if isinstance(db, ResultsDB) else ResultsDB(db)
    with db.connect(read_only=True, as_of=as_of) as con:
        if night is not None:
            con.execute("SET VARIABLE night = ?::DATE", [night])
        latest = None
        if night is None:
            value = con.execute("SELECT max(night) FROM scores").fetchone()[0]
            latest = value.isoformat() if value is not None else None
        for name in chosen:
            cur = con.execute(sql[name])
            columns = [d[0] for d in cur.description] if cur.description else []
            rows, per_machine = _for_machine(columns, cur.fetchall(), machine_type, machine_id)
            title = _title(name, night, latest)
            if machine_type or machine_id:
                which = "/".join(v for v in (machine_type, machine_id and f"id_{machine_id}") if v)
                title += f", machine {which}" if per_machine else " (not broken down by machine)"
            out.append((title, columns, rows))
    return out


# -- terminal tables ---------------------------------------------------------------------


def _float_format(values: list[float]) -> str | None:
    """One format for a column's floats so decimals line up: four significant digits for the
    smallest non-zero magnitude in the column (whole numbers from 1000 up); None when the
    column is so small that each value gets three significant digits instead."""
    nonzero = [abs(v) for v in values if v != 0 and not (math.isnan(v) or math.isinf(v))]
    if not nonzero:
        return ".0f" if values else None
    decimals = 3 - math.floor(math.log10(min(nonzero)))
    if decimals > 6:
        return None
    return f".{max(decimals, 0)}f"


def _fmt(value: object, float_format: str | None = None) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Decimal):
        value = float(value)
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            return str(value)
        if float_format is None:
            return f"{value:.3g}"
        return format(value, float_format)
    if isinstance(value, _dt.datetime):
        return value.isoformat(sep=" ", timespec="seconds")
    if isinstance(value, (_dt.date, _dt.time)):
        return value.isoformat()
    return str(value)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float, Decimal)) and not isinstance(value, bool)


def format_table(columns: Sequence[str], rows: Sequence[Sequence[object]], max_rows: int = 50) -> str:
    """A plain aligned text table: header, dashes, rows (numbers right-aligned and rounded).

    Shows at most ``max_rows`` rows and says how many were left out; "(no rows)" when empty.
    """
    columns = [str(c) for c in columns]
    if not rows:
        if not columns:
            return "(no rows)"
        header = "  ".join(columns)
        return f"{header}\n{'  '.join('-' * len(c) for c in columns)}\n(no rows)"
    shown = list(rows[: max(max_rows, 0)])
    ncol = max([len(columns)] + [len(r) for r in shown])
    formats = [
        _float_format([float(row[i]) for row in shown if i < len(row) and isinstance(row[i], (float, Decimal))])
        for i in range(ncol)
    ]
    cells = [[_fmt(v, formats[i]) for i, v in enumerate(row)] for row in shown]
    columns = columns + [""] * (ncol - len(columns))
    widths = [len(c) for c in columns]
    for r in cells:
        for i, text in enumerate(r):
            widths[i] = max(widths[i], len(text))
    # a column is numeric when every non-empty value in it is a number
    numeric = [True] * ncol
    for row in shown:
        for i in range(ncol):
            v = row[i] if i < len(row) else None
            if v is not None and not _is_number(v):
                numeric[i] = False

    def line(texts: Sequence[str], align_numbers: bool) -> str:
        parts = []
        for i in range(ncol):
            t = texts[i] if i < len(texts) else ""
            parts.append(t.rjust(widths[i]) if (align_numbers and numeric[i]) else t.ljust(widths[i]))
        return "  ".join(parts).rstrip()

    out = [line(columns, True), "  ".join("-" * w for w in widths)]
    out.extend(line(r, True) for r in cells)
    left = len(rows) - len(shown)
    if left > 0:
        out.append(f"... {left} more row{'s' if left != 1 else ''} ({len(rows)} in all)")
    else:
        out.append(f"({len(rows)} row{'s' if len(rows) != 1 else ''})")
    return "\n".join(out)


def format_metrics(reports: dict[str, dict]) -> str:
    """A table: machine ID rows, AUC/pAUC columns per model, and the mean."""
    ids = sorted({mid for r in reports.values() for mid in r.get("per_id", {})})
    header = ["machine_id"] + [f"{name} {k}" for name in reports for k in ("AUC", "pAUC")]
    lines = []
    for mid in ids + ["mean"]:
        row = [mid]
        for r in reports.values():
            src = r.get("mean", {}) if mid == "mean" else r.get("per_id", {}).get(mid, {})
            row += [f"{src['auc']:.3f}" if "auc" in src else "-", f"{src['pauc']:.3f}" if "pauc" in src else "-"]
        lines.append(row)
    widths = [max(len(str(x)) for x in col) for col in zip(header, *lines)]
    fmt = "  ".join(f"{{:<{w}}}" if i == 0 else f"{{:>{w}}}" for i, w in enumerate(widths))
    out = [fmt.format(*header), fmt.format(*("-" * w for w in widths))]
    out += [fmt.format(*r) for r in lines]
    return "\n".join(out)
