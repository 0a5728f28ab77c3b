"""Where a graph runs: a `distributed` cluster (local by default, or an existing scheduler), or
in-process and serially (``workers=0``), on the same task functions.

A local cluster has one worker process per core with one thread each, and every worker's
libraries (BLAS, TF, LiteRT) use one thread, so workers do not fight over cores. Workers of an
existing cluster need the same package set (this environment) and the same paths for the data,
the weights and the sweep folder (a shared file system).
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator

from workbench.errors import WorkbenchError

CONNECT_TIMEOUT_S = 5  # an unreachable scheduler fails well inside 10 s
ONE_THREAD_ENV = {
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "TF_NUM_INTRAOP_THREADS": "1",
    "TF_NUM_INTEROP_THREADS": "1",
}


def default_workers() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _check_reachable(address: str) -> None:
    """One TCP connection attempt first: a refused or silent address fails at once, in one line,
    rather than after Dask's retries."""
    import socket
    from urllib.parse import urlsplit

    try:  # urlsplit itself raises on an unclosed "[" (tcp://[::1)
        parts = urlsplit(address if "://" in address else f"tcp://{address}")
        host, port = parts.hostname, parts.port or 8786
    except ValueError:
        raise WorkbenchError(f"scheduler address {address!r} is not host:port") from None
    if parts.scheme not in ("tcp", "tls") or not host:
        raise WorkbenchError(f"scheduler address {address!r}: expected tcp://host:port")
    try:
        socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_S).close()
    except OSError as err:
        raise WorkbenchError(
            f"scheduler {address} unreachable within {CONNECT_TIMEOUT_S} s ({err.strerror or type(err).__name__})"
        ) from None


def _connect(client_type, address: str):
    """A Client of ``address``, or one line within the deadline. Dask's handshake with a server
    that accepts TCP but never answers waits past ``timeout``, so the wait is bounded here."""
    import threading

    outcome: dict = {}

    def attempt() -> None:
        try:
            outcome["client"] = client_type(address, timeout=f"{CONNECT_TIMEOUT_S}s")
        except Exception as err:  # OSError, TimeoutError, ValueError...: all mean "not usable"
            outcome["error"] = err

    thread = threading.Thread(target=attempt, daemon=True)  # a stuck attempt must not block exit
    thread.start()
    thread.join(CONNECT_TIMEOUT_S + 1)
    if "client" in outcome:
        return outcome["client"]
    err = outcome.get("error")
    reason = (str(err).splitlines()[0] if str(err) else type(err).__name__) if err else "no answer"
    raise WorkbenchError(f"scheduler {address} unreachable within {CONNECT_TIMEOUT_S} s ({reason[:200]})")


@contextlib.contextmanager
def open_client(scheduler: str | None = None, workers: int | None = None) -> Iterator:
    """A ``distributed.Client``: connected to ``scheduler`` (e.g. ``tcp://host:8786``) or to a new
    ``LocalCluster`` of ``workers`` processes (default: one per core), closed on exit.

    Raises:
        WorkbenchError: the scheduler does not answer within :data:`CONNECT_TIMEOUT_S`.
    """
    if scheduler:
        _check_reachable(scheduler)
    from distributed import Client, LocalCluster

    if scheduler:
        client = _connect(Client, scheduler)
        with client:
            yield client
        return
    n = workers or default_workers()
    if n < 1:
        raise WorkbenchError(f"a cluster needs at least one worker, got {n}")
    cluster = LocalCluster(
        n_workers=n,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",  # a local cluster listens on loopback only
        dashboard_address="127.0.0.1:0",  # any free port: other runs may hold 8787
        silence_logs=logging.ERROR,
        env=ONE_THREAD_ENV,
    )
    with cluster, Client(cluster) as client:
        yield client


class ReportCluster:
    """One LocalCluster for the notebooks of a report that run Dask graphs (``0N_<step>`` with
    ``<step>`` in :data:`workbench.steps.EXECUTOR_STEPS`), handed to their kernels in
    ``WORKBENCH_SCHEDULER``: workers start, and import TF, torch and Ultralytics, once per report
    rather than once per step. It is closed before any other notebook runs, so latency
    (04_benchmark) is still timed with no worker alive.

    Nothing is started for a serial config (``workers: 0``) or when ``WORKBENCH_SCHEDULER`` already
    names a cluster. Use as ``run_pipeline(..., step_context=cluster.step)`` inside ``with``.
    """

    def __init__(self, workers: int | None):
        from workbench.sweep.executor import SCHEDULER_ENV

        self.env = SCHEDULER_ENV
        self.enabled = workers != 0 and not os.environ.get(SCHEDULER_ENV)
        self.workers = workers
        self._open: contextlib.ExitStack | None = None

    def __enter__(self) -> ReportCluster:
        return self

    def __exit__(self, *_) -> None:
        self.close()

    @contextlib.contextmanager
    def step(self, stem: str) -> Iterator[None]:
        from workbench.steps import EXECUTOR_STEPS

        if not self.enabled or stem.split("_", 1)[-1] not in EXECUTOR_STEPS:
            self.close()
            yield
            return
        if self._open is None:
            stack = contextlib.ExitStack()
            client = stack.enter_context(open_client(None, self.workers))
            self._open = stack
            os.environ[self.env] = client.scheduler.address  # the kernel inherits it
        yield

    def close(self) -> None:
        if self._open is not None:
            os.environ.pop(self.env, None)
            stack, self._open = self._open, None
            stack.close()
