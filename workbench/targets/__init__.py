"""Deployment targets: one registry entry each, answering "what will this file cost on my board?".

================= =========== ================================================================
target            latency     how
================= =========== ================================================================
``host``          measured    this machine's CPU, LiteRT/XNNPACK (:mod:`workbench.bench`)
``ethos-u55-128`` tool        Arm's Vela compiler: its performance estimate, SRAM/flash summary
``ethos-u55-256`` tool        and the ops it leaves to the CPU (:mod:`workbench.targets.vela`)
``ethos-u65-256`` tool
``ethos-u85-256`` tool
``stm32n6``       fitted      ST's documented placement rules; latency fitted to ST's published
``stm32mp2``      fitted      figures, with its leave-one-out error (:mod:`workbench.targets.st`)
``stm32h7``       fitted      CPU-only boards: every op on the CPU, latency fitted to ST's 3
``stm32mp157``    fitted      published SSD figures each (one network: see
``stm32mp135``    fitted      :mod:`workbench.targets.st_cpu`)
================= =========== ================================================================

Example:
    >>> list_targets()[:2]
    ['ethos-u55-128', 'ethos-u55-256']
    >>> get_target("ethos-u55-256").latency_source
    'tool'
"""

from __future__ import annotations

from workbench.errors import WorkbenchError
from workbench.targets.base import Target, TargetEstimate
from workbench.targets.host import HostTarget
from workbench.targets.st import STM32MP2, STM32N6
from workbench.targets.st_cpu import CPU_BOARDS
from workbench.targets.vela import ETHOS_U_CONFIGS, EthosUTarget

_REGISTRY: dict[str, Target] = {}


def register_target(target: Target) -> Target:
    """Add ``target`` to the registry (its ``name`` must be new)."""
    if target.name in _REGISTRY:
        raise ValueError(f"target {target.name!r} is already registered")
    _REGISTRY[target.name] = target
    return target


def list_targets() -> list[str]:
    return sorted(_REGISTRY)


def get_target(name: str) -> Target:
    """The target registered as ``name``; one clear error listing the valid names otherwise."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise WorkbenchError(f"unknown target {name!r}; valid targets: {', '.join(list_targets())}") from None


register_target(HostTarget())
register_target(STM32N6)
register_target(STM32MP2)
for _board in CPU_BOARDS:
    register_target(_board)
for _name, _config in ETHOS_U_CONFIGS.items():
    register_target(EthosUTarget(_name, _config))

__all__ = ["Target", "TargetEstimate", "get_target", "list_targets", "register_target"]
