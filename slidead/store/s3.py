"""An S3-compatible object store (AWS, MinIO, any server speaking the S3 API) via boto3.

``S3ObjectStore("s3://bucket/prefix", endpoint_url=...)``. Credentials come from the standard
AWS chain (environment, config files, instance roles) and are never logged or stored: URIs
and errors name the bucket and key only. Requests retry with backoff on throttling and 5xx
replies (botocore's ``standard`` retry mode) and have connect/read timeouts. Objects are
read into memory; nothing is copied to disk.
"""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import urlparse

from ..layout import safe_key

RETRY_ATTEMPTS = 8


def parse_s3_uri(uri: str) -> tuple[str, str]:
    p = urlparse(uri)
    if p.scheme != "s3" or not p.netloc:
        raise ValueError(f"store={uri!r}: expected s3://bucket[/prefix]")
    return p.netloc, p.path.strip("/")


class S3ObjectStore:
    def __init__(self, uri: str, endpoint_url: str | None = None, region: str | None = None,
                 connect_timeout: float = 5.0, read_timeout: float = 60.0):
        import boto3
        from botocore.config import Config

        self.bucket, self.prefix = parse_s3_uri(uri)
        self.uri = f"s3://{self.bucket}" + (f"/{self.prefix}" if self.prefix else "")
        self.endpoint_url = endpoint_url
        self._session = boto3.session.Session(region_name=region)
        self.region = self._session.region_name or "us-east-1"
        config = Config(retries={"max_attempts": RETRY_ATTEMPTS, "mode": "standard"},
                        connect_timeout=connect_timeout, read_timeout=read_timeout,
                        max_pool_connections=32)
        self.client = self._session.client("s3", endpoint_url=endpoint_url, region_name=self.region, config=config)

    def _key(self, key: str) -> str:
        safe_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def list(self, prefix: str = "") -> Iterator[str]:
        full = self._key(prefix.rstrip("/")) + ("/" if prefix.endswith("/") else "") if prefix else (
            f"{self.prefix}/" if self.prefix else "")
        strip = len(self.prefix) + 1 if self.prefix else 0
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=full)
        keys = [obj["Key"][strip:] for page in pages for obj in page.get("Contents", [])]
        yield from sorted(k for k in keys if k and not k.endswith("/"))

    def get(self, key: str) -> bytes:
        return self.client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"].read()

    def put(self, key: str, data: bytes) -> None:
        self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data)

    def exists(self, key: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            self.client.head_object(Bucket=self.bucket, Key=self._key(key))
            return True
        except ClientError as e:
            if e.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return False
            raise

    def uri_for(self, key: str) -> str:
        return f"s3://{self.bucket}/{self._key(key)}"

    def pyarrow_fs(self):
        """A pyarrow S3 filesystem on the same endpoint and credentials (for Parquet)."""
        import pyarrow.fs as pafs

        creds = self._session.get_credentials()
        kwargs = {"region": self.region, "retry_strategy": pafs.AwsStandardS3RetryStrategy(max_attempts=RETRY_ATTEMPTS),
                  "connect_timeout": 5, "request_timeout": 60}
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
        from .features import FeatureStore

        root = f"{self.bucket}/{self.prefix}/features" if self.prefix else f"{self.bucket}/features"
        return FeatureStore(self.pyarrow_fs(), root)

    def __repr__(self) -> str:  # never shows credentials
        return f"S3ObjectStore({self.uri!r}, endpoint_url={self.endpoint_url!r})"
