"""The ``host`` target: this machine's CPU, measured (LiteRT with XNNPACK, :mod:`workbench.bench`).

Every op runs on the CPU; there is no accelerator (``accelerator_mac_share`` is None). The CPU's
model and its int8-relevant SIMD flags are recorded with every figure: with AVX-512 VNNI int8 runs
about 3x faster than fp32, with AVX2 only at the same speed.
"""

from __future__ import annotations

from pathlib import Path

from workbench.errors import WorkbenchError
from workbench.targets.base import Target, TargetEstimate

HOST_RUNS = 30


# the arena is computed from the file's graph (workbench.inspect.activation_arena), not measured
HOST_SRAM = (
    "estimate: peak live activations of the .tflite (greedy arena, TFLite Micro's planner), not "
    "this machine's memory use"
)


class HostTarget(Target):
    name = "host"
    description = "this machine's CPU (LiteRT, XNNPACK), measured"
    latency_source = "measured"
    latency_label = "measured on this CPU"

    def __init__(self, threads: int = 2, runs: int = HOST_RUNS) -> None:
        self.threads, self.runs = threads, runs

    def estimate(self, model: str | Path) -> TargetEstimate:
        from workbench.bench import bench_models

        model = Path(model)
        if not model.is_file():
            raise WorkbenchError("model file not found", path=model)
        (timing,) = bench_models([model], threads=self.threads, runs=self.runs)
        return self.from_timing(timing)

    def from_timing(self, timing) -> TargetEstimate:
        """The estimate of a file already timed (:class:`workbench.bench.BenchResult`): a report's
        benchmark step times every variant interleaved once, and the host target reuses it."""
        from workbench.bench import cpu_features

        return TargetEstimate(
            target=self.name,
            model=timing.path,
            latency_ms=timing.median_ms,
            latency_source="measured",
            sram_bytes=timing.arena_bytes,  # activation arena (greedy, as TFLite Micro plans it)
            flash_bytes=timing.size_bytes,
            provenance={
                "cpu": timing.cpu,
                "simd": cpu_features(),
                "threads": timing.threads,
                "runs": timing.runs,
                "litert": timing.litert_version,
                "model_sha256": timing.sha256,
                "sram_means": HOST_SRAM,
            },  # fmt: skip
        )
