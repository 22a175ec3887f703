"""Tests for slidead.layout: parsing store keys, refusing bad ones, and listing prefixes."""

from __future__ import annotations

import pytest

from slidead.errors import LayoutError, SlideadError
from slidead.layout import ClipRef, check_name, check_night, parse_key, prefix, safe_key


def test_parse_drop_key():
    assert parse_key("drops/2024-03-01/slider/id_02/clip_0001.wav") == ClipRef(
        "drops/2024-03-01/slider/id_02/clip_0001.wav", "drop", "slider", "02", night="2024-03-01", label=None
    )


def test_parse_train_key():
    assert parse_key("train/slider/id_00/normal_00000000.wav") == ClipRef(
        "train/slider/id_00/normal_00000000.wav", "train", "slider", "00", night=None, label="normal"
    )


@pytest.mark.parametrize("label", ["normal", "anomaly"])
def test_parse_eval_key(label):
    ref = parse_key(f"eval/slider/id_104/{label}/00000007.WAV")
    assert (ref.split, ref.machine_type, ref.machine_id, ref.label, ref.night) == ("eval", "slider", "104", label, None)


@pytest.mark.parametrize(
    "key, match",
    [
        ("drops/../train/slider/id_00/a.wav", "unsafe"),
        ("train/slider/../id_00/a.wav", "unsafe"),
        ("train/slider/./id_00/a.wav", "unsafe"),
        ("/train/slider/id_00/a.wav", "unsafe"),
        ("train//slider/id_00/a.wav", "unsafe"),
        ("train\\slider\\id_00\\a.wav", "unsafe"),
        ("train/slider/id_00/a\x00.wav", "unsafe"),
        ("", "unsafe"),
        ("train/slider/a.wav", "does not match"),
        ("train/slider/machine_00/a.wav", "no machine ID"),
        ("train/slider/id_0/a.wav", "no machine ID"),
        ("train/slider/id_ab/a.wav", "no machine ID"),
        ("eval/slider/normal/a.wav", "does not match"),
        ("drops/2024-13-01/slider/id_00/a.wav", "YYYY-MM-DD"),
        ("drops/2024-02-30/slider/id_00/a.wav", "YYYY-MM-DD"),
        ("drops/20240301/slider/id_00/a.wav", "YYYY-MM-DD"),
        ("drops/slider/id_00/a.wav", "does not match"),
        ("eval/slider/id_00/abnormal/a.wav", "label folder 'abnormal'"),
        ("eval/slider/id_00/Normal/a.wav", "label folder"),
        ("train/slider/id_00/a.flac", "not a .wav"),
        ("models/slider/id_00/a.wav", "does not match"),
        ("train/slider/id_00/extra/a.wav", "does not match"),
    ],
)
def test_bad_keys_raise_layout_error(key, match):
    with pytest.raises(LayoutError, match=match) as info:
        parse_key(key)
    assert isinstance(info.value, SlideadError)


def test_safe_key_returns_the_key():
    assert safe_key("train/slider/id_00/a.wav") == "train/slider/id_00/a.wav"
    assert safe_key("a..b/c") == "a..b/c"  # '..' inside a name is not a path segment


def test_prefix():
    assert prefix("drop", night="2024-03-01") == "drops/2024-03-01/"
    assert prefix("drop", "slider", "2024-03-01") == "drops/2024-03-01/slider/"
    assert prefix("train") == "train/"
    assert prefix("train", "slider") == "train/slider/"
    assert prefix("eval", "slider") == "eval/slider/"
    # every key parse_key accepts starts with its split's prefix
    assert parse_key("drops/2024-03-01/slider/id_00/x.wav").key.startswith(prefix("drop", "slider", "2024-03-01"))


@pytest.mark.parametrize(
    "kw, match",
    [
        ({"split": "drop"}, "needs a night"),
        ({"split": "drops", "night": "2024-03-01"}, "'drops'"),
        ({"split": "test"}, "'test'"),
        ({"split": "drop", "night": "yesterday"}, "'yesterday'"),
        ({"split": "train", "machine_type": "../x"}, "machine_type"),
        ({"split": "train", "machine_type": "a/b"}, "machine_type"),
    ],
)
def test_bad_prefix_raises_value_error(kw, match):
    with pytest.raises(ValueError, match=match):
        prefix(**kw)


def test_check_night_and_name():
    assert check_night("2020-02-29") == "2020-02-29"
    for bad in ("2021-02-29", "2024-3-1", " 2024-03-01", "2024-03-01T00:00"):
        with pytest.raises(ValueError, match="night"):
            check_night(bad)
    assert check_name("machine_type", "slide-rail_2.0") == "slide-rail_2.0"
    for bad in ("", ".", "..", "-x", "a b", "a/b", 3):
        with pytest.raises(ValueError, match="machine_type"):
            check_name("machine_type", bad)
