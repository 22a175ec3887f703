"""Tests for slidead.jobs.importers: DCASE 2020 and MIMII layouts and night folders into the store."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from conftest import sine, wav_bytes

from slidead.jobs.importers import import_dcase2020, import_mimii, upload_night
from slidead.layout import parse_key
from slidead.store.objects import LocalObjectStore


def _write(path, data: bytes):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return data


def _clip(i: int) -> bytes:
    return wav_bytes(sine(200.0 + 10 * i, 0.2), 16000, "PCM_16")


@pytest.fixture
def dcase(tmp_path):
    root = tmp_path / "dcase"
    files = {
        "slider/train/normal_id_00_00000000.wav": _clip(0),
        "slider/train/normal_id_00_00000001.wav": _clip(1),
        "slider/train/normal_id_02_00000000.wav": _clip(2),
        "slider/train/anomaly_id_00_00000009.wav": _clip(3),  # no anomalies in train/
        "slider/train/notes.txt": b"not audio",
        "slider/test/normal_id_02_00000003.wav": _clip(4),
        "slider/test/anomaly_id_02_00000005.wav": _clip(5),
        "slider/test/anomaly_id_04_00000000.wav": _clip(6),
        "fan/train/normal_id_00_00000000.wav": _clip(7),
    }
    for rel, data in files.items():
        _write(root / rel, data)
    return root, files


def test_import_dcase2020_keys_and_bytes(tmp_path, dcase):
    root, files = dcase
    store = LocalObjectStore(tmp_path / "store")
    seen = []
    res = import_dcase2020(store, root, progress=lambda i, n: seen.append((i, n)))
    expected = {
        "train/fan/id_00/normal_00000000.wav": "fan/train/normal_id_00_00000000.wav",
        "train/slider/id_00/normal_00000000.wav": "slider/train/normal_id_00_00000000.wav",
        "train/slider/id_00/normal_00000001.wav": "slider/train/normal_id_00_00000001.wav",
        "train/slider/id_02/normal_00000000.wav": "slider/train/normal_id_02_00000000.wav",
        "eval/slider/id_02/normal/00000003.wav": "slider/test/normal_id_02_00000003.wav",
        "eval/slider/id_02/anomaly/00000005.wav": "slider/test/anomaly_id_02_00000005.wav",
        "eval/slider/id_04/anomaly/00000000.wav": "slider/test/anomaly_id_04_00000000.wav",
    }
    assert res["uploaded"] == 7 and sorted(res["keys"]) == sorted(expected)
    assert sorted(store.list()) == sorted(expected)
    for key, rel in expected.items():
        assert store.get(key) == files[rel]  # bytes unchanged
        parse_key(key)  # every key fits the layout
    skipped = {p.split("/")[-1]: why for p, why in res["skipped"]}
    assert skipped == {
        "anomaly_id_00_00000009.wav": "anomalous clip in train/",
        "notes.txt": "name does not match <label>_id_<NN>_<n>.wav",
    }
    assert seen == [(i, 7) for i in range(1, 8)]
    ref = parse_key("eval/slider/id_02/anomaly/00000005.wav")
    assert (ref.split, ref.machine_id, ref.label) == ("eval", "02", "anomaly")


def test_import_dcase2020_from_one_type_folder(tmp_path, dcase):
    root, _ = dcase
    store = LocalObjectStore(tmp_path / "store")
    res = import_dcase2020(store, root / "slider")
    assert res["uploaded"] == 6
    assert all(k.split("/")[1] == "slider" for k in res["keys"])


def test_import_dcase2020_bad_source(tmp_path):
    store = LocalObjectStore(tmp_path / "store")
    with pytest.raises(ValueError, match="not a folder"):
        import_dcase2020(store, tmp_path / "missing")
    (tmp_path / "empty" / "x").mkdir(parents=True)
    with pytest.raises(ValueError, match="no data set folders"):
        import_dcase2020(store, tmp_path / "empty")


# --- MIMII (real clips) ---------------------------------------------------------------------


@pytest.fixture
def mimii_copy(tmp_path, mimii_dir):
    dst = tmp_path / "mimii"
    shutil.copytree(mimii_dir, dst)
    return dst


def test_import_mimii_real_samples_split(tmp_path, mimii_copy):
    store = LocalObjectStore(tmp_path / "store")
    res = import_mimii(store, mimii_copy)
    # one normal and one abnormal per ID: the normal is held out to pair with the abnormal one
    expected = sorted(
        f"eval/slider/id_{i}/{lab}/00000000.wav" for i in ("00", "02", "04", "06") for lab in ("normal", "anomaly")
    )
    assert res["uploaded"] == 8 and sorted(res["keys"]) == expected and res["skipped"] == []
    for i in ("00", "02", "04", "06"):
        assert (
            store.get(f"eval/slider/id_{i}/normal/00000000.wav")
            == (mimii_copy / f"slider/id_{i}/normal/00000000.wav").read_bytes()
        )
        assert (
            store.get(f"eval/slider/id_{i}/anomaly/00000000.wav")
            == (mimii_copy / f"slider/id_{i}/abnormal/00000000.wav").read_bytes()
        )


def test_import_mimii_last_normals_go_to_eval(tmp_path, mimii_copy):
    src = mimii_copy / "slider" / "id_00" / "normal" / "00000000.wav"
    for n in ("00000001", "00000002"):
        shutil.copy(src, src.with_name(f"{n}.wav"))
    shutil.copy(mimii_copy / "slider/id_00/abnormal/00000000.wav", mimii_copy / "slider/id_00/abnormal/00000007.wav")
    (mimii_copy / "slider/id_02/abnormal/00000000.wav").unlink()
    store = LocalObjectStore(tmp_path / "store")
    res = import_mimii(store, mimii_copy / "slider")  # a type folder works too
    keys = set(res["keys"])
    # id_00: 3 normals, 2 abnormals -> the last 2 normals by name go to eval
    assert {k for k in keys if "/id_00/" in k} == {
        "train/slider/id_00/normal_00000000.wav",
        "eval/slider/id_00/normal/00000001.wav",
        "eval/slider/id_00/normal/00000002.wav",
        "eval/slider/id_00/anomaly/00000000.wav",
        "eval/slider/id_00/anomaly/00000007.wav",
    }
    # id_02 lost its abnormal clip: its normal is for training
    assert {k for k in keys if "/id_02/" in k} == {"train/slider/id_02/normal_00000000.wav"}
    assert res["uploaded"] == 5 + 1 + 4
    for k in keys:
        parse_key(k)


def test_import_mimii_as_a_night(tmp_path, mimii_copy):
    store = LocalObjectStore(tmp_path / "store")
    res = import_mimii(store, mimii_copy, night="2024-03-01")
    expected = sorted(
        f"drops/2024-03-01/slider/id_{i}/{lab}_00000000.wav"
        for i in ("00", "02", "04", "06")
        for lab in ("normal", "anomaly")
    )
    assert sorted(res["keys"]) == expected == sorted(store.list())
    assert (
        store.get("drops/2024-03-01/slider/id_04/anomaly_00000000.wav")
        == (mimii_copy / "slider/id_04/abnormal/00000000.wav").read_bytes()
    )
    assert all(parse_key(k).night == "2024-03-01" for k in expected)
    with pytest.raises(ValueError, match="night"):
        import_mimii(store, mimii_copy, night="2024-3-1")


# --- night folders --------------------------------------------------------------------------


def test_upload_night(tmp_path):
    src = tmp_path / "night"
    a = _write(src / "slider/id_00/a.wav", _clip(0))
    b = _write(src / "slider/id_03/b.WAV", _clip(1))
    _write(src / "slider/id_00/readme.txt", b"x")
    _write(src / "slider/c.wav", _clip(2))  # no id folder
    _write(src / "slider/machine_1/d.wav", _clip(3))  # not an id folder
    _write(src / "bad type/id_00/e.wav", _clip(4))  # type name with a space
    store = LocalObjectStore(tmp_path / "store")
    res = upload_night(store, src, "2024-03-01")
    assert sorted(res["keys"]) == ["drops/2024-03-01/slider/id_00/a.wav", "drops/2024-03-01/slider/id_03/b.WAV"]
    assert res["uploaded"] == 2
    assert store.get("drops/2024-03-01/slider/id_00/a.wav") == a
    assert store.get("drops/2024-03-01/slider/id_03/b.WAV") == b
    # the odd files go up too, as a gateway would write them: the night's ledger rejects them
    assert res["skipped"] == []
    why = {p.split("night/")[1]: w for p, w, _ in res["odd"]}
    assert {k for _, _, k in res["odd"]} == {
        f"drops/2024-03-01/{r}"
        for r in ("slider/id_00/readme.txt", "slider/c.wav", "slider/machine_1/d.wav", "bad type/id_00/e.wav")
    }
    assert store.get("drops/2024-03-01/slider/c.wav") == _clip(2)
    assert why["slider/id_00/readme.txt"] == "not a .wav file"
    assert why["slider/c.wav"] == why["slider/machine_1/d.wav"] == "expected <machine_type>/id_<NN>/<name>.wav"
    assert "machine_type" in why["bad type/id_00/e.wav"]
    assert parse_key(res["keys"][0]).machine_id == "00"


def test_upload_night_bad_arguments(tmp_path):
    store = LocalObjectStore(tmp_path / "store")
    with pytest.raises(ValueError, match="night"):
        upload_night(store, tmp_path, "tonight")
    with pytest.raises(ValueError, match="not a folder"):
        upload_night(store, tmp_path / "missing", "2024-03-01")


def test_imported_bytes_decode_unchanged(tmp_path, dcase):
    from slidead.core.audio import decode

    root, files = dcase
    store = LocalObjectStore(tmp_path / "store")
    import_dcase2020(store, root)
    d = decode(store.get("train/slider/id_00/normal_00000001.wav"))
    np.testing.assert_allclose(d.audio, sine(210.0, 0.2), atol=1 / 32768)
