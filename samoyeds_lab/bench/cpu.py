"""CPU benchmark of the sparse expert kernels: ours vs torch's fastest dense path, side by side, measured.

``samoyeds-lab bench cpu`` (and the labs' live panels) time, for one expert matrix and every token count,
in one run and on the same gathered tokens:

* ``dense``   — torch's ``F.linear`` on the *pruned* weight stored dense, in fp32, bf16 and fp16; the fastest
  of the three at that token count is the baseline (``dense_best``);
* ``samoyeds`` / ``2:4`` — our CPU kernel on the compressed operand (:func:`samoyeds_lab.kernels.cpu.kernel_gemm`),
  and the tile-by-tile dense path on the same operand (``tiles``, what ``backend="auto"`` falls back to);
* ``reference`` — the pure-torch reference (it rebuilds the dense weight per call), once per shape at the
  smallest token count (it does not depend on tokens);

with the last-level cache flushed (a ~96 MB read) before every timed call; medians with min/max. Beside
them: this machine's measured read bandwidth (:func:`read_bandwidth`) and the byte ceiling (the time to
read the operand's bytes at that bandwidth). Absolute times belong to the device they were measured on
(every record carries it).
"""

from __future__ import annotations

import datetime as _dt
import platform
import statistics
import time
from contextlib import contextmanager
from typing import Callable, Iterable, Sequence

import torch
import torch.nn.functional as F

from .._checks import check_int

#: Expert shapes of the benchmark: (name, rows, cols).
SHAPES = (
    ("mixtral-8x7b-w1", 14336, 4096),      # gate/up (w1/w3)
    ("mixtral-8x7b-w2", 4096, 14336),      # down
    ("qwen1.5-moe-a2.7b-w1", 1408, 2048),  # one routed expert's gate/up
)
TOKENS = (1, 2, 4, 8, 16, 64, 256)
DENSE_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
FLUSH_BYTES = 96 * 2**20

_flush_buf: torch.Tensor | None = None


def flush_cache() -> None:
    """Read ~96 MB (3× a 32 MB L3) so that no operand is still cached when the next call is timed."""
    global _flush_buf
    if _flush_buf is None:
        _flush_buf = torch.ones(FLUSH_BYTES // 4)
    float(_flush_buf.sum())


@contextmanager
def threads(n: int | None):
    """Run with torch (and so the CPU kernels) on ``n`` threads, then restore."""
    old = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(int(n))
    try:
        yield
    finally:
        torch.set_num_threads(old)


def time_flushed(fn: Callable[[], object], *, repeat: int = 5, warmup: int = 1, flush: bool = True) -> dict[str, float]:
    """Median / min / max milliseconds of ``fn`` over ``repeat`` calls, the cache flushed before each."""
    if not callable(fn):
        raise TypeError(f"fn: expected a callable, got {type(fn).__name__}")
    repeat = check_int("repeat", repeat, lo=1)
    warmup = check_int("warmup", warmup, lo=0)
    for _ in range(warmup):
        fn()
    ts = []
    for _ in range(repeat):
        if flush:
            flush_cache()
        t0 = time.perf_counter()
        fn()
        ts.append((time.perf_counter() - t0) * 1e3)
    return {"ms": statistics.median(ts), "min_ms": min(ts), "max_ms": max(ts), "repeat": repeat}


def read_bandwidth(nbytes: int = 1 << 30, *, repeat: int = 5) -> float:
    """This machine's read bandwidth in GB/s: ``torch.sum`` over ``nbytes`` of fp32 (median of ``repeat``)."""
    nbytes = check_int("nbytes", nbytes, lo=1 << 20, hi=1 << 34)
    a = torch.ones(nbytes // 4)
    float(a.sum())
    t = time_flushed(lambda: float(a.sum()), repeat=repeat, warmup=0, flush=False)
    return nbytes / (t["ms"] * 1e-3) / 1e9


def cpu_device() -> dict[str, object]:
    """CPU model, ISA flags relevant to the kernels, the chosen path, versions and date."""
    import os

    from ..kernels import cpu as ck

    path = ck.cpu_path()
    flags = sorted(f for f in ck.cpu_flags() if f.startswith(("avx", "fma", "f16c", "amx", "asimd", "sve", "neon")))
    return {
        "cpu": path.cpu, "cores": os.cpu_count(), "machine": platform.machine(), "isa": path.isa,
        "isa_reason": path.reason, "flags": flags, "torch": torch.__version__,
        "python": platform.python_version(),
        "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d"),
    }


def make_weights(rows: int, cols: int, *, dtype: torch.dtype = torch.bfloat16, seed: int = 0,
                 patterns: Sequence[str] = ("samoyeds", "2:4")) -> dict[str, object]:
    """A random expert matrix pruned per pattern (magnitude; Samoyeds 1:2 V=128): ``{pattern: weight}``."""
    from .._checks import FLOAT_DTYPES
    from ..prune import sparsify

    check_int("rows", rows, lo=2)
    check_int("cols", cols, lo=128)
    if dtype not in FLOAT_DTYPES:
        raise TypeError(f"dtype: expected torch.float16/bfloat16/float32, got {dtype!r}")
    bad = [p for p in patterns if p not in ("samoyeds", "2:4")]
    if bad or isinstance(patterns, str):
        raise ValueError(f"patterns: expected a sequence of 'samoyeds' / '2:4', got {patterns!r}")
    g = torch.Generator().manual_seed(seed)
    w = (torch.randn(rows, cols, generator=g) * cols ** -0.5).to(dtype)
    out: dict[str, object] = {}
    for p in patterns:
        out[p] = sparsify(w, "samoyeds", method="magnitude", n=1, m=2, vector=128) if p == "samoyeds" \
            else sparsify(w, p, method="magnitude")
    return out


def bench_expert(rows: int, cols: int, tokens: Iterable[int] = TOKENS, *, nthreads: int | None = None,
                 dtype: torch.dtype = torch.bfloat16, patterns: Sequence[str] = ("samoyeds", "2:4"),
                 repeat: int = 5, dense_dtypes: Sequence[torch.dtype] = DENSE_DTYPES, tiles: bool = True,
                 reference: bool = True, bandwidth: float | None = None, name: str = "", seed: int = 0,
                 flush: bool = True, weights: dict | None = None, isa: str | None = None) -> list[dict]:
    """Records for one expert shape: per token count and path, the median time and its range.

    Every record has ``op="gemm"``, ``kind`` (``samoyeds`` / ``2:4`` / ``dense`` / ``reference``), ``rows``,
    ``cols``, ``tokens``, ``threads``, ``dtype``, ``ms`` / ``min_ms`` / ``max_ms`` and, for the kernels,
    ``kernel_ms``, ``tiles_ms``, ``dense_ms`` (the fastest dense dtype in the same run, named in
    ``dense_dtype``), ``speedup`` (dense_ms / kernel_ms), ``bytes``, ``gbps`` and the byte ceiling
    ``ceiling_ms`` at ``bandwidth`` GB/s. ``isa`` forces a CPU path (default: this machine's, see
    :func:`samoyeds_lab.kernels.cpu.cpu_path`); the records name it.
    """
    from ..kernels import cpu as ck
    from ..reference import spmm as ref_spmm

    rows = check_int("rows", rows, lo=1)
    cols = check_int("cols", cols, lo=4)
    toks = [check_int("tokens", t, lo=1, hi=1 << 16) for t in tokens]
    weights = weights if weights is not None else make_weights(rows, cols, dtype=dtype, seed=seed, patterns=patterns)
    dense_w = next(iter(weights.values())).to_dense()  # the pruned weight, dense (any pattern is fine for time)
    dev = cpu_device()
    if isa is not None:
        if isa not in ck.ISAS:
            raise ValueError(f"isa: expected one of {', '.join(ck.ISAS)}, got {isa!r}")
        ck.build(isa)  # a clear error where it cannot be built
        dev = dict(dev, isa=isa, isa_reason=f"forced isa={isa}")
    out: list[dict] = []
    with threads(nthreads):
        th = torch.get_num_threads()
        dense_by_dt = {dt: dense_w.to(dt) for dt in dense_dtypes}
        g = torch.Generator().manual_seed(seed + 1)
        for T in toks:
            x = torch.randn(T, cols, generator=g).to(dtype)
            xs = {dt: x.to(dt) for dt in dense_dtypes}
            dense = {}
            for dt in dense_dtypes:
                wd, xd = dense_by_dt[dt], xs[dt]
                dense[dt] = time_flushed(lambda: F.linear(xd, wd), repeat=repeat, flush=flush)
            best_dt = min(dense, key=lambda d: dense[d]["ms"])
            for dt in dense_dtypes:
                out.append({"op": "gemm", "kind": "dense", "name": name, "rows": rows, "cols": cols, "tokens": T,
                            "threads": th, "dtype": str(dt).removeprefix("torch."),
                            "bytes": dense_w.numel() * torch.finfo(dt).bits // 8, **dense[dt], **dev})
            for p, w in weights.items():
                k = time_flushed(lambda: ck.kernel_gemm(w, x, isa=isa), repeat=repeat, flush=flush)
                t = time_flushed(lambda: ck.dense_tiles(w, x, isa=isa), repeat=max(1, repeat // 2),
                                 flush=flush) if tiles else None
                nb = w.nbytes
                rec = {"op": "gemm", "kind": p, "name": name, "rows": rows, "cols": cols, "tokens": T, "threads": th,
                       "dtype": str(dtype).removeprefix("torch."), **k, "kernel_ms": k["ms"],
                       "tiles_ms": t["ms"] if t else None, "dense_ms": dense[best_dt]["ms"],
                       "dense_dtype": str(best_dt).removeprefix("torch."), "speedup": dense[best_dt]["ms"] / k["ms"],
                       "bytes": nb, "gbps": nb / (k["ms"] * 1e-3) / 1e9, **dev}
                if bandwidth:
                    rec["bandwidth_gbps"] = bandwidth
                    rec["ceiling_ms"] = nb / (bandwidth * 1e9) * 1e3
                    rec["dense_ceiling_ms"] = dense_w.numel() * 2 / (bandwidth * 1e9) * 1e3
                    rec["bandwidth_fraction"] = rec["gbps"] / bandwidth
                out.append(rec)
            if reference and T == toks[0]:
                w = weights.get("samoyeds", next(iter(weights.values())))
                r = time_flushed(lambda: ref_spmm(w, x), repeat=max(1, min(repeat, 3)), flush=flush)
                out.append({"op": "gemm", "kind": "reference", "name": name, "rows": rows, "cols": cols, "tokens": T,
                            "threads": th, "dtype": str(dtype).removeprefix("torch."), **r, **dev})
    return out


def bench_cpu(shapes: Sequence[tuple[str, int, int]] = SHAPES, tokens: Iterable[int] = TOKENS, *,
              thread_counts: Sequence[int] = (1, 2), repeat: int = 5, dtype: torch.dtype = torch.bfloat16,
              progress: Callable[[str], None] | None = None, isas: Sequence[str | None] = (None,)) -> dict:
    """The whole recorded benchmark: every shape × thread count × token count (see :func:`bench_expert`)."""
    bw = {n: _bw(n) for n in thread_counts}
    recs: list[dict] = []
    for name, rows, cols in shapes:
        weights = make_weights(rows, cols, dtype=dtype)
        for isa in isas:
            for n in thread_counts:
                if progress:
                    progress(f"{name} {rows}x{cols}, {n} thread(s)" + (f", isa={isa}" if isa else ""))
                recs += bench_expert(rows, cols, tokens, nthreads=n, dtype=dtype, repeat=repeat, bandwidth=bw[n],
                                     name=name, weights=weights, isa=isa, reference=isa is None)
    return {"device": cpu_device(), "read_bandwidth_gbps": {str(k): v for k, v in bw.items()},
            "method": "medians of `repeat` calls, min/max beside; ~96 MB read before every timed call; dense baseline "
                      "= fastest of F.linear fp32/bf16/fp16 on the pruned weight stored dense, same tokens, same run",
            "records": recs}


def _bw(n: int) -> float:
    with threads(n):
        return read_bandwidth()


def summary_rows(result: dict, *, kind: str = "samoyeds", name: str | None = None, nthreads: int | None = None) -> list[dict]:
    """Kernel records of one kind (and shape name / thread count), in token order: what the README table shows."""
    recs = [r for r in result["records"] if r.get("kind") == kind and (name is None or r.get("name") == name)
            and (nthreads is None or r.get("threads") == nthreads)]
    return sorted(recs, key=lambda r: (r["name"], r["threads"], r["tokens"]))


# ----------------------------------------------------------------------------------------- command line
def _positive(name: str, lo: int = 1, hi: int = 1 << 20):
    def parse(v: str) -> int:
        import argparse

        try:
            i = int(v)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name}: expected an int, got {v!r}") from None
        if not lo <= i <= hi:
            raise argparse.ArgumentTypeError(f"{name}: expected an int in [{lo}, {hi}], got {i}")
        return i
    return parse


def format_table(result: dict) -> str:
    """A text table: per shape, threads and tokens, kernel vs fastest dense, ratio and bandwidth."""
    lines = [f"{'shape':<36} {'isa':<8} {'thr':>3} {'T':>4} {'kind':<9} {'kernel ms':>10} {'range':>15} {'tiles ms':>9} "
             f"{'dense ms':>9} {'dtype':<9} {'ratio':>6} {'GB/s':>6} {'ceil ms':>8}"]
    for r in result["records"]:
        if r["kind"] not in ("samoyeds", "2:4"):
            continue
        tiles = f"{r['tiles_ms']:.2f}" if r.get("tiles_ms") else "-"
        lines.append(f"{r['name'][:36]:<36} {r['isa']:<8} {r['threads']:>3} {r['tokens']:>4} {r['kind']:<9} {r['kernel_ms']:>10.2f} "
                     f"{r['min_ms']:>7.2f}-{r['max_ms']:<7.2f} {tiles:>9} {r['dense_ms']:>9.2f} "
                     f"{r['dense_dtype']:<9} {r['speedup']:>5.2f}x {r['gbps']:>6.1f} {r.get('ceiling_ms', 0):>8.2f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """``samoyeds-lab bench cpu``: the recorded CPU benchmark (kernels and a Mixtral-shaped MoE layer).

    Every argument (output paths included) is checked before anything is measured; an error is one line
    ``samoyeds-lab bench cpu: error: ...`` and exit status 2 (``--debug``: traceback).
    """
    import json
    import sys
    from pathlib import Path

    from .._checkpoint import check_out_path
    from .._checks import check_path
    from .._cli import OneLineParser, run_command

    prog = "samoyeds-lab bench cpu"
    argv = list(sys.argv[1:] if argv is None else argv)
    p = OneLineParser(prog=prog, description=__doc__.split("\n\n")[0])
    p.add_argument("--tokens", type=_positive("--tokens", 1, 4096), nargs="+", default=list(TOKENS))
    p.add_argument("--threads", type=_positive("--threads", 1, 256), nargs="+", default=[1, 2])
    p.add_argument("--repeat", type=_positive("--repeat", 1, 100), default=5)
    p.add_argument("--shapes", nargs="+", default=[s[0] for s in SHAPES], metavar="NAME",
                   help="expert shapes by name (default: all of " + "; ".join(s[0] for s in SHAPES) + ")")
    p.add_argument("--size", nargs=2, type=_positive("--size", 4, 1 << 16), metavar=("ROWS", "COLS"),
                   help="one custom expert shape instead of --shapes")
    p.add_argument("--isa", nargs="+", default=None, choices=["avx512", "avx2", "portable"],
                   help="force these CPU paths (one after the other) instead of this machine's own")
    p.add_argument("--out", default=None, help="write the kernel records here (e.g. data/bench/cpu_kernels.json)")
    p.add_argument("--layer", action="store_true", help="also time a Mixtral-shaped MoE layer (builds 24 experts "
                   "matrices, ~2 min)")
    p.add_argument("--layer-out", default=None, help="write the layer records here (data/bench/cpu_moe_layer.json)")
    p.add_argument("--layer-shape", nargs=4, type=_positive("--layer-shape", 1, 1 << 16),
                   metavar=("H", "I", "E", "K"), help="layer shape instead of Mixtral-8x7B's 4096 14336 8 2")
    p.add_argument("--readme", default=None, metavar="FILE",
                   help="rewrite the results between the cpu-bench markers of FILE (README.md) from the records "
                        "written by --out / --layer-out (or, with --no-run, from those files as they are)")
    p.add_argument("--no-run", action="store_true", help="measure nothing (with --readme)")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    args = p.parse_args(argv)

    def body() -> int:
        if args.layer_shape and args.layer_shape[3] > args.layer_shape[2]:
            raise ValueError(f"--layer-shape: expected K <= E, got K={args.layer_shape[3]}, E={args.layer_shape[2]}")
        for flag in ("--out", "--layer-out"):
            v = getattr(args, flag[2:].replace("-", "_"))
            if v:
                check_out_path(flag, v)
        if args.readme:
            check_path("--readme", args.readme)
            check_out_path("--readme", args.readme)
        if args.no_run:
            if not args.readme:
                raise ValueError("--no-run: only useful with --readme FILE")
            _write_readme(Path(args.readme), Path(args.out or RECORDS_PATH), Path(args.layer_out or LAYER_PATH))
            return 0
        if args.size:
            shapes = [(f"custom {args.size[0]}x{args.size[1]}", args.size[0], args.size[1])]
        else:
            known = {s[0]: s for s in SHAPES}
            bad = [s for s in args.shapes if s not in known]
            if bad:
                raise ValueError(f"--shapes: expected names from {sorted(known)}, got {bad}")
            shapes = [known[s] for s in args.shapes]
        say = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731
        result = bench_cpu(shapes, args.tokens, thread_counts=args.threads, repeat=args.repeat, progress=say,
                           isas=args.isa or (None,))
        print(format_table(result))
        if args.out:
            out = Path(args.out)
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps(result, indent=1) + "\n")
            print(f"wrote {out}")
        if args.layer or args.layer_out or args.layer_shape:
            from .cpu_layer import MIXTRAL, bench_layer

            shape = MIXTRAL if not args.layer_shape else ("custom layer", *args.layer_shape)
            recs = []
            from .cpu_layer import make_layer

            experts = make_layer(shape[1], shape[2], shape[3])
            for n in args.threads:
                recs += bench_layer(experts, shape=shape, nthreads=n, repeat=args.repeat, progress=say)
            for r in recs:
                print(f"layer {r['threads']}t {r['tokens']:>4} tokens {r['backend']:<9} {r['dtype']:<8} {r['ms']:9.2f} ms "
                      f"({r['ms_per_token']:.2f} ms/token, {r.get('speedup_vs_grouped', 1):.2f}x vs grouped)")
            if args.layer_out:
                out = Path(args.layer_out)
                out.parent.mkdir(parents=True, exist_ok=True)
                out.write_text(json.dumps({"device": cpu_device(), "records": recs}, indent=1) + "\n")
                print(f"wrote {out}")
        if args.readme:
            _write_readme(Path(args.readme), Path(args.out or RECORDS_PATH), Path(args.layer_out or LAYER_PATH))
        return 0

    return run_command(prog, body, argv, p)


# ----------------------------------------------------------------------------------------- README table
README_START, README_END = "<!-- cpu-bench:start -->", "<!-- cpu-bench:end -->"
_DATA = __import__("pathlib").Path(__file__).resolve().parents[2] / "data" / "bench"
#: Where the recorded results live (what the README table and ``backend="auto"`` read).
RECORDS_PATH = _DATA / "cpu_kernels.json"
LAYER_PATH = _DATA / "cpu_moe_layer.json"
ISA_PATH = _DATA / "cpu_kernels_isa.json"
#: The same benchmark recorded on a CPU without AVX-512, whose own path is ``avx2``.
AVX2_PATH = _DATA / "cpu_kernels_avx2.json"
AVX2_LAYER_PATH = _DATA / "cpu_moe_layer_avx2.json"


def _write_readme(readme, records, layer) -> None:
    import json

    if records.resolve() == AVX2_PATH.resolve():  # the AVX2 machine's records are their own section
        records = RECORDS_PATH
    if layer.resolve() == AVX2_LAYER_PATH.resolve():
        layer = LAYER_PATH
    if not records.exists():
        raise FileNotFoundError(f"--out: no recorded results at {records}")
    result = json.loads(records.read_text())
    lay = json.loads(layer.read_text()) if layer.exists() else None
    isa = json.loads(ISA_PATH.read_text()) if ISA_PATH.exists() else None
    avx2 = json.loads(AVX2_PATH.read_text()) if AVX2_PATH.exists() else None
    avx2_lay = json.loads(AVX2_LAYER_PATH.read_text()) if AVX2_LAYER_PATH.exists() else None
    readme.write_text(update_readme(readme.read_text(), readme_table(result, lay, isa, avx2, avx2_lay)))
    print(f"wrote {readme}")


def _measured_line(result: dict) -> str:
    dev = result["device"]
    bw = result.get("read_bandwidth_gbps", {})
    return (f"Measured on {dev['date']} on {dev['cpu']} ({dev['cores']} cores, CPU path `{dev['isa']}`, torch "
            f"{dev['torch']}); read bandwidth {', '.join(f'{float(v):.1f} GB/s on {k} thread(s)' for k, v in bw.items())}.")


def _shape_tables(result: dict, out: list[str]) -> None:
    kern = [r for r in result["records"] if r["kind"] in ("samoyeds", "2:4")]
    for name in dict.fromkeys(r["name"] for r in kern):
        for th in sorted({r["threads"] for r in kern if r["name"] == name}):
            rows = {(r["kind"], r["tokens"]): r for r in kern if r["name"] == name and r["threads"] == th}
            toks = sorted({t for _, t in rows})
            any_r = next(iter(rows.values()))
            out.append(f"**{name}** ({any_r['rows']}×{any_r['cols']}), {th} thread(s):")
            out.append("")
            out.append("| tokens | " + " | ".join(str(t) for t in toks) + " |")
            out.append("|---|" + "---|" * len(toks))
            for kind, label in (("samoyeds", "Samoyeds 1:2 V=128 kernel, ms"), ("2:4", "2:4 kernel, ms")):
                out.append(f"| {label} | " + " | ".join(f"{rows[(kind, t)]['kernel_ms']:.2f}" for t in toks) + " |")
            out.append("| torch dense (fastest), ms | " + " | ".join(
                f"{rows[('samoyeds', t)]['dense_ms']:.2f} {rows[('samoyeds', t)]['dense_dtype'].replace('bfloat16', 'bf16').replace('float16', 'fp16').replace('float32', 'fp32')}"
                for t in toks) + " |")
            for kind, label in (("samoyeds", "Samoyeds speed-up"), ("2:4", "2:4 speed-up")):
                out.append(f"| {label} | " + " | ".join(f"{rows[(kind, t)]['speedup']:.2f}×" for t in toks) + " |")
            r1 = rows.get(("samoyeds", toks[0]))
            if r1 and r1.get("bandwidth_fraction"):
                out.append("")
                ref = [r for r in result["records"] if r["kind"] == "reference" and r["name"] == name
                       and r["threads"] == th]
                out.append(f"At {toks[0]} token(s) the Samoyeds kernel reads its {r1['bytes'] / 1e6:.1f} MB at "
                           f"{r1['gbps']:.1f} GB/s ({100 * r1['bandwidth_fraction']:.0f}% of the measured read "
                           f"bandwidth; byte ceiling {r1['ceiling_ms']:.2f} ms)"
                           + (f"; the pure-torch reference (it rebuilds the dense weight per call) takes "
                              f"{ref[0]['ms']:.0f} ms." if ref else "."))
            out.append("")


def _layer_tables(layer: dict, out: list[str]) -> None:
    recs = layer["records"]
    out.append(f"**{recs[0]['name']}** ({recs[0]['experts']} experts {recs[0]['hidden']}→{recs[0]['intermediate']}"
               f"→{recs[0]['hidden']}, top-{recs[0]['top_k']}, Samoyeds 1:2 V=128), whole expert layer, ms per token:")
    out.append("")
    for th in sorted({r["threads"] for r in recs}):
        toks = sorted({r["tokens"] for r in recs if r["threads"] == th})
        out.append(f"| {th} thread(s), tokens | " + " | ".join(str(t) for t in toks) + " |")
        out.append("|---|" + "---|" * len(toks))
        short = {"bfloat16": "bf16", "float16": "fp16", "float32": "fp32"}
        for b in ("samoyeds", "grouped", "dense"):
            mine = [r for r in recs if r["threads"] == th and r["backend"] == b]
            dts = sorted({r.get("dtype", "bfloat16") for r in mine})
            by = {}
            for r in mine:  # the fastest dtype of the backend per token count, named when there are several
                if r["tokens"] not in by or r["ms"] < by[r["tokens"]]["ms"]:
                    by[r["tokens"]] = r
            if by:
                label = f"`{b}`" + (f" (fastest of {' / '.join(short.get(d, d) for d in dts)})" if len(dts) > 1 else "")
                out.append(f"| {label} | " + " | ".join(
                    f"{by[t]['ms_per_token']:.2f}" + (f" {short.get(by[t].get('dtype'), by[t].get('dtype'))}"
                                                      if len(dts) > 1 else "") for t in toks) + " |")
        by = {r["tokens"]: r for r in recs if r["threads"] == th and r["backend"] == "samoyeds"}
        several = len({r.get("dtype", "bfloat16") for r in recs if r["backend"] == "grouped"}) > 1
        out.append(f"| `samoyeds` vs {'fastest ' if several else ''}`grouped` | " + " | ".join(f"{by[t]['speedup_vs_grouped']:.2f}×" for t in toks) + " |")
        out.append("")


def readme_table(result: dict, layer: dict | None = None, isa_result: dict | None = None,
                 avx2_result: dict | None = None, avx2_layer: dict | None = None) -> str:
    """The README's CPU results (markdown) made from a recorded :func:`bench_cpu` result (and layer records,
    the forced-path records, and the records of a CPU without AVX-512)."""
    out = [_measured_line(result) + " Medians of the calls (range in the JSON), cache flushed before each; *dense* "
           "is torch's fastest `F.linear` (fp32 / bf16 / fp16, named) on the same pruned weight stored dense, same "
           "tokens, same run. bf16 weights and tokens.", ""]
    _shape_tables(result, out)
    if isa_result:
        recs = [r for r in isa_result["records"] if r["kind"] in ("samoyeds", "2:4")]
        paths = ", ".join(f"`{i}`" for i in dict.fromkeys(r["isa"] for r in recs))
        out.append(f"Forced on the machine of the first tables (`bench cpu --isa ...`; `avx2` is what a CPU "
                   f"without AVX-512 BF16 runs, `portable` one without AVX2, e.g. aarch64): {paths}, speed-up over "
                   f"torch's fastest dense path in the same run ({isa_result['device']['date']}):")
        out.append("")
        keys = sorted({(r["name"], r["threads"]) for r in recs})
        toks = sorted({r["tokens"] for r in recs})
        out.append("| path | kind | " + " | ".join(f"{t} tok" for t in toks) + " |")
        out.append("|---|---|" + "---|" * len(toks))
        for isa in dict.fromkeys(r["isa"] for r in recs):
            for kind in ("samoyeds", "2:4"):
                by = {r["tokens"]: r for r in recs if r["isa"] == isa and r["kind"] == kind}
                out.append(f"| `{isa}` | {kind} | " + " | ".join(
                    f"{by[t]['kernel_ms']:.2f} ms ({by[t]['speedup']:.2f}×)" if t in by else "-" for t in toks) + " |")
        out.append("")
        out.append(f"({', '.join(f'{n}, {th} thread(s)' for n, th in keys)}; where a path is slower than dense, "
                   "`auto` still runs the faster of it and the dense tiles — it has no dense copy of the weight.)")
        out.append("")
    if layer:
        _layer_tables(layer, out)
    if avx2_result:
        flags = avx2_result["device"].get("flags", [])
        out.append("**On a CPU without AVX-512** (`" + AVX2_PATH.name + "`; its flags: "
                   + ", ".join(f"`{f}`" for f in flags) + "), where `auto` runs the `avx2` path: "
                   + _measured_line(avx2_result) + " Same method. Without AVX-512 BF16 torch's bf16 matmul is slow: "
                   "its fastest dense path here is fp16 or fp32 (named per column; fp32 reads twice the bytes).")
        out.append("")
        _shape_tables(avx2_result, out)
        if avx2_layer:
            _layer_tables(avx2_layer, out)
    return "\n".join(out).rstrip() + "\n"


def update_readme(readme: str, table: str) -> str:
    """``readme`` with the text between the cpu-bench markers replaced by ``table``."""
    a, b = readme.index(README_START) + len(README_START), readme.index(README_END)
    return readme[:a] + "\n" + table + readme[b:]
