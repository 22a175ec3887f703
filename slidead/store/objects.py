"""Object stores: where WAV clips (and Parquet features) live.

A store is anything with the small :class:`ObjectStore` protocol, keys being relative
``/``-separated paths (see :mod:`slidead.layout`). ``open_store(uri)`` picks the
implementation: a local folder by default; ``s3://bucket/prefix`` for S3-compatible servers.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol, runtime_checkable

from ..layout import safe_key


@runtime_checkable
class ObjectStore(Protocol):
    uri: str

    def list(self, prefix: str = "") -> Iterator[str]: ...
    def get(self, key: str) -> bytes: ...
    def put(self, key: str, data: bytes) -> None: ...
    def exists(self, key: str) -> bool: ...
    def uri_for(self, key: str) -> str: ...


class LocalObjectStore:
    """A folder in the store layout. Writes are atomic (temp file + rename)."""

    def __init__(self, root: str | Path):
        self.root = Path(root).expanduser().resolve()
        self.uri = str(self.root)

    def _path(self, key: str) -> Path:
        p = (self.root / safe_key(key)).resolve()
        if self.root not in p.parents:
            raise ValueError(f"key {key!r} escapes the store root")
        return p

    def list(self, prefix: str = "") -> Iterator[str]:
        if prefix:
            safe_key(prefix.rstrip("/") or prefix)  # a prefix like "../" must not list outside the root
        base = self.root / prefix if prefix else self.root
        start = base if base.is_dir() else base.parent
        if not start.exists():
            return
        for dirpath, dirnames, filenames in os.walk(start):
            dirnames.sort()
            for name in sorted(filenames):
                if name.startswith(".tmp-"):
                    continue
                key = Path(dirpath, name).relative_to(self.root).as_posix()
                if key.startswith(prefix):
                    yield key

    def get(self, key: str) -> bytes:
        return self._path(key).read_bytes()

    def put(self, key: str, data: bytes) -> None:
        p = self._path(key)
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_name(f".tmp-{os.getpid()}-{p.name}")
        tmp.write_bytes(data)
        os.replace(tmp, p)

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def uri_for(self, key: str) -> str:
        return str(self.root / key)

    def local_path(self, key: str) -> Path:
        return self._path(key)


def open_store(uri: str, endpoint_url: str | None = None) -> ObjectStore:
    """A store for a local folder path (or ``file://``) or ``s3://bucket/prefix``."""
    if uri.startswith("s3://"):
        from .s3 import S3ObjectStore

        return S3ObjectStore(uri, endpoint_url=endpoint_url)
    if uri.startswith("file://"):
        uri = uri[len("file://"):]
    if "://" in uri:
        raise ValueError(f"store={uri!r}: expected a folder path or s3://bucket/prefix")
    return LocalObjectStore(uri)
