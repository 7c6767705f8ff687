"""A real S3-compatible server on a loopback free port: moto's standalone server (what s3fs
and boto's own tests run against), as a subprocess, stopped on exit. Used by
tests/integration/test_s3.py and bench/s3_overhead.py (tests may import bench, never the reverse)."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from producer.local import free_port, stop_process, wait_for

# moto accepts any key pair; these reach the workers as MODELFLEET_S3_* settings.
CREDENTIALS = {"s3_access_key_id": "modelfleet-test", "s3_secret_access_key": "modelfleet-test-secret",
               "s3_region": "us-east-1"}


@dataclass
class S3Server:
    url: str
    proc: subprocess.Popen[bytes]

    def settings(self, bucket: str, prefix: str = "fleet") -> dict[str, Any]:
        """Settings fields for an artifact root in `bucket` (created here)."""
        self.client().create_bucket(Bucket=bucket)
        return {"artifact_root": f"s3://{bucket}/{prefix}", "s3_endpoint_url": self.url, **CREDENTIALS}

    def new_bucket_settings(self) -> dict[str, Any]:
        return self.settings(f"mf-{uuid.uuid4().hex[:12]}")

    def client(self) -> Any:
        import boto3

        return boto3.client("s3", endpoint_url=self.url, region_name=CREDENTIALS["s3_region"],
                            aws_access_key_id=CREDENTIALS["s3_access_key_id"],
                            aws_secret_access_key=CREDENTIALS["s3_secret_access_key"])

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        return [o["Key"] for page in pages for o in page.get("Contents", [])]


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1):
            return True
    except urllib.error.HTTPError:
        return True  # it answered, if with an error: it is up
    except OSError:
        return False


@contextlib.contextmanager
def s3_server(log_dir: Path) -> Iterator[S3Server]:
    port = free_port()
    log_dir.mkdir(parents=True, exist_ok=True)
    with (log_dir / "moto.log").open("ab") as log:
        proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_for(lambda: proc.poll() is None and _answers(url) or proc.poll() is not None, 60,
                 "the S3 server answering")
        if proc.poll() is not None:
            raise RuntimeError(f"moto server exited with {proc.returncode}; see {log_dir / 'moto.log'}")
        yield S3Server(url, proc)
    finally:
        stop_process(proc)
