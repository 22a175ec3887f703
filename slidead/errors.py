"""Domain errors, in one place.

Every error a user can meet carries a short machine-readable ``reason`` (stored in the
``rejected`` table for clips) and a human ``detail``.
"""

from __future__ import annotations

import os
import re


class SlideadError(Exception):
    """Base class for every error slidead raises on purpose."""


class AudioError(SlideadError):
    """A clip that cannot be scored. ``reason`` is a short slug, ``detail`` says why."""

    def __init__(self, reason: str, detail: str = ""):
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason}: {detail}" if detail else reason)


class LayoutError(SlideadError, ValueError):
    """An object key that does not fit the store layout (or would escape the store root)."""


class StoreError(SlideadError):
    """The object store failed (unreachable, throttling or 5xx after retries, access denied).

    Not a property of one clip: the shard stops, the run fails, and a re-run carries on."""


class NoChampionError(SlideadError):
    """Scoring was asked for but no model version carries the ``champion`` alias."""

    def __init__(self, model_name: str):
        self.model_name = model_name
        family = model_name.rsplit("-", 1)[-1]
        machine_type = model_name[len("slidead-") : model_name.rfind("-")]
        super().__init__(
            f"no champion for registered model {model_name!r}: run retrain first, e.g. "
            f"`slidead train --family {family} --machine-type {machine_type}` or "
            f"`prefect deployment run retrain/{family}`"
        )


class ModelRegistryError(SlideadError):
    """MLflow could not be reached, or the champion's artifacts could not be read."""


class NightBusyError(SlideadError):
    """Another run holds the lock on the same night and family."""


class DatabaseBusyError(SlideadError):
    """The DuckDB file is locked by another process (an analyst's shell, another run)."""


class NotEnoughDataError(SlideadError):
    """Training or evaluation found too few clips to do its job."""


# Values of these variables never appear in a message slidead writes (logs, errors, `runs.detail`).
SECRET_ENV = (
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "MLFLOW_TRACKING_PASSWORD",
    "MLFLOW_TRACKING_TOKEN",
    "MINIO_ROOT_PASSWORD",
    "PREFECT_API_KEY",
)
_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)[^/@\s]+@")


def redact(text: str) -> str:
    """``text`` without URL user-info (``scheme://user:pass@`` -> ``scheme://***@``) and without the
    value of any secret environment variable (:data:`SECRET_ENV`)."""
    text = _USERINFO.sub(r"\g<scheme>***@", str(text))
    for name in SECRET_ENV:
        value = os.environ.get(name)
        if value and len(value) >= 4:
            text = text.replace(value, "***")
    return text


class LabelError(SlideadError, ValueError):
    """An unknown clip, an ambiguous prefix, a verdict not in VERDICTS, or a clip that is not
    a plant clip."""
