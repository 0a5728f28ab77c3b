"""`Variant`: one model file of a report — a model at one image size, scheme and I/O type."""

from __future__ import annotations

from dataclasses import dataclass

from workbench.config import IOType, Scheme, Task

SOURCES = ("ours", "zoo")


@dataclass
class Variant:
    """One model file to evaluate: converted by the workbench (``ours``) or shipped (``zoo``)."""

    name: str
    model: str
    source: str  # "ours" | "zoo"
    task: str
    imgsz: int
    scheme: str
    io: str
    path: str
    sha256: str
    size_bytes: int
    recipe: str = ""  # recovery recipes joined by "+" (workbench.recipes), "" for a plain conversion
    all_int8: bool | None = None  # every op on 8-bit integers (inspect.is_all_int8); None: not checked

    def __post_init__(self) -> None:
        Scheme(self.scheme), IOType(self.io), Task(self.task)
        if self.source not in SOURCES:
            raise ValueError(f"source must be one of {SOURCES}, got {self.source!r}")
