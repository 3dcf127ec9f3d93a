"""Resemblyzer's GE2E voice encoder in numpy: speaker embeddings without torch.

The weights are `resemblyzer/pretrained.pt` from the `resemblyzer` PyPI package (installed
with `--no-deps`, so torch is never pulled in), read by `torch_pickle.load_checkpoint`. The
network and its input follow resemblyzer 0.1.4 (`voice_encoder.py`, `audio.py`,
`hparams.py`): a 40-bin mel *power* spectrogram (librosa's `melspectrogram` defaults: Hann
window of 400 samples = 25 ms, hop 160 = 10 ms, centred frames, Slaney mel filters), partial
utterances of 160 frames, a 3-layer LSTM 40→256, Linear 256→256, ReLU, L2 normalisation;
an utterance's embedding is the normalised mean of its partials' embeddings.

Resemblyzer also trims long silences with webrtcvad; here the caller hands in speech only
(the service's Silero VAD regions), and each clip is normalised to -30 dBFS.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from serve_app.inference.torch_pickle import CheckpointError, load_checkpoint

SAMPLE_RATE = 16000
N_FFT = 400  # 25 ms
HOP = 160  # 10 ms
N_MELS = 40
PARTIAL_FRAMES = 160  # 1.6 s
EMBEDDING_SIZE = 256
TARGET_DBFS = -30.0
_INT16_MAX = 2**15 - 1


def packaged_weights() -> Path:
    """`pretrained.pt` of the installed `resemblyzer` package (never imported: needs torch)."""
    spec = importlib.util.find_spec("resemblyzer")
    if spec is None or not spec.submodule_search_locations:
        raise CheckpointError(
            "the resemblyzer package is not installed (pip install --no-deps resemblyzer==0.1.4)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "pretrained.pt"
    if not path.is_file():
        raise CheckpointError(f"resemblyzer is installed but {path} is missing")
    return path


def _hz_to_mel(f: np.ndarray) -> np.ndarray:
    """Slaney's mel scale (librosa's default, `htk=False`): linear to 1 kHz, then log."""
    f_sp, min_log_hz, min_log_mel = 200.0 / 3, 1000.0, 15.0
    logstep = np.log(6.4) / 27.0
    mels = f / f_sp
    log_part = f >= min_log_hz
    mels[log_part] = min_log_mel + np.log(f[log_part] / min_log_hz) / logstep
    return mels


def _mel_to_hz(m: np.ndarray) -> np.ndarray:
    f_sp, min_log_hz, min_log_mel = 200.0 / 3, 1000.0, 15.0
    logstep = np.log(6.4) / 27.0
    freqs = f_sp * m
    log_part = m >= min_log_mel
    freqs[log_part] = min_log_hz * np.exp(logstep * (m[log_part] - min_log_mel))
    return freqs


def mel_filters(sr: int = SAMPLE_RATE, n_fft: int = N_FFT, n_mels: int = N_MELS) -> np.ndarray:
    """librosa.filters.mel(sr, n_fft, n_mels) with `norm="slaney"`: shape (n_mels, 1 + n_fft/2)."""
    fftfreqs = np.fft.rfftfreq(n_fft, 1.0 / sr)
    low, high = _hz_to_mel(np.array([0.0, sr / 2.0]))
    mel_f = _mel_to_hz(np.linspace(float(low), float(high), n_mels + 2))
    fdiff = np.diff(mel_f)
    ramps = mel_f[:, None] - fftfreqs[None, :]
    lower = -ramps[:-2] / fdiff[:-1, None]
    upper = ramps[2:] / fdiff[1:, None]
    weights = np.maximum(0.0, np.minimum(lower, upper))
    weights *= (2.0 / (mel_f[2:] - mel_f[:-2]))[:, None]
    return weights.astype(np.float32)


_WINDOW = (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(N_FFT) / N_FFT)).astype(np.float32)
# Transposed once and contiguous: `power @ _MEL_T` is ~10x faster than with a strided view.
_MEL_T = np.ascontiguousarray(mel_filters().T)


def mel_power_spectrogram(wav: np.ndarray) -> np.ndarray:
    """(frames, 40) float32; frame t is centred on sample t*160 (zero padding at the edges)."""
    padded = np.pad(wav.astype(np.float32), N_FFT // 2)
    n_frames = 1 + (padded.shape[0] - N_FFT) // HOP
    idx = np.arange(N_FFT)[None, :] + HOP * np.arange(n_frames)[:, None]
    spectrum = np.fft.rfft(padded[idx] * _WINDOW, axis=1)
    power = (spectrum.real**2 + spectrum.imag**2).astype(np.float32)
    return power @ _MEL_T


def normalize_volume(wav: np.ndarray, target_dbfs: float = TARGET_DBFS) -> np.ndarray:
    rms = float(np.sqrt(np.mean((wav.astype(np.float64) * _INT16_MAX) ** 2)))
    if rms <= 0.0:
        return wav.astype(np.float32)
    change = target_dbfs - 20 * np.log10(rms / _INT16_MAX)
    return (wav * (10 ** (change / 20))).astype(np.float32)


def partial_slices(n_samples: int, rate: float, min_coverage: float = 0.75) -> list[slice]:
    """Mel-frame slices of the partial utterances (resemblyzer's `compute_partial_slices`)."""
    samples_per_frame = HOP
    n_frames = int(np.ceil((n_samples + 1) / samples_per_frame))
    frame_step = max(1, min(PARTIAL_FRAMES, int(np.round(SAMPLE_RATE / rate / samples_per_frame))))
    steps = max(1, n_frames - PARTIAL_FRAMES + frame_step + 1)
    slices = [slice(i, i + PARTIAL_FRAMES) for i in range(0, steps, frame_step)]
    last = slices[-1]
    coverage = (n_samples - last.start * HOP) / (PARTIAL_FRAMES * HOP)
    if coverage < min_coverage and len(slices) > 1:
        slices = slices[:-1]
    return slices


@dataclass(frozen=True)
class _Layer:
    w_ih: np.ndarray  # (in, 4H), transposed for x @ w
    w_hh: np.ndarray  # (H, 4H)
    bias: np.ndarray  # (4H,): b_ih + b_hh


class VoiceEncoder:
    """The GE2E encoder as numpy matrix products; `embed_partials` takes a batch of mels."""

    def __init__(self, weights: Path | None = None) -> None:
        checkpoint = load_checkpoint(weights or packaged_weights())
        self._load(checkpoint.get("model_state", checkpoint))

    def _load(self, state: dict[str, np.ndarray]) -> None:
        self.layers: list[_Layer] = []
        # Gates are [i, f, g, o]; sigmoid(x) = (1 + tanh(x / 2)) / 2, so with the i, f and o
        # columns pre-scaled by 1/2 one tanh per step serves all four gates.
        scale = np.ones(4 * EMBEDDING_SIZE, np.float32)
        scale[: 2 * EMBEDDING_SIZE] = 0.5
        scale[3 * EMBEDDING_SIZE :] = 0.5
        for n in range(3):
            self.layers.append(
                _Layer(
                    np.ascontiguousarray(state[f"lstm.weight_ih_l{n}"].T * scale),
                    np.ascontiguousarray(state[f"lstm.weight_hh_l{n}"].T * scale),
                    (state[f"lstm.bias_ih_l{n}"] + state[f"lstm.bias_hh_l{n}"]) * scale,
                )
            )
        self.linear_w = np.ascontiguousarray(state["linear.weight"].T)
        self.linear_b = state["linear.bias"]

    def embed_partials(self, mels: np.ndarray) -> np.ndarray:
        """(batch, frames, 40) mels → (batch, 256) L2-normalised embeddings."""
        batch, frames, _ = mels.shape
        x = mels.astype(np.float32)
        hidden = EMBEDDING_SIZE
        h = np.zeros((batch, hidden), np.float32)
        for layer in self.layers:
            # Input projections of every time step in one product; the recurrence is per step.
            gates_x = (x.reshape(batch * frames, -1) @ layer.w_ih + layer.bias).reshape(
                batch, frames, 4 * hidden
            )
            h = np.zeros((batch, hidden), np.float32)
            c = np.zeros((batch, hidden), np.float32)
            outputs = np.empty((batch, frames, hidden), np.float32)
            for t in range(frames):
                z = np.tanh(gates_x[:, t] + h @ layer.w_hh)
                i = 0.5 + 0.5 * z[:, :hidden]
                f = 0.5 + 0.5 * z[:, hidden : 2 * hidden]
                o = 0.5 + 0.5 * z[:, 3 * hidden :]
                c = f * c + i * z[:, 2 * hidden : 3 * hidden]
                h = o * np.tanh(c)
                outputs[:, t] = h
            x = outputs
        raw = np.maximum(h @ self.linear_w + self.linear_b, 0.0)
        norm = np.linalg.norm(raw, axis=1, keepdims=True)
        return (raw / np.maximum(norm, 1e-12)).astype(np.float32)

    def partial_mels(self, wav: np.ndarray, rate: float = 1.3) -> np.ndarray:
        """(partials, 160, 40) mels of one clip, zero-padded to cover its last partial."""
        wav = normalize_volume(wav)
        slices = partial_slices(wav.shape[0], rate)
        needed = slices[-1].stop * HOP
        if needed >= wav.shape[0]:
            wav = np.pad(wav, (0, needed - wav.shape[0]))
        mel = mel_power_spectrogram(wav)
        return np.stack([mel[s] for s in slices])

    def embed_clips(self, clips: list[np.ndarray], rate: float = 1.3) -> np.ndarray:
        """One embedding per clip: the normalised mean of its partials (all in one batch)."""
        if not clips:
            return np.zeros((0, EMBEDDING_SIZE), np.float32)
        mels = [self.partial_mels(clip, rate) for clip in clips]
        partials = self.embed_partials(np.concatenate(mels))
        out = np.empty((len(clips), EMBEDDING_SIZE), np.float32)
        start = 0
        for n, m in enumerate(mels):
            mean = partials[start : start + m.shape[0]].mean(axis=0)
            out[n] = mean / max(float(np.linalg.norm(mean)), 1e-12)
            start += m.shape[0]
        return out
