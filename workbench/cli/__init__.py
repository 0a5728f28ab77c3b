"""`workbench <verb>`: thin argument parsing into the package's functions.

Each verb lives in its own module here and exposes ``register(subparsers)``, which adds a parser
whose ``func`` default takes the parsed ``args`` and returns an exit code. A
:class:`~workbench.errors.WorkbenchError` becomes one line on stderr and exit code 2; so does any
other exception a library raises (named with the verb's input file; ``workbench --verbose VERB`` or
``WORKBENCH_VERBOSE=1`` prints its traceback too). SIGTERM or SIGINT (Ctrl-C): one line and exit
code 128 + signal, after the verb's clean-up has run.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import traceback
import warnings
from collections.abc import Sequence
from typing import Any

from workbench.errors import WorkbenchError
from workbench.quietlogs import tf_logs_hidden
from workbench.runlock import Interrupted, signals_as_exceptions
from workbench.safeload import trusting

VERB_MODULES = [
    "data", "train", "export", "quantize", "recipes", "inspect", "diagnose", "bench", "evaluate", "report",
    "sweep", "target",
]  # fmt: skip
TRUST_HELP = "load a weights file even if loading it runs code it carries (only for files you trust)"
# The argument naming a verb's input file, first found: an unexpected library error names it.
INPUT_ARGUMENTS = ("weights", "model", "saved_model", "models", "config", "data", "ann")
VERBOSE_ENV = "WORKBENCH_VERBOSE"


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
    for verb in sub.choices.values():
        verb.add_argument("--trust-weights", action="store_true", help=TRUST_HELP)
        verb.add_argument(
            "--verbose",
            action="store_true",
            help=f"also show TensorFlow's own log lines, and the traceback of an unexpected error ({VERBOSE_ENV}=1)",
        )
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
    one_line = " ".join(line.strip() for line in message.splitlines() if line.strip())  # a library's text
    print(f"workbench {verb}: error: {one_line}", file=sys.stderr, flush=True)


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
        quiet = argv is None and not args.verbose  # a console run: TF's log lines hidden (quietlogs)
        with tf_logs_hidden(quiet), signals_as_exceptions(), trusting(args.trust_weights):
            return int(args.func(args) or 0)
    except WorkbenchError as err:
        _error(args.verb, str(err))
        return 2
    except Interrupted as err:
        _error(args.verb, str(err))
        return err.exit_code
    except Exception as err:  # a library's own exception: still one line, never a bare traceback
        if args.verbose or os.environ.get(VERBOSE_ENV, "") not in ("", "0"):
            traceback.print_exc()
        _error(args.verb, _unexpected(err, args))
        return 2


def _unexpected(err: Exception, args: argparse.Namespace) -> str:
    """One line for an exception no check of ours anticipated: the input file, its type and first line."""
    text = str(err).strip()
    first = text.splitlines()[0][:300] if text else ""
    inputs = [getattr(args, name, None) for name in INPUT_ARGUMENTS]
    given = next((value for value in inputs if value), None)
    if isinstance(given, list):
        given = " ".join(map(str, given))
    where = f"{given}: " if given else ""
    return (
        f"{where}unexpected {type(err).__name__}{': ' + first if first else ''} "
        f"(workbench {args.verb} --verbose prints the traceback)"
    )


if __name__ == "__main__":
    sys.exit(main())
