"""Command line: ``samoyeds-lab doctor | bench formats | lab``."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path


def _cmd_doctor(args: argparse.Namespace) -> int:
    from .device import device_info

    print(device_info().banner())
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    if args.suite == "formats":
        from .bench.formats import bench_formats

        records = bench_formats(args.rows, args.cols, repeat=args.repeat)
    else:  # argparse restricts choices; kept for clarity
        raise SystemExit(f"suite: unknown benchmark suite {args.suite!r}")
    for r in records:
        if "median_s" in r:
            print(f"{r['op']:<36} {r['m']}x{r['k']} {r['dtype']}: median {r['median_s'] * 1e3:8.1f} ms "
                  f"(min {r['min_s'] * 1e3:.1f}, max {r['max_s'] * 1e3:.1f}) on {r['device']}")
        else:
            print(f"{r['op']:<36} {r['ratio']:.4f}")
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(records, indent=1) + "\n")
        print(f"wrote {out}")
    return 0


def _cmd_lab(args: argparse.Namespace) -> int:
    labs = Path(__file__).resolve().parent.parent / "labs"
    cmd = [sys.executable, "-m", "jupyterlab", f"--notebook-dir={labs}", "--ip=127.0.0.1"]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        cmd.append("--allow-root")
    return subprocess.call(cmd)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="samoyeds-lab", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("doctor", help="say which backend runs here and why")
    p.set_defaults(func=_cmd_doctor)
    p = sub.add_parser("bench", help="run a benchmark suite and print / record the results")
    p.add_argument("suite", choices=["formats"], help="formats: prune + compress an expert weight on the CPU")
    p.add_argument("--rows", type=int, default=14336)
    p.add_argument("--cols", type=int, default=4096)
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--out", help="write the records as JSON here (e.g. data/bench/cpu_formats.json)")
    p.set_defaults(func=_cmd_bench)
    p = sub.add_parser("lab", help="open the labs in JupyterLab")
    p.set_defaults(func=_cmd_lab)
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
