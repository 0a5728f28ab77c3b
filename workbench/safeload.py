"""Weights files are data, not code: refuse one whose loading would run code, unless trusted.

A PyTorch ``.pt`` is a pickle, and Ultralytics unpickles it with ``weights_only=False``: any
callable the file names runs on load. A Keras ``.h5`` may hold a ``Lambda`` layer whose Python
bytecode runs when the model is rebuilt. :func:`check_weights` inspects such a file first, the
safe way, and raises :class:`~workbench.errors.WorkbenchError` (one line saying why) when it needs
unsafe loading:

* ``.pt``: loaded with ``torch.load(weights_only=True)`` against Ultralytics' allow-list of the
  classes a checkpoint holds (``ultralytics.nn.tasks.torch_safe_load(..., safe_only=True)``);
* ``.h5`` / ``.keras``: the model config (JSON in the file) is read without building the model,
  and any ``Lambda`` layer is refused.

Trust is explicit: ``--trust-weights`` on the command line, ``trust_weights: true`` in a config,
or ``WORKBENCH_TRUST_WEIGHTS=1`` in the environment (which notebook kernels and local Dask workers
inherit from the process that starts them).

Example:
    >>> import tempfile, pathlib
    >>> plain = pathlib.Path(tempfile.mkdtemp()) / "notes.txt"
    >>> _ = plain.write_text("not weights")
    >>> check_weights(plain)  # other suffixes are not this module's concern
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from workbench.errors import WorkbenchError

TRUST_ENV = "WORKBENCH_TRUST_WEIGHTS"
HOW_TO_TRUST = "load it only if you trust its source, with --trust-weights (config: trust_weights: true)"
TORCH_SUFFIXES = (".pt", ".pth")
KERAS_SUFFIXES = (".h5", ".hdf5", ".keras")
MAX_KERAS_CONFIG_BYTES = 64 << 20  # a real model's config is kilobytes


def trusted() -> bool:
    """Whether this process was told to load weights that need unsafe loading."""
    return os.environ.get(TRUST_ENV, "") not in ("", "0", "false", "no")


def trust_weights(enabled: Any = True) -> None:
    """Trust weights files from now on in this process and the processes it starts (if ``enabled``)."""
    if enabled:
        os.environ[TRUST_ENV] = "1"


@contextlib.contextmanager
def trusting(enabled: Any) -> Iterator[None]:
    """Within the block, :func:`trust_weights` if ``enabled``; the previous setting is restored after."""
    before = os.environ.get(TRUST_ENV)
    try:
        trust_weights(enabled)
        yield
    finally:
        if before is None:
            os.environ.pop(TRUST_ENV, None)
        else:
            os.environ[TRUST_ENV] = before


def check_weights(path: str | Path, trust: bool | None = None) -> None:
    """Raise :class:`WorkbenchError` if loading ``path`` would run code it carries.

    Args:
        path: a weights file; suffixes other than ``.pt``/``.pth``/``.h5``/``.hdf5``/``.keras``
            (and missing files: the loader names those) pass unchecked.
        trust: skip the check; ``None`` asks :func:`trusted`.
    """
    path = Path(path)
    if (trust if trust is not None else trusted()) or not path.is_file():
        return
    suffix = path.suffix.lower()
    if suffix in TORCH_SUFFIXES:
        _check_torch(path)
    elif suffix in KERAS_SUFFIXES:
        _check_keras(path)


def _check_torch(path: Path) -> None:
    import pickle

    import torch
    from ultralytics.nn.tasks import torch_safe_load

    try:
        torch_safe_load(str(path), safe_only=True)
    except (TypeError, pickle.UnpicklingError, ModuleNotFoundError, AttributeError) as err:
        if "not a loadable checkpoint" in str(err) or "TorchScript" in str(err):
            return  # damaged or foreign, not dangerous: the loader's own message names it
        try:
            names = torch.serialization.get_unsafe_globals_in_checkpoint(str(path))
        except Exception:  # noqa: BLE001 - a legacy (non-zip) file: name nothing
            names = []
        from ultralytics.nn.tasks import _SafeLoad

        unknown = [n for n in names if n not in (_SafeLoad._registry or {})][:5]
        what = f" ({', '.join(unknown)})" if unknown else ""
        raise WorkbenchError(
            f"refused: its pickle names code outside the classes an Ultralytics checkpoint holds{what}, "
            f"and loading it would run that code; {HOW_TO_TRUST}",
            path=path,
        ) from None
    except Exception:  # noqa: BLE001 - unreadable for other reasons: the loader reports them
        return


def _check_keras(path: Path) -> None:
    config = _keras_config(path)
    if config is None:
        return
    lambdas = sorted(set(_lambda_layers(config)))
    if lambdas:
        raise WorkbenchError(
            f"refused: Lambda layer(s) {', '.join(lambdas[:5])} carry Python code that runs when the model "
            f"is loaded; {HOW_TO_TRUST}",
            path=path,
        )


def _keras_config(path: Path) -> Any:
    """The model config of a Keras ``.h5`` (attribute ``model_config``) or ``.keras`` zip, or None."""
    raw: Any = None
    try:
        if path.suffix.lower() == ".keras":
            import zipfile

            with zipfile.ZipFile(path) as archive:
                info = archive.getinfo("config.json")
                if info.file_size > MAX_KERAS_CONFIG_BYTES:
                    raise WorkbenchError(f"model config of {info.file_size} bytes is too large", path=path)
                raw = archive.read(info)
        else:
            import h5py

            with h5py.File(path, "r") as h5:
                raw = h5.attrs.get("model_config")
    except WorkbenchError:
        raise
    except Exception:  # noqa: BLE001 - not an HDF5/zip file: the loader names it
        return None
    if raw is None:
        return None
    if isinstance(raw, bytes) and len(raw) > MAX_KERAS_CONFIG_BYTES:
        raise WorkbenchError(f"model config of {len(raw)} bytes is too large", path=path)
    from workbench.safeparse import loads_json

    return loads_json(raw, path=path)


def _lambda_layers(node: Any) -> Iterator[str]:
    """Names of ``Lambda`` layers anywhere in a Keras config (nested models included)."""
    stack = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            if item.get("class_name") == "Lambda" or item.get("function_type") == "lambda":
                config = item.get("config") if isinstance(item.get("config"), dict) else {}
                yield str(config.get("name", item.get("name", "?")))
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
