"""The input side of a realtime session: PCM16 in, 16 kHz turns out, server VAD.

`LiveInput` is one session's input audio buffer. Appended PCM16 (24 kHz as OpenAI sends
it, or 16 kHz) is resampled to 16 kHz float32 with libswresample (PyAV), the same
resampler the file decoder uses, statefully across appends. With server VAD, Silero VAD
(faster-whisper's model) runs on each new 32 ms window as it arrives, carrying the model's
state from window to window (so the probabilities equal those of one pass over the whole
audio), and a turn starts when the speech probability reaches `threshold` and ends after
`silence_duration_ms` below `threshold - 0.15`, with `prefix_padding_ms` of audio kept
before the start. A turn that ends is committed: its audio goes to the transcription
service like any other 16 kHz array. Without VAD the client commits.

Times are milliseconds of session audio since the session began (OpenAI's `audio_start_ms`
/ `audio_end_ms`). Runs in the ingress; a session costs about 0.3 ms of CPU per 100 ms of
audio.
"""

from __future__ import annotations

from dataclasses import dataclass

import av
import numpy as np
from faster_whisper.vad import get_vad_model

from serve_app.errors import AudioTooLong, BadRequest, EmptyAudioBuffer
from serve_app.pipeline.decode import SAMPLE_RATE

WINDOW = 512  # samples per Silero window at 16 kHz (32 ms)
_CONTEXT = 64  # samples of the previous window the model sees with each one
MIN_COMMIT_MS = 100  # OpenAI refuses to commit less than this
INPUT_RATES = (16000, 24000)


@dataclass(frozen=True)
class ServerVad:
    """Turn detection of a session (OpenAI's `server_vad`)."""

    threshold: float = 0.5
    prefix_padding_ms: int = 300
    silence_duration_ms: int = 500

    @property
    def neg_threshold(self) -> float:
        return max(self.threshold - 0.15, 0.01)  # as faster-whisper's VAD


@dataclass
class SpeechStarted:
    audio_start_ms: int  # includes the prefix padding


@dataclass
class SpeechStopped:
    audio_end_ms: int  # includes the silence that ended the turn


@dataclass
class Utterance:
    """Committed audio: 16 kHz mono float32 and where it lies in the session's audio."""

    samples: np.ndarray
    start_ms: int
    end_ms: int

    @property
    def duration(self) -> float:
        return self.samples.shape[0] / SAMPLE_RATE


LiveEvent = SpeechStarted | SpeechStopped | Utterance


def _ms(samples: int) -> int:
    return samples * 1000 // SAMPLE_RATE


class Resampler:
    """PCM16 at `rate` → 16 kHz float32, statefully (libswresample, as the file decoder)."""

    def __init__(self, rate: int) -> None:
        if rate not in INPUT_RATES:
            raise BadRequest(f"unsupported sample rate {rate}; use 24000 or 16000")
        self.rate = rate
        self._av = (
            None
            if rate == SAMPLE_RATE
            else av.audio.resampler.AudioResampler(format="s16", layout="mono", rate=SAMPLE_RATE)
        )
        self._pts = 0

    def __call__(self, pcm: np.ndarray) -> np.ndarray:
        if self._av is None or pcm.size == 0:
            return pcm.astype(np.float32) / 32768.0
        frame = av.AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = self.rate
        frame.pts = self._pts
        self._pts += pcm.size
        parts = [f.to_ndarray().reshape(-1) for f in self._av.resample(frame)]
        out = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int16)
        return out.astype(np.float32) / 32768.0


class StreamingVad:
    """Silero speech probabilities of each 512-sample window as the audio arrives."""

    def __init__(self) -> None:
        self._model = get_vad_model()
        self.reset()

    def reset(self) -> None:
        self._h = np.zeros((1, 1, 128), dtype=np.float32)
        self._c = np.zeros((1, 1, 128), dtype=np.float32)
        self._context = np.zeros(_CONTEXT, dtype=np.float32)

    def __call__(self, windows: np.ndarray) -> np.ndarray:
        """Probabilities of `windows` (shape (n, 512)), continuing from the last call."""
        if windows.shape[0] == 0:
            return np.zeros(0, dtype=np.float32)
        previous = np.concatenate([self._context[None, :], windows[:-1, -_CONTEXT:]], axis=0)
        batch = np.concatenate([previous, windows], axis=1)
        out, self._h, self._c = self._model.session.run(
            None, {"input": batch, "h": self._h, "c": self._c}
        )
        self._context = windows[-1, -_CONTEXT:].copy()
        return np.asarray(out, dtype=np.float32).reshape(-1)


class LiveInput:
    """One session's input audio buffer, with server VAD or manual commits.

    `append` returns what happened (speech started / stopped, committed turns) in order;
    `commit` takes the buffer as one utterance; `clear` drops it.
    """

    def __init__(
        self,
        rate: int,
        vad: ServerVad | None,
        *,
        max_buffered_s: float,
        max_utterance_s: float,
    ) -> None:
        self.max_buffered = int(max_buffered_s * SAMPLE_RATE)
        self.max_utterance = int(max_utterance_s * SAMPLE_RATE)
        self._vad_model: StreamingVad | None = None
        self._resampler = Resampler(rate)
        self.vad = vad
        self.total = 0  # 16 kHz samples received in the session
        self._buffer: list[np.ndarray] = []  # uncommitted audio (16 kHz float32)
        self._buffered = 0
        self._start = 0  # session sample where the buffer begins
        self._pending = np.zeros(0, dtype=np.float32)  # not yet seen by the VAD
        self._speaking = False
        self._silence_from: int | None = None
        self._vad_at = 0  # session sample where `_pending` begins

    @property
    def rate(self) -> int:
        return self._resampler.rate

    @property
    def speaking(self) -> bool:
        return self._speaking

    @property
    def buffered_s(self) -> float:
        return self._buffered / SAMPLE_RATE

    def configure(self, rate: int, vad: ServerVad | None) -> None:
        """New format or turn detection; a new rate drops what is buffered."""
        if rate != self.rate:
            self._resampler = Resampler(rate)
            self.clear()
        if vad != self.vad:
            self.vad = vad
            self._speaking = False
            self._silence_from = None
            self._restart_vad()
            self._trim_idle()

    def append(self, pcm: np.ndarray) -> list[LiveEvent]:
        """Add PCM16 samples at the session's rate; returns the VAD's events, in order."""
        samples = self._resampler(pcm)
        if self.vad is None and self._buffered + samples.size > self.max_buffered:
            raise AudioTooLong(
                f"the input audio buffer holds at most {self.max_buffered / SAMPLE_RATE:.0f} s; "
                "commit or clear it"
            )
        self._buffer.append(samples)
        self._buffered += samples.size
        self.total += samples.size
        if self.vad is None:
            self._vad_at = self.total
            return []
        return self._detect(samples)

    def commit(self) -> Utterance:
        """The whole buffer as one utterance (raises EmptyAudioBuffer under 100 ms)."""
        if self.vad is not None and not self._speaking:
            raise EmptyAudioBuffer("no speech in the input audio buffer to commit")
        if _ms(self._buffered) < MIN_COMMIT_MS:
            raise EmptyAudioBuffer(
                f"buffer too small: committing needs at least {MIN_COMMIT_MS} ms of audio, "
                f"it holds {_ms(self._buffered)} ms"
            )
        utterance = self._cut(self.total)
        self._speaking = False
        self._silence_from = None
        return utterance

    def clear(self) -> None:
        self._buffer, self._buffered = [], 0
        self._start = self.total
        self._speaking = False
        self._silence_from = None
        self._restart_vad()

    def _restart_vad(self) -> None:
        """The VAD continues from the current end of the audio, with a fresh state."""
        self._pending = np.zeros(0, dtype=np.float32)
        self._vad_at = self.total
        if self._vad_model is not None:
            self._vad_model.reset()

    # ---- server VAD -----------------------------------------------------------------------

    def _detect(self, samples: np.ndarray) -> list[LiveEvent]:
        assert self.vad is not None
        if self._vad_model is None:
            self._vad_model = StreamingVad()
        pending = np.concatenate([self._pending, samples])
        whole = pending.size // WINDOW * WINDOW
        probs = self._vad_model(pending[:whole].reshape(-1, WINDOW))
        self._pending = pending[whole:]
        at = self._vad_at
        self._vad_at += whole
        events: list[LiveEvent] = []
        vad = self.vad
        silence = vad.silence_duration_ms * SAMPLE_RATE // 1000
        for prob in probs:
            end = at + WINDOW
            if not self._speaking:
                if prob >= vad.threshold:
                    self._speaking = True
                    self._silence_from = None
                    padding = vad.prefix_padding_ms * SAMPLE_RATE // 1000
                    self._drop_before(max(self._start, at - padding))
                    events.append(SpeechStarted(_ms(self._start)))
            elif prob >= vad.threshold:
                self._silence_from = None
            elif prob < vad.neg_threshold and self._silence_from is None:
                self._silence_from = at
            if self._speaking:
                ended = self._silence_from is not None and end - self._silence_from >= silence
                full = end + WINDOW - self._start > self.max_utterance  # next one won't fit
                if ended or full:
                    events.append(SpeechStopped(_ms(end)))
                    events.append(self._cut(end))
                    self._speaking = False
                    self._silence_from = None
            at = end
        if not self._speaking:
            self._trim_idle()
        return events

    def _cut(self, end: int) -> Utterance:
        """Take the buffer up to session sample `end` as an utterance; keep the rest."""
        audio = np.concatenate(self._buffer) if self._buffer else np.zeros(0, np.float32)
        split = min(max(0, end - self._start), audio.size)
        utterance = Utterance(audio[:split], _ms(self._start), _ms(self._start + split))
        rest = audio[split:]
        self._buffer, self._buffered = ([rest] if rest.size else []), rest.size
        self._start += split
        return utterance

    def _drop_before(self, sample: int) -> None:
        """Forget buffered audio before session sample `sample`."""
        if sample <= self._start:
            return
        audio = np.concatenate(self._buffer) if self._buffer else np.zeros(0, np.float32)
        keep = audio[min(sample - self._start, audio.size) :]
        self._buffer, self._buffered = ([keep] if keep.size else []), keep.size
        self._start = self.total - keep.size

    def _trim_idle(self) -> None:
        """Between turns only the prefix padding (and audio the VAD has not seen) is kept."""
        if self.vad is None:
            return
        padding = self.vad.prefix_padding_ms * SAMPLE_RATE // 1000
        self._drop_before(self._vad_at - padding)
