from __future__ import annotations

import pytest

from serve_app.inference.weights import (
    BASE_MODEL_BIN_BYTES,
    WeightsError,
    resolve_weights,
    select_device,
)


@pytest.mark.parametrize(
    ("requested", "gpu_ids", "cuda", "expected"),
    [
        ("auto", ["0"], 1, ("cuda", "float16")),
        ("auto", [], 1, ("cpu", "int8")),
        ("auto", ["0"], 0, ("cpu", "int8")),  # logical GPU on a CPU host
        ("cpu", ["0"], 1, ("cpu", "int8")),
        ("cuda", [], 2, ("cuda", "float16")),
    ],
)
def test_device_follows_assigned_gpu(requested, gpu_ids, cuda, expected):
    plan = select_device(requested, None, gpu_ids, cuda)
    assert (plan.device, plan.compute_type) == expected


def test_compute_type_override_and_missing_cuda():
    assert select_device("auto", "int8_float16", ["0"], 1).compute_type == "int8_float16"
    with pytest.raises(WeightsError):
        select_device("cuda", None, [], 0)


def test_bundled_tiny_en_resolves():
    path = resolve_weights("bundled:tiny.en", cache_dir=None)  # type: ignore[arg-type]
    assert (path / "model.bin").is_file() and (path / "tokenizer.json").is_file()


def test_bundled_base_is_reassembled_once(tmp_path):
    path = resolve_weights("bundled:base", tmp_path)
    model_bin = path / "model.bin"
    assert model_bin.stat().st_size == BASE_MODEL_BIN_BYTES
    mtime = model_bin.stat().st_mtime_ns
    assert resolve_weights("bundled:base", tmp_path) == path
    assert model_bin.stat().st_mtime_ns == mtime  # reused, not rebuilt
    assert not list(path.glob("*.partial"))


def test_corrupt_base_cache_is_rebuilt(tmp_path):
    path = resolve_weights("bundled:base", tmp_path)
    (path / "model.bin").write_bytes(b"truncated")
    assert resolve_weights("bundled:base", tmp_path) == path
    assert (path / "model.bin").stat().st_size == BASE_MODEL_BIN_BYTES


def test_unknown_and_incomplete_weights(tmp_path):
    with pytest.raises(WeightsError, match="no bundled weights"):
        resolve_weights("bundled:large-v3", tmp_path)
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(WeightsError, match=r"model\.bin"):
        resolve_weights(str(tmp_path), tmp_path)
