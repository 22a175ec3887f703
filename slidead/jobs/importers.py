"""Import public data set layouts (and plain folders) into the store's layout.

- DCASE 2020 Task 2: ``<type>/train/normal_id_<NN>_<n>.wav`` -> ``train/<type>/id_<NN>/normal_<n>.wav``;
  ``<type>/test/{normal,anomaly}_id_<NN>_<n>.wav`` -> ``eval/<type>/id_<NN>/<label>/<n>.wav``.
- MIMII: ``<type>/id_<NN>/{normal,abnormal}/<n>.wav``. Per ID, all abnormal clips and as many
  normal clips (the last ones by name) go to ``eval/``, the other normals to ``train/``, as the
  DCASE 2020 split did; or, with ``night``, every clip becomes a drop of that night.
- DCASE 2021-2026 Task 2: ``<type>/{train,test}/section_<SS>_<source|target>_<train|test>_
  <normal|anomaly>_<NNNN>_<attributes>.wav`` with ``attributes_<SS>.csv`` beside the type
  folders' clips. The section is the machine ID; the name is kept, so the clip's domain and
  attributes travel with it (:mod:`slidead.core.conditions`): ``train/`` normal clips ->
  ``train/<type>/id_<SS>/<name>.wav``, ``test/`` clips -> ``eval/<type>/id_<SS>/<label>/<name>.wav``
  (the set's own split). A name with ``noAttribute`` takes its attributes from the csv (the
  ``dNp``/``dNv`` columns) into the stored name. Unlabelled test clips (an evaluation set's
  ``section_00_0000.wav``), odd names and other files are skipped with a reason.
- A night folder: ``<type>/id_<NN>/<name>.wav`` -> ``drops/<night>/<type>/id_<NN>/<name>.wav``.

``src`` may be the data set root (holding type folders) or one type folder. Bytes are copied
unchanged. Each function returns ``{"uploaded": n, "skipped": [(path, why), ...], "keys": [...]}``.
"""

from __future__ import annotations

import csv
import io
import re
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

from slidead.core.conditions import CONDITIONS_CSV, DCASE_NAME, NO_ATTRIBUTE, csv_sidecar, json_sidecar, pairs
from slidead.errors import LayoutError
from slidead.layout import check_name, check_night, safe_key
from slidead.store.objects import ObjectStore

_DCASE = re.compile(r"^(normal|anomaly)_id_(\d{2,})_(\w+)\.wav$", re.IGNORECASE)
_ID_DIR = re.compile(r"^id_(\d{2,})$")


def _type_dirs(src: Path, is_type_dir: Callable[[Path], bool]) -> list[Path]:
    if not src.is_dir():
        raise ValueError(f"{src}: not a folder")
    if is_type_dir(src):
        return [src]
    found = sorted(d for d in src.rglob("*") if d.is_dir() and is_type_dir(d))
    if not found:
        raise ValueError(f"{src}: no data set folders found in the expected layout")
    return found


def _upload(store: ObjectStore, items: list[tuple[Path, str]], progress=None) -> list[str]:
    keys = []
    for i, (path, key) in enumerate(items, 1):
        store.put(key, path.read_bytes())
        keys.append(key)
        if progress:
            progress(i, len(items))
    return keys


def import_dcase2020(store: ObjectStore, src: str | Path, progress=None) -> dict:
    src = Path(src)
    items, skipped = [], []
    for tdir in _type_dirs(src, lambda d: (d / "train").is_dir() or (d / "test").is_dir()):
        mtype = check_name("machine_type", tdir.name)
        for sub in ("train", "test"):
            for f in sorted((tdir / sub).glob("*")):
                if not f.is_file():
                    continue
                m = _DCASE.match(f.name)
                if not m:
                    skipped.append((str(f), "name does not match <label>_id_<NN>_<n>.wav"))
                    continue
                label, mid, n = m.group(1).lower(), m.group(2), m.group(3)
                if sub == "train":
                    if label != "normal":
                        skipped.append((str(f), "anomalous clip in train/"))
                        continue
                    items.append((f, f"train/{mtype}/id_{mid}/normal_{n}.wav"))
                else:
                    items.append((f, f"eval/{mtype}/id_{mid}/{label}/{n}.wav"))
    return {"uploaded": len(items), "skipped": skipped, "keys": _upload(store, items, progress)}


_SECTION_ONLY = re.compile(r"^section_\d{2,}_\d+\.wav$", re.IGNORECASE)
_VALUE = re.compile(r"[^A-Za-z0-9.\-]+")


def _csv_attributes(tdir: Path) -> tuple[dict[str, dict[str, str]], list[tuple[str, str]]]:
    """``file name -> {key: value}`` from every ``attributes_<SS>.csv`` in a type folder (its
    ``file_name`` column and ``d1p,d1v,d2p,d2v,...`` pairs), and (path, why) for csv files that
    could not be read."""
    out, bad = {}, []
    for path in sorted(tdir.glob("attributes_*.csv")):
        try:
            rows = list(csv.DictReader(io.StringIO(path.read_text(encoding="utf-8-sig"))))
        except (OSError, UnicodeDecodeError, csv.Error) as e:
            bad.append((str(path), f"attributes file could not be read: {e}"))
            continue
        for row in rows:
            name = (row.get("file_name") or "").replace("\\", "/").rsplit("/", 1)[-1]
            if not name:
                continue
            attrs, k = {}, 1
            while f"d{k}p" in row:
                key, value = (row.get(f"d{k}p") or "").strip(), (row.get(f"d{k}v") or "").strip()
                if key and key != NO_ATTRIBUTE:
                    attrs[_VALUE.sub("-", key).strip("-")] = _VALUE.sub("-", value).strip("-") or "none"
                k += 1
            out[name] = attrs
    return out, bad


def import_dcase(store: ObjectStore, src: str | Path, progress=None) -> dict:
    """Import a DCASE 2021-2026 Task 2 folder (see the module docstring)."""
    src = Path(src)

    def is_type_dir(d: Path) -> bool:
        return any(
            (d / sub).is_dir() and any(DCASE_NAME.match(f.name) for f in (d / sub).iterdir())
            for sub in ("train", "test")
        )

    items, skipped = [], []
    for tdir in _type_dirs(src, is_type_dir):
        mtype = check_name("machine_type", tdir.name)
        from_csv, bad = _csv_attributes(tdir)
        skipped += bad
        for sub in sorted(c.name for c in tdir.iterdir() if c.is_dir()):
            if sub not in ("train", "test"):
                why = f"folder {sub!r} is not part of the set's train/test split"
                skipped += [(str(f), why) for f in sorted((tdir / sub).rglob("*")) if f.is_file()]
                continue
            for f in sorted((tdir / sub).iterdir()):
                if not f.is_file():
                    continue
                m = DCASE_NAME.match(f.name)
                if not m:
                    if _SECTION_ONLY.match(f.name):
                        why = "no label or domain in the name (a hidden evaluation clip)"
                    elif f.suffix.lower() != ".wav":
                        why = "not a .wav file"
                    else:
                        why = "name does not match section_<SS>_<domain>_<split>_<label>_<NNNN>_<attributes>.wav"
                    skipped.append((str(f), why))
                    continue
                section, label, split = m.group("section"), m.group("label").lower(), m.group("split").lower()
                if split != ("train" if sub == "train" else "test"):
                    skipped.append((str(f), f"a {split} clip in {sub}/"))
                    continue
                attrs, problem = pairs(m.group("attrs") or "")
                if problem:
                    skipped.append((str(f), problem))
                    continue
                name = f.name
                if not attrs and f.name in from_csv and from_csv[f.name]:
                    tail = "_".join(f"{k}_{v}" for k, v in from_csv[f.name].items())
                    head = f.name[: m.start("attrs")] if m.group("attrs") else f.name[:-4] + "_"
                    name = f"{head.rstrip('_')}_{tail}.wav"
                if sub == "train":
                    if label != "normal":
                        skipped.append((str(f), "anomalous clip in train/"))
                        continue
                    items.append((f, f"train/{mtype}/id_{section}/{name}"))
                else:
                    items.append((f, f"eval/{mtype}/id_{section}/{label}/{name}"))
    return {"uploaded": len(items), "skipped": skipped, "keys": _upload(store, items, progress)}


def import_mimii(store: ObjectStore, src: str | Path, night: str | None = None, progress=None) -> dict:
    src = Path(src)
    if night is not None:
        check_night(night)
    items, skipped = [], []
    tdirs = _type_dirs(src, lambda d: any(_ID_DIR.match(c.name) for c in d.iterdir() if c.is_dir()))
    for tdir in tdirs:
        mtype = check_name("machine_type", tdir.name)
        for idir in sorted(c for c in tdir.iterdir() if c.is_dir() and _ID_DIR.match(c.name)):
            mid = _ID_DIR.match(idir.name).group(1)
            by_label = defaultdict(list)
            for label_dir, label in (("normal", "normal"), ("abnormal", "anomaly")):
                by_label[label] = sorted((idir / label_dir).glob("*.wav")) if (idir / label_dir).is_dir() else []
            if night is not None:
                for label, files in by_label.items():
                    items += [(f, f"drops/{night}/{mtype}/id_{mid}/{label}_{f.stem}.wav") for f in files]
                continue
            normals, anomalies = by_label["normal"], by_label["anomaly"]
            n_eval = min(len(anomalies), len(normals))
            train, eval_normal = normals[: len(normals) - n_eval], normals[len(normals) - n_eval :]
            items += [(f, f"train/{mtype}/id_{mid}/normal_{f.stem}.wav") for f in train]
            items += [(f, f"eval/{mtype}/id_{mid}/normal/{f.stem}.wav") for f in eval_normal]
            items += [(f, f"eval/{mtype}/id_{mid}/anomaly/{f.stem}.wav") for f in anomalies]
    return {"uploaded": len(items), "skipped": skipped, "keys": _upload(store, items, progress)}


def upload_night(store: ObjectStore, src: str | Path, night: str, progress=None) -> dict:
    """Drop a folder of ``<type>/id_<NN>/*.wav`` as the given night.

    A clip's operating conditions may come in a sidecar (``<name>.json`` beside it, or a
    ``conditions.csv`` in its folder): they are put into the uploaded name as ``key_value``
    pairs after a double underscore (``<name>__domain_target_spd_1.2.wav``, read back by
    :func:`slidead.core.conditions.parse_name`); the sidecars are not uploaded and are listed
    under ``sidecars`` with what became of them. A clip without conditions goes up as it is.

    Files that do not fit the layout (not ``.wav``, no ``id_<NN>`` folder, a bad type name) are
    uploaded too, under the same relative path, as a gateway writing to the bucket would: the
    night lists them in its ledger (``drops``) as rejected ``bad_key``, so both ways in agree.
    Returned as ``odd`` (path, why, key); ``skipped`` holds only paths no key can name."""
    check_night(night)
    src = Path(src)
    if not src.is_dir():
        raise ValueError(f"{src}: not a folder")
    items, odd, skipped = [], [], []
    conditions, sidecars = _sidecars(src)
    for f in sorted(src.rglob("*")):
        if not f.is_file() or f in sidecars:
            continue
        rel = f.relative_to(src).parts
        if f in conditions and "__" not in f.stem:  # the sidecar's conditions go into the name
            tail = "_".join(f"{k}_{v}" for k, v in conditions[f].items())
            rel = (*rel[:-1], f"{f.stem}__{tail}{f.suffix}")
        why = None
        if f.suffix.lower() != ".wav":
            why = "not a .wav file"
        elif len(rel) != 3 or not _ID_DIR.match(rel[1]):
            why = "expected <machine_type>/id_<NN>/<name>.wav"
        else:
            try:
                check_name("machine_type", rel[0])
            except ValueError as e:
                why = str(e)
        key = f"drops/{night}/{'/'.join(rel)}"
        if why is None:
            items.append((f, key))
            continue
        try:
            safe_key(key)
        except LayoutError as e:
            skipped.append((str(f), f"{why}; not uploaded: {e}"))
            continue
        odd.append((str(f), why, key))
    keys = _upload(store, items, progress)
    _upload(store, [(Path(p), k) for p, _, k in odd])
    used = [(str(p), why) for p, why in sidecars.items()]
    return {"uploaded": len(items), "keys": keys, "odd": odd, "skipped": skipped, "sidecars": used}


def _sidecars(src: Path) -> tuple[dict[Path, dict[str, str]], dict[Path, str]]:
    """Conditions of a night folder's clips from their sidecars: ``<name>.json`` (an object of
    key -> value beside ``<name>.wav``) and one ``conditions.csv`` per folder (``file_name`` and
    one column per key; :func:`slidead.core.conditions.json_sidecar`, ``csv_sidecar``); the json
    wins over the csv. Returns (wav path -> conditions, sidecar path -> what became of it). A
    sidecar that cannot be read is named with the reason, and its clips go up without conditions
    (scored as today)."""
    found: dict[Path, dict[str, str]] = {}
    fate: dict[Path, str] = {}
    for table in sorted(src.rglob(CONDITIONS_CSV)):
        try:
            rows = csv_sidecar(table.read_bytes())
        except (OSError, ValueError) as e:
            fate[table] = f"conditions not read ({e}); its clips go up without them"
            continue
        n = 0
        for name, conditions in rows.items():
            wav = table.parent / name
            if wav.is_file() and wav.suffix.lower() == ".wav":
                found[wav] = conditions
                n += 1
        fate[table] = f"conditions of {n} clips, put into their names"
    for side in sorted(src.rglob("*.json")):
        wav = side.with_suffix(".wav")
        if not wav.is_file():
            continue  # not a sidecar: uploaded for the night to reject, as any other odd file
        try:
            data = json_sidecar(side.read_bytes())
        except (OSError, ValueError) as e:
            fate[side] = f"conditions not read ({e}); {wav.name} goes up without them"
            continue
        found[wav] = {**found.get(wav, {}), **data}
        fate[side] = f"conditions of {wav.name}, put into its name"
    return found, fate
