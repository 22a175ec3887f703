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
"""

from __future__ import annotations

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
NO_ATTRIBUTE = "noAttribute"


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
