"""A clip's section, domain and operating conditions, read from its file name.

DCASE Task 2 sets since 2021 name every clip
``section_<SS>_<source|target>_<train|test>_<normal|anomaly>_<NNNN>_<attributes>.wav``, the
attributes being ``key_value`` pairs (``pat_00``, ``spd_28V_mic_1``) or ``noAttribute``. The
section is the machine (slidead's machine ID), the domain says whether the clip was recorded
under the conditions with plenty of normal clips (``source``) or under new ones with about ten
(``target``). A night drop may name its conditions the same way, or after a double underscore
at the end of any name: ``<name>__spd_1.2_load_high.wav``.

:func:`parse_name` reads either form; a name without conditions has none (scored as today); a
name whose conditions do not pair up keeps none and says why (``ClipConditions.problem``).

Conditions may also come in a *sidecar* beside the clips: ``<name>.json`` (an object of key ->
value beside ``<name>.wav``) or one ``conditions.csv`` per folder (a ``file_name`` column and one
column per key). :func:`json_sidecar` and :func:`csv_sidecar` read them (``ValueError`` with the
reason when they cannot), values cleaned as names carry them (:func:`clean`).
"""

from __future__ import annotations

import csv
import io
import json
import re
from dataclasses import dataclass, field

DOMAINS = ("source", "target")
DCASE_NAME = re.compile(
    r"^section_(?P<section>\d{2,})_(?P<domain>source|target)_(?P<split>train|test)_"
    r"(?P<label>normal|anomaly)_(?P<n>\d+)(?:_(?P<attrs>.*))?\.wav$",
    re.IGNORECASE,
)
_TOKEN = re.compile(r"^[A-Za-z0-9.\-]+$")
_VALUE = re.compile(r"[^A-Za-z0-9.\-]+")
NO_ATTRIBUTE = "noAttribute"
CONDITIONS_CSV = "conditions.csv"  # a folder's sidecar: the conditions of the clips beside it


@dataclass(frozen=True)
class ClipConditions:
    section: str | None = None
    domain: str | None = None  # 'source' | 'target' | None (not said)
    attributes: dict[str, str] = field(default_factory=dict)
    split: str | None = None  # DCASE names only: 'train' | 'test'
    label: str | None = None  # DCASE names only: 'normal' | 'anomaly'
    problem: str | None = None  # why conditions in the name were not taken

    @property
    def attributes_json(self) -> str | None:
        """The attributes as a JSON object with sorted keys (None when there are none)."""
        return json.dumps(self.attributes, sort_keys=True) if self.attributes else None

    @property
    def combination(self) -> str:
        """The attribute combination as one string (``pat=00,spd=1``), '' when there are none."""
        return ",".join(f"{k}={v}" for k, v in sorted(self.attributes.items()))


def pairs(text: str) -> tuple[dict[str, str], str | None]:
    """``k1_v1_k2_v2`` -> ({k1: v1, k2: v2}, None), or ({}, why) when the tokens do not pair up."""
    if not text or text == NO_ATTRIBUTE:
        return {}, None
    tokens = text.split("_")
    if len(tokens) % 2 or not all(_TOKEN.match(t) for t in tokens):
        return {}, f"conditions {text!r} are not key_value pairs"
    out: dict[str, str] = {}
    for k, v in zip(tokens[::2], tokens[1::2]):
        if k in out:
            return {}, f"conditions {text!r} name {k!r} twice"
        out[k] = v
    return out, None


def parse_name(name: str) -> ClipConditions:
    """The conditions a clip's file name carries (see the module docstring)."""
    m = DCASE_NAME.match(name)
    if m:
        attrs, problem = pairs(m.group("attrs") or "")
        return ClipConditions(
            m.group("section"),
            m.group("domain").lower(),
            attrs,
            m.group("split").lower(),
            m.group("label").lower(),
            problem,
        )
    stem = name[:-4] if name.lower().endswith(".wav") else name
    if "__" in stem:
        attrs, problem = pairs(stem.rsplit("__", 1)[1])
        domain = attrs.pop("domain", None)
        if domain is not None and domain not in DOMAINS:
            return ClipConditions(problem=f"domain {domain!r} is not one of {DOMAINS}")
        return ClipConditions(domain=domain, attributes=attrs, problem=problem)
    return ClipConditions()


def merge(base: ClipConditions, extra: dict[str, str]) -> ClipConditions:
    """``base`` with attributes from a sidecar added (the sidecar's ``domain`` key sets the domain)."""
    extra = {str(k): str(v) for k, v in extra.items()}
    domain = extra.pop("domain", base.domain)
    if domain is not None and domain not in DOMAINS:
        return ClipConditions(
            base.section,
            base.domain,
            base.attributes,
            base.split,
            base.label,
            f"domain {domain!r} is not one of {DOMAINS}",
        )
    return ClipConditions(base.section, domain, {**base.attributes, **extra}, base.split, base.label, base.problem)


def clean(value) -> str:
    """A sidecar's key or value as a name can carry it: runs of other characters become ``-``."""
    return _VALUE.sub("-", str(value)).strip("-") or "none"


def is_sidecar(name: str) -> bool:
    """Whether a file name is a sidecar's: ``conditions.csv`` or ``<name>.json``."""
    return name == CONDITIONS_CSV or name.lower().endswith(".json")


def json_sidecar(data: bytes | str) -> dict[str, str]:
    """A ``<name>.json`` sidecar's conditions; ``ValueError`` saying why it cannot be read."""
    try:
        obj = json.loads(data.decode("utf-8") if isinstance(data, bytes) else data)
    except UnicodeDecodeError as e:
        raise ValueError(f"not UTF-8 text ({e.reason})") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"not valid JSON ({e.msg}, line {e.lineno})") from None
    if not isinstance(obj, dict):
        raise ValueError(f"not a JSON object of conditions (a {type(obj).__name__})")
    return {clean(k): clean(v) for k, v in obj.items()}


def csv_sidecar(data: bytes | str) -> dict[str, dict[str, str]]:
    """A ``conditions.csv``'s conditions per file name (empty cells left out); ``ValueError``
    saying why it cannot be read."""
    try:
        text = data.decode("utf-8-sig") if isinstance(data, bytes) else data
        rows = list(csv.DictReader(io.StringIO(text)))
    except UnicodeDecodeError as e:
        raise ValueError(f"not UTF-8 text ({e.reason})") from None
    except csv.Error as e:
        raise ValueError(f"not a CSV table ({e})") from None
    if rows and "file_name" not in rows[0]:
        raise ValueError("no file_name column")
    out: dict[str, dict[str, str]] = {}
    for row in rows:
        name = (row.pop("file_name") or "").strip()
        if name:
            out[name] = {clean(k): clean(v) for k, v in row.items() if k and v not in (None, "")}
    return out
