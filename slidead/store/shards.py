"""Shard results: what one worker scored, as Parquet in the store, before the DuckDB load.

``results/night=<D>/model=<name>/version=<v>/<kind>-<shard>.parquet`` with kinds ``scores``,
``clips``, ``rejected`` and ``arrivals`` (one row per object the shard listed: the night's
ledger). A shard is named by a hash of its clip keys and their tags (ETag, or size and mtime),
so a re-run after a crash finds the shards already written and loads them instead of scoring
them again, and an object replaced by new bytes makes a new shard. A
store that fails while checking or writing a shard raises :class:`~slidead.errors.StoreError`.
"""

from __future__ import annotations

import hashlib

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from slidead.errors import StoreError, redact
from slidead.store.features import read_parquet

KINDS = ("scores", "clips", "rejected", "arrivals")


def shard_id(keys: list[str], tags: list[str | None] | None = None) -> str:
    """A shard's name: a hash of its keys and, where the listing gave them, their tags."""
    entries = keys if tags is None else [k if t is None else f"{k}\t{t}" for k, t in zip(keys, tags)]
    return hashlib.sha256("\n".join(sorted(entries)).encode()).hexdigest()[:16]


class ShardStore:
    def __init__(self, filesystem: pafs.FileSystem, root: str):
        self.fs = filesystem
        self.root = root.rstrip("/")

    def directory(self, night: str, model_name: str, version: int) -> str:
        return f"{self.root}/night={night}/model={model_name}/version={version}"

    def path(self, night, model_name, version, kind: str, shard: str) -> str:
        if kind not in KINDS:
            raise ValueError(f"kind={kind!r}: expected one of {KINDS}")
        return f"{self.directory(night, model_name, version)}/{kind}-{shard}.parquet"

    def write(self, night, model_name, version, shard: str, tables: dict[str, pa.Table]) -> None:
        """Write the shard's tables; ``scores`` last, so its presence means the shard is whole."""
        directory = self.directory(night, model_name, version)
        try:
            self.fs.create_dir(directory, recursive=True)
            for kind in ("clips", "rejected", "arrivals", "scores"):
                final = self.path(night, model_name, version, kind, shard)
                tmp = f"{directory}/.tmp-{kind}-{shard}.parquet"
                pq.write_table(tables[kind], tmp, filesystem=self.fs)
                self.fs.move(tmp, final)
        except OSError as e:
            raise StoreError(redact(f"writing shard {shard} under {directory} failed: {e}")) from None

    def done(self, night, model_name, version, shard: str) -> bool:
        path = self.path(night, model_name, version, "scores", shard)
        try:
            info = self.fs.get_file_info(path)
        except OSError as e:
            raise StoreError(redact(f"checking shard {path} failed: {e}")) from None
        return info.type == pafs.FileType.File

    def read(self, night, model_name, version, shard: str) -> dict[str, pa.Table] | None:
        """The shard's tables, or None if any is missing or unreadable (then it is recomputed)."""
        try:
            return {k: read_parquet(self.fs, self.path(night, model_name, version, k, shard)) for k in KINDS}
        except (OSError, pa.ArrowInvalid):
            return None
