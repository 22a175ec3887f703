"""Operator verdicts on plant clips, and the evaluation set they grow.

``slidead label CLIP fault|false_alarm|maintenance [--note ...]`` stores a verdict in the
``labels`` table (the latest verdict of a clip wins). A verdict turns a night's clip into a
labelled one: ``fault`` -> anomaly, ``false_alarm`` -> normal, ``maintenance`` -> left out (the
sound came from work on the machine, neither its normal sound nor a fault).
:func:`add_plant_clips` joins the labelled clips of a machine type to an evaluation set, so
the metrics and the promotion gate of every later training run, ``slidead evaluate`` and the
fused evaluation use real plant labels as they accumulate.
"""

from __future__ import annotations

import getpass
import logging
from collections.abc import Iterable

from slidead.core.features import FeatureConfig
from slidead.errors import LabelError
from slidead.jobs.ingest import IngestResult, ingest
from slidead.layout import parse_key
from slidead.store.features import FeatureRow
from slidead.store.results import ResultsDB

VERDICTS = {"fault": "anomaly", "false_alarm": "normal", "maintenance": None}
MIN_PREFIX = 8

log = logging.getLogger(__name__)


def find_clip(db: ResultsDB, clip: str) -> dict:
    """The clip named by its ID, a unique ID prefix of at least 8 characters, or its URI."""
    clip = clip.strip()
    cols, rows = db.query(
        "SELECT clip_id, uri, split, night, machine_type, machine_id FROM clips "
        "WHERE clip_id = ? OR uri = ? OR (length(?) >= ? AND starts_with(clip_id, ?)) "
        "ORDER BY clip_id LIMIT 3",
        [clip, clip, clip, MIN_PREFIX, clip.lower()],
    )
    if not rows:
        hint = f" (a prefix needs at least {MIN_PREFIX} characters)" if len(clip) < MIN_PREFIX else ""
        raise LabelError(f"no clip {clip!r} in {db.shown}{hint}: use a clip_id from the anomalies view, or its uri")
    if len(rows) > 1:
        raise LabelError(
            f"{clip!r} matches several clips ({', '.join(r[0][:12] for r in rows)}...): give more of the clip_id"
        )
    return dict(zip(cols, rows[0]))


def label(db: ResultsDB, clip: str, verdict: str, note: str | None = None, by: str | None = None) -> dict:
    """Store ``verdict`` for ``clip``; returns the clip's row with the verdict and the label it
    gives the evaluation set (None for maintenance)."""
    if verdict not in VERDICTS:
        raise LabelError(f"verdict {verdict!r}: expected one of {', '.join(VERDICTS)}")
    row = find_clip(db, clip)
    if row["split"] != "drop":
        raise LabelError(
            f"clip {row['clip_id'][:12]} ({row['uri']}) is a {row['split']} clip: its label comes from "
            "its folder; verdicts are for the plant's night clips"
        )
    by = by or _user()
    db.write_rows("labels", [{"clip_id": row["clip_id"], "verdict": verdict, "note": note, "labelled_by": by}])
    return dict(row, verdict=verdict, note=note, labelled_by=by, eval_label=VERDICTS[verdict])


def _user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # noqa: BLE001 - no login name in some containers
        return "unknown"


def labelled(db: ResultsDB, machine_type: str) -> dict[str, tuple[str, str]]:
    """``{clip_id: (store key, eval label)}`` of the machine type's plant clips with a verdict
    that labels them (maintenance is left out)."""
    if not db.exists():
        return {}
    _, rows = db.query(
        "SELECT l.clip_id, c.uri, l.verdict FROM labels l JOIN clips c USING (clip_id) "
        "WHERE c.machine_type = ? AND c.split = 'drop' ORDER BY l.clip_id",
        [machine_type],
    )
    return {cid: (uri, VERDICTS[v]) for cid, uri, v in rows if VERDICTS.get(v)}


def add_plant_clips(svc, machine_type: str, configs: Iterable[FeatureConfig], res: IngestResult) -> int:
    """Join the labelled plant clips of ``machine_type`` to the evaluation set ``res`` (its
    ``features`` per config hash, in place), labelled by their verdicts. Returns how many joined.
    A clip whose WAV is gone or now holds other bytes is left out, and said so."""
    configs = list(configs)
    wanted = labelled(svc.db, machine_type)
    if not wanted:
        return 0
    refs = []
    for cid, (uri, _) in wanted.items():
        try:
            refs.append(parse_key(_key(uri)))
        except ValueError:
            continue
    plant = ingest(svc.store, svc.features, refs, configs, svc.audio)
    for c in configs:
        for cid, row in plant.features[c.hash].items():
            if cid in wanted:
                res.features[c.hash][cid] = FeatureRow(
                    cid, row.machine_id, wanted[cid][1], row.logmel, row.domain, row.attributes
                )
    joined = len({cid for c in configs for cid in plant.features[c.hash] if cid in wanted})
    if joined < len(wanted):
        log.warning(
            f"evaluation set: {len(wanted) - joined} labelled plant clips could not be read back (gone from "
            "the store, or the file changed); left out"
        )
    counts = {
        lab: sum(1 for cid, (_, verdict) in wanted.items() if verdict == lab and cid in plant.refs)
        for lab in ("anomaly", "normal")
    }
    log.info(
        f"evaluation set: {joined} labelled plant clips joined ({counts['anomaly']} faults, "
        f"{counts['normal']} false alarms as normal)"
    )
    return joined


def _key(uri: str) -> str:
    """The store key of a clip URI (``.../drops/<night>/<type>/<id>/<file>.wav``)."""
    parts = uri.replace("\\", "/").split("/")
    for i, p in enumerate(parts):
        if p == "drops" and len(parts) - i == 5:
            return "/".join(parts[i:])
    raise ValueError(f"{uri!r} is not a night clip's location")
