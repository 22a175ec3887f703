"""The outside world, wired from settings: object store, feature store, DuckDB, MLflow.

``Services.from_settings(Settings())`` is the one place that turns settings into the storage
adapters every job uses; the jobs themselves take a ``Services`` value.
"""

from __future__ import annotations

from dataclasses import dataclass

from slidead.core.alarms import AlarmConfig
from slidead.core.audio import AudioConfig
from slidead.settings import Settings
from slidead.store.features import FeatureStore
from slidead.store.objects import LocalObjectStore, ObjectStore, open_store
from slidead.store.results import ResultsDB


@dataclass
class Services:
    store: ObjectStore
    features: FeatureStore
    db: ResultsDB
    tracking_uri: str
    artifact_root: str | None = None
    audio: AudioConfig = AudioConfig()
    device: str = "auto"
    alarms: AlarmConfig = AlarmConfig()
    _tracker: object = None

    @classmethod
    def from_settings(cls, s: Settings) -> "Services":
        store = open_store(s.store_uri, s.s3_endpoint)
        if isinstance(store, LocalObjectStore):
            fstore = FeatureStore.local(store.uri)
        else:
            fstore = store.feature_store()
        artifact_root = s.artifact_root if s.tracking_uri.startswith("sqlite:") else None
        return cls(
            store,
            fstore,
            ResultsDB(s.duckdb_path),
            s.tracking_uri,
            artifact_root,
            audio=s.audio_config,
            device=s.device,
            alarms=s.alarm_config,
        )

    @property
    def tracker(self):
        if self._tracker is None:
            from slidead.store.tracking import Tracker

            self._tracker = Tracker(self.tracking_uri, self.artifact_root)
        return self._tracker
