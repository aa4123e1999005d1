"""Command line: ``samoyeds-lab doctor | bench formats|cache|kernels|roofline|cpu|panels | trace | accuracy | lab | train-tiny | train-sida``.

An error prints one line, ``samoyeds-lab <command>: error: <message>``, and exits with status 2 (``--debug``,
accepted by every command, shows the traceback instead). Arguments are checked, ranges included, before any
benchmark, recording or training starts.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from ._cli import OneLineParser, float_type, int_type, run_command

PROG = "samoyeds-lab"
#: Bounds of the ``bench formats`` weight (rows, cols each) and of the ``bench cache`` trace length.
MAX_SIDE = 1 << 16
MAX_ACCESSES = 1_000_000_000


def check_out(name: str, path: object, *, kind: str = "file") -> Path:
    """``path`` as a Path that can be written (``kind`` ``"file"`` or ``"dir"``), checked before any work."""
    from ._checkpoint import check_out_path

    return check_out_path(name, path, kind=kind)


def _cmd_doctor(args: argparse.Namespace) -> int:
    from .device import device_info

    print(device_info().banner())
    return 0


def _write_records(records, out: Path | None) -> None:
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(records, indent=1) + "\n")
        print(f"wrote {out}")


def _cmd_bench_formats(args: argparse.Namespace) -> int:
    from .bench.formats import bench_formats, check_formats_args

    out = check_out("--out", args.out) if args.out else None
    check_formats_args(args.rows, args.cols, args.repeat)
    records = bench_formats(args.rows, args.cols, repeat=args.repeat)
    for r in records:
        if "median_s" in r:
            print(f"{r['op']:<36} {r['m']}x{r['k']} {r['dtype']}: median {r['median_s'] * 1e3:8.1f} ms "
                  f"(min {r['min_s'] * 1e3:.1f}, max {r['max_s'] * 1e3:.1f}) on {r['device']}")
        else:
            print(f"{r['op']:<36} {r['ratio']:.4f}")
    _write_records(records, out)
    return 0


def _cmd_bench_cache(args: argparse.Namespace) -> int:
    from .bench.cache import bench_cache

    out = check_out("--out", args.out) if args.out else None
    records = bench_cache(args.accesses, repeat=args.repeat)
    for r in records:
        print(f"{r['op']:<28} {r['accesses_per_s'] / 1e6:7.1f} M accesses/s (median of {r['repeat']}, "
              f"hit rate {r['hit_rate']:.3f}) on {r['device']}")
    _write_records(records, out)
    return 0


def _cmd_trace(args: argparse.Namespace) -> int:
    from ._checks import check_path
    from .routing.ship import record_shipped_traces

    check_path("--model-dir", args.model_dir, kind="dir")
    check_out("--out", args.out, kind="dir")
    if len(set(args.domains)) != len(args.domains):
        raise ValueError(f"--domains: expected distinct domains, got {' '.join(args.domains)}")
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
    import importlib.util

    if importlib.util.find_spec("jupyterlab") is None:
        raise RuntimeError("lab: JupyterLab is not installed in this environment (pip install jupyterlab)")
    labs = Path(__file__).resolve().parent.parent / "labs"
    cmd = [sys.executable, "-m", "jupyterlab", f"--notebook-dir={labs}", "--ip=127.0.0.1"]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        cmd.append("--allow-root")
    return subprocess.call(cmd)


def _cmd_train_tiny(args: argparse.Namespace) -> int:
    from .moe.train import train_tiny

    check_out("--out", args.out, kind="dir")
    minutes = args.minutes if (args.minutes is not None or args.steps is not None) else 18.0
    m = train_tiny(args.out, minutes=minutes, steps=args.steps, seed=args.seed, resume=args.resume,
                   overwrite=args.overwrite, batch=args.batch, seq=args.seq, threads=args.threads,
                   stop_at=args.stop_at)
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
    from ._checks import check_path
    from .moe.accuracy import default_configs, equal_density_configs, equal_density_study, write_sweep

    check_path("--model", args.model, kind="dir")
    check_out("--out", args.out)
    try:
        if args.study == "equal-density":
            configs = equal_density_configs(vectors=args.vectors, methods=args.methods)
        else:
            configs = default_configs(vectors=args.vectors, methods=args.methods)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"--vectors: {exc}") from exc
    if args.study == "equal-density":
        payload = equal_density_study(
            args.out, args.model, configs, calib_tokens=args.calib_tokens, eval_tokens=args.eval_tokens,
            recovery_steps=args.recovery_steps, curve_steps=args.curve_steps, curve_every=args.curve_every,
            recover=args.recover, seed=args.seed, threads=args.threads, resume=args.resume, progress=True)
    else:
        if args.resume:
            raise ValueError("--resume: only --study equal-density is resumable, got --study sweep")
        payload = write_sweep(args.out, args.model, configs, calib_tokens=args.calib_tokens,
                              eval_tokens=args.eval_tokens, recovery_steps=args.recovery_steps or 0,
                              seed=args.seed, threads=args.threads, progress=print)
    for r in payload["records"]:
        rec = r["recovered_ppl"]
        print(f"{r['label']:40s} density {r['density']:4.0%}  operand {r['expert_bytes'] / 2**20:6.2f} MiB  "
              f"held-out ppl {r['heldout_ppl']['overall']:8.3f}" + (f"  after recovery {rec['overall']:.3f}" if rec else ""))
    print(f"wrote {args.out} ({len(payload['records'])} records, {payload['elapsed_s']} s)")
    return 0


# Subcommands whose options belong to the module that implements them: everything after the name is
# passed on unchanged (``samoyeds-lab bench kernels --help`` shows the module's own help).
_DELEGATED = {
    ("bench", "kernels"): ("samoyeds_lab.bench.kernels", "main"),
    ("bench", "roofline"): ("samoyeds_lab.bench.roofline", "main"),
    ("bench", "cpu"): ("samoyeds_lab.bench.cpu", "main"),
    ("bench", "panels"): ("samoyeds_lab.bench.responsiveness", "main"),
    ("train-sida",): ("samoyeds_lab.offload.predictor", "main"),
}


def _delegate(argv: list[str]) -> int | None:
    import importlib

    lead = 0
    while lead < len(argv) and argv[lead] == "--debug":  # `samoyeds-lab --debug bench cpu ...`
        lead += 1
    rest = argv[lead:]
    for prefix, (module, func) in _DELEGATED.items():
        if tuple(rest[: len(prefix)]) == prefix:
            return getattr(importlib.import_module(module), func)(rest[len(prefix):] + ["--debug"] * bool(lead))
    return None


def _debug(p: argparse.ArgumentParser) -> None:
    p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                   help="show the traceback of an error instead of one line")


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    """The top-level parser and, per command (``"doctor"``, ``"bench formats"``…), the parser that reports its errors."""
    parser = OneLineParser(prog=PROG, description=__doc__.split("\n\n")[0])
    _debug(parser)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    subs: dict[str, argparse.ArgumentParser] = {}

    def add(name: str, where=sub, key: str | None = None, **kw) -> argparse.ArgumentParser:
        p = where.add_parser(name, **kw)
        _debug(p)
        subs[key or name] = p
        p.set_defaults(_key=key or name)
        return p

    p = add("doctor", help="say which backend runs here and why")
    p.set_defaults(func=_cmd_doctor)

    bench = add("bench", help="run a benchmark suite and print / record the results")
    suites = bench.add_subparsers(dest="suite", required=True, metavar="SUITE")
    p = add("formats", suites, "bench formats", help="prune + compress an expert weight on the CPU")
    p.add_argument("--rows", type=int_type("--rows", 1, MAX_SIDE), default=14336, help="weight rows")
    p.add_argument("--cols", type=int_type("--cols", 1, MAX_SIDE), default=4096,
                   help="weight columns (a multiple of 128, the Samoyeds window)")
    p.add_argument("--repeat", type=int_type("--repeat", 1, 1000), default=5, help="timed runs per op")
    p.add_argument("--out", help="write the records as JSON here (e.g. data/bench/cpu_formats.json)")
    p.set_defaults(func=_cmd_bench_formats)
    p = add("cache", suites, "bench cache", help="expert-cache simulator accesses/s per policy")
    p.add_argument("--accesses", type=int_type("--accesses", 1, MAX_ACCESSES), default=10_000_000,
                   help="trace length")
    p.add_argument("--repeat", type=int_type("--repeat", 1, 1000), default=5, help="timed runs per policy")
    p.add_argument("--out", help="write the records as JSON here")
    p.set_defaults(func=_cmd_bench_cache)
    for name, what in (("kernels", "SpTC kernels vs cuBLAS / torch 2:4 on an SM80+ GPU"),
                       ("roofline", "the modelled ceilings of dense / 2:4 / Samoyeds expert GEMMs on a GPU profile"),
                       ("cpu", "our CPU kernels vs torch's fastest dense path, measured"),
                       ("panels", "how fast the labs' panels redraw and their exercise checks answer, vs budgets")):
        add(name, suites, f"bench {name}", help=f"{what} (`samoyeds-lab bench {name} --help`)", add_help=False)

    p = add("trace", help="record the tiny MoE's routing traces on held-out text (data/traces)")
    p.add_argument("--model-dir", default="data/tiny_moe", help="checkpoint directory (default data/tiny_moe)")
    p.add_argument("--out", default="data/traces", help="output directory, README.md included (default data/traces)")
    p.add_argument("--tokens", type=int_type("--tokens", 2), default=8192,
                   help="tokens (bytes) per domain, in 256-byte windows")
    p.add_argument("--domains", nargs="+", default=["en", "de", "code"], choices=["en", "de", "code"])
    p.set_defaults(func=_cmd_trace)

    p = add("accuracy", help="the equal-density accuracy study: prune the tiny MoE's experts (unstructured, 1:4, "
                             "VENOM, Samoyeds, 2:4; magnitude, Wanda, OBS), recovery fine-tune, held-out perplexity "
                             "and operand bytes as JSON (resumable, with a progress bar)")
    p.add_argument("--model", default="data/tiny_moe", help="checkpoint directory (save_pretrained)")
    p.add_argument("--out", default="data/accuracy/tiny_moe_sparsity.json")
    p.add_argument("--study", choices=["equal-density", "sweep"], default="equal-density",
                   help="equal-density (default): every pattern at 25%% and 50%% density, convergence curve, "
                        "recovery of the best method per pattern; sweep: the older 2:4 + Samoyeds sweep")
    p.add_argument("--calib-tokens", type=int_type("--calib-tokens", 1), default=16384,
                   help="Wanda/OBS calibration bytes (train split)")
    p.add_argument("--eval-tokens", type=int_type("--eval-tokens", 1), default=None,
                   help="held-out bytes per domain (default: all)")
    p.add_argument("--recovery-steps", type=int_type("--recovery-steps", 0), default=None,
                   help="mask-preserving fine-tune steps (0 = none; default: equal-density picks them from the "
                        "convergence curve, sweep uses 0)")
    p.add_argument("--curve-steps", type=int_type("--curve-steps", 1), default=600,
                   help="steps of the convergence curve (dense and Samoyeds V=32 wanda)")
    p.add_argument("--curve-every", type=int_type("--curve-every", 1), default=50,
                   help="held-out evaluation interval of the convergence curve")
    p.add_argument("--recover", choices=["best", "all"], default="best",
                   help="recover the dense model and the best one-shot method of each pattern (default) or all")
    p.add_argument("--resume", action="store_true", help="continue a partial --out file (same checkpoint and settings)")
    p.add_argument("--vectors", type=int_type("--vectors", 4), nargs="+", default=[32, 64, 128],
                   help="Samoyeds window widths V (multiples of 4)")
    p.add_argument("--methods", nargs="+", choices=["magnitude", "wanda", "obs"], default=["magnitude", "wanda", "obs"])
    p.add_argument("--seed", type=int_type("--seed", 0), default=0)
    p.add_argument("--threads", type=int_type("--threads", 1, 1024), default=None,
                   help="torch CPU threads (1 avoids oversubscription on a shared machine)")
    p.set_defaults(func=_cmd_accuracy)

    p = add("lab", help="open the labs in JupyterLab")
    p.set_defaults(func=_cmd_lab)

    p = add("train-tiny", help="train the tiny byte-level MoE on the shipped corpus (CPU, ~18 min)")
    p.add_argument("--out", default="data/tiny_moe", help="directory for checkpoint, log and metrics")
    p.add_argument("--minutes", type=float_type("--minutes", 0.0), default=None,
                   help="wall-clock budget (default 18 when --steps is not given)")
    p.add_argument("--steps", type=int_type("--steps", 1), default=None, help="total optimizer steps of the schedule")
    p.add_argument("--seed", type=int_type("--seed", 0), default=0)
    g = p.add_mutually_exclusive_group()
    g.add_argument("--resume", action="store_true", help="continue from OUT/train_state.safetensors")
    g.add_argument("--overwrite", action="store_true", help="start afresh in a directory holding a run")
    p.add_argument("--batch", type=int_type("--batch", 1), default=8, help="windows per step")
    p.add_argument("--seq", type=int_type("--seq", 2), default=256, help="bytes per window (<= the model's max_seq)")
    p.add_argument("--threads", type=int_type("--threads", 1, 1024), default=None,
                   help="torch threads; 1 is fastest when other jobs share a 2-core machine")
    p.add_argument("--stop-at", type=int_type("--stop-at", 1), default=None, help="stop after this step (resume later)")
    p.set_defaults(func=_cmd_train_tiny)
    add("train-sida", help="train the SiDA expert predictor on the tiny MoE's routing (CPU, <= 5 min) and rewrite "
                           "data/sida (`samoyeds-lab train-sida --help`)", add_help=False)
    return parser, subs


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    rc = _delegate(argv)
    if rc is not None:
        return rc
    parser, subs = build_parser()
    args, extra = parser.parse_known_args(argv)
    sp = subs[args._key]
    if extra:
        sp.error(f"unrecognized arguments: {' '.join(extra)}")
    return run_command(sp.prog, lambda: args.func(args), argv, sp)


if __name__ == "__main__":
    raise SystemExit(main())
