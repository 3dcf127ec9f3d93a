"""The GE2E voice encoder's network on onnxruntime's fused LSTM kernel.

Same weights, same input and the same embeddings as `VoiceEncoder` (within 1e-5), about 3.5x
faster on one core than numpy's step-by-step recurrence: the embedding of a diarized
10-minute file took 5.5 s of CPU next to the transcription on the same cores. onnxruntime
comes with faster-whisper; the graph is written with the `onnx` package at start-up.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from serve_app.inference.voice_encoder import EMBEDDING_SIZE, N_MELS, PARTIAL_FRAMES, VoiceEncoder

_OPSET = 17


def _onnx_gates(w: np.ndarray) -> np.ndarray:
    """PyTorch's LSTM gate blocks i, f, g, o → ONNX's i, o, f, c."""
    i, f, g, o = np.split(w, 4, axis=0)
    return np.concatenate([i, o, f, g], axis=0)


def encoder_graph(state: dict[str, np.ndarray]) -> onnx.ModelProto:
    """3 LSTM layers 40→256 over (frames, batch), Linear 256→256 on the last state, ReLU, L2."""
    const = [
        numpy_helper.from_array(np.array([1], np.int64), "axis1"),
        numpy_helper.from_array(np.array([0], np.int64), "axis0"),
        numpy_helper.from_array(np.ascontiguousarray(state["linear.weight"].T), "LW"),
        numpy_helper.from_array(state["linear.bias"], "LB"),
    ]
    nodes = [helper.make_node("Transpose", ["x"], ["s"], perm=[1, 0, 2])]
    prev = "s"
    for n in range(3):
        bias = np.concatenate(
            [_onnx_gates(state[f"lstm.bias_ih_l{n}"]), _onnx_gates(state[f"lstm.bias_hh_l{n}"])]
        )
        const += [
            numpy_helper.from_array(_onnx_gates(state[f"lstm.weight_ih_l{n}"])[None], f"W{n}"),
            numpy_helper.from_array(_onnx_gates(state[f"lstm.weight_hh_l{n}"])[None], f"R{n}"),
            numpy_helper.from_array(bias[None], f"B{n}"),
        ]
        nodes.append(
            helper.make_node(
                "LSTM",
                [prev, f"W{n}", f"R{n}", f"B{n}"],
                [f"Y{n}", f"H{n}"],
                hidden_size=EMBEDDING_SIZE,
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
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["B", PARTIAL_FRAMES, N_MELS])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["B", EMBEDDING_SIZE])],
        const,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", _OPSET)])
    model.ir_version = min(model.ir_version, 8)  # what older onnxruntime builds accept too
    onnx.checker.check_model(model)
    return model


class OnnxVoiceEncoder(VoiceEncoder):
    """`VoiceEncoder` whose partials run through onnxruntime on `threads` threads."""

    def __init__(self, weights: Path | None = None, threads: int = 1) -> None:
        self._threads = threads
        super().__init__(weights)

    def _load(self, state: dict[str, np.ndarray]) -> None:
        options = ort.SessionOptions()
        options.intra_op_num_threads = self._threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        self.session = ort.InferenceSession(
            encoder_graph(state).SerializeToString(),
            sess_options=options,
            providers=["CPUExecutionProvider"],
        )

    def embed_partials(self, mels: np.ndarray) -> np.ndarray:
        if mels.shape[0] == 0:
            return np.zeros((0, EMBEDDING_SIZE), np.float32)
        out: np.ndarray = self.session.run(None, {"x": mels.astype(np.float32)})[0]
        return out
