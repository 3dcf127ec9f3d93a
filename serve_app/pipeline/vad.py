"""Silero VAD speech timestamps in bounded memory, identical to faster-whisper's.

`faster_whisper.vad.get_speech_timestamps` pads a copy of the whole audio, builds a second
copy with each window's context, and runs the model on up to 10,000 windows (320 s) at
once: about 110 MB of peak memory for four minutes of audio, per concurrent call, and the
heap keeps most of it. Here the model runs on 256 windows (8 s) at a time, built from the audio
in place, carrying the LSTM state between runs exactly as faster-whisper does between its
own runs; the thresholding below is faster-whisper 1.2's, line for line. A test holds both
to the same probabilities and timestamps.

Everything here is a generator (`speech_stream`): a speech segment comes out as soon as the
probabilities after it settle it, so chunks can leave for the replicas while VAD still
runs over the rest of a long file.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator

import numpy as np
from faster_whisper.vad import VadOptions, get_vad_model

WINDOW = 512  # samples per VAD window at 16 kHz (Silero's)
CONTEXT = 64  # samples of the previous window each window sees
BATCH_WINDOWS = 256


def speech_probabilities(audio: np.ndarray, batch_windows: int = BATCH_WINDOWS) -> np.ndarray:
    """One speech probability per 512-sample window of `audio` padded as faster-whisper
    pads it (always, by 1 to 512 samples)."""
    probs = list(probability_blocks(audio, batch_windows))
    return np.concatenate(probs) if probs else np.zeros(0, dtype=np.float32)


def probability_blocks(
    audio: np.ndarray, batch_windows: int = BATCH_WINDOWS
) -> Iterator[np.ndarray]:
    """`speech_probabilities` one model run (`batch_windows` windows) at a time."""
    session = get_vad_model().session
    windows = (audio.shape[0] + WINDOW - audio.shape[0] % WINDOW) // WINDOW
    h = np.zeros((1, 1, 128), dtype=np.float32)
    c = np.zeros((1, 1, 128), dtype=np.float32)
    for first in range(0, windows, batch_windows):
        last = min(first + batch_windows, windows)
        start, stop = first * WINDOW, last * WINDOW
        # piece[k] is padded audio at start - CONTEXT + k (zeros before 0 and past the end)
        piece = np.zeros(stop - start + CONTEXT, dtype=np.float32)
        lo = max(0, start - CONTEXT)
        src = audio[lo : min(stop, audio.shape[0])]
        offset = lo - (start - CONTEXT)
        piece[offset : offset + src.shape[0]] = src
        if last == windows:
            # faster-whisper zeroes the last window's last CONTEXT samples (a side effect
            # of writing through a view); the same input gives the same probabilities.
            piece[-CONTEXT:] = 0
        rows = np.lib.stride_tricks.as_strided(
            piece,
            shape=(last - first, WINDOW + CONTEXT),
            strides=(WINDOW * piece.itemsize, piece.itemsize),
            writeable=False,
        )
        output, h, c = session.run(None, {"input": np.ascontiguousarray(rows), "h": h, "c": c})
        yield output.reshape(-1)


def speech_timestamps(
    audio: np.ndarray, options: VadOptions, sampling_rate: int = 16000
) -> list[dict]:
    """`faster_whisper.vad.get_speech_timestamps(audio, options)`, in bounded memory."""
    return list(speech_stream(audio, options, sampling_rate))


def speech_stream(
    audio: np.ndarray, options: VadOptions, sampling_rate: int = 16000
) -> Iterator[dict]:
    """`speech_timestamps`, each segment as soon as it is final."""
    probs = itertools.chain.from_iterable(probability_blocks(audio))
    raw = raw_speeches(probs, audio.shape[0], options, sampling_rate)
    return padded_speeches(raw, audio.shape[0], options, sampling_rate)


def raw_speeches(
    speech_probs: Iterable[float],
    audio_length_samples: int,
    options: VadOptions,
    sampling_rate: int,
) -> Iterator[dict]:
    """faster-whisper's thresholding loop; its `speeches.append(x)` is `yield x` here (a
    segment is never touched after it is appended)."""
    threshold = options.threshold
    neg_threshold = options.neg_threshold
    window_size_samples = WINDOW
    min_speech_samples = sampling_rate * options.min_speech_duration_ms / 1000
    speech_pad_samples = sampling_rate * options.speech_pad_ms / 1000
    max_speech_samples = (
        sampling_rate * options.max_speech_duration_s - window_size_samples - 2 * speech_pad_samples
    )
    min_silence_samples = sampling_rate * options.min_silence_duration_ms / 1000
    min_silence_samples_at_max_speech = sampling_rate * 98 / 1000

    triggered = False
    current_speech: dict = {}
    if neg_threshold is None:
        neg_threshold = max(threshold - 0.15, 0.01)
    temp_end = 0
    prev_end = next_start = 0

    for i, speech_prob in enumerate(speech_probs):
        if (speech_prob >= threshold) and temp_end:
            temp_end = 0
            if next_start < prev_end:
                next_start = window_size_samples * i

        if (speech_prob >= threshold) and not triggered:
            triggered = True
            current_speech["start"] = window_size_samples * i
            continue

        if triggered and (window_size_samples * i) - current_speech["start"] > max_speech_samples:
            if prev_end:
                current_speech["end"] = prev_end
                yield current_speech
                current_speech = {}
                if next_start < prev_end:
                    triggered = False
                else:
                    current_speech["start"] = next_start
                prev_end = next_start = temp_end = 0
            else:
                current_speech["end"] = window_size_samples * i
                yield current_speech
                current_speech = {}
                prev_end = next_start = temp_end = 0
                triggered = False
                continue

        if (speech_prob < neg_threshold) and triggered:
            if not temp_end:
                temp_end = window_size_samples * i
            if (window_size_samples * i) - temp_end > min_silence_samples_at_max_speech:
                prev_end = temp_end
            if (window_size_samples * i) - temp_end < min_silence_samples:
                continue
            current_speech["end"] = temp_end
            if (current_speech["end"] - current_speech["start"]) > min_speech_samples:
                yield current_speech
            current_speech = {}
            prev_end = next_start = temp_end = 0
            triggered = False
            continue

    if current_speech and (audio_length_samples - current_speech["start"]) > min_speech_samples:
        current_speech["end"] = audio_length_samples
        yield current_speech


def padded_speeches(
    raw: Iterable[dict], audio_length_samples: int, options: VadOptions, sampling_rate: int
) -> Iterator[dict]:
    """faster-whisper's padding pass, one segment behind the raw ones: a segment's padding
    depends only on its neighbours, so it is final once the next one is known."""
    speech_pad_samples = sampling_rate * options.speech_pad_ms / 1000
    speech: dict | None = None
    for following in itertools.chain(raw, [None]):
        if speech is None:  # i == 0
            if following is not None:
                following["start"] = int(max(0, following["start"] - speech_pad_samples))
            speech = following
            continue
        if following is not None:
            silence_duration = following["start"] - speech["end"]
            if silence_duration < 2 * speech_pad_samples:
                speech["end"] += int(silence_duration // 2)
                following["start"] = int(max(0, following["start"] - silence_duration // 2))
            else:
                speech["end"] = int(min(audio_length_samples, speech["end"] + speech_pad_samples))
                following["start"] = int(max(0, following["start"] - speech_pad_samples))
        else:
            speech["end"] = int(min(audio_length_samples, speech["end"] + speech_pad_samples))
        yield speech
        speech = following
