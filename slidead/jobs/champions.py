"""The champion model of each machine type, loaded from the registry with a clear error."""

from __future__ import annotations

from slidead.errors import ModelRegistryError, NoChampionError, SlideadError, redact
from slidead.store.services import Services
from slidead.store.tracking import LoadedModel, model_name


def load_champion(svc: Services, name: str) -> LoadedModel:
    """The champion of registered model ``name``, or a clear error: NoChampionError (none promoted),
    ModelRegistryError (MLflow unreachable, or the champion's artifacts missing or unreadable)."""
    uri = redact(svc.tracking_uri)
    try:
        tracker = svc.tracker
        tracker.client.search_registered_models(max_results=1)  # reachable at all?
    except Exception as e:  # noqa: BLE001
        raise ModelRegistryError(
            f"MLflow at {uri} is unreachable ({_short(e)}); check SLIDEAD_MLFLOW_URI and the server. "
            "Nothing was scored or written."
        ) from None
    try:
        return tracker.load(name)
    except NoChampionError:
        champ = tracker.champion_version(name)
        if champ is None:
            raise
        raise ModelRegistryError(
            f"champion of {name} (v{champ.version}) is registered in MLflow at {uri} but its model files "
            "(state_dict.pt, run_config.json, thresholds.json) are missing: retrain or re-promote a version. "
            "Nothing was scored or written."
        ) from None
    except SlideadError:
        raise
    except Exception as e:  # noqa: BLE001
        raise ModelRegistryError(
            f"could not load the champion of {name} from MLflow at {uri} ({_short(e)}). Nothing was scored or written."
        ) from None


def _short(e: BaseException, limit: int = 300) -> str:
    text = redact(f"{type(e).__name__}: {e}").replace("\n", " ")
    return text if len(text) <= limit else text[:limit] + "..."


def champions(svc: Services, family: str, machine_types: list[str]) -> dict[str, LoadedModel]:
    """The champion of ``family`` for each of ``machine_types`` (NoChampionError if one lacks it)."""
    return {model_name(t, family): load_champion(svc, model_name(t, family)) for t in machine_types}
