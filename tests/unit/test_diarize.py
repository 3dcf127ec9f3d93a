"""Diarization pieces without a model: DER, clustering, labelling, formats, options, refs."""

from __future__ import annotations

import base64

import numpy as np
import pytest

from serve_app.config import DiarizationConfig
from serve_app.errors import BadRequest, PayloadTooLarge, UnsupportedMedia
from serve_app.http.formats import render
from serve_app.http.schemas import TranscriptionForm
from serve_app.options import DecodeOptions, TranscribeOptions
from serve_app.pipeline.clustering import SpeakerCount, agglomerate, match_known
from serve_app.pipeline.diarize import Diarizer, DiarizeRequest, SpeakerWindows, speech_windows
from serve_app.pipeline.references import reference_bytes, to_data_url
from serve_app.results import Segment, TranscriptionResult, Word
from tests.der import der


def test_der_against_a_hand_worked_example() -> None:
    # Reference: A speaks 0-10 s, B 10-20 s (20 s of speech). Hypothesis: X 0-12, Y 12-18,
    # Y again 20-21. Best map A->X, B->Y. 10-12: B heard as X (2 s confusion); 18-20: B
    # missed (2 s); 20-21: nobody speaks, Y heard (1 s false alarm). DER = 5 / 20.
    reference = [("A", 0.0, 10.0), ("B", 10.0, 20.0)]
    hypothesis = [("X", 0.0, 12.0), ("Y", 12.0, 18.0), ("Y", 20.0, 21.0)]
    assert der(reference, hypothesis) == pytest.approx(0.25, abs=1e-3)
    # A 0.5 s collar drops 0-0.5, 9.5-10.5 and 19.5-20.5: 18 s scored; confusion 10.5-12
    # (1.5), miss 18-19.5 (1.5), false alarm 20.5-21 (0.5): 3.5 / 18.
    assert der(reference, hypothesis, collar=0.5) == pytest.approx(3.5 / 18, abs=1e-3)
    assert der(reference, [("Z", 0.0, 10.0), ("W", 10.0, 20.0)]) == 0.0
    # One hypothesis speaker for both: 10 s confused.
    assert der(reference, [("Z", 0.0, 20.0)]) == pytest.approx(0.5, abs=1e-3)


def _blobs(centres: list[np.ndarray], per: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    rows, labels = [], []
    for k, centre in enumerate(centres):
        rows.append(centre + 0.25 * rng.standard_normal((per, centre.size)))
        labels += [k] * per
    return np.concatenate(rows), np.array(labels)


def test_agglomerative_clustering_finds_and_honours_the_count() -> None:
    centres = [np.eye(16)[i] * 2 for i in range(3)]
    x, truth = _blobs(centres, 20)
    found = agglomerate(x, SpeakerCount(), threshold=0.3)
    assert found.max() + 1 == 3
    assert all(len(set(found[truth == k])) == 1 for k in range(3))
    assert agglomerate(x, SpeakerCount(exact=2), 0.3).max() + 1 == 2
    assert agglomerate(x, SpeakerCount(maximum=2), 0.3).max() + 1 == 2
    assert agglomerate(x, SpeakerCount(minimum=4), 0.3).max() + 1 == 4
    assert agglomerate(x, SpeakerCount(exact=5), 0.3).max() + 1 == 5


def test_known_speakers_match_one_to_one() -> None:
    cents = np.eye(3)
    refs = np.array([[0.1, 0.9, 0.0], [0.95, 0.1, 0.0]])
    assert match_known(cents, refs / np.linalg.norm(refs, axis=1, keepdims=True), 0.5) == {
        1: 0,
        0: 1,
    }


def test_windows_cover_speech_regions() -> None:
    rate = 16000
    speech = [{"start": 0, "end": 4 * rate}, {"start": 5 * rate, "end": 5 * rate + 8000}]
    wins = speech_windows(speech, 6 * rate, 1.6, 0.8, 0.4)
    starts = [s / rate for s, _ in wins]
    assert starts == [0.0, 0.8, 1.6, 2.4, 5.0]  # the last full window is moved to the end
    assert wins[3] == (int(2.4 * rate), 4 * rate) and wins[-1] == (5 * rate, 5 * rate + 8000)
    assert speech_windows([{"start": 0, "end": 3000}], rate, 1.6, 0.8, 0.4) == []


def _segment(words: list[tuple[float, float, str]]) -> Segment:
    ws = [Word(s, e, w, 0.9) for s, e, w in words]
    text = "".join(w for _, _, w in words)
    return Segment(1, 0, ws[0].start, ws[-1].end, text, [1, 2], -0.2, 1.2, 0.01, 0.0, ws)


class _Unused:
    async def embed(self, clips):  # pragma: no cover - assign() needs no client
        raise AssertionError


def test_a_segment_is_split_where_the_speaker_changes() -> None:
    # Windows 0-1.6 and 0.8-2.4 are voice u, 2.4-4.0 and 3.2-4.8 voice v (orthogonal).
    u, v = np.eye(256)[0] + 0.05, np.eye(256)[1] + 0.05
    emb = np.stack([u, u, v, v]).astype(np.float32)
    windows = SpeakerWindows(np.array([0.0, 0.8, 2.4, 3.2]), np.array([1.6, 2.4, 4.0, 4.8]), emb)
    segment = _segment(
        [(0.1, 0.5, " Hello"), (0.6, 1.9, " there,"), (2.6, 3.0, " hi"), (3.1, 4.5, " you.")]
    )
    diarizer = Diarizer(DiarizationConfig(), _Unused())
    out = diarizer.label([segment], windows, DiarizeRequest(), np.zeros((0, 256)))
    assert [(s.speaker, s.text, s.start, s.end) for s in out] == [
        ("A", " Hello there,", 0.1, 1.9),
        ("B", " hi you.", 2.6, 4.5),
    ]
    assert [s.id for s in out] == [1, 2] and out[1].tokens == []
    assert [w.speaker for w in out[0].words or []] == ["A", "A"]
    # Known speakers: the reference most like voice v names cluster B.
    named = diarizer.label(
        [_segment([(0.1, 0.5, " Hello"), (2.6, 3.0, " hi")])],
        windows,
        DiarizeRequest(SpeakerCount(), ("Vera",), (np.zeros(1),)),
        (v / np.linalg.norm(v))[None, :].astype(np.float32),
    )
    assert [s.speaker for s in named] == ["A", "Vera"]


def _result(segments: list[Segment]) -> TranscriptionResult:
    return TranscriptionResult(
        "Hello there, hi you.", "en", 1.0, 5.0, 5.0, segments, "tiny.en", DecodeOptions()
    )


def test_formats_carry_speakers() -> None:
    a = _segment([(0.1, 0.5, " Hello"), (0.6, 1.9, " there,")])
    b = _segment([(2.6, 3.0, " hi"), (3.1, 4.5, " you.")])
    a.speaker, b.speaker, b.id = "A", "Vera", 2
    for w in a.words or []:
        w.speaker = "A"
    body = render(_result([a, b]), "diarized_json").model_dump(mode="json", exclude_none=True)
    assert body["task"] == "transcribe" and body["duration"] == 5.0
    assert body["segments"][1] == {
        "type": "transcript.text.segment",
        "id": "seg_2",
        "start": 2.6,
        "end": 4.5,
        "text": "hi you.",
        "speaker": "Vera",
    }
    vtt = render(_result([a, b]), "vtt")
    assert "<v Speaker A>Hello there," in vtt and "<v Vera>hi you." in vtt
    assert "Speaker A: Hello there," in render(_result([a, b]), "srt")
    verbose = render(_result([a, b]), "verbose_json", frozenset({"word", "segment"}))
    dumped = verbose.model_dump(mode="json", exclude_none=True)
    assert dumped["segments"][0]["speaker"] == "A" and dumped["words"][0]["speaker"] == "A"
    assert render(_result([a, b]), "text") == "Hello there, hi you.\n"


def test_form_refuses_formats_without_speakers() -> None:
    for fmt in ("text", "json"):
        with pytest.raises(BadRequest, match="diarized_json, verbose_json, srt, vtt"):
            TranscriptionForm(response_format=fmt, diarize=True).options("transcribe")
    options = TranscriptionForm(response_format="diarized_json").options("transcribe")
    assert options.diarize and options.decode_options().word_timestamps


@pytest.mark.parametrize(
    "fields",
    [
        {"num_speakers": 2},
        {"diarize": True, "min_speakers": 3, "max_speakers": 2},
        {"diarize": True, "num_speakers": 2, "max_speakers": 3},
        {"diarize": True, "known_speaker_names": ["Ann"]},
        {"diarize": True, "known_speaker_names": ["<b>"], "known_speaker_references": ["x"]},
    ],
)
def test_inconsistent_speaker_options_are_400(fields) -> None:
    with pytest.raises(BadRequest):
        TranscribeOptions.parse(fields)


def test_reference_clips_are_checked_before_decoding() -> None:
    wav = b"RIFF" + bytes(100)
    assert reference_bytes(to_data_url(wav, "audio/wav"), 1024) == wav
    with pytest.raises(PayloadTooLarge):
        reference_bytes(to_data_url(bytes(4096), "audio/wav"), 1024)
    with pytest.raises(UnsupportedMedia):
        reference_bytes("data:text/plain;base64," + base64.b64encode(b"hi").decode(), 1024)
    with pytest.raises(BadRequest):
        reference_bytes("https://example.com/a.wav", 1024)
