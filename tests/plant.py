"""A small seeded synthetic plant for the integration tests (not a test module).

``make_plant(home, **spec)`` generates one into ``home`` (settings, services, the generator's
summary). :class:`TrainedPlant` is a plant whose families are trained on first request and
then shared: the session fixtures in ``conftest.py`` hand one to every module that tests
something other than training itself.
"""

from __future__ import annotations

from pathlib import Path

from slidead.settings import Settings
from slidead.store.services import Services
from slidead.synth.plant import PlantSpec, generate_plant

NIGHT = "2026-11-23"

# the plant the behaviour tests detect faults on: clearer faults than the default, two IDs
BEHAVIOUR_SPEC = dict(n_train=24, n_eval_normal=12, n_eval_anomaly=12, severity=(0.6, 1.0), seed=11)


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


class TrainedPlant:
    """A generated plant whose families are trained once each, on first request.

    ``retrain(family, epochs, **options)`` runs :func:`slidead.shell.commands.run_retrain` (in
    this process, no Prefect) the first time it is asked for that family with those options and
    returns the same summary every later time, so modules that share the plant share the
    training. Every retrain registers a version and may change the family's champion: a test
    that needs a particular version asks ``retrain`` for it, never assumes what others trained.
    """

    def __init__(self, home: Path, **spec):
        self.settings, self.svc, self.summary = make_plant(home, **spec)
        self._runs: dict[tuple, dict] = {}

    def retrain(self, family: str, epochs: int, **options) -> dict:
        from slidead.shell.commands import run_retrain

        # the seed's thresholds unless asked: these modules test detectors, alarms and reports, not
        # calibration (tests/test_conformal.py tests every family at its default), and the default's
        # cross-conformal fold models would train each network six times
        options.setdefault("thresholds", "validation")
        key = (family, epochs, tuple(sorted(options.items())))
        if key not in self._runs:
            self._runs[key] = run_retrain(self.settings, family, "slider", epochs=epochs, use_prefect=False, **options)
        return self._runs[key]
