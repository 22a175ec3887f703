"""What `slidead score` runs by default, and the champion cache: used only for the version and
model-file digests the registry names."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
import torch
from faultkit import MODEL, NIGHT, champion_registry, good_clips, make_registry, put_night, services

from slidead.errors import ModelRegistryError
from slidead.jobs.champions import ChampionCache, load_champion
from slidead.shell.commands import mode
from slidead.store.model_files import DIGEST_TAG


def test_mode_follows_prefect_api_url_unless_told(monkeypatch):
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    assert mode(None) == (
        False,
        "mode: in this process, no Prefect (PREFECT_API_URL is unset; --prefect runs the flow)",
    )
    assert mode(True)[0] and "temporary local Prefect API" in mode(True)[1]
    monkeypatch.setenv("PREFECT_API_URL", "http://user:secret@127.0.0.1:4200/api")
    assert mode(None) == (True, "mode: Prefect flow against http://***@127.0.0.1:4200/api")
    assert mode(False) == (False, "mode: in this process, no Prefect (--no-prefect; --prefect runs the flow)")


@pytest.mark.slow  # runs the command line in fresh Python processes (imports torch and MLflow)
def test_cli_score_runs_in_this_process_without_a_prefect_api(tmp_path):
    svc = services(tmp_path)
    put_night(svc.store, good_clips(2))
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(SLIDEAD_HOME=str(tmp_path), SLIDEAD_MLFLOW_URI=champion_registry(), SLIDEAD_DEVICE="cpu")
    code = (
        "import sys; from slidead.shell.cli import main; "
        f"rc = main(['score', '--night', '{NIGHT}', '--family', 'ae', '--json']); "
        "print(json.dumps(sorted(m for m in ('prefect', 'flows') if m in sys.modules))); sys.exit(rc)"
    )
    out = subprocess.run(
        [sys.executable, "-c", "import json; " + code], env=env, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr
    first, loaded = out.stdout.strip().splitlines()
    assert json.loads(first)["n_scored"] == 2 and json.loads(first)["engine"] == "process"
    assert json.loads(loaded) == []  # neither Prefect nor the flows were imported
    assert "mode: in this process, no Prefect (PREFECT_API_URL is unset" in out.stderr
    assert not (tmp_path / "prefect").exists()


@pytest.mark.slow  # runs the command line in fresh Python processes (imports torch and MLflow)
def test_a_rerun_of_a_scored_night_loads_no_model_and_a_new_champion_scores_it_again(tmp_path):
    """Nothing new: the registry is still asked which version is the champion (its sqlite
    tables), but neither MLflow nor torch is imported and the results stay as they were. A
    newly promoted version has clips left to score, so it is loaded (through MLflow: the cache
    does not hold it yet) and scores them. The next night's new clips find that version in the
    cache: it is loaded without importing MLflow."""
    home = tmp_path / "registry"
    home.mkdir()
    uri = make_registry(home)
    svc = services(tmp_path, tracking_uri=uri)
    put_night(svc.store, good_clips(3))
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(SLIDEAD_HOME=str(tmp_path), SLIDEAD_MLFLOW_URI=uri, SLIDEAD_DEVICE="cpu")
    env["SLIDEAD_DUCKDB"] = str(svc.db.path)  # the results this test reads
    code = (
        "import json, sys; from slidead.shell.cli import main; "
        "rc = main(['score', '--night', sys.argv[1], '--family', 'ae', '--json']); "
        "print(json.dumps(sorted(m for m in ('torch', 'mlflow', 'torchaudio') if m in sys.modules))); sys.exit(rc)"
    )

    def score(night: str = NIGHT) -> tuple[dict, list]:
        out = subprocess.run([sys.executable, "-c", code, night], env=env, capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr
        summary, imported = out.stdout.strip().splitlines()
        return json.loads(summary), json.loads(imported)

    first, imported = score()
    assert first["n_scored"] == 3 and first["models"] == {MODEL: 1} and "torch" in imported
    assert "mlflow" in imported  # the cache was empty: the files came through MLflow
    with svc.db.connect(read_only=True) as con:
        before = con.execute("SELECT * FROM scores ORDER BY clip_id").fetchall()
    again, imported = score()
    assert again["n_scored"] == 0 and again["n_skipped"] == 3 and again["models"] == {MODEL: 1}
    assert imported == []  # the champion's version came from the registry's tables; no model loaded
    with svc.db.connect(read_only=True) as con:
        assert con.execute("SELECT * FROM scores ORDER BY clip_id").fetchall() == before
    tracker = svc.tracker
    loaded = tracker.load(MODEL)
    _, v2 = tracker.register_thresholds(loaded, loaded.thresholds, "test: a second champion")
    third, imported = score()
    assert v2 == 2 and third["models"] == {MODEL: 2} and third["n_scored"] == 3 and "mlflow" in imported
    put_night(svc.store, good_clips(2, seed=50), night="2026-11-24")
    fourth, imported = score("2026-11-24")
    assert fourth["models"] == {MODEL: 2} and fourth["n_scored"] == 2
    assert "torch" in imported and "mlflow" not in imported  # v2 came from the cache, MLflow untouched


def test_a_cached_champion_is_used_only_for_the_registered_version_and_digests(tmp_path):
    home = tmp_path / "registry"
    home.mkdir()
    uri = make_registry(home)
    svc = services(tmp_path / "run", tracking_uri=uri)
    first = load_champion(svc, MODEL)  # downloaded, checked against the registered digests, cached
    cache = ChampionCache.beside(svc)
    (entry,) = cache.root.glob("*/*/entry.json")
    assert json.loads(entry.read_text())["version"] == 1

    (files,) = home.glob("mlartifacts/slider/models/m-*/artifacts")
    hidden = tmp_path / "hidden"
    shutil.move(files, hidden)  # the artifact store loses the files: the cache entry still serves v1
    try:
        again = load_champion(svc, MODEL)
        assert again.version == 1
        assert all(
            torch.equal(a, b) for a, b in zip(first.model.state_dict().values(), again.model.state_dict().values())
        )
        # a cached file whose sha256 is not the registered one is never used
        with open(entry.parent / "state_dict.pt", "ab") as f:
            f.write(b"\0")
        with pytest.raises(ModelRegistryError, match="model files .* are missing"):
            load_champion(svc, MODEL)
    finally:
        shutil.move(hidden, files)
    assert load_champion(svc, MODEL).version == 1  # downloaded again, and the entry rewritten
    assert cache.get(uri, MODEL, 1, first.run_id, json.loads(_tag(svc))) is not None

    # the registry records another digest for v1 (say its files were replaced): the entry is not
    # used, and the files the store holds are refused
    other = dict(json.loads(_tag(svc)), **{"state_dict.pt": "0" * 64})
    svc.tracker.client.set_model_version_tag(MODEL, "1", DIGEST_TAG, json.dumps(other))
    with pytest.raises(ModelRegistryError, match="differ from the sha256 registered with v1"):
        load_champion(svc, MODEL)

    # a new champion version: the v1 entry is not used for it (with v2's files gone, v2 fails)
    make_registry(home)
    (v2,) = set(home.glob("mlartifacts/slider/models/m-*/artifacts")) - {files}
    shutil.move(v2, hidden)
    try:
        with pytest.raises(ModelRegistryError, match=r"champion of .* \(v2\) .* model files .* are missing"):
            load_champion(svc, MODEL)
    finally:
        shutil.move(hidden, v2)
    assert load_champion(svc, MODEL).version == 2
    assert len(list(cache.root.glob("*/*/entry.json"))) == 2


def _tag(svc) -> str:
    return svc.tracker.client.get_model_version(MODEL, "1").tags[DIGEST_TAG]


def test_models_lists_the_sqlite_registry_as_mlflow_does(tmp_path):
    """`slidead models` reads a sqlite registry's tables directly (no MLflow import): the same
    versions, tags and champion as the MLflow client gives."""
    from faultkit import make_registry

    from slidead.store.registry_read import _client_versions, _sqlite_versions, list_versions
    from slidead.store.tracking import Tracker

    uri = make_registry(tmp_path)
    client = Tracker(uri).client
    v1 = client.get_model_version("slidead-slider-ae", "1")
    client.create_model_version("slidead-slider-ae", v1.source, v1.run_id)  # v2, not champion
    client.set_model_version_tag("slidead-slider-ae", "2", "mean_auc", "0.5")
    client.create_registered_model("slidead-slider-ae-old")  # another type's prefix: not listed
    fast = list_versions(uri, "slidead-slider-")
    assert fast == _client_versions(uri, "slidead-slider-")
    assert [(r.name, r.version, r.champion) for r in fast] == [
        ("slidead-slider-ae", 1, True),
        ("slidead-slider-ae", 2, False),
    ]
    assert fast[1].tags["mean_auc"] == "0.5" and fast[0].run_id == v1.run_id
    import sqlite3

    con = sqlite3.connect(f"file:{uri.removeprefix('sqlite:///')}?mode=ro", uri=True)
    try:
        assert _sqlite_versions(con, "slidead-slider-") == fast
    finally:
        con.close()
