"""Prefect deployments of slidead's flows.

- ``score/nightly``: cron ``0 2 * * *`` in ``SLIDEAD_TIMEZONE`` (default UTC); parameter
  ``night`` defaults to the night before in that timezone.
- ``retrain/ae``, ``retrain/vae`` and ``retrain/idclf`` (the machine-ID classifier, which needs
  two or more machine IDs of the type): on demand (``prefect deployment run retrain/vae``).

``deployments(timezone)`` builds them for ``prefect.serve`` (``slidead serve``: one process,
one machine); ``prefect.yaml`` beside this file declares the same deployments on the ``cpu``
and ``gpu`` work pools for ``prefect deploy``.
"""

from __future__ import annotations

NIGHTLY_CRON = "0 2 * * *"


def deployments(timezone: str = "UTC", machine_type: str = "slider") -> list:
    from prefect.schedules import Cron

    from flows.retrain import retrain
    from flows.score import score

    return [
        score.to_deployment(
            name="nightly",
            schedules=[Cron(NIGHTLY_CRON, timezone=timezone)],
            parameters={"timezone": timezone},
            description="Score the night before with each machine type's champion; write DuckDB.",
            tags=["slidead", "nightly"],
        ),
        retrain.to_deployment(
            name="ae",
            parameters={"family": "ae", "machine_type": machine_type},
            description="Retrain the seed's AE; promote it if no worse than the champion.",
            tags=["slidead"],
        ),
        retrain.to_deployment(
            name="vae",
            parameters={"family": "vae", "machine_type": machine_type},
            description="Retrain the seed's VAE; promote it if no worse than the champion.",
            tags=["slidead"],
        ),
        retrain.to_deployment(
            name="idclf",
            parameters={"family": "idclf", "machine_type": machine_type},
            description="Retrain the machine-ID classifier challenger; promote it if no worse than the champion.",
            tags=["slidead"],
        ),
    ]


def serve(timezone: str = "UTC", machine_type: str = "slider", limit: int | None = None) -> None:
    """Serve every deployment from this process, schedules included (needs PREFECT_API_URL)."""
    from prefect import serve as prefect_serve

    prefect_serve(*deployments(timezone, machine_type), limit=limit)
