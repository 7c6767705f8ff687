#!/opt/moto/bin/python
"""The two `mc` commands deploy/compose.s3.yml uses, on boto3.

mc ready ALIAS                      exit 0 once the server answers (the healthcheck)
mc mb [--ignore-existing] ALIAS/B   create bucket B

ALIAS is `local` (http://localhost:9000) or one from MC_HOST_<ALIAS>=http://KEY:SECRET@HOST:PORT,
as mc reads it.
"""

import os
import sys
from typing import Any
from urllib.parse import urlsplit

import boto3
from botocore.exceptions import BotoCoreError, ClientError


def client(alias: str) -> Any:
    url = urlsplit(os.environ.get(f"MC_HOST_{alias}", "http://localhost:9000" if alias == "local" else ""))
    if not url.hostname:
        sys.exit(f"mc stand-in: no MC_HOST_{alias}")
    return boto3.client("s3", endpoint_url=f"{url.scheme}://{url.hostname}:{url.port or 9000}",
                        aws_access_key_id=url.username or "x", aws_secret_access_key=url.password or "x",
                        region_name="us-east-1")


def main(args: list[str]) -> int:
    if len(args) == 2 and args[0] == "ready":
        try:
            client(args[1]).list_buckets()
        except (BotoCoreError, ClientError) as exc:
            print(f"mc stand-in: not ready: {exc}", file=sys.stderr)
            return 1
        return 0
    if args and args[0] == "mb":
        ignore = "--ignore-existing" in args
        target = [a for a in args[1:] if not a.startswith("--")]
        if len(target) == 1 and "/" in target[0]:
            alias, bucket = target[0].split("/", 1)
            s3 = client(alias)
            existing = {b["Name"] for b in s3.list_buckets().get("Buckets", [])}
            if bucket in existing:
                if ignore:
                    return 0
                print(f"mc stand-in: bucket {bucket} exists", file=sys.stderr)
                return 1
            s3.create_bucket(Bucket=bucket)
            print(f"Bucket created successfully `{target[0]}`.")
            return 0
    print("mc stand-in: only 'mc ready ALIAS' and 'mc mb [--ignore-existing] ALIAS/BUCKET'", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
