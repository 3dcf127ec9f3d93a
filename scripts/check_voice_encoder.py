"""Check the numpy GE2E encoder against independent implementations (run once, by hand).

Needs librosa, onnx and onnxruntime, which the project does not depend on: use a throwaway
venv, never the project's (torch itself was not reachable from this machine's registries
without its CUDA libraries, so onnxruntime's LSTM kernel stands in for it):

    python3 -m venv /tmp/ref && /tmp/ref/bin/pip install librosa onnx onnxruntime
    /tmp/ref/bin/python scripts/check_voice_encoder.py \
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
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from serve_app.inference.torch_pickle import load_checkpoint
from serve_app.inference.voice_encoder import VoiceEncoder, mel_power_spectrogram


def _reorder(w: np.ndarray) -> np.ndarray:
    """PyTorch's gate order i, f, g, o → ONNX's i, o, f, c."""
    i, f, g, o = np.split(w, 4, axis=0)
    return np.concatenate([i, o, f, g], axis=0)


def onnx_encoder(state: dict[str, np.ndarray]) -> ort.InferenceSession:
    const = [
        numpy_helper.from_array(np.array([1], np.int64), "axis1"),
        numpy_helper.from_array(np.array([0], np.int64), "axis0"),
        numpy_helper.from_array(state["linear.weight"].T.copy(), "LW"),
        numpy_helper.from_array(state["linear.bias"], "LB"),
    ]
    nodes = [helper.make_node("Transpose", ["x"], ["s"], perm=[1, 0, 2])]
    prev = "s"
    for n in range(3):
        w, r = _reorder(state[f"lstm.weight_ih_l{n}"]), _reorder(state[f"lstm.weight_hh_l{n}"])
        b = np.concatenate(
            [_reorder(state[f"lstm.bias_ih_l{n}"]), _reorder(state[f"lstm.bias_hh_l{n}"])]
        )
        const += [
            numpy_helper.from_array(w[None], f"W{n}"),
            numpy_helper.from_array(r[None], f"R{n}"),
            numpy_helper.from_array(b[None], f"B{n}"),
        ]
        nodes.append(
            helper.make_node(
                "LSTM", [prev, f"W{n}", f"R{n}", f"B{n}"], [f"Y{n}", f"H{n}"], hidden_size=256
            )
        )
        nodes.append(helper.make_node("Squeeze", [f"Y{n}", "axis1"], [f"S{n}"]))
        prev = f"S{n}"
    nodes += [
        helper.make_node("Squeeze", ["H2", "axis0"], ["h"]),
        helper.make_node("MatMul", ["h", "LW"], ["l"]),
        helper.make_node("Add", ["l", "LB"], ["lb"]),
        helper.make_node("Relu", ["lb"], ["r"]),
        helper.make_node("LpNormalization", ["r"], ["y"], axis=1, p=2),
    ]
    graph = helper.make_graph(
        nodes,
        "ge2e",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["B", 160, 40])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["B", 256])],
        const,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


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
