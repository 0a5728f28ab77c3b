"""Test session set-up: no network, offline environment, shared paths."""

from __future__ import annotations

import ipaddress
import os
import socket
from pathlib import Path

import pytest

import workbench  # noqa: F401  (configures the offline environment)

REPO = Path(__file__).resolve().parent.parent
ZOO_DIR = Path(os.environ.get("WORKBENCH_ZOO_DIR", REPO.parent / "shared" / "zoo")).resolve()
TINY_COCO = Path(
    os.environ.get("WORKBENCH_TINY_COCO", REPO.parent / "shared" / "data" / "tiny-coco")
).resolve()


class NetworkBlocked(RuntimeError):
    pass


def _is_loopback(address) -> bool:
    if isinstance(address, tuple) and address:
        host = address[0]
    else:  # AF_UNIX paths and the like are local
        return True
    if host in ("localhost", ""):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


_real_connect = socket.socket.connect
_real_connect_ex = socket.socket.connect_ex
_real_getaddrinfo = socket.getaddrinfo


def _guarded_connect(self, address):
    if not _is_loopback(address):
        raise NetworkBlocked(f"test tried to connect to {address!r}: tests must not use the network")
    return _real_connect(self, address)


def _guarded_connect_ex(self, address):
    if not _is_loopback(address):
        raise NetworkBlocked(f"test tried to connect to {address!r}: tests must not use the network")
    return _real_connect_ex(self, address)


def _guarded_getaddrinfo(host, *args, **kwargs):
    if host not in (None, "localhost", "") and not _is_loopback((host,)):
        raise NetworkBlocked(f"test tried to resolve {host!r}: tests must not use the network")
    return _real_getaddrinfo(host, *args, **kwargs)


def pytest_sessionstart(session):
    socket.socket.connect = _guarded_connect
    socket.socket.connect_ex = _guarded_connect_ex
    socket.getaddrinfo = _guarded_getaddrinfo


@pytest.fixture(scope="session")
def zoo_dir() -> Path:
    """``$WORKBENCH_ZOO_DIR`` (default ``../shared/zoo``); skips when absent."""
    if not (ZOO_DIR / "st").is_dir():
        pytest.skip(f"ST zoo not found at {ZOO_DIR} (set WORKBENCH_ZOO_DIR)")
    return ZOO_DIR


@pytest.fixture(scope="session")
def tiny_coco() -> Path:
    """``../shared/data/tiny-coco``; skips when absent."""
    if not (TINY_COCO / "instances_train2017_small.json").is_file():
        pytest.skip(f"tiny-coco not found at {TINY_COCO} (set WORKBENCH_TINY_COCO)")
    return TINY_COCO
