"""Object stores: where WAV clips (and Parquet features) live, and a lease lock on one key.

A store is anything with the small :class:`ObjectStore` protocol, keys being relative
``/``-separated paths (see :mod:`slidead.layout`). ``slidead.store.services.open_store(uri)`` picks the
implementation: a local folder by default; ``s3://bucket/prefix`` for S3-compatible servers.

``get`` raises ``FileNotFoundError`` for a missing object (a property of that clip) and
:class:`~slidead.errors.StoreError` when the store itself fails (after retries): the caller
stops rather than marking clips unreadable. ``read_versioned``/``put_if`` are a compare-and-swap
on one key (an ETag on S3, a content hash under ``flock`` locally); :class:`Lease` builds a lock
that separate processes on separate hosts can share on it, with a heartbeat so that a crashed
holder never blocks for longer than ``ttl_s``.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import hashlib
import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol, runtime_checkable

from slidead.errors import LayoutError, StoreError
from slidead.layout import ObjectInfo, safe_key


@runtime_checkable
class ObjectStore(Protocol):
    uri: str

    def list(self, prefix: str = "") -> Iterator[str]: ...
    def list_info(self, prefix: str = "") -> Iterator[ObjectInfo]: ...
    def get(self, key: str) -> bytes: ...
    def get_head(self, key: str, n: int) -> bytes: ...
    def put(self, key: str, data: bytes) -> None: ...
    def exists(self, key: str) -> bool: ...
    def uri_for(self, key: str) -> str: ...
    def read_versioned(self, key: str) -> tuple[bytes, str] | None: ...
    def put_if(self, key: str, data: bytes, match: str | None) -> str | None: ...


CHUNK = 1 << 20  # bytes read (and hashed) at a time


def get_hashed(store: ObjectStore, key: str, limit: int | None = None) -> tuple[bytes, str]:
    """The object's bytes and their SHA-256, hashed chunk by chunk as they arrive (``store.get``
    and a hash after it for a store without ``get_hashed``). Over ``limit`` bytes the read
    stops and raises :class:`ObjectTooLarge` (a store that listed no size)."""
    fn = getattr(store, "get_hashed", None)
    if fn is not None:
        return fn(key, limit)
    data = store.get(key)
    if limit is not None and len(data) > limit:
        raise ObjectTooLarge(len(data), data[:65536])
    return data, hashlib.sha256(data).hexdigest()


class ObjectTooLarge(Exception):
    """An object turned out larger than the read allowed: its size so far and its first bytes."""

    def __init__(self, size: int, head: bytes):
        self.size, self.head = size, head
        super().__init__(f"object over the size limit ({size} bytes read)")


def read_chunks(chunks, limit: int | None) -> tuple[bytes, str]:
    h, buf = hashlib.sha256(), bytearray()
    for chunk in chunks:
        h.update(chunk)
        buf += chunk
        if limit is not None and len(buf) > limit:
            raise ObjectTooLarge(len(buf), bytes(buf[:65536]))
    return bytes(buf), h.hexdigest()


def list_info(store: ObjectStore, prefix: str = "") -> Iterator[ObjectInfo]:
    """``store.list_info(prefix)``, or keys without size and tag for a store that has no
    ``list_info`` (anything holding the smaller protocol of earlier versions)."""
    fn = getattr(store, "list_info", None)
    if fn is not None:
        yield from fn(prefix)
    else:
        yield from (ObjectInfo(k) for k in store.list(prefix))


_PER_OBJECT = (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError)


class LocalObjectStore:
    """A folder in the store layout. Writes are atomic (temp file + rename)."""

    def __init__(self, root: str | Path):
        self.root = Path(root).expanduser().resolve()
        self.uri = str(self.root)

    def _path(self, key: str) -> Path:
        p = (self.root / safe_key(key)).resolve()
        if self.root not in p.parents:
            raise LayoutError(f"key {key!r} escapes the store root")
        return p

    def list(self, prefix: str = "") -> Iterator[str]:
        return (info.key for info in self._walk(prefix, stat=False))

    def list_info(self, prefix: str = "") -> Iterator[ObjectInfo]:
        return self._walk(prefix, stat=True)

    def _walk(self, prefix: str, stat: bool) -> Iterator[ObjectInfo]:
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
                if not key.startswith(prefix):
                    continue
                if not stat:
                    yield ObjectInfo(key)
                    continue
                try:
                    st = os.stat(Path(dirpath, name))
                except FileNotFoundError:  # gone since the walk saw it
                    continue
                except OSError:  # a dangling link or a file we may not stat: ingest reports it
                    yield ObjectInfo(key)
                    continue
                yield ObjectInfo(key, st.st_size, f"{st.st_size}-{st.st_mtime_ns}")

    def _read(self, key: str, read):
        """``read(file)`` on the object's file open for reading: a missing or unreadable file is
        that object's problem (raised as it is); any other OSError is the store's (StoreError)."""
        p = self._path(key)
        try:
            with open(p, "rb") as f:
                return read(f)
        except _PER_OBJECT:
            raise
        except OSError as e:  # the disk or the mount failed, not this one file
            raise StoreError(f"reading {p} failed: {type(e).__name__}: {e}") from None

    def get(self, key: str) -> bytes:
        return self._read(key, lambda f: f.read())

    def get_hashed(self, key: str, limit: int | None = None) -> tuple[bytes, str]:
        return self._read(key, lambda f: read_chunks(iter(lambda: f.read(CHUNK), b""), limit))

    def get_head(self, key: str, n: int) -> bytes:
        """The first ``n`` bytes of the object (all of it if shorter)."""
        return self._read(key, lambda f: f.read(n))

    def put(self, key: str, data: bytes) -> None:
        p = self._path(key)
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_name(f".tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}-{p.name}")
        tmp.write_bytes(data)
        os.replace(tmp, p)

    def read_versioned(self, key: str) -> tuple[bytes, str] | None:
        """The object and its version tag (a hash of its bytes), or None if absent."""
        try:
            data = self._path(key).read_bytes()
        except FileNotFoundError:
            return None
        return data, hashlib.sha256(data).hexdigest()

    def put_if(self, key: str, data: bytes, match: str | None) -> str | None:
        """Write only if the object is absent (``match`` None) or still has version ``match``;
        returns the new version, or None when the condition failed. Atomic across processes."""
        p = self._path(key)
        p.parent.mkdir(parents=True, exist_ok=True)
        with open(p.with_name(f".tmp-guard-{p.name}"), "a+b") as guard:
            fcntl.flock(guard, fcntl.LOCK_EX)
            try:
                current = self.read_versioned(key)
                if (current[1] if current else None) != match:
                    return None
                self.put(key, data)
                return hashlib.sha256(data).hexdigest()
            finally:
                fcntl.flock(guard, fcntl.LOCK_UN)

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def uri_for(self, key: str) -> str:
        return str(self.root / key)

    def local_path(self, key: str) -> Path:
        return self._path(key)


# -- a lease lock on one key -------------------------------------------------------------------


class LeaseBusy(Exception):
    """The lease is held by someone else; ``holder`` is what they wrote (run_id, host, pid, ...)."""

    def __init__(self, holder: dict):
        self.holder = holder
        super().__init__(f"held by {holder}")


_HELD: dict[tuple[str, str], "Lease"] = {}
_HELD_LOCK = threading.Lock()


class Lease:
    """A lock on ``key`` of ``store`` for ``run_id``: taken with a conditional write, renewed by a
    heartbeat thread every ``ttl_s / 3``, released by writing ``{"state": "released"}``.

    A lease is free when released, when its heartbeat is older than ``ttl_s`` (a crashed holder on
    any host), or when its holder was a process on this host that is gone (or is this process and
    no longer holds it). Holding it again with the same ``run_id`` in the same process nests.
    ``lost`` turns true if another run took it over (our heartbeat stopped for longer than ttl).
    """

    def __init__(self, store: ObjectStore, key: str, run_id: str, ttl_s: float = 120.0):
        if ttl_s <= 0:
            raise ValueError(f"ttl_s={ttl_s!r} must be > 0")
        self.store, self.key, self.run_id, self.ttl_s = store, key, run_id, ttl_s
        self.token = uuid.uuid4().hex
        self.etag: str | None = None
        self.lost = False
        self._stop = threading.Event()
        self._beat: threading.Thread | None = None

    # content ---------------------------------------------------------------------------------
    def _content(self, state: str = "held") -> bytes:
        return json.dumps(
            {
                "state": state,
                "token": self.token,
                "run_id": self.run_id,
                "host": socket.gethostname(),
                "pid": os.getpid(),
                "started_at": self._started,
                "heartbeat": time.time(),
                "ttl_s": self.ttl_s,
            }
        ).encode()

    def _is_free(self, info: dict) -> bool:
        if info.get("state") != "held":
            return True
        if time.time() - float(info.get("heartbeat", 0)) > float(info.get("ttl_s", self.ttl_s)):
            return True
        if info.get("host") == socket.gethostname():
            pid = int(info.get("pid", -1))
            if pid == os.getpid():
                with _HELD_LOCK:
                    other = _HELD.get((self.store.uri, self.key))
                return other is None or other.token != info.get("token")
            return not _alive(pid)
        return False

    # acquire / release -----------------------------------------------------------------------
    def acquire(self, wait_s: float = 0.0, poll_s: float = 0.5) -> "Lease":
        """Take the lease, waiting up to ``wait_s``; raises :class:`LeaseBusy` naming the holder."""
        deadline = time.monotonic() + wait_s
        self._started = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
        while True:
            holder: dict = {}
            current = self.store.read_versioned(self.key)
            if current is None:
                etag = self.store.put_if(self.key, self._content(), None)
            else:
                try:
                    holder = json.loads(current[0])
                except ValueError:
                    holder = {}  # unreadable lock content: treat as free
                etag = self.store.put_if(self.key, self._content(), current[1]) if self._is_free(holder) else None
            if etag is None:  # lost a race, or our own retried request already won it
                again = self.store.read_versioned(self.key)
                if again is not None and _token(again[0]) == self.token:
                    etag = again[1]
                elif again is not None:
                    holder = _json(again[0])
            if etag is not None:
                self.etag = etag
                with _HELD_LOCK:
                    _HELD[(self.store.uri, self.key)] = self
                self._beat = threading.Thread(target=self._heartbeat, name=f"lease {self.key}", daemon=True)
                self._beat.start()
                return self
            if time.monotonic() >= deadline:
                raise LeaseBusy(holder)
            time.sleep(min(poll_s, max(deadline - time.monotonic(), 0.01)))

    def _heartbeat(self) -> None:
        while not self._stop.wait(self.ttl_s / 3):
            try:
                etag = self.store.put_if(self.key, self._content(), self.etag)
            except Exception:  # noqa: BLE001 - the store is down: try again next beat
                continue
            if etag is None:
                self.lost = True
                return
            self.etag = etag

    def release(self) -> None:
        self._stop.set()
        if self._beat is not None:
            self._beat.join()
        with _HELD_LOCK:
            if _HELD.get((self.store.uri, self.key)) is self:
                del _HELD[(self.store.uri, self.key)]
        if self.etag is not None and not self.lost:
            with contextlib.suppress(Exception):  # left held: free once this process is gone or ttl passes
                self.store.put_if(self.key, self._content("released"), self.etag)


@contextlib.contextmanager
def hold(
    store: ObjectStore, key: str, run_id: str, ttl_s: float = 120.0, wait_s: float = 0.0, poll_s: float = 0.5
) -> Iterator[Lease]:
    """Hold the lease on ``key`` for the block (nested holds by the same run share one lease)."""
    with _HELD_LOCK:
        held = _HELD.get((store.uri, key))
    if held is not None and held.run_id == run_id:
        yield held
        return
    lease = Lease(store, key, run_id, ttl_s).acquire(wait_s, poll_s)
    try:
        yield lease
    finally:
        lease.release()


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _json(data: bytes) -> dict:
    try:
        return json.loads(data)
    except ValueError:
        return {}


def _token(data: bytes) -> str | None:
    return _json(data).get("token")
