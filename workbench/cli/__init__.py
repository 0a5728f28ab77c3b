"""`workbench <verb>`: thin argument parsing into the package's functions.

Each verb lives in its own module here and exposes ``register(subparsers)``, which adds a parser
whose ``func`` default takes the parsed ``args`` and returns an exit code. A
:class:`~workbench.errors.WorkbenchError` becomes one line on stderr and exit code 2; SIGTERM or
SIGINT (Ctrl-C) one line and exit code 128 + signal, after the verb's clean-up has run.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import warnings
from collections.abc import Sequence
from typing import Any

from workbench.errors import WorkbenchError
from workbench.runlock import Interrupted, signals_as_exceptions

VERB_MODULES = [
    "data", "train", "export", "quantize", "recipes", "inspect", "diagnose", "bench", "evaluate", "report",
    "sweep", "target",
]  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="workbench", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="verb", required=True, metavar="VERB")
    for name in VERB_MODULES:
        try:
            module = importlib.import_module(f"workbench.cli.{name}")
        except ModuleNotFoundError as err:
            if err.name == f"workbench.cli.{name}":
                continue  # verb not built yet
            raise
        module.register(sub)
    return parser


def print_json(obj: Any) -> None:
    """Print one JSON object on stdout (the contract of every ``--json`` flag)."""
    sys.stdout.write(json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")
    sys.stdout.flush()


def _error(verb: str, message: str) -> None:
    """One line on stderr, below any progress bar: open bars are closed first, so none redraws over it."""
    from tqdm import tqdm

    for bar in list(getattr(tqdm, "_instances", ())):
        bar.close()
    sys.stderr.flush()
    print(f"workbench {verb}: error: {message}", file=sys.stderr, flush=True)


def _show_warning(verb: str):
    def show(message, category, filename, lineno, file=None, line=None):
        from tqdm import tqdm

        tqdm.write(f"workbench {verb}: warning: {message}", file=sys.stderr)

    return show


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if argv is None:  # a console run (not a caller's own warning filters): one plain line per warning
        warnings.showwarning = _show_warning(args.verb)
    try:
        with signals_as_exceptions():
            return int(args.func(args) or 0)
    except WorkbenchError as err:
        _error(args.verb, str(err))
        return 2
    except Interrupted as err:
        _error(args.verb, str(err))
        return err.exit_code


if __name__ == "__main__":
    sys.exit(main())
