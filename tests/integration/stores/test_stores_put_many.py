"""Issue 18 on both blob stores: `put_many`, the group commit of job submissions."""

from __future__ import annotations

from serve_app.stores import BlobStore


def test_put_many_stores_every_object(blob_store: BlobStore) -> None:
    items = [(f"audio/{i:02x}/many{i}", f"audio {i}".encode() * 100) for i in range(5)]
    blob_store.put_many(items)
    for key, data in items:
        assert blob_store.exists(key) and blob_store.get(key) == data
    blob_store.put_many([])
    blob_store.put_many([("audio/00/one", b"single")])
    assert blob_store.get("audio/00/one") == b"single"
