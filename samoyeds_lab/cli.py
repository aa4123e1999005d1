"""Command line: ``samoyeds-lab doctor | bench formats|cache|kernels|roofline|cpu | trace | accuracy | lab | train-tiny | train-sida``."""

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
    elif args.suite == "cache":
        from .bench.cache import bench_cache

        records = bench_cache(args.accesses, repeat=args.repeat)
        for r in records:
            print(f"{r['op']:<28} {r['accesses_per_s'] / 1e6:7.1f} M accesses/s (median of {r['repeat']}, "
                  f"hit rate {r['hit_rate']:.3f}) on {r['device']}")
    else:  # argparse restricts choices; kept for clarity
        raise SystemExit(f"suite: unknown benchmark suite {args.suite!r}")
    for r in records if args.suite == "formats" else ():
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


def _cmd_trace(args: argparse.Namespace) -> int:
    from .routing.ship import record_shipped_traces

    command = "samoyeds-lab trace" + "".join(
        f" {flag} {v}" for flag, v, default in (("--model-dir", args.model_dir, "data/tiny_moe"),
                                                ("--out", args.out, "data/traces"),
                                                ("--tokens", args.tokens, 8192)) if v != default)
    if args.domains != ["en", "de", "code"]:
        command += " --domains " + " ".join(args.domains)
    made = record_shipped_traces(args.model_dir, args.out, args.tokens, domains=args.domains, command=command)
    for domain, path in made.items():
        print(f"{domain}: {path}")
    return 0


def _cmd_lab(args: argparse.Namespace) -> int:
    labs = Path(__file__).resolve().parent.parent / "labs"
    cmd = [sys.executable, "-m", "jupyterlab", f"--notebook-dir={labs}", "--ip=127.0.0.1"]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        cmd.append("--allow-root")
    return subprocess.call(cmd)


def _cmd_train_tiny(args: argparse.Namespace) -> int:
    from .moe.train import train_tiny

    minutes = args.minutes if (args.minutes is not None or args.steps is not None) else 18.0
    try:
        m = train_tiny(args.out, minutes=minutes, steps=args.steps, seed=args.seed, resume=args.resume,
                       overwrite=args.overwrite, batch=args.batch, seq=args.seq, threads=args.threads,
                       stop_at=args.stop_at)
    except (ValueError, TypeError, FileNotFoundError, FileExistsError) as e:
        print(f"samoyeds-lab train-tiny: error: {e}", file=sys.stderr)
        return 2
    if m["status"] == "stopped":
        print(f"stopped after step {m['step']}; continue with: samoyeds-lab train-tiny --out {args.out} --resume")
        return 0
    for d, r in m["heldout"].items():
        print(f"held-out {d:<5} ppl {r['ppl']:7.3f}  ({r['bits_per_byte']:.3f} bits/byte over {r['tokens']} bytes)")
    for layer in m["routing_heldout_all_slots"]["layers"]:
        print(f"{layer['layer']:<14} load imbalance max/mean {layer['imbalance']:.3f}   "
              f"I(expert; domain) {layer['domain_mi_bits']:.3f} bits")
    print(f"{m['steps']} steps, {m['tokens_trained']:,} tokens at {m['train_tok_per_s']:,.0f} tokens/s; "
          f"wrote {args.out}")
    return 0


def _cmd_accuracy(args: argparse.Namespace) -> int:
    from .moe.accuracy import default_configs, write_sweep

    configs = default_configs(vectors=args.vectors, methods=args.methods)
    payload = write_sweep(args.out, args.model, configs, calib_tokens=args.calib_tokens,
                          eval_tokens=args.eval_tokens, recovery_steps=args.recovery_steps, seed=args.seed,
                          threads=args.threads, progress=print)
    for r in payload["records"]:
        rec = r["recovered_ppl"]
        print(f"{r['label']:28s} density {r['density']:4.0%}  modelled speed-up {r['modelled_decode_speedup']:.2f}x  "
              f"held-out ppl {r['heldout_ppl']['overall']:.3f}" + (f"  after recovery {rec['overall']:.3f}" if rec else ""))
    print(f"wrote {args.out} ({len(payload['records'])} records, {payload['elapsed_s']} s)")
    return 0


# Subcommands whose options belong to the module that implements them: everything after the name is
# passed on unchanged (``samoyeds-lab bench kernels --help`` shows the module's own help).
_DELEGATED = {
    ("bench", "kernels"): ("samoyeds_lab.bench.kernels", "main"),
    ("bench", "roofline"): ("samoyeds_lab.bench.roofline", "main"),
    ("bench", "cpu"): ("samoyeds_lab.bench.cpu", "main"),
    ("train-sida",): ("samoyeds_lab.offload.predictor", "main"),
}


def _delegate(argv: list[str]) -> int | None:
    import importlib

    for prefix, (module, func) in _DELEGATED.items():
        if tuple(argv[: len(prefix)]) == prefix:
            return getattr(importlib.import_module(module), func)(argv[len(prefix):])
    return None


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    rc = _delegate(argv)
    if rc is not None:
        return rc
    parser = argparse.ArgumentParser(prog="samoyeds-lab", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("doctor", help="say which backend runs here and why")
    p.set_defaults(func=_cmd_doctor)
    p = sub.add_parser("bench", help="run a benchmark suite and print / record the results")
    p.add_argument("suite", choices=["formats", "cache", "kernels", "roofline", "cpu"],
                   help="formats: prune + compress an expert weight on the CPU; cache: expert-cache simulator "
                        "accesses/s per policy; kernels: SpTC kernels vs "
                        "cuBLAS / torch 2:4 on an SM80+ GPU (`samoyeds-lab bench kernels --help`); roofline: the "
                        "modelled ceilings of dense / 2:4 / Samoyeds expert GEMMs on a GPU profile; cpu: our CPU kernels vs "
                        "torch's fastest dense path, measured (`samoyeds-lab bench cpu --help`)")
    p.add_argument("--rows", type=int, default=14336)
    p.add_argument("--cols", type=int, default=4096)
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--accesses", type=int, default=10_000_000, help="cache: trace length")
    p.add_argument("--out", help="write the records as JSON here (e.g. data/bench/cpu_formats.json)")
    p.set_defaults(func=_cmd_bench)
    p = sub.add_parser("trace", help="record the tiny MoE's routing traces on held-out text (data/traces)")
    p.add_argument("--model-dir", default="data/tiny_moe", help="checkpoint directory (default data/tiny_moe)")
    p.add_argument("--out", default="data/traces", help="output directory, README.md included (default data/traces)")
    p.add_argument("--tokens", type=int, default=8192, help="tokens (bytes) per domain, in 256-byte windows")
    p.add_argument("--domains", nargs="+", default=["en", "de", "code"], choices=["en", "de", "code"])
    p.set_defaults(func=_cmd_trace)
    p = sub.add_parser("accuracy", help="prune the tiny MoE's experts (2:4, Samoyeds; magnitude, Wanda) and "
                                        "record held-out perplexity as JSON")
    p.add_argument("--model", default="data/tiny_moe", help="checkpoint directory (save_pretrained)")
    p.add_argument("--out", default="data/accuracy/tiny_moe_sparsity.json")
    p.add_argument("--calib-tokens", type=int, default=16384, help="Wanda calibration bytes (train split)")
    p.add_argument("--eval-tokens", type=int, default=None, help="held-out bytes per domain (default: all)")
    p.add_argument("--recovery-steps", type=int, default=60, help="mask-preserving fine-tune steps (0 = none)")
    p.add_argument("--vectors", type=int, nargs="+", default=[32, 64, 128], help="Samoyeds window widths V")
    p.add_argument("--methods", nargs="+", choices=["magnitude", "wanda"], default=["magnitude", "wanda"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (1 avoids oversubscription on a shared machine)")
    p.set_defaults(func=_cmd_accuracy)
    p = sub.add_parser("lab", help="open the labs in JupyterLab")
    p.set_defaults(func=_cmd_lab)
    p = sub.add_parser("train-tiny", help="train the tiny byte-level MoE on the shipped corpus (CPU, ~18 min)")
    p.add_argument("--out", default="data/tiny_moe", help="directory for checkpoint, log and metrics")
    p.add_argument("--minutes", type=float, default=None,
                   help="wall-clock budget (default 18 when --steps is not given)")
    p.add_argument("--steps", type=int, default=None, help="total optimizer steps of the schedule")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--resume", action="store_true", help="continue from OUT/train_state.pt")
    p.add_argument("--overwrite", action="store_true", help="start afresh in a directory holding a run")
    p.add_argument("--batch", type=int, default=8, help="windows per step")
    p.add_argument("--seq", type=int, default=256, help="bytes per window (<= the model's max_seq)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads; 1 is fastest when other jobs share a 2-core machine")
    p.add_argument("--stop-at", type=int, default=None, help="stop after this step (resume later)")
    p.set_defaults(func=_cmd_train_tiny)
    sub.add_parser("train-sida", help="train the SiDA expert predictor on the tiny MoE's routing (CPU, <= 5 min) "
                                      "and rewrite data/sida (`samoyeds-lab train-sida --help`)")
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
