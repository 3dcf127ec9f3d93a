"""Every decode knob gives the text a direct faster-whisper BatchedInferencePipeline gives.

One request at a time through the session app (packing off), against the same option
passed to `BatchedInferencePipeline.transcribe` on the same clips; and `hotwords` fixes
a product name both bundled models mishear, over HTTP, as a job and through the handle.
"""

from __future__ import annotations

import subprocess
import wave
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import transcribe, wait_job

pytestmark = pytest.mark.integration

CLIPS = ["weather.wav", "numbers.wav"]
PRODUCT = "ComfyUI"
PRODUCT_SENTENCE = "Yesterday we installed ComfyUI on the new workstation."

# (id, form fields sent to the service, kwargs for BatchedInferencePipeline.transcribe)
KNOBS: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
    ("hotwords", {"hotwords": "Boston weather"}, {"hotwords": "Boston weather"}),
    ("beam_size", {"beam_size": "1"}, {"beam_size": 1}),
    ("best_of", {"best_of": "1"}, {"best_of": 1}),
    ("patience", {"patience": "2"}, {"patience": 2.0}),
    ("length_penalty", {"length_penalty": "0.3"}, {"length_penalty": 0.3}),
    ("repetition_penalty", {"repetition_penalty": "1.5"}, {"repetition_penalty": 1.5}),
    ("no_repeat_ngram_size", {"no_repeat_ngram_size": "1"}, {"no_repeat_ngram_size": 1}),
    ("temperature_list", {"temperature": "0,0.2,0.4"}, {"temperature": [0.0, 0.2, 0.4]}),
    (
        "thresholds",
        {
            "compression_ratio_threshold": "2.4",
            "log_prob_threshold": "-1.0",
            "no_speech_threshold": "0.6",
        },
        {
            "compression_ratio_threshold": 2.4,
            "log_prob_threshold": -1.0,
            "no_speech_threshold": 0.6,
        },
    ),
    (
        "condition_on_previous_text",
        {"condition_on_previous_text": "true"},
        {"condition_on_previous_text": True},
    ),
    ("suppress_blank", {"suppress_blank": "false"}, {"suppress_blank": False}),
    ("suppress_tokens", {"suppress_tokens": "-1,13"}, {"suppress_tokens": [-1, 13]}),
    ("max_new_tokens", {"max_new_tokens": "6"}, {"max_new_tokens": 6}),
    ("prompt", {"prompt": "Numbers: 555-1234."}, {"initial_prompt": "Numbers: 555-1234."}),
    ("vad_off", {"vad_filter": "false"}, {"vad_filter": False}),
    (
        "server_vad",
        {
            "chunking_strategy": '{"type": "server_vad", "threshold": 0.6, '
            '"prefix_padding_ms": 200, "silence_duration_ms": 500}'
        },
        {
            "vad_parameters": {
                "threshold": 0.6,
                "speech_pad_ms": 200,
                "min_silence_duration_ms": 500,
            }
        },
    ),
]


def _direct(pipeline: Any, path: Path, **options: Any) -> str:
    segments, _ = pipeline.transcribe(str(path), batch_size=8, **options)
    return "".join(s.text for s in segments).strip()


@pytest.mark.parametrize(("fields", "direct"), [k[1:] for k in KNOBS], ids=[k[0] for k in KNOBS])
def test_knob_matches_direct_pipeline(http, data_dir, direct_pipelines, fields, direct):
    for clip in CLIPS:
        expected = _direct(direct_pipelines["tiny.en"], data_dir / clip, **direct)
        response = transcribe(http, data_dir / clip, model="tiny.en", **fields)
        assert response.status_code == 200, response.text
        assert response.json()["text"] == expected, (clip, fields)


def test_a_fallback_temperature_is_tried_when_a_chunk_fails(http, data_dir):
    # log_prob_threshold=0 fails every chunk: the service decodes again at 0.2 and keeps
    # the attempt with the best average log probability; the answer is still a transcript.
    response = transcribe(
        http,
        data_dir / "weather.wav",
        model="tiny.en",
        temperature="0,0.2",
        log_prob_threshold="0",
        response_format="verbose_json",
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert "weather" in body["text"].lower()
    assert {s["temperature"] for s in body["segments"]} <= {0.0, 0.2}


@pytest.fixture(scope="module")
def product_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("hotwords") / "comfyui.wav"
    subprocess.run(
        ["espeak-ng", "-v", "en-us", "-s", "150", "-w", str(path), PRODUCT_SENTENCE],
        check=True,
        capture_output=True,
    )
    return path


@pytest.mark.parametrize("model", ["tiny.en", "base"])
def test_hotwords_spell_the_product_name(whisper_app, http, product_clip, model):
    plain = transcribe(http, product_clip, model=model, language="en")
    assert plain.status_code == 200, plain.text
    assert PRODUCT not in plain.json()["text"], "the model knows the name without help"

    helped = transcribe(http, product_clip, model=model, language="en", hotwords=PRODUCT)
    assert PRODUCT in helped.json()["text"], helped.text

    with product_clip.open("rb") as audio:
        submitted = http.post(
            "/v1/jobs",
            files={"file": (product_clip.name, audio)},
            data={"model": model, "language": "en", "hotwords": PRODUCT},
        )
    assert submitted.status_code in (200, 202), submitted.text
    job = wait_job(http, submitted.json()["id"])
    assert job["status"] == "succeeded", job
    result = http.get(f"/v1/jobs/{job['id']}/result").json()
    assert PRODUCT in result["text"], result
    assert result["usage"]["seconds"] == pytest.approx(result_duration(product_clip), abs=0.1)

    handled = whisper_app.handle.transcribe.remote(
        product_clip.read_bytes(), model=model, language="en", hotwords=PRODUCT
    ).result()
    assert PRODUCT in handled.text, handled.text


def result_duration(path: Path) -> float:
    with wave.open(str(path)) as wav:
        return wav.getnframes() / wav.getframerate()


def test_handle_refuses_a_bad_knob_naming_it(whisper_app, data_dir):
    from serve_app.errors import BadRequest

    with pytest.raises(BadRequest, match="beam_size"):
        whisper_app.handle.transcribe.remote(
            (data_dir / "hello.wav").read_bytes(), beam_size=99
        ).result()
