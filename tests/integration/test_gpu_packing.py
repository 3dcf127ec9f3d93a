"""Two model deployments packed on fractional shares of one (logical) GPU, running on CPU."""

from __future__ import annotations

import pytest

from serve_app.inference.protocol import ReplicaInfo
from tests.integration.conftest import GPU_SHARES, transcribe

pytestmark = pytest.mark.integration


def test_models_share_one_gpu_in_configured_fractions(whisper_app, http, data_dir):
    import ray

    assert ray.cluster_resources()["GPU"] == 1
    describes = {
        name: ray.get(ray.remote(num_cpus=0)(_describe).remote(whisper_app.name, name))
        for name in GPU_SHARES
    }
    for name, info in describes.items():
        assert info.assigned_resources["GPU"] == pytest.approx(GPU_SHARES[name])
        assert info.gpu_ids == ("0",)  # Ray really assigned (a share of) GPU 0…
        assert (info.device, info.compute_type) == ("cpu", "int8")  # …CUDA is absent
    # Both replicas sit on the one GPU: what is left is 1 - 0.25 - 0.5.
    assert ray.available_resources().get("GPU", 0) == pytest.approx(1 - sum(GPU_SHARES.values()))
    assert describes["tiny.en"].node_id == describes["base"].node_id

    for name, clip, word in (("base", "hello.wav", "world"), ("tiny.en", "train.wav", "train")):
        response = transcribe(http, data_dir / clip, model=name)
        assert response.status_code == 200 and word in response.json()["text"].lower()


def _describe(app_name: str, model: str) -> ReplicaInfo:
    from ray import serve

    from serve_app.config import ModelConfig

    deployment = ModelConfig(name=model).deployment_name
    handle = serve.get_deployment_handle(deployment, app_name=app_name)
    return handle.describe.remote().result()
