"""Import public data set layouts (and plain folders) into the store's layout.

- DCASE 2020 Task 2: ``<type>/train/normal_id_<NN>_<n>.wav`` -> ``train/<type>/id_<NN>/normal_<n>.wav``;
  ``<type>/test/{normal,anomaly}_id_<NN>_<n>.wav`` -> ``eval/<type>/id_<NN>/<label>/<n>.wav``.
- MIMII: ``<type>/id_<NN>/{normal,abnormal}/<n>.wav``. Per ID, all abnormal clips and as many
  normal clips (the last ones by name) go to ``eval/``, the other normals to ``train/``, as the
  DCASE 2020 split did; or, with ``night``, every clip becomes a drop of that night.
- A night folder: ``<type>/id_<NN>/<name>.wav`` -> ``drops/<night>/<type>/id_<NN>/<name>.wav``.

``src`` may be the data set root (holding type folders) or one type folder. Bytes are copied
unchanged. Each function returns ``{"uploaded": n, "skipped": [(path, why), ...], "keys": [...]}``.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

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

    Files that do not fit the layout (not ``.wav``, no ``id_<NN>`` folder, a bad type name) are
    uploaded too, under the same relative path, as a gateway writing to the bucket would: the
    night lists them in its ledger (``drops``) as rejected ``bad_key``, so both ways in agree.
    Returned as ``odd`` (path, why, key); ``skipped`` holds only paths no key can name."""
    check_night(night)
    src = Path(src)
    if not src.is_dir():
        raise ValueError(f"{src}: not a folder")
    items, odd, skipped = [], [], []
    for f in sorted(src.rglob("*")):
        if not f.is_file():
            continue
        rel = f.relative_to(src).parts
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
    return {"uploaded": len(items), "keys": keys, "odd": odd, "skipped": skipped}
