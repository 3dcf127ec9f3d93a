"""Shared fixtures: speech fixtures, one Ray instance and one deployed app per session."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest_plugins = ["tests.fixtures.services"]

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="session")
def data_dir() -> Path:
    return DATA


@pytest.fixture(scope="session")
def reference_texts() -> dict[str, str]:
    return json.loads((DATA / "transcripts.json").read_text())


@pytest.fixture(scope="session")
def model_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("model-cache")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def ray_instance() -> Iterator[dict]:
    """One local Ray for the whole session; the GPU is logical, to test fractional packing."""
    import ray
    from ray import serve

    port = free_port()
    ray.init(
        num_cpus=2,
        num_gpus=1,
        include_dashboard=False,
        logging_level="WARNING",
        log_to_driver=False,
    )
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    try:
        yield {"http_url": f"http://127.0.0.1:{port}", "port": port}
    finally:
        serve.shutdown()
        ray.shutdown()
