import os
import socket
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from workbench import offline


def test_environment_is_offline_and_inside_the_cache():
    assert os.environ["YOLO_OFFLINE"] == "1"
    cache = offline.cache_dir()
    assert Path(os.environ["YOLO_CONFIG_DIR"]).is_relative_to(cache)
    assert Path(os.environ["MPLCONFIGDIR"]).is_relative_to(cache)
    assert (Path(os.environ["YOLO_CONFIG_DIR"]) / "Ultralytics" / "Arial.ttf").stat().st_size > 100_000


def test_ultralytics_sees_the_offline_settings():
    from ultralytics.utils import ONLINE, USER_CONFIG_DIR

    assert not ONLINE
    assert Path(USER_CONFIG_DIR).is_relative_to(offline.cache_dir())


def test_calibration_npy_is_made_locally(tmp_path):
    path = offline.ensure_calibration_npy(tmp_path)
    data = np.load(path)
    assert data.shape == (20, 128, 128, 3) and data.dtype == np.float32
    assert offline.ensure_calibration_npy(tmp_path) == path  # idempotent


def test_socket_guard_blocks_outside_connections():
    with pytest.raises(RuntimeError, match="must not use the network"):
        urllib.request.urlopen("http://example.com", timeout=2)
    sock = socket.socket()
    try:
        with pytest.raises(RuntimeError, match="must not use the network"):
            sock.connect(("93.184.216.34", 80))
    finally:
        sock.close()


def test_socket_guard_allows_loopback():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    client = socket.socket()
    try:
        client.connect(server.getsockname())
    finally:
        client.close()
        server.close()
