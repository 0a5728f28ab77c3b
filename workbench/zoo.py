"""ST model-zoo files as report variants: names parsed as ST writes them, scheme read from weights.

ST names its files ``<arch>_<imgsz>_quant_<pc|pt>_<io>_<pose|seg|od>_<dataset>.tflite`` (YOLOv8)
and ``ssd_mobilenet_v1_025_<imgsz>_int8.tflite`` (SSD). The name's ``pc``/``pt`` is what was asked
for; several ``pc`` files hold per-tensor weights, so the scheme recorded is the one
:func:`workbench.inspect.weight_granularity` finds in the file.
"""

from __future__ import annotations

import re
from pathlib import Path

from workbench.config import Scheme, Task
from workbench.errors import WorkbenchError
from workbench.fileio import sha256_file
from workbench.variant import Variant

_ZOO_YOLO = re.compile(
    r"(?P<arch>.+?)_(?P<imgsz>\d+)_quant_(?P<gran>pc|pt)_(?P<io>[uif]{2})_(?P<task>pose|seg|od)"
)
_ZOO_SSD = re.compile(r"(?P<arch>ssd_.+?)_(?P<imgsz>\d+)_int8")
_ZOO_TASK = {"pose": Task.POSE, "seg": Task.SEG, "od": Task.DETECT}


def zoo_variants(folder: str | Path, task: Task | None = None) -> list[Variant]:
    """ST zoo files in ``folder`` (recursively) for ``task``, one :class:`Variant` each."""
    from workbench.inspect import is_all_int8, weight_granularity
    from workbench.tflite_graph import read_graph

    variants = []
    for path in sorted(Path(folder).rglob("*.tflite")):
        match = _ZOO_YOLO.match(path.stem) or _ZOO_SSD.match(path.stem)
        if not match:
            continue
        parts = match.groupdict()
        file_task = _ZOO_TASK[parts["task"]] if "task" in parts else Task.DETECT
        if task is not None and file_task is not task:
            continue
        graph = read_graph(path)
        verdict = weight_granularity(graph).verdict
        scheme = {"per-channel": Scheme.INT8_PER_CHANNEL, "per-tensor": Scheme.INT8_PER_TENSOR}.get(
            verdict, Scheme.INT8_PER_CHANNEL
        )
        variants.append(
            Variant(
                name=path.stem,
                model=parts["arch"] + ("-st" if path.stem.endswith("-st") else ""),  # ST-retrained
                source="zoo",
                task=file_task.value,
                imgsz=int(parts["imgsz"]),
                scheme=scheme.value,
                io=parts.get("io", "uf"),
                path=str(path),
                sha256=sha256_file(path),
                size_bytes=path.stat().st_size,
                all_int8=is_all_int8(graph),
            )
        )
    if not variants:
        raise WorkbenchError(f"no zoo .tflite files for task {task.value if task else 'any'}", path=folder)
    return variants
