"""Packing, step 2: one encoder pass per window, one decoder row per clip.

The encoder is what packing saves: it costs a full 30 s pass whatever the clip length. The
decoder is cheap by comparison, so each clip gets its own decoder row over the shared
encoding, prompted with the clip's start timestamp. In its row, the encoder frames outside
the clip (and half a gap either side) are replaced by the encoding of an empty window, so
the decoder sees only its clip, as it would unpacked, and stops at the clip's end. No row
reads another clip's text: decoding a whole window as one sequence let a clip's words
depend on its neighbours' and cost more steps in a row.

Rows run with a token budget sized to the longest clip; a row that ends at the budget
before its decoder left the clip is decoded again without one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from math import ceil

import ctranslate2
import numpy as np
from faster_whisper import WhisperModel
from faster_whisper.tokenizer import Tokenizer
from faster_whisper.transcribe import TranscriptionOptions, get_compression_ratio

from serve_app.inference.packing.plan import ENCODER_FRAME_S, FRAMES_PER_SECOND, N_FRAMES, Window
from serve_app.inference.protocol import ChunkRequest

# Budget per second of clip: fast English is ~4 text tokens/s; timestamps add two per
# segment. Rows that need more are re-run without a budget, so this only trades speed.
TOKENS_PER_SECOND = 7
TOKEN_SLACK = 16


@dataclass
class _Row:
    window: int  # index into the window list
    position: int  # which clip of the window
    start: float  # clip span inside the window (seconds)
    end: float
    limit: float  # where the window's audio ends
    prompt: list[int]


def decode_packed(
    model: WhisperModel,
    tokenizer: Tokenizer,
    features: np.ndarray,
    windows: Sequence[Window],
    items: Sequence[ChunkRequest],
    options: TranscriptionOptions,
    gap_s: float,
    silence: np.ndarray,
) -> list[list[list[dict] | None]]:
    """Segments (window-relative times, with words) per window, per clip of the window.

    `silence` is the encoder output of an empty window ([frames, width]). A clip whose row
    failed (see `_own_tokens`) gets None: the caller decodes it alone. The caller still
    keeps only words whose time lies in the clip.
    """
    encoded = to_numpy(model.encode(features))
    prompt = model.get_prompt(
        tokenizer,
        previous_tokens=(
            tokenizer.encode(options.initial_prompt) if options.initial_prompt else []
        ),
        without_timestamps=False,
        hotwords=options.hotwords,
    )
    rows = [
        _Row(
            w,
            k,
            start,
            start + items[i].duration,
            _window_end(window, items),
            [*prompt, _timestamp(tokenizer, start)],
        )
        for w, window in enumerate(windows)
        for k, (i, start) in enumerate(zip(window.items, window.starts, strict=True))
    ]
    budget = max(ceil((r.end - r.start) * TOKENS_PER_SECOND) for r in rows) + TOKEN_SLACK
    max_length = min(model.max_length, len(rows[0].prompt) + budget)
    view = _rows_view(model, encoded, rows, silence, gap_s)
    results = _generate(model, view, rows, options, max_length)
    redo = [
        n
        for n, (row, result) in enumerate(zip(rows, results, strict=True))
        if _cut_short(tokenizer, row, result, max_length, gap_s)
    ]
    if redo and max_length < model.max_length:
        again = [rows[n] for n in redo]
        view = _rows_view(model, encoded, again, silence, gap_s)
        for n, result in zip(
            redo, _generate(model, view, again, options, model.max_length), strict=True
        ):
            results[n] = result

    out: list[list[list[dict] | None]] = [[None for _ in window.items] for window in windows]
    for row, result in zip(rows, results, strict=True):
        out[row.window][row.position] = _row_segments(
            model, tokenizer, encoded[row.window], row, result, options, gap_s
        )
    return out


def window_features(
    window: Window, items: Sequence[ChunkRequest], features: Callable[[np.ndarray], np.ndarray]
) -> np.ndarray:
    """The window's log-mel input: each clip's own features at its start, padding elsewhere.

    Each clip is featurised alone, as it would be unpacked: Whisper normalises a log-mel
    spectrogram against its loudest frame, so featurising the joined audio would rescale
    a quiet clip against a loud neighbour. Outside the clips the value is the zero that
    `pad_or_trim` pads a lone clip's window with.
    """
    parts = [
        (round(start * FRAMES_PER_SECOND), features(items[i].audio))
        for i, start in zip(window.items, window.starts, strict=True)
    ]
    mels = np.zeros((parts[0][1].shape[0], N_FRAMES), dtype=np.float32)
    for column, part in parts:
        width = min(part.shape[1], N_FRAMES - column)
        mels[:, column : column + width] = part[:, :width]
    return mels


def _generate(
    model: WhisperModel,
    encoded: ctranslate2.StorageView,
    rows: Sequence[_Row],
    options: TranscriptionOptions,
    max_length: int,
) -> list:
    return model.model.generate(
        encoded,
        [row.prompt for row in rows],
        beam_size=options.beam_size,
        patience=options.patience,
        length_penalty=options.length_penalty,
        max_length=max_length,
        suppress_blank=options.suppress_blank,
        suppress_tokens=options.suppress_tokens,
        return_scores=True,
        return_no_speech_prob=True,
        sampling_temperature=options.temperatures[0],
        repetition_penalty=options.repetition_penalty,
        no_repeat_ngram_size=options.no_repeat_ngram_size,
        # The prompt already fixes where the clip starts.
        max_initial_timestamp_index=model.max_length * 4,
    )


def _cut_short(tokenizer: Tokenizer, row: _Row, result, max_length: int, gap_s: float) -> bool:
    """True when a row stopped at the budget before its decoder left the clip."""
    tokens = result.sequences_ids[0]
    if len(tokens) + len(row.prompt) < max_length - 1:
        return False  # ended by itself
    boundary = row.end + gap_s / 2
    return not any(
        t >= tokenizer.timestamp_begin and _seconds(tokenizer, t) > boundary for t in tokens
    )


def _row_segments(
    model: WhisperModel,
    tokenizer: Tokenizer,
    encoded: np.ndarray,
    row: _Row,
    result,
    options: TranscriptionOptions,
    gap_s: float,
) -> list[dict] | None:
    """Split a row into timestamped segments and align its words; None if it failed.

    Alignment runs on the encoder frames from just before the clip to where the row's
    text ends: starting at the window's first frame would stretch the first word back to
    0 s.
    """
    generated = result.sequences_ids[0]
    seq_len = len(generated)
    cum_logprob = result.scores[0] * (seq_len**options.length_penalty)
    tokens = _own_tokens(tokenizer, generated, row, gap_s)
    if tokens is None:
        return None
    first = max(0.0, row.start - gap_s / 2)
    last = min(row.limit, _seconds(tokenizer, tokens[-1]) + gap_s / 2)
    subsegments, _, _ = model._split_segments_by_timestamps(
        tokenizer=tokenizer,
        tokens=tokens,
        time_offset=-first,
        segment_size=0,
        segment_duration=row.end - row.start,
        seek=0,
    )
    segments = []
    for sub in subsegments:
        text = tokenizer.decode(sub["tokens"])
        segments.append(
            {
                "text": text,
                "avg_logprob": cum_logprob / (seq_len + 1),
                "no_speech_prob": result.no_speech_prob,
                "tokens": [t for t in sub["tokens"] if t < tokenizer.eot],
                "start": sub["start"],
                "end": sub["end"],
                "compression_ratio": get_compression_ratio(text),
                "seek": 0,
            }
        )
    frames = np.ascontiguousarray(encoded[None, _frames(first) : _frames(last) + 1])
    model.add_word_timestamps(
        [segments],
        tokenizer,
        _storage(frames, model),
        [frames.shape[1] * 2],  # mel frames: two per encoder frame
        options.prepend_punctuations,
        options.append_punctuations,
        0.0,
    )
    for segment in segments:  # back to window time
        segment["start"] += first
        segment["end"] += first
        for word in segment.get("words") or []:
            word["start"] += first
            word["end"] += first
    return segments


def _own_tokens(
    tokenizer: Tokenizer, tokens: Sequence[int], row: _Row, gap_s: float
) -> list[int] | None:
    """The row's tokens up to the first timestamp past its clip, ending with a timestamp.

    None when text runs straight on to a timestamp past the clip: with the other clips
    silenced, that is the decoder jumping out of its clip mid-speech (seen as one word,
    then a jump 15 s ahead), and the clip must be decoded alone instead.
    """
    boundary = row.end + gap_s / 2
    kept: list[int] = (
        []
        if tokens and tokens[0] >= tokenizer.timestamp_begin
        else [_timestamp(tokenizer, row.start)]
    )
    for token in tokens:
        if token >= tokenizer.timestamp_begin and _seconds(tokenizer, token) > boundary:
            return kept if kept[-1] >= tokenizer.timestamp_begin else None
        kept.append(token)
    if kept[-1] < tokenizer.timestamp_begin:  # ended without a closing timestamp
        kept.append(_timestamp(tokenizer, row.end))
    return kept


# One timestamp token per encoder frame.
def _timestamp(tokenizer: Tokenizer, seconds: float) -> int:
    return tokenizer.timestamp_begin + round(min(seconds, 30.0) / ENCODER_FRAME_S)


def _seconds(tokenizer: Tokenizer, token: int) -> float:
    return (token - tokenizer.timestamp_begin) * ENCODER_FRAME_S


def _window_end(window: Window, items: Sequence[ChunkRequest]) -> float:
    return max(s + items[i].duration for i, s in zip(window.items, window.starts, strict=True))


def _rows_view(
    model: WhisperModel,
    encoded: np.ndarray,
    rows: Sequence[_Row],
    silence: np.ndarray,
    gap_s: float,
) -> ctranslate2.StorageView:
    """Each row's copy of its window's encoding, with the other clips' frames silenced."""
    batch = encoded[[r.window for r in rows]]  # fancy indexing copies
    for n, row in enumerate(rows):
        first, last = _frames(row.start - gap_s / 2), _frames(row.end + gap_s / 2)
        batch[n, :first] = silence[:first]
        batch[n, last:] = silence[last:]
    return _storage(batch, model)


def _storage(array: np.ndarray, model: WhisperModel) -> ctranslate2.StorageView:
    view = ctranslate2.StorageView.from_array(np.ascontiguousarray(array))
    # Untested here (no GPU): packing is off on GPU by default until measured there.
    return view.to_device(ctranslate2.Device.cuda) if model.model.device == "cuda" else view


def _frames(seconds: float) -> int:
    return max(0, round(seconds * 50))  # encoder frames are 20 ms


def to_numpy(encoded: ctranslate2.StorageView) -> np.ndarray:
    # GPU storage must come to host memory before numpy can index rows out of it.
    if encoded.device != "cpu":
        encoded = encoded.to_device(ctranslate2.Device.cpu)
    return np.array(encoded)
