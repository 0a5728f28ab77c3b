"""Selective quantization: calibrate once, then convert with chosen ops kept in float.

Built on TF's ``tf.lite.experimental.QuantizationDebugger``: it calibrates the converter's model
once, and each ``QuantizationDebugOptions(denylisted_nodes=...)`` re-quantizes that calibrated
model (about a second) with the listed ops left in float. No graph is rewritten here.

Blocks: the calibrated graph's ops in execution order, cut into runs of ``block_size`` compute ops
(per-op when 1). onnx2tf keeps few module names, so a block is labelled by its op range, its op
types and any Ultralytics module path its tensors carry (e.g. ``model.10/m/m.0/attn``).
"""

from __future__ import annotations

import re
import tempfile
import warnings
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from workbench.config import IOType
from workbench.errors import WorkbenchError
from workbench.offline import import_tensorflow
from workbench.tflite_graph import read_graph

_MODULE = re.compile(r"model\.\d+(?:/[A-Za-z_]+(?:\.\d+)?)*")
_SKIP = ("QUANTIZE", "DEQUANTIZE")


@dataclass
class Block:
    """A run of consecutive ops (indices in the calibrated float graph) and their output names."""

    index: int
    first_op: int
    last_op: int
    ops: dict[str, int]
    module: str
    nodes: list[str]

    @property
    def label(self) -> str:
        kinds = " ".join(f"{k}x{v}" for k, v in self.ops.items())
        return (
            f"ops {self.first_op}-{self.last_op}"
            + (f" [{self.module}]" if self.module else "")
            + f": {kinds}"
        )

    def to_dict(self) -> dict[str, Any]:
        return dict(asdict(self), label=self.label)


class SelectiveQuantizer:
    """One calibration of ``saved_model``; :meth:`convert` gives int8 files with blocks kept in float.

    Args:
        saved_model: SavedModel folder (``workbench export``).
        batches: calibration inputs, (1, S, S, 3) float32 in [0, 1].
        per_tensor: per-tensor weights (ST's switch) instead of per-channel.
    """

    def __init__(self, saved_model: str | Path, batches: Sequence[np.ndarray], per_tensor: bool):
        if not batches:
            raise WorkbenchError("selective quantization needs calibration images", path=saved_model)
        tf = import_tensorflow()
        converter = tf.lite.TFLiteConverter.from_saved_model(str(saved_model))
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: ([b] for b in batches)
        converter._experimental_disable_per_channel = per_tensor  # ST's per-tensor switch
        self._tf = tf
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tf.lite.Interpreter's deprecation notice
            self.debugger = tf.lite.experimental.QuantizationDebugger(
                converter=converter, debug_dataset=lambda: ([b] for b in batches[:1])
            )
        self._scratch = tempfile.TemporaryDirectory(prefix="wb-selective-")
        self.calibrated_path = Path(self._scratch.name) / "calibrated.tflite"
        self.calibrated_path.write_bytes(self.debugger.calibrated_model)
        self.graph = read_graph(self.calibrated_path)

    def blocks(self, block_size: int = 16) -> list[Block]:
        """Consecutive compute ops grouped ``block_size`` at a time (the last block may be shorter)."""
        if block_size < 1:
            raise WorkbenchError(f"block size must be at least 1, got {block_size}")
        ops = [op for op in self.graph.ops if op.op not in _SKIP and op.outputs]
        out = []
        for k in range(0, len(ops), block_size):
            chunk = ops[k : k + block_size]
            names = [self.graph.tensors[t].name for op in chunk for t in op.outputs if t >= 0]
            modules = sorted({m.group(0) for n in names for m in _MODULE.finditer(n)})
            out.append(
                Block(
                    index=len(out),
                    first_op=chunk[0].index,
                    last_op=chunk[-1].index,
                    ops=dict(Counter(op.op for op in chunk).most_common()),
                    module=", ".join(modules[:2]),
                    nodes=names,
                )
            )
        return out

    def convert(self, float_nodes: Sequence[str] = (), io: IOType | str = IOType.UF) -> bytes:
        """The int8 flatbuffer with ``float_nodes`` (op output names) left in float, in ``io`` tensor types."""
        from tensorflow.lite.python.util import modify_model_io_type

        tf, io = self._tf, IOType(io)
        self.debugger.options = tf.lite.experimental.QuantizationDebugOptions(
            denylisted_nodes=list(float_nodes) or None
        )
        model = self.debugger.get_nondebug_quantized_model()
        if io is IOType.FF:
            return model
        return modify_model_io_type(
            model,
            tf.uint8 if io is IOType.UF else tf.int8,
            tf.float32 if io is IOType.UF else tf.int8,
        )

    def output_sqnr(self, model: bytes, inputs: Sequence[np.ndarray]) -> float:
        """SQNR (dB) of ``model``'s outputs against the calibrated float model over ``inputs``."""
        from workbench.runtime import TFLiteModel

        path = Path(self._scratch.name) / "candidate.tflite"
        path.write_bytes(model)
        # builtin kernels: XNNPACK refuses some mixed float/int8 graphs at prepare time
        ours, ref = TFLiteModel(path, preserve_all_tensors=True), self._reference()
        signal = noise = 0.0
        for x in inputs:
            for q, f in zip(_by_shape(ours.run(x)), _by_shape(ref.run(x)), strict=True):
                signal += float(np.square(f.astype(np.float64)).sum())
                noise += float(np.square(f.astype(np.float64) - q).sum())
        return float(10 * np.log10(signal / noise)) if noise > 0 else float("inf")

    def _reference(self):
        from workbench.runtime import TFLiteModel

        if not hasattr(self, "_ref"):
            self._ref = TFLiteModel(self.calibrated_path)
        return self._ref

    def rank_by_output_sqnr(
        self, blocks: Sequence[Block], inputs: Sequence[np.ndarray]
    ) -> list[tuple[Block, float]]:
        """Blocks with the output SQNR reached when each alone stays in float, best first."""
        from tqdm.auto import tqdm

        scored = [
            (b, self.output_sqnr(self.convert(b.nodes, IOType.FF), inputs))
            for b in tqdm(blocks, desc="rank blocks", leave=False)
        ]
        return sorted(scored, key=lambda p: (-p[1], p[0].index))


def _by_shape(outputs: list[np.ndarray]) -> list[np.ndarray]:
    """Outputs in a fixed order (channel count), since converters may order them differently."""
    return sorted(outputs, key=lambda a: (a.shape, a.size))
