"""The deployments slidead serves, and the ones prefect.yaml declares, agree."""

from __future__ import annotations

from pathlib import Path

import yaml

from deployments import NIGHTLY_CRON, deployments

ROOT = Path(__file__).resolve().parents[1]


def test_served_deployments_cover_every_family_and_the_nightly_schedule():
    deps = {d.name: d for d in deployments("Europe/Berlin", "slider")}
    assert set(deps) == {"nightly", "ae", "vae", "idclf"}
    for family in ("ae", "vae", "idclf"):
        assert deps[family].parameters == {"family": family, "machine_type": "slider"}
    [schedule] = deps["nightly"].schedules
    assert schedule.schedule.cron == NIGHTLY_CRON and schedule.schedule.timezone == "Europe/Berlin"


def test_prefect_yaml_declares_the_same_retrain_deployments():
    spec = yaml.safe_load((ROOT / "deployments" / "prefect.yaml").read_text())
    retrains = {
        d["name"]: d["parameters"]["family"]
        for d in spec["deployments"]
        if d["entrypoint"] == "flows/retrain.py:retrain"
    }
    assert retrains == {"ae": "ae", "vae": "vae", "idclf": "idclf"}
