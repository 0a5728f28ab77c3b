"""Published figures from the documents this project answers (``../shared/seeds``).

They are other people's numbers, on other images (full COCO val2017 or COCO-Person) and other
hardware (STM32 NPUs, Intel Xeon, Jetson, A100): a report shows them *beside* its own measurements,
marked as published, so a reader can place a measured row among them, never mix them into its
frontier.
"""

from __future__ import annotations

import pandas as pd

# ST model-zoo card, YOLOv8n pose (STM32Cube.AI 10.2.0 / STEdgeAI Core 2.2.0): AP0.5 on COCO-Person
# with NMS 0.1 and score 0.001; N6 (STM32N6570-DK, NPU/MCU) and MP2 (STM32MP257F-DK2, NPU/GPU,
# 800 MHz, X-LINUX-AI 6.1.0) inference times; N6 internal RAM and weights flash.
_ST_POSE = "ST model zoo card: YOLOv8n pose (seed 000)"
_ULTRA = "Ultralytics pose docs (seed 003)"
_NAS = "Deci: YOLO-NAS Pose (seed 002)"

PUBLISHED: list[dict] = [
    # fmt: off
    dict(
        source=_ST_POSE,
        model="YOLOv8n-pose per-channel",
        imgsz=192,
        fmt="int8",
        metric="AP0.5 (ST protocol, COCO-Person)",
        value=41.05,
        hardware="STM32N6570-DK NPU",
        latency_ms=24.46,
        ram_kib=477.56,
        flash_kib=3247.89,
    ),
    dict(
        source=_ST_POSE,
        model="YOLOv8n-pose per-channel",
        imgsz=256,
        fmt="int8",
        metric="AP0.5 (ST protocol, COCO-Person)",
        value=51.12,
        hardware="STM32N6570-DK NPU",
        latency_ms=35.79,
        ram_kib=1135.0,
        flash_kib=3265.22,
    ),
    dict(
        source=_ST_POSE,
        model="YOLOv8n-pose per-channel",
        imgsz=256,
        fmt="int8",
        metric="AP0.5 (ST protocol, COCO-Person)",
        value=51.12,
        hardware="STM32MP257F-DK2 NPU/GPU",
        latency_ms=102.8,
        ram_kib=None,
        flash_kib=None,
    ),
    dict(
        source=_ST_POSE,
        model="YOLOv8n-pose per-tensor",
        imgsz=256,
        fmt="int8",
        metric="AP0.5 (ST protocol, COCO-Person)",
        value=48.43,
        hardware="STM32MP257F-DK2 NPU/GPU",
        latency_ms=17.57,
        ram_kib=None,
        flash_kib=None,
    ),
    dict(
        source=_ST_POSE,
        model="YOLOv8n-pose per-channel",
        imgsz=320,
        fmt="int8",
        metric="AP0.5 (ST protocol, COCO-Person)",
        value=55.55,
        hardware="STM32N6570-DK NPU",
        latency_ms=51.35,
        ram_kib=2264.27,
        flash_kib=3263.72,
    ),
    dict(
        source=_ULTRA,
        model="YOLOv8n-pose",
        imgsz=640,
        fmt="fp32",
        metric="mAP pose 50-95 (COCO val2017)",
        value=50.4,
        hardware="CPU ONNX",
        latency_ms=131.8,
        ram_kib=None,
        flash_kib=None,
    ),
    dict(
        source=_ULTRA,
        model="YOLOv8n-pose",
        imgsz=640,
        fmt="fp32",
        metric="mAP pose 50 (COCO val2017)",
        value=80.1,
        hardware="A100 TensorRT",
        latency_ms=1.18,
        ram_kib=None,
        flash_kib=None,
    ),
    dict(
        source=_NAS,
        model="YOLO-NAS Pose N",
        imgsz=640,
        fmt="fp16",
        metric="AP (COCO val2017)",
        value=59.68,
        hardware="Intel Xeon 4th gen, OpenVINO",
        latency_ms=14.0,
        ram_kib=None,
        flash_kib=None,
    ),
    dict(
        source=_NAS,
        model="YOLO-NAS Pose S",
        imgsz=640,
        fmt="fp16",
        metric="AP (COCO val2017)",
        value=64.15,
        hardware="Intel Xeon 4th gen, OpenVINO",
        latency_ms=21.87,
        ram_kib=None,
        flash_kib=None,
    ),
    dict(
        source=_NAS,
        model="YOLO-NAS Pose M",
        imgsz=640,
        fmt="fp16",
        metric="AP (COCO val2017)",
        value=67.87,
        hardware="Intel Xeon 4th gen, OpenVINO",
        latency_ms=42.03,
        ram_kib=None,
        flash_kib=None,
    ),
    dict(
        source=_NAS,
        model="YOLO-NAS Pose L",
        imgsz=640,
        fmt="fp16",
        metric="AP (COCO val2017)",
        value=68.24,
        hardware="Intel Xeon 4th gen, OpenVINO",
        latency_ms=52.56,
        ram_kib=None,
        flash_kib=None,
    ),
    dict(
        source=_NAS,
        model="YOLO-NAS Pose N",
        imgsz=640,
        fmt="fp16",
        metric="AP (COCO val2017)",
        value=59.68,
        hardware="Jetson Xavier NX, TensorRT",
        latency_ms=15.99,
        ram_kib=None,
        flash_kib=None,
    ),
    dict(
        source=_NAS,
        model="YOLO-NAS Pose N",
        imgsz=640,
        fmt="fp16",
        metric="AP (COCO val2017)",
        value=59.68,
        hardware="NVIDIA T4, TensorRT",
        latency_ms=2.35,
        ram_kib=None,
        flash_kib=None,
    ),
    # fmt: on
]
TASK_OF_SOURCE = {_ST_POSE: "pose", _ULTRA: "pose", _NAS: "pose"}


def published_table(task: str = "pose") -> pd.DataFrame:
    """The published figures for ``task`` (values in percent, as their documents print them)."""
    rows = [r for r in PUBLISHED if TASK_OF_SOURCE[r["source"]] == task]
    return pd.DataFrame(rows, columns=list(PUBLISHED[0]))
