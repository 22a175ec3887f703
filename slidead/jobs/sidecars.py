"""Conditions dropped straight into a night's folder beside its clips: sidecars.

A gateway writing to the bucket may put a clip's operating conditions beside it, as
``drops/<night>/<type>/id_<NN>/<name>.json`` (an object: ``{"domain": "target", "spd": 1.2}``)
or one ``conditions.csv`` per machine folder (``file_name,spd,load``), read by
:func:`slidead.core.conditions.json_sidecar` and ``csv_sidecar``; the json wins over the csv, and
both add to (and override) what the clip's name says.

- :func:`sidecar_rows`: a sidecar is not a clip. The night's listing gives each one a ledger
  row (``rejected``, reason ``sidecar``) saying so, what it holds, or why it cannot be read.
- :func:`night_conditions`: what the sidecars say of a shard's clips, read with one listing per
  machine folder. A clip without a sidecar is scored as today; a clip whose sidecar cannot be
  read is scored with its name's conditions alone, and its ``clips.note`` says why.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

from slidead.core.conditions import CONDITIONS_CSV, ClipConditions, csv_sidecar, is_sidecar, json_sidecar, merge
from slidead.errors import StoreError
from slidead.layout import ClipRef
from slidead.store.objects import ObjectStore, list_info

REASON = "sidecar"  # the ledger's reason for a sidecar: not a clip


def is_drop_sidecar(key: str) -> bool:
    """A sidecar in a night's machine folder: ``drops/<night>/<type>/<id_NN>/<name>.json`` or
    ``.../conditions.csv``."""
    parts = key.split("/")
    return len(parts) == 5 and parts[0] == "drops" and is_sidecar(parts[-1])


def _read(store: ObjectStore, key: str):
    """A sidecar's conditions (a dict; per file name for a csv), or the reason it cannot be read.
    A store that fails is not a bad sidecar: :class:`StoreError` propagates."""
    try:
        data = store.get(key)
        return (csv_sidecar if key.endswith("/" + CONDITIONS_CSV) else json_sidecar)(data), None
    except StoreError:
        raise
    except ValueError as e:
        return None, str(e)
    except Exception as e:  # noqa: BLE001 - an unreadable object is reported, never fatal
        return None, f"{type(e).__name__}: {e}"


def sidecar_rows(store: ObjectStore, keys: Iterable[str], clip_keys: set[str], night: str | None) -> list[dict]:
    """The ledger's row for each sidecar key (rows of the ``rejected`` table, reason ``sidecar``):
    what it holds for which of the listed clips (``clip_keys``), or why it cannot be read."""
    rows = []
    for key in keys:
        folder, name = key.rsplit("/", 1)
        got, why = _read(store, key)
        if why is not None:
            detail = f"not a clip but a sidecar that cannot be read ({why}): the clips it names are scored without it"
        elif name == CONDITIONS_CSV:
            n = sum(f"{folder}/{f}" in clip_keys for f in got)
            detail = f"not a clip: the conditions of {n} of the clips beside it"
        else:
            wav = name[: -len(".json")] + ".wav"
            detail = (
                f"not a clip: the conditions of {wav}"
                if f"{folder}/{wav}" in clip_keys
                else f"not a clip, and no {wav} beside it to give conditions to"
            )
        rows.append({"uri": store.uri_for(key), "night": night, "reason": REASON, "detail": detail})
    return rows


def night_conditions(store: ObjectStore, refs: Iterable[ClipRef]) -> dict[str, tuple[dict[str, str], str | None]]:
    """Per night clip key with a sidecar: (its conditions, why a sidecar of it could not be read or
    None). One listing per machine folder; ``{}`` when the refs hold no night clips."""
    folders: dict[str, set[str]] = {}
    for r in refs:
        if r.split == "drop":
            folder, name = r.key.rsplit("/", 1)
            folders.setdefault(folder, set()).add(name)
    out: dict[str, tuple[dict[str, str], str | None]] = {}
    for folder, names in folders.items():
        present = {i.key.rsplit("/", 1)[1] for i in list_info(store, folder + "/") if is_drop_sidecar(i.key)}
        if CONDITIONS_CSV in present:
            table, why = _read(store, f"{folder}/{CONDITIONS_CSV}")
            for name in names:
                if why is not None:
                    out[f"{folder}/{name}"] = ({}, f"{CONDITIONS_CSV} not read ({why})")
                elif name in table:
                    out[f"{folder}/{name}"] = (table[name], None)
        for name in names:
            side = name[: -len(".wav")] + ".json" if name.lower().endswith(".wav") else None
            if side not in present:
                continue
            got, why = _read(store, f"{folder}/{side}")
            base, problem = out.get(f"{folder}/{name}", ({}, None))
            if why is not None:
                why = f"{side} not read ({why})"
                out[f"{folder}/{name}"] = (base, f"{problem}; {why}" if problem else why)
            else:
                out[f"{folder}/{name}"] = ({**base, **got}, problem)
    return out


def with_sidecar(cond: ClipConditions, side: tuple[dict[str, str], str | None] | None) -> ClipConditions:
    """A clip's conditions from its name, with what its sidecars add; a sidecar that could not be
    read leaves the name's conditions and says why in ``problem`` (the clip's note)."""
    if side is None:
        return cond
    extra, why = side
    out = merge(cond, extra) if extra else cond
    if why:
        why = f"{why}: scored without its conditions"
        out = dataclasses.replace(out, problem=f"{out.problem}; {why}" if out.problem else why)
    return out
