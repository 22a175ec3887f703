"""The outside world, wired from settings: object store, feature store, the results lake, MLflow.

``Services.from_settings(Settings())`` is the one place that turns settings into the storage
adapters every job uses; the jobs themselves take a ``Services`` value.
"""

from __future__ import annotations

from dataclasses import dataclass

from slidead.core.alarms import AlarmConfig
from slidead.core.audio import AudioConfig
from slidead.settings import Settings
from slidead.store.features import FeatureStore
from slidead.store.objects import LocalObjectStore, ObjectStore
from slidead.store.results import ResultsDB


def open_store(uri: str, endpoint_url: str | None = None) -> ObjectStore:
    """A store for a local folder path (or ``file://``) or ``s3://bucket/prefix``."""
    if uri.startswith("s3://"):
        from slidead.store.s3 import S3ObjectStore

        return S3ObjectStore(uri, endpoint_url=endpoint_url)
    if uri.startswith("file://"):
        uri = uri[len("file://") :]
    if "://" in uri:
        raise ValueError(f"store={uri!r}: expected a folder path or s3://bucket/prefix")
    return LocalObjectStore(uri)


def results_db(s: Settings) -> ResultsDB:
    """The results lake the settings name (catalog, data path, S3 endpoint)."""
    return ResultsDB(s.duckdb_path, catalog=s.catalog_uri, data_path=s.lake_data_path, s3_endpoint=s.s3_endpoint)


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
    commission_nights: int = 3  # the nightly flow commissions a provisional machine after this many nights (0: never)
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
            results_db(s),
            s.tracking_uri,
            artifact_root,
            audio=s.audio_config,
            device=s.device,
            alarms=s.alarm_config,
            commission_nights=s.commission_nights,
        )

    @property
    def tracker(self):
        if self._tracker is None:
            from slidead.store.tracking import Tracker

            self._tracker = Tracker(self.tracking_uri, self.artifact_root)
        return self._tracker
