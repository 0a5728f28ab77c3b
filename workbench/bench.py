"""Latency of .tflite files on this CPU: ``interpreter.invoke()`` only, after warm-up.

The input is set once (deterministic noise, quantized as :class:`~workbench.runtime.TFLiteModel`
does) and only ``invoke()`` is timed, so pre-processing and tensor copies are excluded. LiteRT's
default CPU path (XNNPACK) is used, with ``threads`` threads. Numbers from a shared machine are
noisy: compare medians from the same run, not across machines.
"""

from __future__ import annotations

import platform
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from workbench.errors import WorkbenchError
from workbench.fileio import sha256_file
from workbench.runtime import TFLiteModel


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (or ``platform.processor()``)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


# CPU features that decide whether int8 can beat fp32: 8-bit dot-product instructions. Without
# them (x86 AVX2 only) XNNPACK widens int8 to int16 and its int8 convolutions run no faster than
# fp32 FMA ones (measured here on a Zen 3 EPYC: YOLOv8n-pose 256 int8/fp32 ~ 1.0 on 1 thread).
INT8_DOT_PRODUCT_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8", "asimddp")
SIMD_FLAGS = ("sse4_2", "avx", "avx2", "fma", "avx512f", "asimd", *INT8_DOT_PRODUCT_FLAGS)


def cpu_features() -> list[str]:
    """The SIMD flags of this CPU that matter for int8 vs float speed (from /proc/cpuinfo)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith(("flags", "features")):
                present = set(line.split(":", 1)[1].split())
                return [f for f in SIMD_FLAGS if f in present]
    except OSError:
        pass
    return []


def litert_version() -> str:
    import ai_edge_litert

    return getattr(ai_edge_litert, "__version__", "unknown")


@dataclass
class BenchResult:
    """Timing of one model: statistics over ``runs`` timed invokes (ms), and the file's identity."""

    path: str
    median_ms: float
    p90_ms: float
    min_ms: float
    mean_ms: float
    runs: int
    warmup: int
    threads: int
    cpu: str
    size_bytes: int
    sha256: str
    litert_version: str
    arena_bytes: int
    times_ms: list[float] = field(default_factory=list, repr=False)

    def __post_init__(self) -> None:
        if self.runs <= 0 or len(self.times_ms) != self.runs:
            raise ValueError(f"runs={self.runs} but {len(self.times_ms)} timings")
        if not 0 < self.min_ms <= self.median_ms <= self.p90_ms:
            raise ValueError(
                f"inconsistent timings: min {self.min_ms}, median {self.median_ms}, p90 {self.p90_ms}"
            )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_pandas(self):
        """One-row DataFrame (see :func:`to_pandas` for several results)."""
        return to_pandas([self])


def to_pandas(results: Sequence[BenchResult]):
    """Results as a DataFrame, one row per model (raw timings left out).

    Example:
        >>> # to_pandas(bench_models(["a.tflite", "b.tflite"]))[["path", "median_ms"]]
    """
    import pandas as pd

    rows = [{k: v for k, v in r.to_dict().items() if k != "times_ms"} for r in results]
    return pd.DataFrame(rows)


def bench_model(
    path: str | Path, threads: int = 2, runs: int = 50, warmup: int = 5, seed: int = 0
) -> BenchResult:
    """Time ``runs`` invokes of ``path`` after ``warmup`` untimed ones.

    Example:
        >>> # r = bench_model("yolov8n_256_quant_pc_uf_pose_coco-st.tflite", threads=2, runs=20)
        >>> # r.median_ms, r.p90_ms
    """
    return bench_models([path], threads, runs, warmup, seed)[0]


def bench_models(
    paths: Sequence[str | Path],
    threads: int = 2,
    runs: int = 50,
    warmup: int = 5,
    seed: int = 0,
    block: int = 5,
) -> list[BenchResult]:
    """Time every model in ``paths``, interleaved; all paths are checked before any timing.

    The models take turns, ``block`` consecutive invokes each (caches stay warm within a block),
    until each has ``runs`` timings. A slow spell of a shared machine then hits every model alike,
    so their ratios (int8 / fp32) stay fair where one-after-the-other timing would skew them.
    """
    from workbench.inspect import activation_arena
    from workbench.tflite_graph import read_graph

    if runs < 1 or warmup < 0 or threads < 1 or block < 1:
        raise WorkbenchError(
            f"need runs >= 1, warmup >= 0, threads >= 1, block >= 1; got {runs}, {warmup}, {threads}, {block}"
        )
    paths = [Path(p) for p in paths]
    missing = [p for p in paths if not p.is_file()]
    if missing:
        raise WorkbenchError("model file not found", path=missing[0])
    models = [TFLiteModel(p, threads) for p in paths]
    for model in models:
        x01 = np.random.default_rng(seed).random(model.input.shape, dtype=np.float32)
        model.interpreter.set_tensor(model.input.index, model.quantize_input(x01))
        for _ in range(warmup):
            model.invoke_raw()
    times: list[list[float]] = [[] for _ in models]
    with tqdm(
        total=runs * len(models), desc="bench", unit="invoke", leave=False, disable=len(models) < 2
    ) as bar:
        while len(times[0]) < runs:
            n = min(block, runs - len(times[0]))
            for model, timed in zip(models, times, strict=True):
                timed.extend(model.invoke_raw() for _ in range(n))
                bar.update(n)
    return [
        BenchResult(
            path=str(path),
            median_ms=float(np.median(timed)),
            p90_ms=float(np.percentile(timed, 90)),
            min_ms=float(np.min(timed)),
            mean_ms=float(np.mean(timed)),
            runs=runs,
            warmup=warmup,
            threads=threads,
            cpu=cpu_model(),
            size_bytes=path.stat().st_size,
            sha256=sha256_file(path),
            litert_version=litert_version(),
            arena_bytes=activation_arena(read_graph(path)).arena_bytes,
            times_ms=[float(t) for t in timed],
        )
        for path, timed in zip(paths, times, strict=True)
    ]
