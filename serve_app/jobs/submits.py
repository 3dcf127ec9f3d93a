"""Persisting a group of job submits: dedupe, audio objects synced together, then rows.

`JobFrontend` hands concurrent submits here through its `GroupCommit`, on a worker thread.
Nothing is acknowledged before both its audio and its row are durable.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from serve_app.stores import BlobStore, JobStore
from serve_app.stores.records import Job, NewJob, options_hash

logger = logging.getLogger("ray.serve")

# One submit: the row to insert (naming the API key that made it) and its audio bytes.
Submit = tuple[NewJob, bytes]


def persist_submits(
    store: JobStore, blobs: BlobStore, batch: Sequence[Submit]
) -> list[tuple[Job, bool] | Exception]:
    """Per submit: dedupe, then the audio objects (synced together), then each row that
    points at one (blocking). A failed audio write fails every submit that needed it."""
    results: list[tuple[Job, bool] | Exception | None] = [None] * len(batch)
    audio: dict[str, bytes] = {}
    rows: list[int] = []
    for i, (new, data) in enumerate(batch):
        try:
            if new.idempotency_key is None and new.audio_sha256 is not None:
                done = store.find_succeeded_by_audio(
                    new.tenant, new.audio_sha256, options_hash(new.model, new.options)
                )
                if done is not None:
                    results[i] = (done, False)
                    continue
            key = new.audio_key
            if key and key not in audio and not blobs.exists(key):
                audio[key] = data
            rows.append(i)
        except Exception as exc:
            results[i] = exc
    try:
        blobs.put_many(list(audio.items()))
    except Exception as exc:
        rows, results = [], [exc if i in rows else r for i, r in enumerate(results)]
    for i in rows:
        try:
            results[i] = store.create_job(batch[i][0])
        except Exception as exc:
            results[i] = exc
    _keep_audio_of_new_rows(blobs, batch, results)
    return [r if r is not None else RuntimeError("submit not persisted") for r in results]


def _keep_audio_of_new_rows(
    blobs: BlobStore, batch: Sequence[Submit], results: list[tuple[Job, bool] | Exception | None]
) -> None:
    """The retention sweeper may have deleted a shared audio object between our check
    and our row's insert; with the row in place, put it back (see `jobs.retention`)."""
    missing: dict[str, bytes] = {}
    needing: list[int] = []
    for i, ((new, data), result) in enumerate(zip(batch, results, strict=True)):
        key = new.audio_key
        if not (isinstance(result, tuple) and result[1] and key):
            continue
        try:
            if key in missing or not blobs.exists(key):
                missing[key] = data
                needing.append(i)
        except Exception:
            logger.exception("could not check audio %s after its job's insert", key)
    if not missing:
        return
    logger.info("restoring %d audio object(s) deleted during their submit", len(missing))
    try:
        blobs.put_many(list(missing.items()))
    except Exception as exc:  # not acknowledged: the job fails when it finds no audio
        for i in needing:
            results[i] = exc
