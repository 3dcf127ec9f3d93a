"""Blob stores for audio uploads and results: a local folder or an S3-compatible bucket.

Keys are relative, slash-separated paths (`audio/<sha256>`, `results/<job>.json`). The same key
rules apply to both backends, so a key that works on a laptop also works on S3 and vice versa.
"""

from __future__ import annotations

import abc
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TypedDict

import boto3
import boto3.exceptions
import botocore.exceptions
from botocore.config import Config

from .closeable import Closeable
from .errors import InvalidKey, NotFound, StoreError, StoreUnavailable
from .guard import StoreTuning
from .records import utcnow


@dataclass(frozen=True)
class S3Settings:
    """How to reach an S3-compatible endpoint. None credentials use boto3's default chain."""

    endpoint_url: str | None = None
    region: str = "us-east-1"
    access_key_id: str | None = None
    secret_access_key: str | None = field(default=None, repr=False)


class PresignedPost(TypedDict):
    """A browser-style form upload: POST `fields` plus a `file` part to `url`."""

    url: str
    fields: dict[str, str]
    expires_at: datetime


def validate_key(key: str) -> list[str]:
    """The key's path segments; InvalidKey for empty, absolute or escaping keys."""
    if not key or key.startswith("/") or "\\" in key or "\x00" in key:
        raise InvalidKey(f"invalid blob key {key!r}")
    parts = key.split("/")
    if any(part in ("", ".", "..") for part in parts):
        raise InvalidKey(f"invalid blob key {key!r}")
    return parts


class BlobStore(Closeable):
    """Named byte objects."""

    # How many `put_many` calls the job submit path should run at once (see
    # `jobs.groupcommit`): a network store gains from overlapping requests.
    write_concurrency: int = 4

    @abc.abstractmethod
    def put(self, key: str, data: bytes, content_type: str | None = None) -> None:
        """Write an object atomically: readers see the old object or the whole new one."""

    def put_many(self, items: Sequence[tuple[str, bytes]]) -> None:
        """put() each (key, data); every object is durable when this returns. A store may
        share its sync work across them (group commit): `FileBlobStore` does."""
        for key, data in items:
            self.put(key, data)

    @abc.abstractmethod
    def put_file(self, key: str, path: str | Path, content_type: str | None = None) -> None:
        """Like put(), streaming from a local file."""

    @abc.abstractmethod
    def get(self, key: str) -> bytes:
        """Raises NotFound if the object does not exist."""

    @abc.abstractmethod
    def exists(self, key: str) -> bool: ...

    @abc.abstractmethod
    def delete(self, key: str) -> None:
        """Idempotent: deleting a missing object is not an error."""

    @abc.abstractmethod
    def presign_put(self, key: str, max_bytes: int, expires_s: int = 900) -> PresignedPost:
        """A time-limited direct-upload form capped at `max_bytes` (Unsupported on files)."""

    @abc.abstractmethod
    def url_for(self, key: str) -> str:
        """A URL naming the object (file:// or s3://), for logs and job records."""

    @abc.abstractmethod
    def list_older(self, prefix: str, before: datetime, limit: int) -> list[str]:
        """Up to `limit` keys under `prefix` (a folder, e.g. `uploads/`) last written before
        `before`, in no particular order."""


_MISSING_CODES = {"404", "NoSuchKey", "NotFound", "NoSuchBucket"}


def _translate(exc: BaseException, what: str) -> StoreError:
    """The store error for a boto (or local file) error raised while doing `what`."""
    if isinstance(exc, boto3.exceptions.Boto3Error):
        # upload_file() re-raises client errors as S3UploadFailedError; judge the original.
        inner = exc.__cause__ or exc.__context__
        if isinstance(inner, botocore.exceptions.ClientError | botocore.exceptions.BotoCoreError):
            return _translate(inner, what)
    if isinstance(exc, botocore.exceptions.ClientError):
        error = exc.response.get("Error", {})
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        if str(error.get("Code")) in _MISSING_CODES:
            return NotFound(f"{what}: not found")
        if status >= 500 or error.get("Code") == "SlowDown":
            return StoreUnavailable(f"{what}: {exc}")
    if isinstance(exc, botocore.exceptions.ConnectionError | botocore.exceptions.HTTPClientError):
        return StoreUnavailable(f"{what}: {exc}")
    return StoreError(f"{what}: {exc}")


_BOTO_ERRORS = (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError)


@contextmanager
def _s3_errors(what: str) -> Iterator[None]:
    try:
        yield
    except (*_BOTO_ERRORS, boto3.exceptions.Boto3Error, OSError) as exc:
        raise _translate(exc, what) from exc


class S3BlobStore(BlobStore):
    """Objects under `s3://bucket/prefix/` on AWS S3 or a compatible server (path-style)."""

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        settings: S3Settings | None = None,
        tuning: StoreTuning | None = None,
    ):
        settings = settings or S3Settings()
        tuning = tuning or StoreTuning()
        self._use_guard("s3", tuning)
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        if self.prefix:
            validate_key(self.prefix)
        # A private session: boto3's default session is shared global state and not thread-safe.
        session = boto3.session.Session(
            aws_access_key_id=settings.access_key_id,
            aws_secret_access_key=settings.secret_access_key,
            region_name=settings.region,
        )
        self._client = session.client(
            "s3",
            endpoint_url=settings.endpoint_url,
            config=Config(
                signature_version="s3v4",
                # Path-style works with every S3-compatible server and needs no wildcard DNS.
                s3={"addressing_style": "path"},
                retries={"max_attempts": 3, "mode": "standard"},
                connect_timeout=tuning.connect_timeout_s,
                read_timeout=60,
            ),
        )
        self._region = settings.region

    @contextmanager
    def _errors(self, what: str) -> Iterator[None]:
        """Boto errors → store errors, counted by the breaker (fails fast while S3 is down)."""
        with self.guard.breaker.guard(), _s3_errors(what):
            yield

    def _key(self, key: str) -> str:
        validate_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def ensure_bucket(self) -> None:
        """Create the bucket unless it exists (racing creators are fine)."""
        try:
            self._client.head_bucket(Bucket=self.bucket)
            return
        except botocore.exceptions.ClientError as exc:
            if str(exc.response.get("Error", {}).get("Code")) not in _MISSING_CODES:
                raise _translate(exc, f"head bucket {self.bucket}") from exc
        except botocore.exceptions.BotoCoreError as exc:
            raise _translate(exc, f"head bucket {self.bucket}") from exc
        kwargs: dict[str, Any] = {"Bucket": self.bucket}
        if self._region != "us-east-1":  # us-east-1 rejects an explicit location constraint
            kwargs["CreateBucketConfiguration"] = {"LocationConstraint": self._region}
        try:
            self._client.create_bucket(**kwargs)
        except _BOTO_ERRORS as exc:
            code = getattr(exc, "response", {}).get("Error", {}).get("Code")
            if code != "BucketAlreadyOwnedByYou":
                raise _translate(exc, f"create bucket {self.bucket}") from exc

    def put(self, key: str, data: bytes, content_type: str | None = None) -> None:
        extra = {"ContentType": content_type} if content_type else {}
        with self._errors(f"put {key}"):
            self._client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data, **extra)

    def put_file(self, key: str, path: str | Path, content_type: str | None = None) -> None:
        extra = {"ContentType": content_type} if content_type else None
        with self._errors(f"upload {key}"):
            self._client.upload_file(str(path), self.bucket, self._key(key), ExtraArgs=extra)

    def get(self, key: str) -> bytes:
        with self._errors(f"get {key}"):
            response = self._client.get_object(Bucket=self.bucket, Key=self._key(key))
            return bytes(response["Body"].read())

    def exists(self, key: str) -> bool:
        try:
            with self._errors(f"head {key}"):
                self._client.head_object(Bucket=self.bucket, Key=self._key(key))
        except NotFound:
            return False
        return True

    def delete(self, key: str) -> None:
        with self._errors(f"delete {key}"):
            self._client.delete_object(Bucket=self.bucket, Key=self._key(key))

    def presign_put(self, key: str, max_bytes: int, expires_s: int = 900) -> PresignedPost:
        if max_bytes < 1:
            raise ValueError("max_bytes must be >= 1")
        expires_at = utcnow() + timedelta(seconds=expires_s)
        with self._errors(f"presign {key}"):
            post = self._client.generate_presigned_post(
                Bucket=self.bucket,
                Key=self._key(key),
                # S3 itself rejects bodies outside this range, so the cap holds without us.
                Conditions=[["content-length-range", 1, max_bytes]],
                ExpiresIn=expires_s,
            )
        return PresignedPost(url=post["url"], fields=dict(post["fields"]), expires_at=expires_at)

    def url_for(self, key: str) -> str:
        return f"s3://{self.bucket}/{self._key(key)}"

    def list_older(self, prefix: str, before: datetime, limit: int) -> list[str]:
        full = self._key(prefix.rstrip("/")) + "/"
        strip = len(self.prefix) + 1 if self.prefix else 0
        found: list[str] = []
        with _s3_errors(f"list {prefix}"):
            pages = self._client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=full
            )
            for page in pages:
                for item in page.get("Contents", []):
                    if item["LastModified"] < before:
                        found.append(item["Key"][strip:])
                        if len(found) >= limit:
                            return found
        return found

    def close(self) -> None:
        self._client.close()
        self.guard.close()
