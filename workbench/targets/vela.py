"""Arm Ethos-U targets through Arm's own compiler, Vela (``ethos-u-vela`` on PyPI).

Vela compiles the int8 ``.tflite`` for one accelerator configuration, places every op it supports
on the NPU and leaves the rest to the CPU, and writes a summary CSV with its performance estimate
(``inference_time``, NPU only: CPU ops are not timed) and memory use. We report those figures as
they are (``latency_source: tool``), the ops left to the CPU by name (read from the compiled file),
and the share of the network's MACs on the NPU.

Vela runs in a subprocess with a timeout: it segfaults on some files (ST's SSD files with Vela
5.2.0); a crash, a time-out or a refusal becomes a failed estimate naming it, never a traceback.
"""

from __future__ import annotations

import csv
import importlib.util
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from workbench.errors import WorkbenchError
from workbench.fileio import sha256_file
from workbench.targets.base import OpPlacement, Target, TargetEstimate
from workbench.targets.macs import op_macs

VELA_TIMEOUT_S = 600
NPU_OP = "ethos-u"  # the custom op Vela replaces each NPU subgraph with


@dataclass(frozen=True)
class EthosUConfig:
    accelerator: str  # Vela's --accelerator-config
    system: str  # a System_Config of Vela's vela.ini: clocks and memory ports
    memory_mode: str  # a Memory_Mode of vela.ini: where weights and activations live


# MCU systems: weights in flash, activations in SRAM (the Ethos-U55's only setting; Vela's
# High_End_Embedded / Flash_High systems run the NPU at 500 MHz)
ETHOS_U_CONFIGS = {
    "ethos-u55-128": EthosUConfig("ethos-u55-128", "Ethos_U55_High_End_Embedded", "Shared_Sram"),
    "ethos-u55-256": EthosUConfig("ethos-u55-256", "Ethos_U55_High_End_Embedded", "Shared_Sram"),
    "ethos-u65-256": EthosUConfig("ethos-u65-256", "Ethos_U65_Embedded", "Shared_Sram"),
    "ethos-u85-256": EthosUConfig("ethos-u85-256", "Ethos_U85_SYS_Flash_High", "Shared_Sram"),
}


def vela_version() -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("ethos-u-vela")
    except PackageNotFoundError:
        return None


def _vela_ini() -> Path:
    spec = importlib.util.find_spec("ethosu")
    if spec is None or not spec.submodule_search_locations:
        raise WorkbenchError("Vela is not installed (pip install ethos-u-vela; `make setup` does)")
    return Path(next(iter(spec.submodule_search_locations))) / "config_files" / "Arm" / "vela.ini"


class EthosUTarget(Target):
    latency_source = "tool"
    latency_label = "Vela estimate (NPU ops only)"

    def __init__(self, name: str, config: EthosUConfig, timeout_s: float = VELA_TIMEOUT_S) -> None:
        self.name, self.config, self.timeout_s = name, config, timeout_s
        self.description = f"Arm {config.accelerator} ({config.system}), Vela's estimate"

    def command(self, model: Path, out_dir: Path) -> list[str]:
        return [
            sys.executable, "-m", "ethosu.vela", str(model),
            "--accelerator-config", self.config.accelerator,
            "--config", str(_vela_ini()),
            "--system-config", self.config.system,
            "--memory-mode", self.config.memory_mode,
            "--output-dir", str(out_dir),
        ]  # fmt: skip

    def estimate(self, model: str | Path) -> TargetEstimate:
        model = Path(model)
        if not model.is_file():
            raise WorkbenchError("model file not found", path=model)
        provenance = {
            "tool": "vela", "version": vela_version(), "accelerator": self.config.accelerator,
            "system_config": self.config.system, "memory_mode": self.config.memory_mode,
            "model_sha256": sha256_file(model),
        }  # fmt: skip
        with tempfile.TemporaryDirectory(prefix="wb-vela-") as tmp:
            failure = self._compile(model, Path(tmp))
            if failure:
                return TargetEstimate.failed(self.name, model, f"estimator failed: {failure}", **provenance)
            summaries = sorted(Path(tmp).glob("*_summary_*.csv"))
            compiled = sorted(Path(tmp).glob("*_vela.tflite"))
            if len(summaries) != 1 or len(compiled) != 1:
                return TargetEstimate.failed(
                    self.name,
                    model,
                    "estimator failed: vela wrote no summary or no compiled file",
                    **provenance,
                )
            with summaries[0].open(newline="") as fh:
                summary = next(csv.DictReader(fh))
            placement = placement_from_compiled(model, compiled[0], f"vela {provenance['version']}")
        return _estimate(self.name, model, summary, placement, provenance)

    def _compile(self, model: Path, out_dir: Path) -> str | None:
        """Run Vela; None when it succeeded, else what went wrong in one line."""
        try:
            done = subprocess.run(
                self.command(model, out_dir), capture_output=True, text=True, timeout=self.timeout_s
            )
        except subprocess.TimeoutExpired:
            return f"vela timed out after {self.timeout_s:g} s"
        if done.returncode < 0:
            return f"vela crashed ({signal.Signals(-done.returncode).name})"
        if done.returncode != 0:
            lines = [line for line in (done.stderr or done.stdout).splitlines() if line.strip()]
            return f"vela exit code {done.returncode}: {lines[-1] if lines else 'no message'}"
        return None


def placement_from_compiled(model: Path, compiled: Path, decided_by: str) -> list[OpPlacement]:
    """Each op of ``model`` on the NPU or the CPU: an op is on the CPU when the compiled file still
    holds it (Vela keeps CPU ops with their output tensors' names), on the NPU otherwise."""
    from workbench.tflite_graph import read_graph

    original, after = read_graph(model), read_graph(compiled)
    cpu_outputs = {
        after.tensors[t].name for op in after.ops if op.op.lower() != NPU_OP for t in op.outputs if t >= 0
    }
    return [
        OpPlacement(
            op.index,
            op.op,
            "cpu" if any(original.tensors[t].name in cpu_outputs for t in op.outputs if t >= 0) else "npu",
            decided_by,
        )  # fmt: skip
        for op in original.ops
    ]


def _estimate(
    name: str, model: Path, summary: dict[str, str], placement: list[OpPlacement], provenance: dict
) -> TargetEstimate:
    from workbench.tflite_graph import read_graph

    graph = read_graph(model)
    macs = {op.index: op_macs(graph, op) for op in graph.ops}
    total = sum(macs.values())
    on_cpu = sum(macs[p.index] for p in placement if p.engine == "cpu")
    fallback = [p.op for p in placement if p.engine == "cpu"]
    if not any(p.engine == "npu" for p in placement):
        return TargetEstimate(
            target=name, model=str(model), fallback_ops=fallback, placement=placement, provenance=provenance,
            error="no op runs on the NPU (Vela places float ops on the CPU, and times NPU ops only)",
        )  # fmt: skip
    kib = 1024
    flash = float(summary["off_chip_flash_memory_used"]) + float(summary["on_chip_flash_memory_used"])
    return TargetEstimate(
        target=name,
        model=str(model),
        latency_ms=float(summary["inference_time"]) * 1000.0,
        latency_source="tool",
        sram_bytes=round(float(summary["sram_memory_used"]) * kib),
        flash_bytes=round(flash * kib),
        accelerator_mac_share=None if total == 0 else 1.0 - on_cpu / total,
        fallback_ops=[p.op for p in placement if p.engine == "cpu"],
        placement=placement,
        provenance={
            **provenance,
            "nn_macs": int(float(summary["nn_macs"])),
            "cycles_npu": summary["cycles_npu"],
            "sram_means": "tool: Vela's sram_memory_used (its own allocation of the NPU's SRAM; weights in flash)",
        },
    )
