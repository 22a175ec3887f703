"""Settings from the environment, in one place.

Everything else in the library takes values, not settings: the CLI and the flows read
``Settings()`` once and pass what they need down.

docs/configuration.md is generated from this class (``make docs``): a field's description is
the comment above it and at the end of its line.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from slidead.core.family_names import built_in_families


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SLIDEAD_", extra="ignore")

    home: Path = Path("./slidead-data")  # where everything lives: the store, MLflow, DuckDB, logs (docs/data.md)
    store: str | None = None  # the object store: a folder or s3://bucket/prefix; default $SLIDEAD_HOME/store
    # an S3-compatible server (MinIO, ...); unset: AWS. Credentials come from the standard AWS chain,
    # never from slidead's settings, and are never logged or stored
    s3_endpoint: str | None = None
    mlflow_uri: str | None = None  # MLflow tracking and registry; default sqlite:///$SLIDEAD_HOME/mlflow.db
    # the single results file of earlier versions (default $SLIDEAD_HOME/slidead.duckdb): moved into
    # the results lake on first use (docs/ducklake.md)
    duckdb: str | None = None
    # the results lake's catalog: a SQLite file (default $SLIDEAD_HOME/slidead.ducklake), or
    # postgres:<conninfo> for several hosts
    catalog: str | None = None
    # where a new results lake puts its Parquet files: default $SLIDEAD_STORE/lake/ (a folder or s3://)
    lake_data: str | None = None
    family: str = "vae"  # the model family score and commission use when no --family is given
    device: str = "auto"  # auto (CUDA when present), cpu, cuda or cuda:N: features, training, scoring
    dask_address: str | None = None  # a Dask scheduler (tcp://host:8786): shards fan out to its workers
    dask_workers: int = 0  # >0 and no address: a local Dask cluster of this many processes
    alarm_k: int = 5  # a machine's flagged alarm: k of its last n clips flagged
    alarm_n: int = 10  # the n of that window, which runs across nights
    drift_warmup_nights: int = 3  # first nights with a model version: a machine's reference for drift
    drift_slack: float = 0.5  # the drift CUSUM's allowance per night, in standard errors of a median
    drift_limit: float = 5.0  # the CUSUM level that raises the drift alarm
    # machine alarms a week a plant accepts from a healthy machine, with clips_per_night and alarm_k of alarm_n:
    false_alarms_per_week: float | None = None  # per machine: sets the clip threshold's quantile (unset: 0.9)
    clips_per_night: int = 20  # per machine, for false_alarms_per_week
    commission_nights: int = 3  # first nights of a machine its thresholds are commissioned on (nightly; 0: never)
    timezone: str = "UTC"  # of the 02:00 nightly schedule and of "the night before"
    # ae/vae trained with --metric mahalanobis on clips that carry a target domain: keep that domain's
    # statistics apart and score each clip under the nearer (docs/dcase.md; off: it measured worse)
    domain_statistics: bool = False
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
        if v in built_in_families():  # read from the family files, without importing torch
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
        SLIDEAD_CLIPS_PER_NIGHT (docs/thresholds.md: alarms a week into a clip rate)."""
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
