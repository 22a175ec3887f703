"""Settings from the environment, in one place.

Everything else in the library takes values, not settings: the CLI and the flows read
``Settings()`` once and pass what they need down.

| variable | default |
| --- | --- |
| ``SLIDEAD_HOME`` | ``./slidead-data`` |
| ``SLIDEAD_STORE`` | ``$SLIDEAD_HOME/store`` (a folder, or ``s3://bucket/prefix``) |
| ``SLIDEAD_S3_ENDPOINT`` | unset (AWS); set for MinIO or any S3-compatible server |
| ``SLIDEAD_MLFLOW_URI`` | ``sqlite:///$SLIDEAD_HOME/mlflow.db`` |
| ``SLIDEAD_DUCKDB`` | ``$SLIDEAD_HOME/slidead.duckdb``: the single results file of earlier versions, moved into the lake on first use |
| ``SLIDEAD_CATALOG`` | the results lake's catalog: ``$SLIDEAD_HOME/slidead.ducklake`` (SQLite), or ``postgres:<conninfo>`` for several hosts |
| ``SLIDEAD_LAKE_DATA`` | where a new results lake puts its Parquet files: ``$SLIDEAD_STORE/lake/`` (a folder or ``s3://``) |
| ``SLIDEAD_FAMILY`` | ``vae`` (family used by ``score`` when none is given) |
| ``SLIDEAD_DEVICE`` | ``auto`` |
| ``SLIDEAD_DASK_ADDRESS`` | unset; a Dask scheduler address to score shards on its workers |
| ``SLIDEAD_DASK_WORKERS`` | ``0``; with no address, a local Dask cluster of this many processes |
| ``SLIDEAD_ALARM_K`` / ``SLIDEAD_ALARM_N`` | ``5`` / ``10``: a machine alarm when k of its last n clips are flagged |
| ``SLIDEAD_DRIFT_WARMUP_NIGHTS`` | ``3``: nights that set a machine's reference level for drift |
| ``SLIDEAD_DRIFT_SLACK`` / ``SLIDEAD_DRIFT_LIMIT`` | ``0.5`` / ``5.0``: the drift CUSUM's allowance and level |
"""

from __future__ import annotations

from pathlib import Path

from pydantic import field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# the families slidead.core.models registers itself: a name among them is valid without
# importing the registry (torch, ~1 s); any other name is looked up there
BUILT_IN_FAMILIES = ("ae", "vae", "idclf")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SLIDEAD_", extra="ignore")

    home: Path = Path("./slidead-data")
    store: str | None = None
    s3_endpoint: str | None = None
    mlflow_uri: str | None = None
    duckdb: str | None = None
    catalog: str | None = None  # the results lake's catalog: a SQLite file, or postgres:<conninfo>
    lake_data: str | None = None  # the results lake's data files (a new lake; an existing one knows its own)
    family: str = "vae"
    device: str = "auto"
    dask_address: str | None = None  # a Dask scheduler (tcp://host:8786): shards fan out to its workers
    dask_workers: int = 0  # >0 and no address: a local Dask cluster of this many processes
    alarm_k: int = 5
    alarm_n: int = 10
    drift_warmup_nights: int = 3
    drift_slack: float = 0.5
    drift_limit: float = 5.0
    false_alarms_per_week: float | None = None  # per machine: sets the clip threshold's quantile
    clips_per_night: int = 20  # per machine, for false_alarms_per_week
    commission_nights: int = 3  # first nights of a machine that `slidead commission` fits its threshold on
    timezone: str = "UTC"  # of the 02:00 nightly schedule and of "the night before"
    max_clip_mb: float = 64.0  # a larger object is rejected from its header, never read whole

    @field_validator("max_clip_mb")
    @classmethod
    def _max_clip(cls, v: float) -> float:
        if not v > 0:
            raise ValueError(f"SLIDEAD_MAX_CLIP_MB={v!r}: expected a size in MB above 0")
        return v

    @property
    def audio_config(self):
        from slidead.core.audio import AudioConfig

        return AudioConfig(max_bytes=int(self.max_clip_mb * 1e6))

    @field_validator("family")
    @classmethod
    def _family(cls, v: str) -> str:
        if v in BUILT_IN_FAMILIES:
            return v
        from slidead.core.models import families  # the registry (imports torch: only for a plug-in's name)

        if v not in families():
            raise ValueError(f"SLIDEAD_FAMILY={v!r}: expected one of {families()}")
        return v

    @field_validator("device")
    @classmethod
    def _device(cls, v: str) -> str:
        if v not in ("auto", "cpu", "cuda") and not v.startswith("cuda:"):
            raise ValueError(f"SLIDEAD_DEVICE={v!r}: expected auto, cpu, cuda or cuda:N")
        return v

    @property
    def alarm_config(self):
        from slidead.core.alarms import AlarmConfig

        return AlarmConfig(self.alarm_k, self.alarm_n, self.drift_warmup_nights, self.drift_slack, self.drift_limit)

    def threshold_quantile(self) -> float:
        """The quantile of the normal scores a threshold sits at: 0.9 (the DCASE baselines'),
        or what SLIDEAD_FALSE_ALARMS_PER_WEEK asks for with the k-of-n alarm and
        SLIDEAD_CLIPS_PER_NIGHT (see README: alarms per week into a clip rate)."""
        if self.false_alarms_per_week is None:
            return 0.9
        from slidead.core.alarms import clip_rate_for

        return 1.0 - clip_rate_for(self.false_alarms_per_week, 7 * self.clips_per_night, self.alarm_k, self.alarm_n)

    @property
    def home_dir(self) -> Path:
        return self.home.expanduser().resolve()

    @property
    def store_uri(self) -> str:
        return self.store or str(self.home_dir / "store")

    @property
    def tracking_uri(self) -> str:
        return self.mlflow_uri or f"sqlite:///{self.home_dir / 'mlflow.db'}"

    @property
    def artifact_root(self) -> str:
        return str(self.home_dir / "mlartifacts")

    @property
    def duckdb_path(self) -> str:
        return self.duckdb or str(self.home_dir / "slidead.duckdb")

    @property
    def catalog_uri(self) -> str:
        """The results lake's catalog: SLIDEAD_CATALOG, or a SQLite file beside the old DuckDB file."""
        return self.catalog or str(Path(self.duckdb_path).with_suffix(".ducklake"))

    @property
    def lake_data_path(self) -> str:
        """Where a new results lake writes its Parquet files: beside the features in the store."""
        return self.lake_data or self.store_uri.rstrip("/") + "/lake/"
