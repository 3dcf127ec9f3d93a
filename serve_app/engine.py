"""Batched Whisper inference over chunks that may come from many different requests.

`WhisperEngine` wraps a faster-whisper `WhisperModel` (as `BatchedInferencePipeline` does)
and reuses the pipeline's own `forward`, so a chunk decoded in a cross-request batch gives
the same tokens as the same chunk in a direct `BatchedInferencePipeline.transcribe` call.
No Ray here: the Transcriber deployment owns threading and batching.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from faster_whisper import BatchedInferencePipeline, WhisperModel
from faster_whisper.audio import pad_or_trim
from faster_whisper.tokenizer import Tokenizer
from faster_whisper.transcribe import TranscriptionOptions, get_suppressed_tokens

from serve_app.errors import BadRequest
from serve_app.results import ChunkRequest, DecodeOptions, LanguageGuess, Segment, Word

logger = logging.getLogger(__name__)

_PREPEND_PUNCTUATIONS = "\"'“¿([{-"
_APPEND_PUNCTUATIONS = "\"'.。,，!！?？:：”)]}、"  # noqa: RUF001  (faster-whisper defaults)


def check_options(
    options: DecodeOptions, multilingual: bool, languages: Sequence[str]
) -> DecodeOptions:
    """Validate options against a model; returns them with the language settled if it can be."""
    if options.task == "translate" and not multilingual:
        raise BadRequest(
            "this model is English-only and cannot translate; use a multilingual model"
        )
    language = options.language
    if language is not None and language not in languages:
        raise BadRequest(f"unsupported language {language!r} for this model")
    if not multilingual:
        language = "en"  # faster-whisper forces English on .en models
    return options if language == options.language else options.with_language(language)


class WhisperEngine:
    """One loaded Whisper model that decodes batches of same-option chunks."""

    def __init__(
        self,
        model_path: Path | str,
        *,
        device: str = "cpu",
        compute_type: str = "int8",
        cpu_threads: int = 0,
    ) -> None:
        self.model = WhisperModel(
            str(model_path),
            device=device,
            compute_type=compute_type,
            cpu_threads=cpu_threads,
            num_workers=1,
            local_files_only=True,
        )
        self.pipeline = BatchedInferencePipeline(self.model)
        self.device = device
        self.compute_type = compute_type

    @property
    def multilingual(self) -> bool:
        return bool(self.model.model.is_multilingual)

    @property
    def supported_languages(self) -> list[str]:
        return list(self.model.supported_languages)

    def features(self, chunk: np.ndarray) -> np.ndarray:
        return self.model.feature_extractor(chunk)[..., :-1]

    def detect_language(self, chunks: Sequence[np.ndarray]) -> LanguageGuess:
        """Detect the language from the first 30 s of speech, as the batched pipeline does."""
        if not self.multilingual:
            return LanguageGuess("en", 1.0)
        needed = self.model.feature_extractor.nb_max_frames
        feats: list[np.ndarray] = []
        frames = 0
        for chunk in chunks:
            feats.append(self.features(chunk))
            frames += feats[-1].shape[-1]
            if frames >= needed:
                break
        # The dummy column matches faster-whisper, which appends it to handle empty audio.
        feats.append(np.full((self.model.model.n_mels, 1), -1.5, dtype="float32"))
        language, probability, _ = self.model.detect_language(
            features=np.concatenate(feats, axis=1),
            language_detection_segments=1,
            language_detection_threshold=0.5,
        )
        return LanguageGuess(language, float(probability))

    def check_options(self, options: DecodeOptions) -> DecodeOptions:
        return check_options(options, self.multilingual, self.supported_languages)

    def transcribe_batch(self, items: Sequence[ChunkRequest]) -> list[list[Segment]]:
        """Decode chunks that share one `DecodeOptions` in one batched generate call."""
        if not items:
            return []
        opts = items[0].options
        if any(item.options != opts for item in items):
            raise ValueError("a batch must share one set of decode options")
        if opts.language is None:
            raise ValueError("language must be resolved before batching")
        tokenizer = Tokenizer(
            self.model.hf_tokenizer, self.multilingual, task=opts.task, language=opts.language
        )
        options = self._transcription_options(opts, tokenizer)
        features = np.stack([pad_or_trim(self.features(item.audio)) for item in items])
        metadata = [{"offset": item.offset, "duration": item.duration} for item in items]
        # The pipeline carries this across its own batches of one file; chunks here belong
        # to many requests, so each batch starts fresh.
        self.pipeline.last_speech_timestamp = 0.0
        outputs = self.pipeline.forward(features, tokenizer, metadata, options)
        return [self._segments(chunk_output, opts) for chunk_output in outputs]

    def _transcription_options(
        self, opts: DecodeOptions, tokenizer: Tokenizer
    ) -> TranscriptionOptions:
        # Same values BatchedInferencePipeline.transcribe() builds from its defaults.
        return TranscriptionOptions(
            beam_size=opts.beam_size,
            best_of=5,
            patience=1,
            length_penalty=1,
            repetition_penalty=1,
            no_repeat_ngram_size=0,
            log_prob_threshold=-1.0,
            no_speech_threshold=0.6,
            compression_ratio_threshold=2.4,
            temperatures=[opts.temperature],
            initial_prompt=opts.initial_prompt,
            prefix=None,
            suppress_blank=True,
            suppress_tokens=get_suppressed_tokens(tokenizer, [-1]),
            prepend_punctuations=_PREPEND_PUNCTUATIONS,
            append_punctuations=_APPEND_PUNCTUATIONS,
            max_new_tokens=None,
            hotwords=None,
            word_timestamps=opts.word_timestamps,
            hallucination_silence_threshold=None,
            condition_on_previous_text=False,
            clip_timestamps=[],
            prompt_reset_on_temperature=0.5,
            multilingual=False,
            without_timestamps=opts.without_timestamps,
            max_initial_timestamp=0.0,
        )

    @staticmethod
    def _segments(chunk_output: list[dict], opts: DecodeOptions) -> list[Segment]:
        return [
            Segment(
                id=0,  # numbered per request once all chunks are back
                seek=seg["seek"],
                start=round(seg["start"], 3),
                end=round(seg["end"], 3),
                text=seg["text"],
                tokens=list(seg["tokens"]),
                avg_logprob=float(seg["avg_logprob"]),
                compression_ratio=float(seg["compression_ratio"]),
                no_speech_prob=float(seg["no_speech_prob"]),
                temperature=opts.temperature,
                words=[Word(**w) for w in seg["words"]] if opts.word_timestamps else None,
            )
            for seg in chunk_output
        ]
