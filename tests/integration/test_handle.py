"""Other Ray code calls the app through a DeploymentHandle and gets the same transcript."""

from __future__ import annotations

import numpy as np
import pytest

from tests.integration.conftest import transcribe

pytestmark = pytest.mark.integration


def _from_task(app_name: str, audio: bytes) -> dict:
    from ray import serve

    handle = serve.get_app_handle(app_name)
    result = handle.transcribe.remote(audio, model="tiny.en", word_timestamps=True).result()
    return {"text": result.text, "words": len(result.words), "model": result.model}


def test_handle_from_a_ray_task(whisper_app, http, data_dir):
    import ray

    audio = (data_dir / "train.wav").read_bytes()
    expected = transcribe(http, data_dir / "train.wav", model="tiny.en").json()["text"]
    got = ray.get(ray.remote(num_cpus=0)(_from_task).remote(whisper_app.name, audio))
    assert got["text"] == expected
    assert got["model"] == "tiny.en" and got["words"] > 5


def test_handle_accepts_numpy_audio(whisper_app, http, data_dir):
    from serve_app.pipeline.decode import decode_audio

    samples = decode_audio((data_dir / "weather.wav").read_bytes(), max_duration_s=60).samples
    expected = transcribe(http, data_dir / "weather.wav", model="tiny.en").json()["text"]
    result = whisper_app.handle.transcribe.remote(samples.astype(np.float32)).result()
    assert result.text == expected
    assert result.language == "en" and result.duration == pytest.approx(3.48, abs=0.05)


def test_handle_from_another_serve_app(whisper_app, http, data_dir):
    from ray import serve

    @serve.deployment(ray_actor_options={"num_cpus": 0.05})
    class Caller:
        def __init__(self, target: str) -> None:
            self.target = target

        async def __call__(self, audio: bytes) -> str:
            handle = serve.get_app_handle(self.target)
            result = await handle.transcribe.remote(audio, model="tiny.en")
            return result.text

    caller = serve.run(Caller.bind(whisper_app.name), name="caller", route_prefix="/caller")
    try:
        expected = transcribe(http, data_dir / "kitchen.wav", model="tiny.en").json()["text"]
        got = caller.remote((data_dir / "kitchen.wav").read_bytes()).result()
        assert got == expected
    finally:
        serve.delete("caller")


def test_handle_errors_are_service_errors(whisper_app):
    from serve_app.errors import EmptyFile, UnknownModel

    with pytest.raises(UnknownModel):
        whisper_app.handle.transcribe.remote(b"abc", model="nope").result()
    with pytest.raises(EmptyFile):
        whisper_app.handle.transcribe.remote(np.zeros(0, dtype=np.float32)).result()
