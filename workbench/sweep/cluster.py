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

CONNECT_TIMEOUT_S = 8  # an unreachable scheduler fails well inside 10 s
ONE_THREAD_ENV = {
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "TF_NUM_INTRAOP_THREADS": "1",
    "TF_NUM_INTEROP_THREADS": "1",
}


def default_workers() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


@contextlib.contextmanager
def open_client(scheduler: str | None = None, workers: int | None = None) -> Iterator:
    """A ``distributed.Client``: connected to ``scheduler`` (e.g. ``tcp://host:8786``) or to a new
    ``LocalCluster`` of ``workers`` processes (default: one per core), closed on exit.

    Raises:
        WorkbenchError: the scheduler does not answer within :data:`CONNECT_TIMEOUT_S`.
    """
    from distributed import Client, LocalCluster

    if scheduler:
        try:
            client = Client(scheduler, timeout=f"{CONNECT_TIMEOUT_S}s")
        except (OSError, TimeoutError, ValueError) as err:
            reason = str(err).splitlines()[0] if str(err) else type(err).__name__
            raise WorkbenchError(
                f"scheduler {scheduler} unreachable within {CONNECT_TIMEOUT_S} s ({reason[:200]})"
            ) from None
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
