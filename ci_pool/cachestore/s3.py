"""The pool cache in an S3-compatible bucket (AWS S3, MinIO, Ceph RGW...), shared by
runners on many hosts, through boto3. An object's last-modified time is its use time: a
restore copies the object onto itself to renew it."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, BinaryIO

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from ci_pool.cachestore.base import CacheBackend, CacheEntry
from ci_pool.exceptions import InfraError

#: Seconds to connect and to wait for each answer; attempts on a throttled or lost request.
_TIMEOUTS = Config(connect_timeout=10, read_timeout=60, retries={"max_attempts": 3})


class S3Cache(CacheBackend):
    def __init__(
        self,
        bucket: str,
        prefix: str,
        endpoint: str = "",
        region: str = "us-east-1",
        credentials: tuple[str, str] | None = None,
    ):
        self.bucket = bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self.where = f"s3://{bucket}/{self.prefix}"
        keys: dict[str, Any] = {}
        if credentials is not None:
            keys = {"aws_access_key_id": credentials[0], "aws_secret_access_key": credentials[1]}
        try:
            self.client: Any = boto3.session.Session().client(
                "s3", endpoint_url=endpoint or None, region_name=region, config=_TIMEOUTS, **keys
            )
        except (BotoCoreError, ValueError) as exc:
            raise InfraError(f"pool cache {self.where}: {exc}") from None

    def _call(self, what: str, fn: Any, **kwargs: Any) -> Any:
        try:
            return fn(Bucket=self.bucket, **kwargs)
        except (BotoCoreError, ClientError) as exc:
            raise InfraError(f"pool cache {self.where}: {what} failed: {exc}") from None

    def find(self, prefix: str) -> list[CacheEntry]:
        found: list[CacheEntry] = []
        token: dict[str, str] = {}
        while True:
            page = self._call(
                "listing", self.client.list_objects_v2, Prefix=self.prefix + prefix, **token
            )
            for obj in page.get("Contents", []):
                name = str(obj["Key"])[len(self.prefix) :]
                found.append(CacheEntry(name, int(obj["Size"]), obj["LastModified"].timestamp()))
            if not page.get("IsTruncated"):
                return found
            token = {"ContinuationToken": page["NextContinuationToken"]}

    def fetch(self, name: str, out: BinaryIO) -> bool:
        try:
            body = self.client.get_object(Bucket=self.bucket, Key=self.prefix + name)["Body"]
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                return False
            raise InfraError(f"pool cache {self.where}: reading {name} failed: {exc}") from None
        except BotoCoreError as exc:
            raise InfraError(f"pool cache {self.where}: reading {name} failed: {exc}") from None
        with body:
            shutil.copyfileobj(body, out)
        return True

    def put(self, name: str, archive: Path) -> None:
        with archive.open("rb") as src:
            self._call("writing", self.client.put_object, Key=self.prefix + name, Body=src)

    def touch(self, name: str) -> None:
        key = self.prefix + name
        self._call(
            "renewing",
            self.client.copy_object,
            Key=key,
            CopySource={"Bucket": self.bucket, "Key": key},
            MetadataDirective="REPLACE",
        )

    def delete(self, name: str) -> None:
        self._call("removing", self.client.delete_object, Key=self.prefix + name)
