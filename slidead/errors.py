"""Domain errors, in one place.

Every error a user can meet carries a short machine-readable ``reason`` (stored in the
``rejected`` table for clips) and a human ``detail``.
"""

from __future__ import annotations


class SlideadError(Exception):
    """Base class for every error slidead raises on purpose."""


class AudioError(SlideadError):
    """A clip that cannot be scored. ``reason`` is a short slug, ``detail`` says why."""

    def __init__(self, reason: str, detail: str = ""):
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason}: {detail}" if detail else reason)


class LayoutError(SlideadError):
    """An object key that does not fit the store layout (or would escape the store root)."""


class NoChampionError(SlideadError):
    """Scoring was asked for but no model version carries the ``champion`` alias."""

    def __init__(self, model_name: str):
        self.model_name = model_name
        family = model_name.rsplit("-", 1)[-1]
        machine_type = model_name[len("slidead-"):model_name.rfind("-")]
        super().__init__(
            f"no champion for registered model {model_name!r}: run retrain first, e.g. "
            f"`slidead train --family {family} --machine-type {machine_type}` or "
            f"`prefect deployment run retrain/{family}`"
        )


class DatabaseBusyError(SlideadError):
    """The DuckDB file is locked by another process (an analyst's shell, another run)."""


class NotEnoughDataError(SlideadError):
    """Training or evaluation found too few clips to do its job."""
