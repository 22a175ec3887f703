"""Library recipe steps as Prefect tasks (the ``steps`` a flow passes to a recipe)."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NONE


def as_tasks(retries: dict[str, int], delay_s: float):
    """A ``steps`` callable that runs step ``name`` as a task named after it, with
    ``retries[name]`` retries (0 when not listed) ``delay_s`` apart."""

    def run(name, fn, *args, **kwargs):
        return task(fn, name=name, retries=retries.get(name, 0), retry_delay_seconds=delay_s, cache_policy=NONE)(
            *args, **kwargs
        )

    return run
