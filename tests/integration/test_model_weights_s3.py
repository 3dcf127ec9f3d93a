"""Model weights from an s3:// prefix (SeaweedFS), downloaded once into the cache."""

from __future__ import annotations

import uuid

import pytest

from serve_app.config import S3Config
from serve_app.inference.weights import WeightsError, resolve_weights, s3_client

pytestmark = pytest.mark.integration


def test_weights_from_s3_prefix(s3_settings, s3_bucket, tmp_path):
    source = resolve_weights("bundled:tiny.en", tmp_path)
    s3 = S3Config(
        endpoint_url=s3_settings.endpoint_url,
        region=s3_settings.region,
        access_key_id=s3_settings.access_key_id,
        secret_access_key=s3_settings.secret_access_key,
    )
    client = s3_client(s3)
    prefix = f"models/tiny-{uuid.uuid4().hex[:6]}"
    for path in source.iterdir():
        client.upload_file(str(path), s3_bucket, f"{prefix}/{path.name}")

    cache = tmp_path / "cache"
    local = resolve_weights(f"s3://{s3_bucket}/{prefix}", cache, s3)
    for path in source.iterdir():
        assert (local / path.name).read_bytes() == path.read_bytes()
    assert resolve_weights(f"s3://{s3_bucket}/{prefix}/", cache, s3) == local  # cached

    from serve_app.inference.engine import WhisperEngine

    assert not WhisperEngine(local, cpu_threads=1).multilingual

    with pytest.raises(WeightsError, match="no objects"):
        resolve_weights(f"s3://{s3_bucket}/missing-{uuid.uuid4().hex}", cache, s3)
