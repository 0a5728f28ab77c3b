"""One process per run folder, and termination signals handled as failures.

:func:`run_lock` takes an exclusive ``fcntl.flock`` on ``<run_dir>/.lock``. The kernel drops the
lock when its holder dies (even on SIGKILL), so a crashed run never blocks the next one; the file
names the holder (pid, host, start time, command) so a refused process can say who has the folder.
The lock is re-entrant within a process (the CLI and :func:`~workbench.pipeline.run_pipeline` both
take it). ``flock`` is advisory and local: it does not protect a folder shared over NFS.

:func:`signals_as_exceptions` turns SIGTERM and SIGINT into :class:`Interrupted`, so ``except`` /
``finally`` blocks run (status written, FAILED page built, temporaries removed) before the process
exits with ``128 + signal``.

Example:
    >>> import tempfile
    >>> run = Path(tempfile.mkdtemp()) / "demo-0123456789ab"
    >>> with run_lock(run):
    ...     holder(run)["pid"] == os.getpid()
    True
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as _dt
import fcntl
import json
import os
import shlex
import signal
import socket
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from workbench.errors import WorkbenchError

LOCK_NAME = ".lock"
HANDLED_SIGNALS = (signal.SIGTERM, signal.SIGINT)
_held: dict[Path, list[int]] = {}  # lock file -> [fd, depth]


class Interrupted(BaseException):
    """A termination signal arrived. A ``BaseException``, like ``KeyboardInterrupt``, so that
    ``except Exception`` handlers do not swallow it."""

    def __init__(self, signum: int):
        self.signum = int(signum)
        self.signame = signal.Signals(self.signum).name
        self.detail = ""  # what the interrupted command left behind, filled in by its clean-up
        super().__init__(self.signum)

    def __str__(self) -> str:
        return f"interrupted by {self.signame}" + (f"; {self.detail}" if self.detail else "")

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


_pending: list[int] = []  # signals received inside signals_as_exceptions, oldest first


@contextlib.contextmanager
def signals_as_exceptions() -> Iterator[None]:
    """Within the block, SIGTERM/SIGINT raise :class:`Interrupted`; each is recorded first, so one whose
    exception Python discarded (raised inside a ``__del__``) is raised at the next safe point
    (:func:`raise_if_interrupted`, the block's end). A repeated signal raises again, during clean-up
    too. A no-op outside the main thread.

    While an asyncio loop runs in the main thread (papermill drives its kernel through one), the
    handler does not raise: the exception could land in one of nbclient's background tasks and be
    stored there unseen, and the run would go on to exit 0. It stops the kernel instead, so the
    notebook fails promptly, and the signal is raised when the block (or :func:`raise_if_interrupted`)
    sees it.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        # Recorded first: an exception raised while a __del__ runs is discarded by Python, so the
        # block's end and raise_if_interrupted() (called at safe points) act on the record. Later
        # signals are never ignored: each one raises again.
        _pending.append(signum)
        if asyncio._get_running_loop() is None:
            raise Interrupted(signum)
        _terminate_children()

    # a signal ignored on purpose (SIGINT of a `nohup` or `cmd &` job) stays ignored
    previous = {s: h for s in HANDLED_SIGNALS if (h := signal.getsignal(s)) != signal.SIG_IGN}
    _pending.clear()
    for s in previous:
        signal.signal(s, handler)
    try:
        yield
        raise_if_interrupted()
    except Interrupted:
        raise
    except BaseException as err:  # whatever the stopped kernel caused, the signal is the reason
        if (signalled := pending_interrupt()) is not None:
            raise signalled from err
        raise
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
        _pending.clear()


def pending_interrupt() -> Interrupted | None:
    """The :class:`Interrupted` for a signal the handler recorded without raising, if any."""
    return Interrupted(_pending[0]) if _pending else None


def raise_if_interrupted() -> None:
    """Raise :func:`pending_interrupt`, if any."""
    if (err := pending_interrupt()) is not None:
        raise err


def _terminate_children() -> None:
    import psutil

    for child in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.NoSuchProcess):
            child.terminate()


def stop_children(timeout: float = 5.0) -> None:
    """Terminate this process's child processes (a notebook kernel), then kill what is left.

    An interrupted run must not leave its kernel writing into the run folder after the lock is gone.
    """
    import psutil

    children = psutil.Process().children(recursive=True)
    for child in children:
        with contextlib.suppress(psutil.NoSuchProcess):
            child.terminate()
    _, alive = psutil.wait_procs(children, timeout=timeout)
    for child in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            child.kill()


def holder(run_dir: str | Path) -> dict[str, Any]:
    """What the lock file says about its (last) holder; ``{}`` if nothing readable."""
    try:
        data = json.loads((Path(run_dir) / LOCK_NAME).read_text() or "{}")
    except (OSError, json.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def _describe(info: dict[str, Any]) -> str:
    if not info:
        return "another process"
    return (
        f"pid {info.get('pid')} on {info.get('host')} since {info.get('started')} "
        f"({info.get('command', '?')})"
    )


def _say(message: str) -> None:
    from tqdm.auto import tqdm

    tqdm.write(message, file=sys.stderr)


@contextlib.contextmanager
def run_lock(run_dir: str | Path, *, wait: bool = False) -> Iterator[Path]:
    """Hold the exclusive lock of ``run_dir`` (created if needed) for the block.

    Args:
        run_dir: the run folder.
        wait: if another process holds it, wait for it instead of failing.

    Raises:
        WorkbenchError: (without ``wait``) another live process holds the folder; names it.
    """
    run_dir = Path(run_dir)
    created = [d for d in (run_dir, *run_dir.parents) if not d.exists()]  # innermost first
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:  # read-only, or a file where a folder should be
        raise WorkbenchError(f"cannot create the folder ({err.strerror or err})", path=run_dir) from None
    path = run_dir.resolve() / LOCK_NAME  # the folder resolved, never the lock file (see _acquire)
    if path in _held:
        _held[path][1] += 1
        try:
            yield path
        finally:
            _held[path][1] -= 1
        return
    fd = _acquire(path, wait)
    _held[path] = [fd, 1]
    try:
        yield path
    finally:
        del _held[path]
        # A folder that only ever held the lock (inputs refused before any work) is removed, while
        # still locked; a waiter then sees its lock file gone and starts over (see _acquire).
        if created and [p.name for p in run_dir.iterdir()] == [LOCK_NAME]:
            path.unlink()
            with contextlib.suppress(OSError):  # stops at the first folder something else uses
                for folder in created:
                    folder.rmdir()
        os.close(fd)


def _acquire(path: Path, wait: bool) -> int:
    announced = False
    while True:
        path.parent.mkdir(parents=True, exist_ok=True)
        try:  # O_NOFOLLOW: a .lock planted as a symlink must not lead our writes elsewhere
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        except OSError as err:
            raise WorkbenchError(f"cannot open the run lock ({err.strerror})", path=path) from None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                who = _describe(holder(path.parent))
                if not wait:
                    raise WorkbenchError(
                        f"run folder is in use by {who}; wait for it with --wait, or stop that process",
                        path=path.parent,
                    ) from None
                if not announced:
                    _say(f"{path.parent}: in use by {who}; waiting (--wait)")
                    announced = True
                fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                same = os.fstat(fd).st_ino == os.stat(path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)  # the previous holder removed this file: lock the new one
    info = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "started": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "command": shlex.join([Path(sys.argv[0]).name, *sys.argv[1:]]) if sys.argv else "",
    }
    os.ftruncate(fd, 0)
    os.pwrite(fd, (json.dumps(info, sort_keys=True) + "\n").encode(), 0)
    return fd
