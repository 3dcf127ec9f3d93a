"""One blob-store suite, run against a local folder and a real S3 server (SeaweedFS)."""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from serve_app.stores import (
    BlobStore,
    FileBlobStore,
    InvalidKey,
    NotFound,
    S3BlobStore,
    S3Settings,
    StoreUnavailable,
    Unsupported,
    open_blob_store,
)
from serve_app.stores.records import utcnow


def test_put_get_exists_delete(blob_store: BlobStore) -> None:
    key = "audio/ab/abcdef.wav"
    assert not blob_store.exists(key)
    blob_store.put(key, b"RIFF first", content_type="audio/wav")
    assert blob_store.exists(key)
    assert blob_store.get(key) == b"RIFF first"
    blob_store.put(key, b"RIFF second")  # overwrite replaces the whole object
    assert blob_store.get(key) == b"RIFF second"
    blob_store.delete(key)
    assert not blob_store.exists(key)
    blob_store.delete(key)  # idempotent
    with pytest.raises(NotFound):
        blob_store.get(key)


def test_list_older_finds_objects_under_a_folder_written_before_a_time(
    blob_store: BlobStore,
) -> None:
    keys = {"uploads/t1/a", "uploads/t1/b", "uploads/t2/c"}
    for key in keys:
        blob_store.put(key, b"RIFF")
    blob_store.put("audio/up/uploads", b"RIFF")  # another folder
    later, earlier = utcnow() + timedelta(hours=1), utcnow() - timedelta(hours=1)
    assert set(blob_store.list_older("uploads/", later, 100)) == keys
    assert blob_store.list_older("uploads/", earlier, 100) == []
    assert len(blob_store.list_older("uploads/", later, 2)) == 2
    assert blob_store.list_older("results/", later, 100) == []  # no such folder


def test_binary_round_trip_and_put_file(blob_store: BlobStore, tmp_path: Path) -> None:
    payload = os.urandom(3 * 1024 * 1024 + 17)
    source = tmp_path / "upload.bin"
    source.write_bytes(payload)
    blob_store.put_file("results/job-1.bin", source, content_type="application/octet-stream")
    assert blob_store.get("results/job-1.bin") == payload
    assert blob_store.url_for("results/job-1.bin").endswith("results/job-1.bin")


def test_missing_objects(blob_store: BlobStore) -> None:
    with pytest.raises(NotFound):
        blob_store.get("never/written")
    assert not blob_store.exists("never/written")


@pytest.mark.parametrize(
    "key", ["", "/etc/passwd", "../outside", "a/../../b", "a//b", "./a", "a/", "a\\..\\b"]
)
def test_keys_that_escape_are_refused(blob_store: BlobStore, key: str) -> None:
    with pytest.raises(InvalidKey):
        blob_store.put(key, b"x")
    with pytest.raises(InvalidKey):
        blob_store.get(key)


def test_file_store_refuses_symlink_escape(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    store = FileBlobStore(tmp_path / "root")
    (store.root / "link").symlink_to(outside, target_is_directory=True)
    with pytest.raises(InvalidKey):
        store.put("link/file", b"x")
    assert list(outside.iterdir()) == []


def test_file_store_never_reads_through_a_symlinked_object(tmp_path: Path) -> None:
    """Folders are checked once, so a file that is itself a symlink is refused per call:
    not read, not reported as existing, and replaced (not followed) by a put."""
    secret = tmp_path / "secret"
    secret.write_bytes(b"outside")
    store = FileBlobStore(tmp_path / "root")
    store.put("audio/ab/real", b"x")
    (store.root / "audio" / "ab" / "link").symlink_to(secret)
    with pytest.raises(InvalidKey):
        store.get("audio/ab/link")
    assert not store.exists("audio/ab/link")
    store.put("audio/ab/link", b"mine")
    assert store.get("audio/ab/link") == b"mine"
    assert secret.read_bytes() == b"outside"
    assert store.get("audio/ab/real") == b"x"


def test_file_store_has_no_presigned_uploads(tmp_path: Path) -> None:
    store = open_blob_store(f"file://{tmp_path}")
    with pytest.raises(Unsupported):
        store.presign_put("uploads/x", max_bytes=10)


@pytest.mark.integration
def test_s3_presigned_post_upload(s3_settings: S3Settings, s3_bucket_url: str) -> None:
    store = open_blob_store(s3_bucket_url, s3_settings)
    assert isinstance(store, S3BlobStore)
    post = store.presign_put("uploads/clip.wav", max_bytes=1024, expires_s=300)
    assert post["url"].startswith(str(s3_settings.endpoint_url))
    payload = b"RIFF" + os.urandom(500)
    with httpx.Client(trust_env=False, timeout=30) as client:
        ok = _post_form(client, post, payload)
        assert ok.status_code in (200, 201, 204), ok.text
        assert store.get("uploads/clip.wav") == payload

        # The content-length-range condition is enforced by the S3 server itself.
        too_big = store.presign_put("uploads/big.wav", max_bytes=1024, expires_s=300)
        refused = _post_form(client, too_big, os.urandom(4096))
        assert refused.status_code == 400 and "EntityTooLarge" in refused.text, refused.text
    assert not store.exists("uploads/big.wav")
    store.close()


def _post_form(client: httpx.Client, post: Any, payload: bytes) -> httpx.Response:
    # S3 requires the file part to come last; httpx sends `data` fields before `files`.
    files = {"file": ("clip.wav", payload, "audio/wav")}
    return client.post(post["url"], data=post["fields"], files=files)


@pytest.mark.integration
def test_s3_prefixes_isolate_stores(s3_settings: S3Settings, s3_bucket_url: str) -> None:
    bucket = s3_bucket_url.split("/")[2]
    with (
        open_blob_store(f"s3://{bucket}/one", s3_settings) as one,
        open_blob_store(f"s3://{bucket}/two", s3_settings) as two,
    ):
        one.put("k", b"1")
        assert not two.exists("k")
        assert one.url_for("k") == f"s3://{bucket}/one/k"


def test_unreachable_s3_raises_store_unavailable() -> None:
    from tests.fixtures.processes import free_port

    settings = S3Settings(f"http://127.0.0.1:{free_port()}", "us-east-1", "test", "test")
    store = S3BlobStore("bucket", "", settings)
    with pytest.raises(StoreUnavailable):
        store.get("x")
    store.close()


@pytest.mark.parametrize("url", ["ftp://host/x", "s3:///no-bucket", "file://remote-host/x"])
def test_bad_blob_urls_are_rejected(url: str) -> None:
    with pytest.raises(ValueError):
        open_blob_store(url)
