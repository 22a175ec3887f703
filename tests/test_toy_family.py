"""A family added by one file (tests/toyfamily.py) trains, scores a night and evaluates through
the command line, with no other module touched: the registry is the only list of families."""

from __future__ import annotations

import json

import pytest
import toyfamily
from plant import NIGHT, make_plant

from slidead.core.models import families, family
from slidead.shell.cli import main

pytestmark = pytest.mark.integration


def test_a_family_in_one_file_trains_scores_and_evaluates_through_the_cli(tmp_path, capsys, monkeypatch):
    assert "toy" in families() and family("toy") is toyfamily.FAMILY
    settings, svc, summary = make_plant(tmp_path / "home")
    monkeypatch.setenv("SLIDEAD_HOME", str(settings.home))

    assert main(["train", "--family", "toy", "--epochs", "2", "--no-prefect"]) == 0
    assert "toy v1" in capsys.readouterr().out
    loaded = svc.tracker.load("slidead-slider-toy")
    assert isinstance(loaded.model, toyfamily.Toy) and loaded.config.features.n_mels == 32
    assert loaded.config.train.batch_for("toy") == 64

    assert main(["score", "--night", NIGHT, "--family", "toy", "--no-prefect", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    n = len(summary["night_truth"])
    assert out["models"] == {"slidead-slider-toy": 1} and out["n_scored"] == n and out["n_rejected"] == 0
    with svc.db.connect(read_only=True) as con:
        (scored,) = con.execute("SELECT count(*) FROM scores WHERE family = 'toy' AND score > 0").fetchone()
    assert scored == n

    assert main(["evaluate", "--family", "toy", "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert got["family"] == "toy" and set(got["per_id"]) == {"00", "02"}
    assert 0 <= got["mean"]["auc"] <= 1

    # an unregistered name is refused by the command line, naming the registered ones
    with pytest.raises(SystemExit):
        main(["train", "--family", "nosuch", "--no-prefect"])
    err = capsys.readouterr().err
    assert "unknown family 'nosuch'" in err and "toy" in err and "vae" in err
