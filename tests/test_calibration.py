"""Per-channel and per-tensor conversions of one SavedModel calibrate once, and write the bytes
that two separate calibrations write."""

from __future__ import annotations

import numpy as np
import pytest

from tests.tiny_tflite import _model, calibration_images
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
    from workbench.plan import conversion_groups, conversion_jobs

    cfg = RunConfig(imgsz=[192, 256], schemes=["fp32", "fp16", "int8-per-channel", "int8-per-tensor"])
    jobs = conversion_groups(conversion_jobs(cfg, ["m"]))
    for imgsz in (192, 256):
        assert [job.scheme for job in jobs[("m", imgsz, "int8")]] == [
            "int8-per-channel",
            "int8-per-tensor",
        ]
        assert [job.scheme for job in jobs[("m", imgsz, "fp32")]] == ["fp32"]
    assert sorted(job.order for members in jobs.values() for job in members) == list(range(8))


@pytest.fixture(scope="module")
def exported_tiny(tiny_saved_model, tmp_path_factory):
    """The tiny SavedModel with the metadata ``quantize`` reads, and a folder of 6 photos."""
    from PIL import Image

    from workbench.export import EXPORT_META, ExportResult
    from workbench.fileio import write_json

    root = tmp_path_factory.mktemp("calib-images")
    saved = root / "saved_model"
    import shutil

    shutil.copytree(tiny_saved_model, saved)
    meta = ExportResult(
        saved_model=saved, task="detect", imgsz=32, names={0: "person"}, kpt_shape=None,
        normalized=True, weights="tiny.pt", weights_sha256="0" * 64, seconds=0.0,
    ).to_dict()  # fmt: skip
    meta.pop("saved_model")
    write_json(saved / EXPORT_META, meta)
    images = root / "images"
    images.mkdir()
    rng = np.random.default_rng(3)
    for i in range(6):  # not square: the letterbox pads, as for real photos
        pixels = rng.integers(0, 256, (24 + 4 * i, 40, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(images / f"{i:02d}.png")
    return saved, images


def test_shared_calibration_images_give_the_bytes_of_decoding_per_scheme(
    exported_tiny, tmp_path, monkeypatch
):
    """The int8 schemes of one conversion task calibrate on images decoded once (read-only arrays
    shared within ``share_images``): the files must be the ones each scheme writes decoding alone."""
    from workbench.data import images as images_module
    from workbench.quantize import quantize

    saved, images = exported_tiny
    decoded = []
    load_image = images_module.load_image
    monkeypatch.setattr(
        images_module, "load_image", lambda path, *a, **k: decoded.append(path) or load_image(path, *a, **k)
    )

    def convert_all(folder: str) -> dict[str, bytes]:
        out = {}
        for scheme in ("int8-per-channel", "int8-per-tensor"):
            calibration.clear()  # each file calibrates by itself: only the images may be shared
            path = quantize(
                saved, scheme, tmp_path / folder / f"{scheme}.tflite", calib=images, calib_count=5
            )
            out[scheme] = path.path.read_bytes()
        return out

    alone = convert_all("alone")
    assert len(decoded) == 10  # 5 images, decoded for each scheme
    decoded.clear()
    before = dict(calibration.stats)
    with calibration.share_images():
        shared = convert_all("shared")
    assert len(decoded) == 5  # decoded once for both schemes
    assert calibration.stats["images_prepared"] - before["images_prepared"] == 1
    assert calibration.stats["images_shared"] - before["images_shared"] == 1
    assert shared == alone  # byte-identical files
    assert alone["int8-per-channel"] != alone["int8-per-tensor"]

    # the shared arrays cannot be changed by one conversion under the next one's feet
    key = ("k",)
    with calibration.share_images():
        first = calibration.prepared_images(key, lambda: [np.zeros((1, 2, 2, 3), np.float32)])
        with pytest.raises(ValueError, match="read-only"):
            first[0][0, 0, 0, 0] = 1.0
        again = calibration.prepared_images(key, lambda: pytest.fail("prepared twice"))
        assert again[0] is first[0] and again is not first
    # outside the block nothing is kept
    assert calibration.prepared_images(key, lambda: [np.ones(1)])[0].flags.writeable
