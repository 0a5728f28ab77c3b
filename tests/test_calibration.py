"""Per-channel and per-tensor conversions of one SavedModel calibrate once, and write the bytes
that two separate calibrations write."""

from __future__ import annotations

import numpy as np
import pytest
from tiny_tflite import _model, calibration_images

from workbench import calibration
from workbench.config import IOType, RunConfig, Scheme


@pytest.fixture(scope="module")
def tiny_saved_model(tmp_path_factory):
    path = tmp_path_factory.mktemp("calib") / "saved_model"
    _model().export(str(path), format="tf_saved_model", verbose=False)
    return path


def convert(saved_model, scheme: Scheme, batches: list[np.ndarray]) -> bytes:
    from workbench.offline import import_tensorflow
    from workbench.quantize import _convert

    return _convert(import_tensorflow(), saved_model, scheme, IOType.UF, batches, "int8")


def test_second_int8_scheme_reuses_the_calibration(tiny_saved_model):
    batches = list(calibration_images(6, seed=1))
    alone = {}
    for scheme in (Scheme.INT8_PER_CHANNEL, Scheme.INT8_PER_TENSOR):
        calibration.clear()  # each calibrates by itself, as before the cache
        alone[scheme] = convert(tiny_saved_model, scheme, batches)
    assert alone[Scheme.INT8_PER_CHANNEL] != alone[Scheme.INT8_PER_TENSOR]

    calibration.clear()
    before = dict(calibration.stats)
    shared = {s: convert(tiny_saved_model, s, batches) for s in alone}
    assert shared == alone  # byte-identical files
    assert calibration.stats["calibrated"] - before["calibrated"] == 1
    assert calibration.stats["reused"] - before["reused"] == 1

    # other images (one pixel changed) are calibrated anew: the key covers every sample
    changed = [b.copy() for b in batches]
    changed[-1][0, 5, 5, 0] += 0.25
    convert(tiny_saved_model, Scheme.INT8_PER_TENSOR, changed)
    assert calibration.stats["calibrated"] - before["calibrated"] == 2


def test_plain_int8_schemes_of_one_export_share_a_task():
    from workbench.sweep.executor import conversion_jobs

    cfg = RunConfig(imgsz=[192, 256], schemes=["fp32", "fp16", "int8-per-channel", "int8-per-tensor"])
    jobs = conversion_jobs(cfg, ["m"])
    for imgsz in (192, 256):
        assert [scheme for _, scheme, _ in jobs[("m", imgsz, "int8")]] == [
            "int8-per-channel",
            "int8-per-tensor",
        ]
        assert [scheme for _, scheme, _ in jobs[("m", imgsz, "fp32")]] == ["fp32"]
    assert sorted(o for members in jobs.values() for o, _, _ in members) == list(range(8))
