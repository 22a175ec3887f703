"""Helpers for the reliability tests (not a test module).

- :func:`champion_registry`: an MLflow sqlite registry with an (untrained, seeded) AE champion for
  ``slider``, made once per test session: scoring needs a champion, not a good one.
- :func:`services`: Services on a given store with its own DuckDB file and that registry.
- :func:`clip`: short WAV bytes of seeded noise (1 s: 28 context windows, fast to score).
- :func:`ledger`: the end-state check every fault test ends with: each object under the night's
  drop folder has one current row in the night's ledger (``drops``) whose fate is scored
  (exactly once by the champion), duplicate (naming where its bytes were first seen) or
  rejected (with a reason and a detail), and no table holds a duplicate row.
- :class:`FlakyProxy`: an HTTP proxy on 127.0.0.1 that answers the first N (or every Nth)
  request with 503 SlowDown or another 5xx and forwards the rest to an S3 server.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import hashlib
import http.client
import io
import shutil
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import soundfile as sf

from slidead.core.audio import AudioConfig
from slidead.store.features import FeatureStore
from slidead.store.objects import LocalObjectStore
from slidead.store.results import ResultsDB
from slidead.store.services import Services

NIGHT = "2026-11-23"
FAMILY = "ae"
MODEL = "slidead-slider-ae"


@functools.lru_cache(maxsize=None)
def champion_registry() -> str:
    """Tracking URI of a sqlite MLflow registry holding ``slidead-slider-ae`` v1 as champion."""
    home = Path(tempfile.mkdtemp(prefix="slidead-registry-"))
    atexit.register(shutil.rmtree, home, True)
    return make_registry(home)


@contextlib.contextmanager
def tampered_champion(how: str):
    """The shared champion's model files, damaged for the block and put back after it:
    ``no_state_dict`` (one file gone), ``no_files`` (all gone), or ``pickle`` (state_dict.pt
    replaced by a pickle that would create ``marker`` if it were ever unpickled). Yields the
    tracking URI and the marker path."""
    import torch

    home = Path(champion_registry().removeprefix("sqlite:///")).parent
    (files,) = home.glob("mlartifacts/slider/models/m-*/artifacts")
    backup = home / "backup"
    shutil.copytree(files, backup)
    marker = home / "pickle-ran"
    try:
        if how == "no_state_dict":
            next(files.rglob("state_dict.pt")).unlink()
        elif how == "no_files":
            shutil.rmtree(files)
        elif how == "pickle":
            torch.save({"weights": _Payload(str(marker))}, next(files.rglob("state_dict.pt")))
        else:
            raise ValueError(f"how={how!r}")
        yield champion_registry(), marker
    finally:
        shutil.rmtree(files, ignore_errors=True)
        shutil.move(backup, files)
        marker.unlink(missing_ok=True)


class _Payload:
    """Unpickling this runs a shell command: what a malicious 'model' would do."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


def make_registry(home: Path) -> str:
    import torch

    from slidead.core.config import RunConfig
    from slidead.core.models import build
    from slidead.core.thresholds import Fit, Thresholds
    from slidead.store.tracking import Tracker

    uri = f"sqlite:///{home}/mlflow.db"
    tracker = Tracker(uri, str(home / "mlartifacts"))
    cfg = RunConfig.default("ae", "slider", epochs=1)
    torch.manual_seed(0)
    thresholds = Thresholds(0.9, {m: Fit(40.0, 5, "gamma") for m in ("00", "02")})
    report = {"mean": {"auc": 0.5, "pauc": 0.5}, "per_id": {}}
    _, version = tracker.log_training(cfg, build("ae", cfg.model), {"train_loss": [1.0]}, thresholds, report, {})
    tracker.set_champion(MODEL, version)
    return uri


def services(
    tmp: Path,
    store=None,
    tracking_uri: str | None = None,
    lock_timeout_s: float = 5.0,
    audio: AudioConfig = AudioConfig(),
) -> Services:
    store = store if store is not None else LocalObjectStore(tmp / "store")
    fstore = FeatureStore.local(store.uri) if isinstance(store, LocalObjectStore) else store.feature_store()
    db = ResultsDB(tmp / "results.duckdb", lock_timeout_s=lock_timeout_s)
    return Services(store, fstore, db, tracking_uri or champion_registry(), None, audio, "cpu")


def clip(
    seconds: float = 1.0, seed: int = 0, rate: int = 16000, channels: int = 1, subtype: str = "PCM_16", amp: float = 0.3
) -> bytes:
    x = np.random.default_rng(seed).uniform(-amp, amp, (int(round(seconds * rate)), channels)).astype(np.float32)
    buf = io.BytesIO()
    sf.write(buf, x[:, 0] if channels == 1 else x, rate, subtype=subtype, format="WAV")
    return buf.getvalue()


def put_night(store, clips: dict[str, bytes], night: str = NIGHT) -> list[str]:
    """Put ``{"<type>/id_<NN>/<name>.wav": bytes}`` under the night's drop folder; returns the keys."""
    keys = []
    for rel, data in clips.items():
        store.put(f"drops/{night}/{rel}", data)
        keys.append(f"drops/{night}/{rel}")
    return keys


def good_clips(n: int, ids=("00", "02"), seed: int = 0) -> dict[str, bytes]:
    return {f"slider/id_{ids[i % len(ids)]}/clip_{i:03d}.wav": clip(1.0, seed + i) for i in range(n)}


_DUPLICATES = {
    "scores": "SELECT count(*) - count(DISTINCT (clip_id, model_name, model_version)) FROM scores",
    "clips": "SELECT count(*) - count(DISTINCT clip_id) FROM clips",
    "rejected": "SELECT count(*) - count(DISTINCT uri) FROM rejected",
    "drops": "SELECT count(*) - count(DISTINCT (night, uri, version)) FROM drops",
}


def ledger(svc: Services, night: str = NIGHT, model: str = MODEL, keys=None) -> dict:
    """Check that nothing is lost and nothing is doubled; returns where each key ended.

    Every key under ``drops/<night>/`` (or ``keys``) must have exactly one current arrival row in
    the night's ledger (``drops``, latest version) whose fate is ``scored`` (its bytes, by SHA-256,
    scored by ``model`` exactly once), ``duplicate`` (it names where the bytes were first seen)
    or ``rejected`` (with a reason and a detail); ``scores``, ``clips``, ``rejected`` and
    ``drops`` hold no duplicate keys, and the ledger lists no object that is not there."""
    whole_night = keys is None
    keys = list(svc.store.list(f"drops/{night}/")) if keys is None else list(keys)
    with svc.db.connect(read_only=True) as con:
        scored = dict(
            con.execute("SELECT clip_id, count(*) FROM scores WHERE model_name = ? GROUP BY 1", [model]).fetchall()
        )
        arrivals: dict[str, list] = {}
        for uri, fate, reason, detail, clip_id, dup in con.execute(
            "SELECT uri, fate, reason, detail, clip_id, duplicate_of FROM drops WHERE night = ?::DATE "
            "ORDER BY uri, version DESC",
            [night],
        ).fetchall():
            arrivals.setdefault(uri, []).append((fate, reason, detail, clip_id, dup))
        dups = {t: con.execute(sql).fetchone()[0] for t, sql in _DUPLICATES.items()}
    out: dict[str, tuple] = {}
    lost = []
    for key in keys:
        uri = svc.store.uri_for(key)
        if uri not in arrivals:
            lost.append((key, "no arrival row"))
            continue
        fate, reason, detail, clip_id, dup = arrivals[uri][0]  # the current version
        if fate == "rejected":
            assert reason and detail, f"{key}: rejected without a reason and detail"
            out[key] = ("rejected", reason, detail)
            continue
        cid = hashlib.sha256(svc.store.get(key)).hexdigest()
        assert clip_id == cid, f"{key}: the ledger's clip_id is not the SHA-256 of its bytes"
        if fate == "duplicate":
            assert dup and dup != uri, f"{key}: a duplicate that names no first arrival"
            out[key] = ("duplicate", dup)
        elif scored.get(cid) == 1:
            out[key] = ("scored", cid)
        else:
            lost.append((key, f"scored {scored.get(cid, 0)} times"))
    assert not lost, f"lost or doubled clips (key, why): {lost}"
    if whole_night:
        extra = set(arrivals) - {svc.store.uri_for(k) for k in keys}
        assert not extra, f"ledger rows for objects that are not there: {extra}"
    assert dups == {"scores": 0, "clips": 0, "rejected": 0, "drops": 0}, f"duplicate rows: {dups}"
    return out


def runs(svc: Services) -> list[tuple]:
    with svc.db.connect(read_only=True) as con:
        return con.execute(
            "SELECT run_id, status, n_scored, n_rejected, detail FROM runs ORDER BY started_at"
        ).fetchall()


def count(svc: Services, table: str) -> int:
    if not svc.db.exists():
        return 0
    with svc.db.connect(read_only=True) as con:
        return con.execute(
            {
                "scores": "SELECT count(*) FROM scores",
                "clips": "SELECT count(*) FROM clips",
                "rejected": "SELECT count(*) FROM rejected",
            }[table]
        ).fetchone()[0]


# -- S3 helpers ----------------------------------------------------------------------------------


def snapshot(endpoint: str) -> dict[str, dict[str, bytes]]:
    """Every object of every bucket (the state a real S3 keeps while its endpoint is down)."""
    import boto3

    s3 = boto3.client("s3", endpoint_url=endpoint)
    out = {}
    for b in s3.list_buckets()["Buckets"]:
        objs = {}
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=b["Name"]):
            for o in page.get("Contents", []):
                objs[o["Key"]] = s3.get_object(Bucket=b["Name"], Key=o["Key"])["Body"].read()
        out[b["Name"]] = objs
    return out


def restore(endpoint: str, snap: dict[str, dict[str, bytes]]) -> None:
    import boto3

    s3 = boto3.client("s3", endpoint_url=endpoint)
    for bucket, objs in snap.items():
        s3.create_bucket(Bucket=bucket)
        for key, data in objs.items():
            s3.put_object(Bucket=bucket, Key=key, Body=data)


class FlakyProxy:
    """Forwards HTTP to ``upstream``; the first ``fail`` requests (and every ``every``-th, at most
    ``most`` in all) get ``status`` (503 SlowDown by default) instead. ``seen``/``failed``/``requests`` record what came
    by. Binds 127.0.0.1 only."""

    BODIES = {
        503: b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>SlowDown</Code>'
        b"<Message>Please reduce your request rate.</Message></Error>",
        500: b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>InternalError</Code>'
        b"<Message>We encountered an internal error. Please try again.</Message></Error>",
    }

    def __init__(self, upstream: str, fail: int = 0, status: int = 503, every: int = 0, most: int | None = None):
        self.upstream = upstream.split("://", 1)[1]
        self.fail, self.status, self.every, self.most = fail, status, every, most
        self.seen = self.failed = 0
        self.requests: list[tuple[str, str]] = []  # (method, path) of every request
        self._lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _body(self) -> bytes:
                if self.headers.get("Transfer-Encoding", "").lower() != "chunked":
                    return self.rfile.read(int(self.headers.get("Content-Length") or 0))
                out = b""
                while True:
                    size = int(self.rfile.readline().split(b";")[0], 16)
                    if size == 0:
                        while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                            pass
                        return out
                    out += self.rfile.read(size)
                    self.rfile.readline()

            def _handle(self):
                body = self._body()
                with proxy._lock:
                    proxy.seen += 1
                    proxy.requests.append((self.command, self.path))
                    bad = proxy.failed < proxy.fail or (proxy.every > 0 and proxy.seen % proxy.every == 0)
                    bad = bad and (proxy.most is None or proxy.failed < proxy.most)
                    proxy.failed += bad
                if bad:
                    payload = proxy.BODIES.get(proxy.status, b"")
                    self.send_response(proxy.status)
                    self.send_header("Content-Type", "application/xml")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                    return
                conn = http.client.HTTPConnection(proxy.upstream, timeout=30)
                headers = {
                    k: v
                    for k, v in self.headers.items()
                    if k.lower() not in ("connection", "expect", "transfer-encoding", "content-length")
                }
                headers["Content-Length"] = str(len(body))
                conn.request(self.command, self.path, body=body, headers=headers)
                r = conn.getresponse()
                data = r.read()
                self.send_response(r.status)
                for k, v in r.getheaders():
                    if k.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(k, v)
                length = r.getheader("Content-Length", "0") if self.command == "HEAD" else str(len(data))
                self.send_header("Content-Length", length)
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)
                conn.close()

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> "FlakyProxy":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
