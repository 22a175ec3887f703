"""How a command's failure reaches a person: one sentence on the terminal, the traceback in a file.

:func:`error_sentence` turns any exception into one line (pydantic's settings errors as
``SLIDEAD_X: message``; a missing champion also names the families that have one);
:func:`save_traceback` writes the traceback to ``$SLIDEAD_HOME/logs/<command>-<time>.log``.
"""

from __future__ import annotations

import os

from slidead.settings import Settings
from slidead.shell.commands import services


def error_sentence(e: BaseException, settings: Settings | None = None) -> str:
    """``e`` as one line: pydantic's settings errors as ``field: message``; a missing champion
    also names the families that do have one for the machine type."""
    from slidead.errors import NoChampionError

    errors = getattr(e, "errors", None)
    if callable(errors) and type(e).__name__ == "ValidationError":
        try:
            text = "; ".join(
                f"SLIDEAD_{'_'.join(str(p) for p in err.get('loc', ())).upper()}: {err.get('msg')}" for err in errors()
            )
        except Exception:  # noqa: BLE001
            text = str(e)
    else:
        text = str(e) or type(e).__name__
    text = " ".join(text.split())
    if isinstance(e, NoChampionError) and settings is not None:
        others = _champion_families(settings, e.model_name)
        if others:
            text += f". Champions exist for: {', '.join(others)}; use --family {others[0]}"
    return text if len(text) <= 600 else text[:597] + "..."


def _champion_families(settings: Settings, model_name: str) -> list[str]:
    """Families with a champion for the machine type of ``model_name`` (best effort: [] on any error)."""
    try:
        from slidead.core.models import families
        from slidead.store.tracking import model_name as name_of

        machine_type = model_name[len("slidead-") : model_name.rfind("-")]
        tracker = services(settings).tracker
        return [
            f
            for f in families()
            if name_of(machine_type, f) != model_name and tracker.champion_version(name_of(machine_type, f))
        ]
    except Exception:  # noqa: BLE001 - a hint, never a second error
        return []


def save_traceback(settings: Settings | None, command: str) -> str | None:
    """Write the current exception's traceback to ``$SLIDEAD_HOME/logs/``; its path, or None."""
    import datetime as dt
    import traceback
    from pathlib import Path

    try:
        home = settings.home_dir if settings is not None else Path(os.environ.get("SLIDEAD_HOME", "./slidead-data"))
        logs = Path(home) / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        path = logs / f"{command}-{dt.datetime.now():%Y%m%d-%H%M%S}-{os.getpid()}.log"
        from slidead.errors import redact

        path.write_text(redact(traceback.format_exc()))
        return str(path)
    except Exception:  # noqa: BLE001 - an unwritable home must not hide the error itself
        return None
