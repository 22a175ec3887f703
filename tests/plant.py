"""A small seeded synthetic plant for the integration tests (not a test module)."""

from __future__ import annotations

from pathlib import Path

from slidead.settings import Settings
from slidead.store.services import Services
from slidead.synth.plant import PlantSpec, generate_plant

NIGHT = "2026-11-23"


def make_plant(home: Path, **spec) -> tuple[Settings, Services, dict]:
    settings = Settings(home=home)
    svc = Services.from_settings(settings)
    defaults = dict(
        machine_type="slider",
        machine_ids=("00", "02"),
        n_train=20,
        n_eval_normal=10,
        n_eval_anomaly=10,
        nights=(NIGHT,),
        night_normal=4,
        night_anomaly=2,
        seed=7,
    )
    defaults.update(spec)
    summary = generate_plant(svc.store.put, PlantSpec(**defaults))
    return settings, svc, summary
