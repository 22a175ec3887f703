"""The Parquet feature store: one row per clip with its log-mel matrix.

Layout under the store root (hive-partitioned, readable by pyarrow datasets and by DuckDB's
``read_parquet('.../**/*.parquet', hive_partitioning=true)``)::

    features/<feature-config-hash>/night=<YYYY-MM-DD>/machine_type=<T>/part-*.parquet
    features/<feature-config-hash>/set=<train|eval>/machine_type=<T>/part-*.parquet

Columns: ``clip_id``, ``machine_id``, ``label`` (null for drops), ``n_frames``, ``logmel``
(a list of frames, each a fixed-size list of ``n_mels`` float32), ``config_hash``, and the
clip's ``domain`` and ``attributes`` (a JSON object) when its name or sidecar gave them (see
:mod:`slidead.core.conditions`; files written before these columns read as None). Files are
written in row groups of ``ROW_GROUP_CLIPS`` clips: the unit :meth:`FeatureStore.catalog` lists
and :meth:`FeatureStore.read_unit` streams, so training can read a shuffled order of small blocks.
A file that cannot be read (half-written, corrupt) is ignored, so its clips are recomputed.
A store that fails while listing or writing raises :class:`~slidead.errors.StoreError`.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from slidead.errors import StoreError, redact

if TYPE_CHECKING:  # core.features imports torch and torchaudio: not needed to open a store
    from slidead.core.features import FeatureConfig

ROW_GROUP_CLIPS = 32  # clips per Parquet row group (the block streaming training reads)
_META = ["clip_id", "machine_id", "label", "n_frames"]
_CONDITIONS = ["domain", "attributes"]  # absent from files written before they existed


@dataclass
class FeatureRow:
    clip_id: str
    machine_id: str
    label: str | None
    logmel: np.ndarray  # (n_mels, T) float32
    domain: str | None = None  # 'source' | 'target' when the clip says
    attributes: str | None = None  # its operating conditions, a JSON object, when it says


@dataclass(frozen=True)
class StoredClip:
    """Where one clip's log-mel lives in the store, and its facts, without the log-mel itself."""

    clip_id: str
    machine_id: str
    label: str | None
    n_frames: int
    path: str
    row_group: int
    row: int  # position within the row group


def read_parquet(
    filesystem: pafs.FileSystem, path: str, columns: list[str] | None = None, attempts: int = 3, delay_s: float = 0.2
) -> pa.Table:
    """``pq.read_table`` that retries what a flaky store does (OSError other than a missing file);
    a missing file (FileNotFoundError) or a corrupt one (ArrowInvalid) raises at once."""
    for attempt in range(1, attempts + 1):
        try:
            return pq.read_table(path, columns=columns, filesystem=filesystem)
        except (FileNotFoundError, pa.ArrowInvalid):
            raise
        except OSError:
            if attempt == attempts:
                raise
            time.sleep(delay_s * 2 ** (attempt - 1))
    raise AssertionError("unreachable")


def partition(split: str, night: str | None = None) -> str:
    if split == "drop":
        if not night:
            raise ValueError("drop features need a night")
        return f"night={night}"
    if split in ("train", "eval"):
        return f"set={split}"
    raise ValueError(f"split={split!r}: expected drop, train or eval")


def _schema(n_mels: int) -> pa.Schema:
    return pa.schema(
        [
            ("clip_id", pa.string()),
            ("machine_id", pa.string()),
            ("label", pa.string()),
            ("n_frames", pa.int32()),
            ("logmel", pa.list_(pa.list_(pa.float32(), n_mels))),
            ("config_hash", pa.string()),
            ("domain", pa.string()),
            ("attributes", pa.string()),
        ]
    )


class FeatureStore:
    def __init__(self, filesystem: pafs.FileSystem, root: str):
        self.fs = filesystem
        self.root = root.rstrip("/")

    @classmethod
    def local(cls, store_root: str) -> "FeatureStore":
        return cls(pafs.LocalFileSystem(), f"{store_root.rstrip('/')}/features")

    def directory(self, config: FeatureConfig, part: str, machine_type: str) -> str:
        return f"{self.root}/{config.hash}/{part}/machine_type={machine_type}"

    def uri(self, config: FeatureConfig, part: str, machine_type: str) -> str:
        """:meth:`directory` as a URI (``file:///...`` or ``s3://bucket/...``)."""
        d = self.directory(config, part, machine_type)
        return f"s3://{d}" if self.fs.type_name == "s3" else Path(d).resolve().as_uri()

    def _files(self, directory: str) -> list[str]:
        try:
            infos = self.fs.get_file_info(pafs.FileSelector(directory, allow_not_found=True))
        except FileNotFoundError:
            return []
        except OSError as e:
            raise StoreError(redact(f"listing features under {directory} failed: {e}")) from None
        return sorted(i.path for i in infos if i.type == pafs.FileType.File and i.path.endswith(".parquet"))

    def write(self, config: FeatureConfig, part: str, machine_type: str, rows: Iterable[FeatureRow]) -> str | None:
        rows = list(rows)
        if not rows:
            return None
        n_mels = config.n_mels
        frames = [np.ascontiguousarray(r.logmel.T, dtype=np.float32) for r in rows]  # (T, n_mels)
        for r, f in zip(rows, frames):
            if f.shape[1] != n_mels:
                raise ValueError(f"clip {r.clip_id}: {f.shape[1]} mels, config has {n_mels}")
        counts = np.array([f.shape[0] for f in frames], dtype=np.int32)
        flat = pa.array(np.concatenate([f.ravel() for f in frames]), type=pa.float32())
        fsl = pa.FixedSizeListArray.from_arrays(flat, n_mels)
        offsets = pa.array(np.r_[0, np.cumsum(counts)].astype(np.int32))
        logmel = pa.ListArray.from_arrays(offsets, fsl)
        table = pa.Table.from_arrays(
            [
                pa.array([r.clip_id for r in rows]),
                pa.array([r.machine_id for r in rows]),
                pa.array([r.label for r in rows], type=pa.string()),
                pa.array(counts),
                logmel,
                pa.array([config.hash] * len(rows)),
                pa.array([r.domain for r in rows], type=pa.string()),
                pa.array([r.attributes for r in rows], type=pa.string()),
            ],
            schema=_schema(n_mels),
        )
        directory = self.directory(config, part, machine_type)
        name = f"part-{uuid.uuid4().hex[:12]}.parquet"
        tmp, final = f"{directory}/.tmp-{name}", f"{directory}/{name}"
        try:
            self.fs.create_dir(directory, recursive=True)
            pq.write_table(
                table,
                tmp,
                filesystem=self.fs,
                compression="lz4",
                row_group_size=ROW_GROUP_CLIPS,
                # the log-mel floats get neither a dictionary (nearly every value is distinct: the
                # attempt and its fallback cost time and size) nor min/max statistics (nothing
                # filters on them): a shard's write took 3.5x as long with both, its file 13% larger
                use_dictionary=_META[1:3] + ["config_hash"],
                write_statistics=_META + ["config_hash"],
            )
            self.fs.move(tmp, final)
        except OSError as e:
            raise StoreError(redact(f"writing features under {directory} failed: {e}")) from None
        return final

    def read(
        self, config: FeatureConfig, part: str, machine_type: str, clip_ids: set[str] | None = None
    ) -> dict[str, FeatureRow]:
        """Rows for this config and partition (only ``clip_ids`` if given), keyed by clip_id."""
        out: dict[str, FeatureRow] = {}
        for path in self._files(self.directory(config, part, machine_type)):
            try:
                table = read_parquet(self.fs, path)
            except Exception:  # half-written or corrupt: its clips get recomputed
                continue
            ids = table.column("clip_id").to_pylist()
            want = [i for i, c in enumerate(ids) if (clip_ids is None or c in clip_ids) and c not in out]
            if not want:
                continue
            for row in _rows(table.take(pa.array(want)), config.n_mels):
                out[row.clip_id] = row
        return out

    def catalog(
        self, config: FeatureConfig, part: str, machine_type: str, clip_ids: set[str] | None = None
    ) -> list[StoredClip]:
        """Every clip of the partition (only ``clip_ids`` if given) with its place in the store,
        reading the small columns only. A clip stored twice is listed once, at its first copy in
        file order (as :meth:`read` keeps it); unreadable files are skipped."""
        out: list[StoredClip] = []
        seen: set[str] = set()
        for path in self._files(self.directory(config, part, machine_type)):
            try:
                found = []
                with self._open(path) as f:
                    pf = pq.ParquetFile(f)
                    for rg in range(pf.num_row_groups):
                        t = pf.read_row_group(rg, columns=_META)
                        for j, (cid, mid, lab, n) in enumerate(zip(*(t.column(c).to_pylist() for c in _META))):
                            found.append(StoredClip(cid, mid, lab, int(n), path, rg, j))
            except Exception:  # noqa: BLE001 - half-written or corrupt: as read() does, skip it
                continue
            for c in found:
                if c.clip_id not in seen and (clip_ids is None or c.clip_id in clip_ids):
                    seen.add(c.clip_id)
                    out.append(c)
        return out

    def read_unit(
        self,
        config: FeatureConfig,
        path: str,
        row_group: int,
        rows: Iterable[int] | None = None,
        batch_clips: int = ROW_GROUP_CLIPS,
    ) -> Iterator[list[FeatureRow]]:
        """The rows at positions ``rows`` (all if None) of one row group, in blocks of at most
        ``batch_clips`` clips. Streams: memory is one block, whatever the row group's size."""
        want = None if rows is None else set(rows)
        try:
            with self._open(path) as f:
                pf = pq.ParquetFile(f, buffer_size=1 << 20, pre_buffer=False)
                offset = 0
                extra = [c for c in _CONDITIONS if c in pf.schema_arrow.names]
                for batch in pf.iter_batches(
                    batch_size=batch_clips, row_groups=[row_group], columns=_META + extra + ["logmel"]
                ):
                    n = batch.num_rows
                    pick = [j for j in range(n) if want is None or offset + j in want]
                    offset += n
                    if pick:
                        yield _rows(batch.take(pa.array(pick)), config.n_mels)
        except OSError as e:
            raise StoreError(redact(f"reading features from {path} failed: {e}")) from None

    def _open(self, path: str):
        for attempt in range(1, 4):
            try:
                return self.fs.open_input_file(path)
            except FileNotFoundError:
                raise
            except OSError:
                if attempt == 3:
                    raise
                time.sleep(0.2 * 2 ** (attempt - 1))
        raise AssertionError("unreachable")

    def existing(self, config: FeatureConfig, part: str, machine_type: str) -> set[str]:
        ids: set[str] = set()
        for path in self._files(self.directory(config, part, machine_type)):
            try:
                ids.update(read_parquet(self.fs, path, ["clip_id"]).column("clip_id").to_pylist())
            except Exception:
                continue
        return ids


def _rows(table, n_mels: int) -> list[FeatureRow]:
    """FeatureRows of a table or record batch with the store's columns."""
    counts = table.column("n_frames").to_numpy()
    col = table.column("logmel")
    col = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    values = col.flatten().flatten().to_numpy(zero_copy_only=False).reshape(-1, n_mels)
    starts = np.r_[0, np.cumsum(counts)]
    names = table.schema.names
    n = len(counts)
    cond = [table.column(c).to_pylist() if c in names else [None] * n for c in _CONDITIONS]
    return [
        FeatureRow(cid, mid, lab, np.ascontiguousarray(values[starts[j] : starts[j + 1]].T), dom, attrs)
        for j, (cid, mid, lab, dom, attrs) in enumerate(
            zip(
                table.column("clip_id").to_pylist(),
                table.column("machine_id").to_pylist(),
                table.column("label").to_pylist(),
                *cond,
            )
        )
    ]
