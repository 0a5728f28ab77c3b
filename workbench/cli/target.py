"""`workbench target MODEL --target NAME ...` and `workbench targets`: what a file costs on a board."""

from __future__ import annotations

from workbench.cli import print_json


def register(sub) -> None:
    p = sub.add_parser("target", help="latency, memory and op placement of a .tflite on deployment targets")
    p.add_argument("model", help="a .tflite file")
    p.add_argument(
        "--target", action="append", required=True, metavar="NAME",
        help="a target (repeat for several; `workbench targets` lists them)",
    )  # fmt: skip
    p.add_argument("--json", action="store_true", help="print a list with one object per target")
    p.set_defaults(func=run)
    listing = sub.add_parser("targets", help="list the deployment targets, one line each")
    listing.set_defaults(func=run_list)


def run(args) -> int:
    from pathlib import Path

    from workbench.errors import WorkbenchError
    from workbench.targets import get_target

    targets = [get_target(name) for name in args.target]  # every name checked before any work
    model = Path(args.model)
    if not model.is_file():
        raise WorkbenchError("model file not found", path=model)
    if model.suffix != ".tflite":
        raise WorkbenchError("expected a .tflite file", path=model)
    estimates = [target.estimate(model) for target in targets]
    if args.json:
        print_json([e.to_dict() for e in estimates])
        return 0
    print(f"{model.name}")
    print(
        f"{'target':<15} {'latency ms':>10}  {'source':<12} {'SRAM KiB':>9} {'flash KiB':>9} {'MACs on acc.':>12}  off the accelerator"
    )
    for e in estimates:
        if e.error:
            print(f"{e.target:<15} {e.error}")
            continue
        share = "-" if e.accelerator_mac_share is None else f"{100 * e.accelerator_mac_share:.1f} %"
        source = e.latency_source + (
            f" ±{e.latency_error_pct:.0f}%" if e.latency_error_pct is not None else ""
        )
        ops = _op_counts(e.fallback_ops)
        print(
            f"{e.target:<15} {e.latency_ms:10.2f}  {source:<12} {_kib(e.sram_bytes):>9} "
            f"{_kib(e.flash_bytes):>9} {share:>12}  {ops}"
        )
    return 0


def run_list(args) -> int:
    from workbench.targets import get_target, list_targets

    for name in list_targets():
        target = get_target(name)
        error = getattr(target, "loo_errors", None)
        fit = (
            f" (leave-one-out error: median {target.loo_median_pct:.1f} %, max {max(error):.1f} %)"
            if error
            else ""
        )
        print(f"{name:<15} {target.latency_source:<9} {target.description}{fit}")
    return 0


def _kib(value: int | None) -> str:
    return "-" if value is None else f"{value / 1024:.1f}"


def _op_counts(ops: list[str]) -> str:
    from collections import Counter

    return ", ".join(f"{n}x {op}" for op, n in Counter(ops).most_common()) or "none"
