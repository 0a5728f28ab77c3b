"""One exception type for bad input, so the CLI can turn it into a clear message and exit code."""

from __future__ import annotations

from pathlib import Path


class WorkbenchError(Exception):
    """A user-facing error about one input: names the file (if any) and the problem.

    Example:
        >>> str(WorkbenchError("keypoints has 50 values, expected 51", path="ann.json"))
        'ann.json: keypoints has 50 values, expected 51'
    """

    def __init__(self, message: str, path: str | Path | None = None):
        self.path = None if path is None else str(path)
        self.message = message
        super().__init__(f"{self.path}: {message}" if self.path else message)
