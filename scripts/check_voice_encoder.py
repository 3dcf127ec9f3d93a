"""Check the numpy GE2E encoder against independent implementations (run once, by hand).

Needs librosa, which the project does not depend on (torch itself was not reachable from
this machine's registries without its CUDA libraries, so onnxruntime's LSTM kernel, which
the replicas run, stands in for it):

    .venv/bin/pip install librosa
    .venv/bin/python scripts/check_voice_encoder.py \
        .venv/lib/python3.11/site-packages/resemblyzer/pretrained.pt

Prints the largest absolute differences: the mel power spectrogram against
`librosa.feature.melspectrogram` (what resemblyzer's `audio.wav_to_mel_spectrogram` calls)
and the embeddings against the same weights in an ONNX graph (3 LSTM layers, Linear, ReLU, L2).
"""

from __future__ import annotations

import sys
from pathlib import Path

import librosa
import numpy as np
import onnxruntime as ort

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from serve_app.inference.torch_pickle import load_checkpoint
from serve_app.inference.voice_encoder import VoiceEncoder, mel_power_spectrogram
from serve_app.inference.voice_encoder_onnx import encoder_graph


def onnx_encoder(state: dict[str, np.ndarray]) -> ort.InferenceSession:
    """The replicas' graph (`voice_encoder_onnx.encoder_graph`) on onnxruntime's defaults."""
    model = encoder_graph(state).SerializeToString()
    return ort.InferenceSession(model, providers=["CPUExecutionProvider"])


def main() -> int:
    weights = Path(sys.argv[1])
    rng = np.random.default_rng(0)
    t = np.arange(5 * 16000) / 16000
    # A voiced-like test signal: a gliding harmonic tone with noise, amplitude-modulated.
    wav = np.sin(2 * np.pi * (120 + 40 * t) * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 3 * t))
    wav = (0.3 * wav + 0.02 * rng.standard_normal(t.size)).astype(np.float32)
    ref = librosa.feature.melspectrogram(y=wav, sr=16000, n_fft=400, hop_length=160, n_mels=40).T
    mel_diff = float(np.abs(ref.astype(np.float32) - mel_power_spectrogram(wav)).max())
    encoder = VoiceEncoder(weights)
    mels = encoder.partial_mels(wav).astype(np.float32)
    session = onnx_encoder(load_checkpoint(weights)["model_state"])
    emb_diff = float(np.abs(session.run(None, {"x": mels})[0] - encoder.embed_partials(mels)).max())
    print(f"mel vs librosa: max abs diff {mel_diff:.3g} (peak {ref.max():.3g})")
    print(
        f"embeddings vs onnxruntime LSTM: max abs diff {emb_diff:.3g} over {mels.shape[0]} partials"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
