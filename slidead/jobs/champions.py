"""The champion model of each machine type, loaded from the registry with a clear error.

The registry is asked every time which version is the champion. Its model files are then taken
from a local cache when the cache holds exactly that version (same version, run and sha256 of
each file as the version's ``model_files_sha256`` tag records), else downloaded from MLflow,
checked against that tag, and cached. A version registered without the tag is downloaded every
time and never cached. The cache lives beside the results database (``cache/champions/``); it
saves the artifact download and its registry round trips, never the question which version is
the champion. On a sqlite registry the question is put to MLflow's tables directly
(:func:`~slidead.store.registry_read.quick_champion`), so a night whose champion is cached
neither imports MLflow nor builds its client.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

from slidead.errors import ModelRegistryError, NoChampionError, SlideadError, redact
from slidead.store.model_files import (
    DIGEST_TAG,
    MODEL_FILES,
    OPTIONAL_FILES,
    LoadedModel,
    file_digests,
    model_from_files,
)
from slidead.store.registry_read import quick_champion
from slidead.store.services import Services
from slidead.store.tracking import model_name


def load_champion(svc: Services, name: str) -> LoadedModel:
    """The champion of registered model ``name``, or a clear error: NoChampionError (none promoted),
    ModelRegistryError (MLflow unreachable, or the champion's artifacts missing or unreadable).

    On a sqlite registry whose champion's files the local cache holds (same version, run and
    sha256 as the registry's tables record), nothing of MLflow is imported or built: importing
    it and building its client took 3.4 s of an 11 s night. Anything else goes through MLflow."""
    cached = _cached_champion(svc, name)
    if cached is not None:
        return cached
    uri = redact(svc.tracking_uri)
    try:
        tracker = svc.tracker
        tracker.client.search_registered_models(max_results=1)  # reachable at all?
    except Exception as e:  # noqa: BLE001
        raise ModelRegistryError(
            f"MLflow at {uri} is unreachable ({_short(e)}); check SLIDEAD_MLFLOW_URI and the server. "
            "Nothing was scored or written."
        ) from None
    try:
        return _load(svc, name, ChampionCache.beside(svc))
    except NoChampionError:
        champ = tracker.champion_version(name)
        if champ is None:
            raise
        raise ModelRegistryError(
            f"champion of {name} (v{champ.version}) is registered in MLflow at {uri} but its model files "
            "(state_dict.pt, run_config.json, thresholds.json) are missing: retrain or re-promote a version. "
            "Nothing was scored or written."
        ) from None
    except SlideadError:
        raise
    except Exception as e:  # noqa: BLE001
        raise ModelRegistryError(
            f"could not load the champion of {name} from MLflow at {uri} ({_short(e)}). Nothing was scored or written."
        ) from None


def _cached_champion(svc: Services, name: str) -> LoadedModel | None:
    """The champion from the local cache when the registry's tables (read without MLflow) name
    a version whose registered digests the cached files match; else None (MLflow decides)."""
    cache = ChampionCache.beside(svc)
    if cache is None:
        return None
    row = quick_champion(svc.tracking_uri, name)
    want = registered_digests(row) if row is not None else {}
    if not want:  # not a sqlite registry, no champion, or a version registered without digests
        return None
    files = cache.get(svc.tracking_uri, name, row.version, row.run_id, want)
    if files is None:
        return None
    try:
        return model_from_files(files, name, row.version, row.run_id)
    except Exception:  # noqa: BLE001 - the MLflow path says what is wrong, as one sentence
        return None


def _load(svc: Services, name: str, cache: ChampionCache | None) -> LoadedModel:
    tracker = svc.tracker
    mv = tracker.champion_version(name)
    if mv is None:
        raise NoChampionError(name)
    version, want = int(mv.version), registered_digests(mv)
    key = (svc.tracking_uri, name, version, mv.run_id)
    if cache is not None and want:
        files = cache.get(*key, want)
        if files is not None:
            return model_from_files(files, name, version, mv.run_id)
    with tempfile.TemporaryDirectory() as tmp:
        files = tracker.model_files(name, mv, tmp)
        got = file_digests(files.values())
        if want and got != want:
            bad = sorted(f for f in set(got) | set(want) if got.get(f) != want.get(f))
            raise ValueError(
                f"its {', '.join(bad)} in the artifact store differ from the sha256 registered with v{version}"
            )
        loaded = model_from_files(files, name, version, mv.run_id)  # loads (weights only) before it is cached
        if cache is not None and want:
            cache.put(*key, files)
        return loaded


def registered_digests(mv) -> dict[str, str]:
    """The sha256 of each model file as the registry records it for version ``mv`` (a
    ``ModelVersion`` or a :class:`~slidead.store.registry_read.VersionRow`; empty when the
    version was registered without them)."""
    try:
        got = json.loads((mv.tags or {}).get(DIGEST_TAG, "{}"))
    except ValueError:
        return {}
    ok = isinstance(got, dict) and set(MODEL_FILES) <= set(got) <= set(MODEL_FILES + OPTIONAL_FILES)
    return got if ok else {}


class ChampionCache:
    """Model files of registry versions on local disk, one folder per (registry, name, version,
    run): ``entry.json`` says which, and each file is used only while its sha256 is the
    registered one."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    @classmethod
    def beside(cls, svc: Services) -> ChampionCache | None:
        path = Path(svc.db.path)
        return None if str(svc.db.path) == ":memory:" else cls(path.parent / "cache" / "champions")

    def _dir(self, tracking_uri: str, name: str, version: int, run_id: str) -> Path:
        registry = hashlib.sha256(tracking_uri.encode()).hexdigest()[:16]
        return self.root / registry / f"{name}-v{version}-{run_id}"

    def get(self, tracking_uri: str, name: str, version: int, run_id: str, digests: dict) -> dict[str, Path] | None:
        """The cached files of that version, or None (no entry, another version or run, or a file
        whose sha256 is not ``digests``' own)."""
        d = self._dir(tracking_uri, name, version, run_id)
        try:
            entry = json.loads((d / "entry.json").read_text())
        except (OSError, ValueError):
            return None
        if entry != _entry(tracking_uri, name, version, run_id, digests):
            return None
        files = {f: d / f for f in digests}  # the version's files (a cross-conformal one has its folds too)
        try:
            if file_digests(files.values()) != digests:
                return None
        except OSError:
            return None
        return files

    def put(self, tracking_uri: str, name: str, version: int, run_id: str, files: dict[str, Path]) -> None:
        """Keep ``files`` as that version's entry (best effort: a cache that cannot be written is skipped)."""
        d, tmp = self._dir(tracking_uri, name, version, run_id), None
        try:
            d.parent.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(dir=d.parent, prefix=".new-"))
            for f in files:
                shutil.copyfile(files[f], tmp / f)
            digests = file_digests(tmp / f for f in files)
            (tmp / "entry.json").write_text(json.dumps(_entry(tracking_uri, name, version, run_id, digests)))
            shutil.rmtree(d, ignore_errors=True)
            os.replace(tmp, d)
        except OSError:
            if tmp is not None:
                shutil.rmtree(tmp, ignore_errors=True)


def _entry(tracking_uri: str, name: str, version: int, run_id: str, digests: dict) -> dict:
    return {
        "tracking_uri": redact(tracking_uri),
        "name": name,
        "version": int(version),
        "run_id": run_id,
        "sha256": dict(sorted(digests.items())),
    }


def _short(e: BaseException, limit: int = 300) -> str:
    text = redact(f"{type(e).__name__}: {e}").replace("\n", " ")
    return text if len(text) <= limit else text[:limit] + "..."


def champions(svc: Services, family: str, machine_types: list[str]) -> dict[str, LoadedModel]:
    """The champion of ``family`` for each of ``machine_types`` (NoChampionError if one lacks it)."""
    return {model_name(t, family): load_champion(svc, model_name(t, family)) for t in machine_types}
