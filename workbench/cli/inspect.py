"""`workbench inspect MODEL.tflite`: I/O, ops, weight granularity, activation RAM, per-layer SQNR."""

from __future__ import annotations

import math

from workbench.cli import print_json


def register(sub) -> None:
    p = sub.add_parser("inspect", help="look inside a .tflite: granularity, activation RAM, per-layer SQNR")
    p.add_argument("model", help=".tflite file")
    p.add_argument("--reference", help="float .tflite of the same network, for per-layer SQNR")
    p.add_argument("--calib", help="folder of images for per-layer SQNR (needed with --reference)")
    p.add_argument("--calib-count", type=int, default=8, help="images used for SQNR (default 8)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--worst", type=int, default=10, help="layers shown in the table (default 10)")
    p.add_argument("--out", help="also write the result as JSON to this file")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)


def run(args) -> int:
    from workbench.fileio import write_json
    from workbench.inspect import inspect_model

    result = inspect_model(args.model, args.reference, args.calib, args.calib_count, threads=args.threads)
    if args.out:
        write_json(args.out, result.to_dict())
    if args.json:
        print_json(result.to_dict())
        return 0
    print(_table(result, args.worst))
    return 0


def _spec(s) -> str:
    quant = f" scale={s.scale:.6g} zp={s.zero_point}" if s.scale is not None else ""
    return f"{s.dtype}{list(s.shape)}{quant}"


def _table(r, worst: int) -> str:
    w, a = r.weights, r.arena
    lines = [
        f"model        {r.path}",
        f"size         {r.size_bytes:,} bytes  sha256 {r.sha256[:16]}…",
        f"input        {_spec(r.input)}",
        *(f"output {i:<5} {_spec(o)}" for i, o in enumerate(r.outputs)),
        f"weights      {w.verdict}  (per-channel {w.per_channel}, per-tensor {w.per_tensor}, "
        f"single-channel {w.single_channel}, float32 {w.float32}, float16 {w.float16})",
        f"activations  arena {a.arena_bytes / 1024:,.1f} KiB  (lower bound {a.lower_bound_bytes / 1024:,.1f}, "
        f"no reuse {a.naive_bytes / 1024:,.1f}, largest tensor {a.largest_tensor_bytes / 1024:,.1f})"
        + (
            f"; + {a.folded_weight_bytes / 1024:,.1f} KiB of weights expanded at load"
            if a.folded_weight_bytes
            else ""
        ),
        "ops          " + ", ".join(f"{k} {v}" for k, v in r.op_histogram.items()),
    ]
    if r.sqnr:
        lines.append(f"SQNR vs {r.reference} on {r.calib_images} images, worst {min(worst, len(r.sqnr))}:")
        lines.append(f"  {'dB':>7}  {'op#':>4}  {'op':<20} tensor")
        for s in r.sqnr[:worst]:
            db = f"{s.sqnr_db:7.2f}" if math.isfinite(s.sqnr_db) else f"{'inf':>7}"
            lines.append(f"  {db}  {s.op_index:>4}  {s.op:<20} {s.tensor}")
    return "\n".join(lines)
