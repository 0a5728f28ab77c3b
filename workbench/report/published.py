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

COLUMNS = (
    "source",
    "model",
    "imgsz",
    "fmt",
    "metric",
    "value",
    "hardware",
    "latency_ms",
    "ram_kib",
    "flash_kib",
)
# fmt: off
_ROWS = [
    (_ST_POSE, 'YOLOv8n-pose per-channel', 192, 'int8', 'AP0.5 (ST protocol, COCO-Person)', 41.05, 'STM32N6570-DK NPU', 24.46, 477.56, 3247.89),
    (_ST_POSE, 'YOLOv8n-pose per-channel', 256, 'int8', 'AP0.5 (ST protocol, COCO-Person)', 51.12, 'STM32N6570-DK NPU', 35.79, 1135.0, 3265.22),
    (_ST_POSE, 'YOLOv8n-pose per-channel', 256, 'int8', 'AP0.5 (ST protocol, COCO-Person)', 51.12, 'STM32MP257F-DK2 NPU/GPU', 102.8, None, None),
    (_ST_POSE, 'YOLOv8n-pose per-tensor', 256, 'int8', 'AP0.5 (ST protocol, COCO-Person)', 48.43, 'STM32MP257F-DK2 NPU/GPU', 17.57, None, None),
    (_ST_POSE, 'YOLOv8n-pose per-channel', 320, 'int8', 'AP0.5 (ST protocol, COCO-Person)', 55.55, 'STM32N6570-DK NPU', 51.35, 2264.27, 3263.72),
    (_ULTRA, 'YOLOv8n-pose', 640, 'fp32', 'mAP pose 50-95 (COCO val2017)', 50.4, 'CPU ONNX', 131.8, None, None),
    (_ULTRA, 'YOLOv8n-pose', 640, 'fp32', 'mAP pose 50 (COCO val2017)', 80.1, 'A100 TensorRT', 1.18, None, None),
    (_NAS, 'YOLO-NAS Pose N', 640, 'fp16', 'AP (COCO val2017)', 59.68, 'Intel Xeon 4th gen, OpenVINO', 14.0, None, None),
    (_NAS, 'YOLO-NAS Pose S', 640, 'fp16', 'AP (COCO val2017)', 64.15, 'Intel Xeon 4th gen, OpenVINO', 21.87, None, None),
    (_NAS, 'YOLO-NAS Pose M', 640, 'fp16', 'AP (COCO val2017)', 67.87, 'Intel Xeon 4th gen, OpenVINO', 42.03, None, None),
    (_NAS, 'YOLO-NAS Pose L', 640, 'fp16', 'AP (COCO val2017)', 68.24, 'Intel Xeon 4th gen, OpenVINO', 52.56, None, None),
    (_NAS, 'YOLO-NAS Pose N', 640, 'fp16', 'AP (COCO val2017)', 59.68, 'Jetson Xavier NX, TensorRT', 15.99, None, None),
    (_NAS, 'YOLO-NAS Pose N', 640, 'fp16', 'AP (COCO val2017)', 59.68, 'NVIDIA T4, TensorRT', 2.35, None, None),
]
# fmt: on
PUBLISHED: list[dict] = [dict(zip(COLUMNS, row, strict=True)) for row in _ROWS]
TASK_OF_SOURCE = {_ST_POSE: "pose", _ULTRA: "pose", _NAS: "pose"}


def published_table(task: str = "pose") -> pd.DataFrame:
    """The published figures for ``task`` (values in percent, as their documents print them)."""
    rows = [r for r in PUBLISHED if TASK_OF_SOURCE[r["source"]] == task]
    return pd.DataFrame(rows, columns=list(PUBLISHED[0]))
