"""The artifact root in an S3 bucket (AWS S3, MinIO, Ceph RGW, ...), through boto3.

boto3 rather than fsspec/s3fs: the store needs six calls (put, get, head,
list, delete, and put-if-absent), all synchronous, on clients that are safe
across Celery's forked pool children when built per process. s3fs would put an
asyncio loop, aiobotocore and fsspec's caches under those six calls, and a
directory root keeps its own code (atomic renames, O_APPEND journal) anyway.

Connection settings come from boto3's usual chain (AWS_ACCESS_KEY_ID,
AWS_SECRET_ACCESS_KEY, AWS_REGION, AWS_ENDPOINT_URL, ~/.aws, an instance or
pod role) unless the MODELFLEET_S3_* settings name them.
"""

from __future__ import annotations

import functools
import os
import threading
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from workers.store import Entry, read_or_empty

# Concurrent GETs when reading many objects (reindex): round trips, not bandwidth, bound it.
_READERS = 16


def split_url(url: str) -> tuple[str, str]:
    """s3://bucket/some/prefix -> ("bucket", "some/prefix")."""
    rest = url.removeprefix("s3://")
    bucket, _, prefix = rest.partition("/")
    return bucket, prefix.strip("/")


class S3Root:
    def __init__(self, url: str, client_options: dict[str, Any]) -> None:
        self.bucket, self.prefix = split_url(url)
        self.options = client_options
        self._client: Any = None
        self._pid = 0
        self._lock = threading.Lock()

    @property
    def client(self) -> Any:
        # Built per process: a client made before a fork must not be used in the child.
        if self._client is None or self._pid != os.getpid():
            import boto3  # optional dependency: `pip install modelfleet[s3]`
            from botocore.config import Config

            with self._lock:
                self._client = boto3.session.Session().client(
                    "s3", config=Config(max_pool_connections=_READERS + 4,
                                        retries={"mode": "standard", "max_attempts": 5},
                                        s3={"addressing_style": "path"} if self.options.get("endpoint_url")
                                        else None),
                    **self.options)
                self._pid = os.getpid()
        return self._client

    def _key(self, relpath: str) -> str:
        return f"{self.prefix}/{relpath}" if self.prefix else relpath

    def write(self, relpath: str, data: bytes | Iterable[bytes]) -> None:
        # A PUT is atomic: readers see the old object or the whole new one, never part of it.
        body = data if isinstance(data, bytes) else b"".join(data)
        self.client.put_object(Bucket=self.bucket, Key=self._key(relpath), Body=body)

    def write_once(self, relpath: str, data: bytes) -> None:
        # One round trip: S3 refuses (412) a second copy instead of a HEAD before every PUT.
        # A server without conditional writes overwrites it with the same bytes: as harmless.
        try:
            self.client.put_object(Bucket=self.bucket, Key=self._key(relpath), Body=data, IfNoneMatch="*")
        except self.client.exceptions.ClientError as exc:
            if _code(exc) not in {"PreconditionFailed", "412", "ConditionalRequestConflict", "409"}:
                raise

    def read(self, relpath: str) -> bytes:
        try:
            reply = self.client.get_object(Bucket=self.bucket, Key=self._key(relpath))
        except self.client.exceptions.NoSuchKey as exc:
            raise FileNotFoundError(self.describe(relpath)) from exc
        return bytes(reply["Body"].read())

    def read_many(self, relpaths: Sequence[str], missing_ok: bool = False) -> Iterator[bytes]:
        read = functools.partial(read_or_empty, self) if missing_ok else self.read
        if len(relpaths) <= 1:
            return (read(p) for p in relpaths)
        self.client  # noqa: B018 -- build the client once, before the threads share it
        pool = ThreadPoolExecutor(_READERS)
        results = pool.map(read, relpaths)
        pool.shutdown(wait=False)  # the iterator keeps the submitted reads; no new ones
        return results

    def exists(self, relpath: str) -> bool:
        try:
            self.client.head_object(Bucket=self.bucket, Key=self._key(relpath))
        except self.client.exceptions.ClientError as exc:
            if _code(exc) in {"404", "NoSuchKey", "NotFound"}:
                return False
            raise
        return True

    def list(self, prefix: str) -> list[Entry]:
        start = self._key(prefix.strip("/") + "/")
        skip = len(self._key(""))
        out = []
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=start):
            out += [Entry(o["Key"][skip:], o["Size"], o["LastModified"].timestamp())
                    for o in page.get("Contents", [])]
        return sorted(out, key=lambda e: e.relpath)

    def delete(self, relpath: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self._key(relpath))

    def describe(self, relpath: str = "") -> str:
        return f"s3://{self.bucket}/{self._key(relpath)}".rstrip("/")


def _code(exc: Any) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))
