"""An S3-compatible object store (AWS, MinIO, any server speaking the S3 API) via boto3.

``S3ObjectStore("s3://bucket/prefix", endpoint_url=...)``. Credentials come from the standard
AWS chain (environment, config files, instance roles) and are never logged or stored: URIs
and errors name the bucket and key only. Requests retry with backoff on throttling and 5xx
replies (botocore's and pyarrow's ``standard`` retry modes, ``attempts`` tries per request,
the first included) and have connect/read timeouts. A missing object raises ``FileNotFoundError``; anything else that still fails after
the retries (unreachable endpoint, 5xx, access denied) raises
:class:`~slidead.errors.StoreError`. Objects are read into memory; nothing is copied to disk.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from urllib.parse import urlparse

from slidead.errors import StoreError, redact
from slidead.layout import ObjectInfo, safe_key
from slidead.store.objects import CHUNK, read_chunks

RETRY_ATTEMPTS = 8
_MISSING = ("404", "NoSuchKey", "NotFound")
_CONFLICT = ("PreconditionFailed", "ConditionalRequestConflict")


def parse_s3_uri(uri: str) -> tuple[str, str]:
    p = urlparse(uri)
    if p.scheme != "s3" or not p.netloc:
        raise ValueError(f"store={uri!r}: expected s3://bucket[/prefix]")
    return p.netloc, p.path.strip("/")


class S3ObjectStore:
    def __init__(
        self,
        uri: str,
        endpoint_url: str | None = None,
        region: str | None = None,
        connect_timeout: float = 5.0,
        read_timeout: float = 60.0,
        attempts: int = RETRY_ATTEMPTS,
    ):
        import boto3
        from botocore.config import Config

        if attempts < 1:
            raise ValueError(f"attempts={attempts!r} must be >= 1")
        self.attempts = attempts
        self.connect_timeout, self.read_timeout = connect_timeout, read_timeout
        self.bucket, self.prefix = parse_s3_uri(uri)
        self.uri = f"s3://{self.bucket}" + (f"/{self.prefix}" if self.prefix else "")
        self.endpoint_url = endpoint_url
        self._session = boto3.session.Session(region_name=region)
        self.region = self._session.region_name or "us-east-1"
        config = Config(
            retries={"total_max_attempts": attempts, "mode": "standard"},
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            max_pool_connections=32,
        )
        self.client = self._session.client("s3", endpoint_url=endpoint_url, region_name=self.region, config=config)

    def _key(self, key: str) -> str:
        safe_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    @contextlib.contextmanager
    def _call(self, op: str, key: str = "", missing_ok: bool = False):
        """Turn botocore's errors into FileNotFoundError (missing object) or StoreError."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            yield
        except ClientError as e:
            code = e.response.get("Error", {}).get("Code", "?")
            status = e.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if missing_ok and code in _MISSING:
                raise FileNotFoundError(f"{self.uri_for(key)}: no such object") from None
            raise StoreError(self._message(op, key, f"{code} (HTTP {status})")) from None
        except BotoCoreError as e:
            raise StoreError(self._message(op, key, f"{type(e).__name__}: {e}")) from None

    def _message(self, op: str, key: str, why: str) -> str:
        where = self.uri_for(key) if key else self.uri
        return redact(f"S3 {op} {where} at {self.endpoint_url or 'AWS'} failed after {self.attempts} attempt(s): {why}")

    def list(self, prefix: str = "") -> Iterator[str]:
        return (info.key for info in self.list_info(prefix))

    def list_info(self, prefix: str = "") -> Iterator[ObjectInfo]:
        full = (
            self._key(prefix.rstrip("/")) + ("/" if prefix.endswith("/") else "")
            if prefix
            else (f"{self.prefix}/" if self.prefix else "")
        )
        strip = len(self.prefix) + 1 if self.prefix else 0
        with self._call("list", prefix):
            pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=full)
            objs = [
                ObjectInfo(obj["Key"][strip:], obj.get("Size"), obj.get("ETag"))
                for page in pages
                for obj in page.get("Contents", [])
            ]
        yield from sorted((o for o in objs if o.key and not o.key.endswith("/")), key=lambda o: o.key)

    def get(self, key: str) -> bytes:
        with self._call("get", key, missing_ok=True):
            return self.client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"].read()

    def get_hashed(self, key: str, limit: int | None = None) -> tuple[bytes, str]:
        """The object's bytes and SHA-256, hashed as the body streams in (1 MiB at a time)."""
        with self._call("get", key, missing_ok=True):
            body = self.client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"]
            try:
                return read_chunks(body.iter_chunks(CHUNK), limit)
            finally:
                body.close()

    def get_head(self, key: str, n: int) -> bytes:
        """The first ``n`` bytes of the object (a ranged GET: the rest is never sent)."""
        with self._call("get", key, missing_ok=True):
            r = self.client.get_object(Bucket=self.bucket, Key=self._key(key), Range=f"bytes=0-{max(n, 1) - 1}")
            return r["Body"].read()

    def put(self, key: str, data: bytes) -> None:
        with self._call("put", key):
            self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data)

    def exists(self, key: str) -> bool:
        try:
            with self._call("head", key, missing_ok=True):
                self.client.head_object(Bucket=self.bucket, Key=self._key(key))
            return True
        except FileNotFoundError:
            return False

    def read_versioned(self, key: str) -> tuple[bytes, str] | None:
        """The object and its ETag, or None if absent."""
        try:
            with self._call("get", key, missing_ok=True):
                r = self.client.get_object(Bucket=self.bucket, Key=self._key(key))
                return r["Body"].read(), r["ETag"]
        except FileNotFoundError:
            return None

    def put_if(self, key: str, data: bytes, match: str | None) -> str | None:
        """Conditional PUT (``If-None-Match: *`` when ``match`` is None, else ``If-Match``): the new
        ETag, or None when the condition failed."""
        from botocore.exceptions import ClientError

        cond = {"IfNoneMatch": "*"} if match is None else {"IfMatch": match}
        try:
            with self._call("put", key):
                try:
                    return self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data, **cond)["ETag"]
                except ClientError as e:
                    code = e.response.get("Error", {}).get("Code")
                    status = e.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
                    if code in _CONFLICT or status in (409, 412) or (match is not None and code in _MISSING):
                        return None
                    raise
        except FileNotFoundError:
            return None

    def uri_for(self, key: str) -> str:
        """The object's URI, for naming it only (no check: it also names keys that are refused)."""
        return f"s3://{self.bucket}/" + (f"{self.prefix}/{key}" if self.prefix else key)

    def pyarrow_fs(self):
        """A pyarrow S3 filesystem on the same endpoint and credentials (for Parquet)."""
        import pyarrow.fs as pafs

        creds = self._session.get_credentials()
        kwargs = {
            "region": self.region,
            "retry_strategy": pafs.AwsStandardS3RetryStrategy(max_attempts=self.attempts),
            "connect_timeout": self.connect_timeout,
            "request_timeout": self.read_timeout,
        }
        if creds is not None:
            frozen = creds.get_frozen_credentials()
            kwargs.update(access_key=frozen.access_key, secret_key=frozen.secret_key)
            if frozen.token:
                kwargs["session_token"] = frozen.token
        if self.endpoint_url:
            p = urlparse(self.endpoint_url)
            kwargs.update(endpoint_override=p.netloc or p.path, scheme=p.scheme or "https")
            kwargs["force_virtual_addressing"] = False
        return pafs.S3FileSystem(**kwargs)

    def feature_store(self):
        from slidead.store.features import FeatureStore

        root = f"{self.bucket}/{self.prefix}/features" if self.prefix else f"{self.bucket}/features"
        return FeatureStore(self.pyarrow_fs(), root)

    def __repr__(self) -> str:  # never shows credentials
        return f"S3ObjectStore({self.uri!r}, endpoint_url={self.endpoint_url!r})"
