"""`workbench bench MODEL...`: invoke latency of .tflite files on this CPU."""

from __future__ import annotations

from pathlib import Path

from workbench.cli import print_json


def register(sub) -> None:
    p = sub.add_parser("bench", help="time interpreter.invoke() of one or more .tflite files")
    p.add_argument("models", nargs="+", help=".tflite files")
    p.add_argument("--threads", type=int, default=2, help="interpreter threads (default 2)")
    p.add_argument("--runs", type=int, default=50, help="timed invokes per model (default 50)")
    p.add_argument("--warmup", type=int, default=5, help="untimed invokes first (default 5)")
    p.add_argument("--out", help="also write the JSON object to this file")
    p.add_argument("--json", action="store_true", help="print one JSON object {cpu, threads, results}")
    p.set_defaults(func=run)


def run(args) -> int:
    from workbench.bench import bench_models, cpu_model
    from workbench.fileio import write_json

    results = bench_models(args.models, threads=args.threads, runs=args.runs, warmup=args.warmup)
    payload = {"cpu": cpu_model(), "threads": args.threads, "results": [r.to_dict() for r in results]}
    if args.out:
        write_json(args.out, payload)
    if args.json:
        print_json(payload)
        return 0
    print(f"{payload['cpu']}, {args.threads} threads, {args.runs} runs after {args.warmup} warm-up")
    name_width = max(len(Path(r.path).name) for r in results)
    print(f"{'model':<{name_width}}  {'median':>8}  {'p90':>8}  {'min':>8}  {'size MB':>8}  {'arena KiB':>9}")
    for r in results:
        print(
            f"{Path(r.path).name:<{name_width}}  {r.median_ms:8.2f}  {r.p90_ms:8.2f}  {r.min_ms:8.2f}  "
            f"{r.size_bytes / 1e6:8.2f}  {r.arena_bytes / 1024:9.1f}"
        )
    return 0
