"""TensorFlow's own log lines off the terminal unless ``--verbose``: users see our progress and errors.

TensorFlow's C++ side logs through absl straight to file descriptor 2 (``I0000 ... port.cc:153]
oneDNN custom operations are on``, ``WARNING: All log messages before absl::InitializeLog()``,
the converter's ``fully_quantize: 0, inference_type: 6 ...``), past Python's ``sys.stderr`` and
past ``TF_CPP_MIN_LOG_LEVEL``, from this process and from the notebook kernels and Dask workers
it starts (they inherit descriptor 2). :func:`tf_logs_hidden` points descriptor 2 at a pipe and
forwards every line but those, in order; progress bars (``\\r`` redraws) pass at once.
"""

from __future__ import annotations

import contextlib
import os
import re
import select
import sys
import threading
from collections.abc import Iterator

TF_NOISE = re.compile(
    rb"^(?:[IWE]\d{4} [\d:.]+ +\d+ \S+:\d+\]"  # absl C++ INFO/WARNING/ERROR lines
    rb"|WARNING: All log messages before absl::InitializeLog\(\)"
    rb"|WARNING:absl:"
    rb"|fully_quantize: \d"
    rb"|INFO: Created TensorFlow Lite XNNPACK delegate)"
)
_IDLE_S = 0.1  # a partial line alone this long is forwarded (a prompt, a bar without "\r")


@contextlib.contextmanager
def tf_logs_hidden(enabled: bool = True) -> Iterator[None]:
    """Within the block (if ``enabled``), lines of :data:`TF_NOISE` written to descriptor 2 are dropped."""
    if not enabled:
        yield
        return
    try:
        terminal = os.dup(2)
        read_end, write_end = os.pipe()
    except OSError:  # no descriptor 2 to filter
        yield
        return
    sys.stderr.flush()
    os.dup2(write_end, 2)
    os.close(write_end)
    forwarder = threading.Thread(target=_forward, args=(read_end, terminal), daemon=True)
    forwarder.start()
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(terminal, 2)  # closes our write end; the forwarder ends when children close theirs
        forwarder.join(timeout=2.0)
        if not forwarder.is_alive():
            os.close(terminal)


def _forward(read_end: int, terminal: int) -> None:
    pending = b""
    try:
        while True:
            ready, _, _ = select.select([read_end], [], [], _IDLE_S)
            if not ready:
                if pending and not TF_NOISE.match(pending):
                    os.write(terminal, pending)
                    pending = b""
                continue
            data = os.read(read_end, 1 << 16)
            if not data:
                break
            pending += data
            *lines, pending = pending.split(b"\n")
            kept = b"".join(line + b"\n" for line in lines if not TF_NOISE.match(line))
            if b"\r" in pending:  # a progress bar redrawing: never a log line, show it now
                at = pending.rindex(b"\r") + 1
                kept, pending = kept + pending[:at], pending[at:]
            if kept:
                os.write(terminal, kept)
        if pending and not TF_NOISE.match(pending):
            os.write(terminal, pending)
    except OSError:
        pass  # the terminal went away: nothing left to show
    finally:
        os.close(read_end)
