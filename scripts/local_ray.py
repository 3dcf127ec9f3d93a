"""What the local Ray checks share: loopback ports and tiny.en + base on fractional GPUs.

Imported by scripts/dashboard_check.py (its sibling) and tests/integration/multinode_scenario.py
(which puts this folder on sys.path); both run as plain scripts.
"""

from __future__ import annotations

import socket
from typing import Any

LOOPBACK = "127.0.0.1"
GPU_SHARES = {"tiny.en": 0.25, "base": 0.5}  # of one logical GPU


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return sock.getsockname()[1]


def gpu_models(**extra: Any) -> list[dict[str, Any]]:
    """A `models` config for GPU_SHARES: light CPU and batching, `extra` merged into each."""
    return [
        {
            "name": name,
            "num_cpus": 0.3,
            "num_gpus": share,
            "cpu_threads": 1,
            "batching": {"max_batch_size": 4, "batch_wait_timeout_s": 0.1},
            **extra,
        }
        for name, share in GPU_SHARES.items()
    ]
