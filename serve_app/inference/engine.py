"""Batched Whisper inference over chunks that may come from many different requests.

`WhisperEngine` wraps a faster-whisper `WhisperModel` (as `BatchedInferencePipeline` does)
and reuses the pipeline's own `forward`, so a chunk decoded in a cross-request batch gives
the same tokens as the same chunk in a direct `BatchedInferencePipeline.transcribe` call.
No Ray here: the Transcriber deployment owns threading and batching.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
from faster_whisper import BatchedInferencePipeline, WhisperModel
from faster_whisper.audio import pad_or_trim
from faster_whisper.tokenizer import Tokenizer
from faster_whisper.transcribe import TranscriptionOptions, get_suppressed_tokens

from serve_app.errors import BadRequest
from serve_app.inference.packing import N_FRAMES, Window, WindowPacker, to_numpy
from serve_app.inference.protocol import ChunkRequest
from serve_app.options import DecodeOptions
from serve_app.results import LanguageGuess, Segment, Word

logger = logging.getLogger(__name__)

_PREPEND_PUNCTUATIONS = "\"'“¿([{-"
_APPEND_PUNCTUATIONS = "\"'.。,，!！?？:：”)]}、"  # noqa: RUF001  (faster-whisper defaults)


class WhisperEngine:
    """One loaded Whisper model that decodes batches of same-option chunks."""

    def __init__(
        self,
        model_path: Path | str,
        *,
        device: str = "cpu",
        compute_type: str = "int8",
        cpu_threads: int = 0,
        workers: int = 1,
    ) -> None:
        # `workers` batches may run at once, each from its own calling thread.
        self.model = WhisperModel(
            str(model_path),
            device=device,
            compute_type=compute_type,
            cpu_threads=cpu_threads,
            num_workers=workers,
            local_files_only=True,
        )
        # A pipeline keeps the last batch's speech end (word timings), so each thread that
        # decodes owns one: concurrent batches must not see each other's.
        self._pipelines = threading.local()
        self.device = device
        self.compute_type = compute_type
        self._silent_encoding: np.ndarray | None = None
        self.packed_fallbacks = 0  # packed clips whose row failed and were decoded alone

    @property
    def pipeline(self) -> BatchedInferencePipeline:
        """This thread's pipeline over the shared model."""
        pipeline: BatchedInferencePipeline | None = getattr(self._pipelines, "pipeline", None)
        if pipeline is None:
            pipeline = self._pipelines.pipeline = BatchedInferencePipeline(self.model)
        return pipeline

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

    def transcribe_batch(self, items: Sequence[ChunkRequest]) -> list[list[Segment]]:
        """Decode same-option chunks, one window each, in one batched generate call."""
        if not items:
            return []
        if items[0].options.language is None:
            raise ValueError("language must be resolved before batching")
        singles = [Window([i], [0.0]) for i in range(len(items))]
        return self.transcribe_windows(items, singles, max_batch=len(items))

    def transcribe_windows(
        self,
        items: Sequence[ChunkRequest],
        windows: Sequence[Window],
        max_batch: int,
        packer: WindowPacker | None = None,
    ) -> list[list[Segment]]:
        """Decode windows (single chunks or packed clips) in batches of `max_batch`.

        Returns segments per item, in item order. Single chunks go through the pipeline's
        own `forward`, so they equal a direct pipeline run; packed windows are decoded one
        row per clip over a shared encoding by `packer` (needed when a window is packed).
        """
        opts = items[0].options
        if any(item.options != opts for item in items):
            raise ValueError("a batch must share one set of decode options")
        tokenizer = Tokenizer(
            self.model.hf_tokenizer, self.multilingual, task=opts.task, language=opts.language
        )
        out: list[list[Segment]] = [[] for _ in items]
        for first in range(0, len(windows), max_batch):
            group = windows[first : first + max_batch]
            singles = [w for w in group if not w.packed]
            if singles:
                self._decode_singles(items, singles, opts, tokenizer, out)
            packed = [w for w in group if w.packed]
            if packed:
                if packer is None:
                    raise ValueError("packed windows need the packer that planned them")
                self._decode_packed(items, packed, opts, tokenizer, packer, out)
        return out

    def _decode_singles(
        self,
        items: Sequence[ChunkRequest],
        windows: Sequence[Window],
        opts: DecodeOptions,
        tokenizer: Tokenizer,
        out: list[list[Segment]],
    ) -> None:
        chunks = [items[w.items[0]] for w in windows]
        features = np.stack([pad_or_trim(self.features(c.audio)) for c in chunks])
        metadata = [{"offset": c.offset, "duration": c.duration} for c in chunks]
        pipeline = self.pipeline
        pipeline.last_speech_timestamp = 0.0
        outputs = pipeline.forward(
            features, tokenizer, metadata, self._transcription_options(opts, tokenizer)
        )
        for window, output in zip(windows, outputs, strict=True):
            out[window.items[0]] = self._segments(output, opts)

    def _decode_packed(
        self,
        items: Sequence[ChunkRequest],
        windows: Sequence[Window],
        opts: DecodeOptions,
        tokenizer: Tokenizer,
        packer: WindowPacker,
        out: list[list[Segment]],
    ) -> None:
        # Word timings are how a row's words are checked against its clip's span.
        options = self._transcription_options(replace(opts, word_timestamps=True), tokenizer)
        clips = packer.decode(
            self.model,
            tokenizer,
            windows,
            items,
            options,
            keep_words=opts.word_timestamps,
            features=self.features,
            silence=self._silence(),
        )
        alone = [Window([c.index], [0.0]) for c in clips if c.segments is None]
        for clip in clips:
            if clip.segments is not None:
                out[clip.index] = clip.segments
        if alone:
            # Rare: a row's decoder left its clip mid-speech; decoding alone is always right.
            self.packed_fallbacks += len(alone)
            logger.info("%d packed clip(s) decoded again alone", len(alone))
            self._decode_singles(items, alone, opts, tokenizer, out)

    def _silence(self) -> np.ndarray:
        """Encoder output of an empty window: what a lone clip sees around itself."""
        if self._silent_encoding is None:
            mels = np.zeros((1, self.model.model.n_mels, N_FRAMES), dtype=np.float32)
            self._silent_encoding = to_numpy(self.model.encode(mels))[0]
        return self._silent_encoding

    def _transcription_options(
        self, opts: DecodeOptions, tokenizer: Tokenizer
    ) -> TranscriptionOptions:
        # What BatchedInferencePipeline.transcribe() builds from the same arguments.
        suppress = list(opts.suppress_tokens)
        return TranscriptionOptions(
            beam_size=opts.beam_size,
            best_of=5,
            patience=opts.patience,
            length_penalty=opts.length_penalty,
            repetition_penalty=opts.repetition_penalty,
            no_repeat_ngram_size=opts.no_repeat_ngram_size,
            log_prob_threshold=-1.0,
            no_speech_threshold=0.6,
            compression_ratio_threshold=2.4,
            temperatures=[opts.temperature],
            initial_prompt=opts.initial_prompt,
            prefix=None,
            suppress_blank=opts.suppress_blank,
            suppress_tokens=get_suppressed_tokens(tokenizer, suppress) if suppress else suppress,
            prepend_punctuations=_PREPEND_PUNCTUATIONS,
            append_punctuations=_APPEND_PUNCTUATIONS,
            max_new_tokens=self._max_new_tokens(opts, tokenizer),
            hotwords=opts.hotwords,
            word_timestamps=opts.word_timestamps,
            hallucination_silence_threshold=None,
            condition_on_previous_text=False,
            clip_timestamps=[],
            prompt_reset_on_temperature=0.5,
            multilingual=False,
            without_timestamps=opts.without_timestamps,
            max_initial_timestamp=0.0,
        )

    def _max_new_tokens(self, opts: DecodeOptions, tokenizer: Tokenizer) -> int | None:
        """`max_new_tokens`, capped so that the prompt plus the new tokens fit the model.

        faster-whisper raises instead; the cap only differs from it where it would fail.
        A prompt that leaves no room at all is the caller's error (every chunk of the
        batch shares it).
        """
        prompt = self.model.get_prompt(
            tokenizer,
            previous_tokens=(
                tokenizer.encode(opts.initial_prompt) if opts.initial_prompt is not None else []
            ),
            without_timestamps=opts.without_timestamps,
            hotwords=opts.hotwords,
        )
        room = self.model.max_length - len(prompt)
        if room < 8:
            raise BadRequest(
                f"prompt and hotwords take {len(prompt)} of the model's "
                f"{self.model.max_length} tokens; shorten them"
            )
        if opts.max_new_tokens is None:
            return None
        return min(opts.max_new_tokens, room)

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
