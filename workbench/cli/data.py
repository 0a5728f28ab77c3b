"""`workbench data <sub-verb>`: dataset generation, download and conversion.

Sub-verbs live in ``data_*.py`` modules beside this one, each exposing ``register(subparsers)``.
"""

from __future__ import annotations

import importlib

SUB_MODULES = ["data_synth", "data_coco"]


def register(sub) -> None:
    parser = sub.add_parser("data", help="generate, download, validate and convert datasets")
    data_sub = parser.add_subparsers(dest="data_verb", required=True, metavar="SUBVERB")
    for name in SUB_MODULES:
        try:
            module = importlib.import_module(f"workbench.cli.{name}")
        except ModuleNotFoundError as err:
            if err.name == f"workbench.cli.{name}":
                continue
            raise
        module.register(data_sub)
