"""ST's SSD MobileNet v1 0.25 ``.h5`` files converted to int8 per-channel once per run: the float
sources of the int8 files ST's SSD card measured (the zoo's SSD files are older ones)."""

from __future__ import annotations

from pathlib import Path

import pytest

SSD_SIZES = (192, 224, 256)


@pytest.fixture(scope="session")
def st_ssd_per_channel(st_ssd_converted) -> dict[int, Path]:
    """imgsz -> ST's SSD ``.h5`` of that size converted to int8 per-channel (the session's shared
    conversions, :func:`tests.conftest.st_ssd_converted`, which the SSD family tests use too)."""
    return {imgsz: st_ssd_converted(imgsz, "int8-per-channel").path for imgsz in SSD_SIZES}
