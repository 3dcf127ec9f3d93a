"""Multi-node placement: model replicas only on the GPU node, the rest on the CPU head.

Runs multinode_scenario.py in a subprocess (a `ray.cluster_utils.Cluster` with two raylets
cannot live next to the session's Ray) and checks the node ids each replica reported.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).parents[2]
GPU_SHARES = {"tiny.en": 0.25, "base": 0.5}  # as configured in multinode_scenario.py


def test_models_land_on_the_gpu_node_in_fractions_and_the_rest_on_the_head(model_cache, data_dir):
    completed = subprocess.run(
        [
            sys.executable,
            str(Path(__file__).with_name("multinode_scenario.py")),
            "--cache-dir",
            str(model_cache),
            "--audio-dir",
            str(data_dir),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
    )
    assert completed.returncode == 0, completed.stderr[-4000:]
    report = json.loads(completed.stdout.strip().splitlines()[-1])
    head, gpu = report["head_node"], report["gpu_node"]
    assert head != gpu
    assert report["nodes"][head].get("GPU", 0) == 0 and report["nodes"][head]["head"] == 1
    assert report["nodes"][gpu]["GPU"] == 1

    for model, share in GPU_SHARES.items():
        replica = report["transcribers"][model]
        assert replica["node_id"] == gpu, model
        assert replica["assigned_resources"]["GPU"] == pytest.approx(share)
        assert replica["gpu_ids"] == ["0"]  # both share the GPU worker's one GPU

    assert report["ingress"]["node_id"] == head
    assert report["ingress"]["assigned_resources"]["head"] == pytest.approx(0.01)
    for actor in ("TrackerActor", "ServeController", "ProxyActor"):
        assert report["actors"][actor] == [head], actor

    # Served across nodes: HTTP on the head, decoding on the GPU node, a job via the tracker.
    assert "platform" in (report["texts"]["tiny.en"] or "").lower()
    assert "speech recognition" in (report["texts"]["base"] or "").lower()
    assert report["job"]["status"] == "succeeded"
    assert "weather" in (report["job"]["text"] or "").lower()
    assert report["metrics"] == {"status": 200, "scrape_failures": 0}  # both nodes' agents
