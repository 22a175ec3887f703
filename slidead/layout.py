"""The store's key layout, parsed and checked.

Keys are relative, ``/``-separated:

- ``drops/<YYYY-MM-DD>/<machine_type>/id_<NN>/<name>.wav`` — a night's unlabelled clips
- ``train/<machine_type>/id_<NN>/<name>.wav`` — normal recordings to train on
- ``eval/<machine_type>/id_<NN>/{normal,anomaly}/<name>.wav`` — a labelled set

``parse_key(key) -> ClipRef``; a key that does not fit (or has ``..``/absolute segments, or a
machine type that is not a plain name) raises :class:`~slidead.errors.LayoutError` with the
reason. File names may hold spaces and any unicode letters.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

from slidead.errors import LayoutError

SPLITS = ("drop", "train", "eval")
LABELS = ("normal", "anomaly")
_ID = re.compile(r"^id_(\d{2,})$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")


@dataclass(frozen=True)
class ObjectInfo:
    """A listed object: its key, its size in bytes and a tag that changes when its bytes are
    replaced (the ETag on S3; size and mtime in nanoseconds in a local folder). Stores that
    cannot say leave size and tag None."""

    key: str
    size: int | None = None
    tag: str | None = None


@dataclass(frozen=True)
class ClipRef:
    key: str
    split: str
    machine_type: str
    machine_id: str
    night: str | None = None
    label: str | None = None


def check_night(night: str) -> str:
    """Validate ``YYYY-MM-DD``; returns it unchanged or raises ValueError naming it."""
    try:
        if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", night):
            raise ValueError
        dt.date.fromisoformat(night)
    except (ValueError, TypeError):
        raise ValueError(f"night={night!r}: expected a date as YYYY-MM-DD") from None
    return night


def check_name(kind: str, value: str) -> str:
    """A machine type or file stem: letters, digits, ``_ . -``; no path tricks."""
    if not isinstance(value, str) or not _NAME.match(value) or value in (".", ".."):
        raise ValueError(f"{kind}={value!r}: use letters, digits, '_', '.', '-' only")
    return value


def safe_key(key: str) -> str:
    """Normalise and refuse keys that could escape the store root."""
    if not key or key.startswith("/") or "\\" in key or "\x00" in key:
        raise LayoutError(f"unsafe key {key!r}")
    parts = key.split("/")
    if any(p in ("", ".", "..") for p in parts):
        raise LayoutError(f"unsafe key {key!r}: empty, '.' or '..' segment")
    return key


def parse_key(key: str) -> ClipRef:
    safe_key(key)
    parts = key.split("/")
    if not parts[-1].lower().endswith(".wav"):
        raise LayoutError(f"{key!r}: not a .wav file")
    head = parts[0]
    if head == "drops" and len(parts) == 5:
        _, night, mtype, mid, _ = parts
        try:
            check_night(night)
        except ValueError as e:
            raise LayoutError(f"{key!r}: {e}") from None
        return ClipRef(key, "drop", _machine_type(key, mtype), _machine_id(key, mid), night=night)
    if head == "train" and len(parts) == 4:
        _, mtype, mid, _ = parts
        return ClipRef(key, "train", _machine_type(key, mtype), _machine_id(key, mid), label="normal")
    if head == "eval" and len(parts) == 5:
        _, mtype, mid, label, _ = parts
        if label not in LABELS:
            raise LayoutError(f"{key!r}: label folder {label!r} is not one of {LABELS}")
        return ClipRef(key, "eval", _machine_type(key, mtype), _machine_id(key, mid), label=label)
    raise LayoutError(
        f"{key!r}: does not match drops/<night>/<type>/id_<NN>/<name>.wav, "
        "train/<type>/id_<NN>/<name>.wav or eval/<type>/id_<NN>/<label>/<name>.wav"
    )


def _machine_type(key: str, part: str) -> str:
    try:
        return check_name("machine_type", part)
    except ValueError as e:
        raise LayoutError(f"{key!r}: {e}") from None


def _machine_id(key: str, part: str) -> str:
    m = _ID.match(part)
    if not m:
        raise LayoutError(f"{key!r}: no machine ID (expected a folder like id_00, got {part!r})")
    return m.group(1)


def prefix(split: str, machine_type: str | None = None, night: str | None = None) -> str:
    """The listing prefix for a split (and machine type / night)."""
    if split == "drop":
        if night is None:
            raise ValueError("a drop prefix needs a night")
        p = f"drops/{check_night(night)}/"
    elif split in ("train", "eval"):
        p = f"{split}/"
    else:
        raise ValueError(f"split={split!r}: expected one of {SPLITS}")
    return p + (f"{check_name('machine_type', machine_type)}/" if machine_type else "")


def night_before(tz: str | None = None) -> str:
    """The date of the night before now, in timezone ``tz`` (this machine's when None)."""
    import datetime as dt
    from zoneinfo import ZoneInfo

    now = dt.datetime.now(ZoneInfo(tz)) if tz else dt.datetime.now()
    return (now.date() - dt.timedelta(days=1)).isoformat()
