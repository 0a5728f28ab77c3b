"""Atomic file writing: outputs appear complete or not at all."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from workbench.errors import WorkbenchError

OWNER_MARKER = ".workbench-owned"  # inside every folder atomic_path writes: ours to replace later
_FULL_DISK = (errno.ENOSPC, errno.EDQUOT)


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds.

    Works for files and directories: whatever the block creates at the yielded path is moved into
    place. On error the temporary is removed and ``path`` is left untouched. A folder it writes
    carries :data:`OWNER_MARKER`; an existing folder at ``path`` is replaced only if it carries it
    (a folder of the user's is never deleted), and never by a file.

    Raises:
        WorkbenchError: ``path`` is a folder the workbench did not write, or cannot be written
            (read-only, a file where a folder should be, disk full).

    Example:
        >>> import tempfile, pathlib
        >>> d = pathlib.Path(tempfile.mkdtemp())
        >>> with atomic_path(d / "x.txt") as tmp:
        ...     _ = tmp.write_text("hello")
        >>> (d / "x.txt").read_text()
        'hello'
        >>> with atomic_path(d) as tmp:  # doctest: +ELLIPSIS
        ...     _ = tmp.write_text("would replace the user's folder")
        Traceback (most recent call last):
        ...
        workbench.errors.WorkbenchError: /...: is an existing folder the workbench did not write; ...
    """
    path = Path(path)
    if path.name in ("", ".", ".."):
        path = path.resolve()  # "--out ." names the current folder itself
    _refuse_foreign_folder(path, will_be_folder=None)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)) / path.name
    except OSError as err:
        raise WorkbenchError(f"cannot write here ({err.strerror or err})", path=path) from None
    try:
        try:
            yield tmp
        except OSError as err:
            if err.errno in _FULL_DISK:
                raise WorkbenchError(f"cannot write: {err.strerror}", path=path) from None
            raise
        if not tmp.exists():
            raise FileNotFoundError(f"{tmp}: nothing was written")
        if tmp.is_dir() and not tmp.is_symlink():
            (tmp / OWNER_MARKER).touch()
        _refuse_foreign_folder(path, will_be_folder=tmp.is_dir())
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp.parent, ignore_errors=True)


def _refuse_foreign_folder(path: Path, will_be_folder: bool | None) -> None:
    """Raise unless ``path`` is absent, a file, or a folder of ours that a folder will replace."""
    if path.is_symlink() or not path.is_dir():
        return  # os.replace swaps a symlink itself, never its target
    if will_be_folder is False:
        raise WorkbenchError("is an existing folder; name a file instead", path=path)
    if not _owned(path):
        raise WorkbenchError(
            "is an existing folder the workbench did not write; refusing to replace it "
            "(name a new folder, or remove this one yourself)",
            path=path,
        )


def _owned(folder: Path) -> bool:
    """A folder the workbench wrote: it or a folder around it carries :data:`OWNER_MARKER`, it lies
    in the project cache, or inside a run or sweep folder (their lock and status files, written
    before markers existed)."""
    from workbench.offline import cache_dir

    folder = folder.resolve()
    if folder.is_relative_to(cache_dir()):
        return True
    for level in (folder, *folder.parents):
        if (level / OWNER_MARKER).is_file():
            return True
        if (
            level != folder
            and (level / ".lock").is_file()
            and any((level / name).is_file() for name in ("status.json", "sweep.yaml"))
        ):
            return True
    return False


def check_owned_file(path: str | Path, signature: str) -> None:
    """Raise unless ``path`` is absent or a regular file of ours (its first 4 kB hold ``signature``).

    For a fixed name written into a folder the user chose (``reports/index.html``).
    """
    path = Path(path)
    if not path.exists() and not path.is_symlink():
        return
    if path.is_symlink() or not path.is_file():
        raise WorkbenchError("is not a regular file the workbench wrote; refusing to replace it", path=path)
    with open(path, "rb") as fh:
        head = fh.read(4096)
    if signature.encode() not in head:
        raise WorkbenchError("was not written by the workbench; refusing to replace it", path=path)


@contextlib.contextmanager
def exclusive(path: str | Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``.locks/<name>.lock`` beside ``path`` for the block (waits for it).

    For outputs two processes of one machine may build at once (a recipe's re-export shared by the
    per-channel and per-tensor cells of a sweep): the second waits, then finds it built.
    """
    locks = Path(path).parent / ".locks"  # one hidden folder: no lock file named like an output
    locks.mkdir(parents=True, exist_ok=True)
    fd = os.open(locks / f"{Path(path).name}.lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def write_json(path: str | Path, obj: Any, *, indent: int | None = 2) -> Path:
    """Write ``obj`` as JSON atomically with sorted keys (so equal content gives equal bytes)."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=indent, sort_keys=True) + "\n")
    return Path(path)


def write_text(path: str | Path, text: str) -> Path:
    """Write text atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def write_csv(df, path: str | Path) -> Path:
    """Write a pandas frame as CSV atomically (no index, floats as pandas prints them)."""
    return write_text(path, df.to_csv(index=False))
