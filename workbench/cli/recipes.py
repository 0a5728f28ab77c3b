"""`workbench recipes`: the recovery recipes `quantize --recipe` accepts, one line each."""

from __future__ import annotations

from workbench.cli import print_json


def register(sub) -> None:
    p = sub.add_parser("recipes", help="list the int8 recovery recipes (for quantize --recipe)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run)


def run(args) -> int:
    from workbench.recipes import RECIPES

    if args.json:
        print_json({name: recipe.summary for name, recipe in RECIPES.items()})
        return 0
    width = max(len(name) for name in RECIPES)
    for name, recipe in RECIPES.items():
        print(f"{name:<{width}}  {recipe.summary}")
    return 0
