"""ST's SSD MobileNet v1 0.25 ``.h5`` files converted to int8 per-channel once per session: the
float sources of the int8 files ST's SSD card measured (the zoo's SSD files are older ones)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.conftest import built_once, shared_folder
from workbench.locations import data_dir, weights_dir
from workbench.targets.published import SSD_WEIGHTS

SSD_SIZES = (192, 224, 256)
# placement and activation memory do not depend on the calibration values: a few images suffice
CALIB_COUNT = 4


@pytest.fixture(scope="session")
def st_ssd_per_channel(tmp_path_factory) -> dict[int, Path]:
    """imgsz -> ST's SSD ``.h5`` of that size exported and converted to int8 per-channel (uint8 in,
    float out: ST's deployment form) by the workbench; skips when the weights or images are absent."""
    from workbench.jobs import convert_weights

    weights = weights_dir() / SSD_WEIGHTS
    calib = data_dir() / "coco-person-train2017" / "images"
    missing = [
        str(weights).format(imgsz=s) for s in SSD_SIZES if not Path(str(weights).format(imgsz=s)).is_file()
    ]
    if missing or not calib.is_dir():
        pytest.skip(
            f"ST's SSD .h5 or COCO person images not found: {', '.join(missing) or calib} "
            "(set WORKBENCH_WEIGHTS_DIR / WORKBENCH_DATA_DIR)"
        )
    # WORKBENCH_TARGETS_CACHE: a folder whose conversions are reused while their keys match (the
    # weights' and calibration images' digests, workbench.jobs), e.g. the benchmark's build/targets
    cache = os.environ.get("WORKBENCH_TARGETS_CACHE")
    root = Path(cache) if cache else shared_folder(tmp_path_factory, "st_ssd")
    with built_once(root):  # one worker converts, the others wait and reuse (the keys match)
        return {
            imgsz: convert_weights(
                str(weights), imgsz, "int8-per-channel", root / f"ssd{imgsz}", io="uf", calib=calib,
                calib_count=CALIB_COUNT,
            ).path
            for imgsz in SSD_SIZES
        }  # fmt: skip
