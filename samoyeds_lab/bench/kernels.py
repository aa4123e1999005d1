"""Kernel benchmarks (``samoyeds-lab bench kernels``): our SSMM/SpMM/dense kernels vs torch baselines on a GPU.

Records (one dict per (model, op, tokens, dtype)) carry ``device, driver, versions, op, model, m, k,
tokens, dtype, ms, baseline, baseline_ms, tflops, roofline_ms, date``. ``tflops`` counts only real work
(``2·m·k·tokens`` dense-equivalent FLOP, never padding); ``roofline_ms`` is
the ceiling of :func:`samoyeds_lab.bench.roofline.roofline` on a hardware profile of ``data/hardware``
(HBM bytes vs tensor-core work; the same formula Lab 02 plots). Nothing is ever recorded without a GPU: :func:`run_kernel_bench` raises.
"""

from __future__ import annotations

import json
from pathlib import Path

# The record schema and reader live below both kernels and bench; re-exported here (back-compat).
from ..records import BASELINES, OPS, RECORD_KEYS, build_record, load_kernel_records, validate_record

#: Expert FFN shapes per model: (d_model, d_ffn) = (hidden_size, the routed expert's intermediate size) of
#: each model's Hugging Face ``config.json`` (Qwen2-MoE and DeepSeek-MoE: ``moe_intermediate_size``; OpenMoE
#: and MiniCPM-MoE: ``intermediate_size``). Transcribed from the published configs; model hubs are not
#: reachable from this project's machines, so they could not be re-read here.
MODEL_SHAPES: dict[str, tuple[int, int]] = {
    "Mixtral-8x7B": (4096, 14336),
    "Mixtral-8x22B": (6144, 16384),
    "Qwen2-MoE-57B-A14B": (3584, 2560),
    "DeepSeek-MoE-16B": (2048, 1408),
    "OpenMoE-8B": (2048, 8192),
    "MiniCPM-MoE-8x2B": (2304, 5760),
}
#: Tokens per expert swept by the benchmark.
TOKENS = (1, 8, 16, 64, 256, 1024, 4096)
_REPO = Path(__file__).resolve().parents[2]


#: Ops and baselines of the records → the op of :mod:`samoyeds_lab.bench.roofline` with the same HBM traffic
#: and tensor-core work (one roofline formula for the whole project).
ROOFLINE_OP = {"ssmm": "ssmm", "ssmm_wg": "ssmm", "ssmm_decode": "ssmm", "ssmm_prefill": "ssmm", "spmm_24": "spmm", "torch_24": "spmm", "dense_mm": "dense", "torch_dense": "dense"}


def _roofline_op(op: str) -> str:
    if op not in ROOFLINE_OP:
        raise ValueError(f"op: expected one of {tuple(ROOFLINE_OP)}, got {op!r}")
    return ROOFLINE_OP[op]


def op_bytes(op: str, m: int, k: int, tokens: int, dtype: str = "float16") -> float:
    """HBM bytes of one expert product ``[m, k] · [k, tokens]`` (weight operand with its metadata and row
    indices, gathered activations, token ids, output): ``bench.roofline.op_bytes(...)["total"]``."""
    from .roofline import op_bytes as _op_bytes

    return float(_op_bytes(_roofline_op(op), m, k, tokens, dtype)["total"])


def roofline_ms(op: str, m: int, k: int, tokens: int, profile, dtype: str = "float16") -> float:
    """The roofline ceiling in ms, ``bench.roofline.roofline(...).time_s``: ``max(bytes / HBM bandwidth,
    tensor-core FLOP / peak)``, where sparse ops count only the FLOP their kept values need at the SpTC peak
    (``profile``: a name from ``data/hardware`` or a :class:`~samoyeds_lab.offload.hardware.HardwareProfile`)."""
    from .roofline import roofline

    return roofline(_roofline_op(op), m, k, tokens, profile, dtype).time_s * 1e3


def make_record(*, device: str, driver: str, versions: dict, op: str, model: str, m: int, k: int, tokens: int,
                dtype: str, ms: float, baseline: str, baseline_ms: float, profile, date: str | None = None) -> dict:
    """One benchmark record (validated); ``tflops = 2·m·k·tokens / ms`` (real tokens only) and ``roofline_ms``
    from :func:`roofline_ms` on ``profile``. The schema itself lives in :mod:`samoyeds_lab.records`."""
    return build_record(device=device, driver=driver, versions=versions, op=op, model=model, m=m, k=k,
                        tokens=tokens, dtype=dtype, ms=ms, baseline=baseline, baseline_ms=baseline_ms,
                        roofline_ms=roofline_ms(op, m, k, tokens, profile, dtype), date=date)


def run_kernel_bench(shapes=None, tokens=TOKENS, dtype="float16", *, profile="h100_sxm", warmup=3, repeat=20,
                     ops=OPS, **options) -> list[dict]:
    """Time our kernels and the baselines on the same gathered tokens (GPU only; CUDA events around batches
    of back-to-back calls, L2 flushed before every batch; kernel time through launch plans and whole-op time,
    see :mod:`samoyeds_lab.bench._kernels_gpu`). ``options``: ``projections``, ``calls``, ``graphs``, ``sink``.

    Raises
    ------
    RuntimeError
        Without an SM80+ GPU and CuPy: nothing is measured or invented.
    """
    from ..kernels import available

    if not available():
        from ..kernels.ops import _unavailable_reason

        raise RuntimeError(f"run_kernel_bench needs an SM80+ NVIDIA GPU with CuPy: {_unavailable_reason()}")
    from ._kernels_gpu import run as _run  # GPU-only implementation

    return _run(shapes or MODEL_SHAPES, tokens, dtype, profile=profile, warmup=warmup, repeat=repeat, ops=ops,
                **options)


class _RecordFile:
    """Collects records and rewrites ``{"records": [...]}`` atomically after each one (a crash or a time limit
    leaves every record made so far readable by :func:`load_kernel_records`)."""

    def __init__(self, path: Path | None):
        self.path, self.records = path, []

    def __call__(self, rec: dict) -> None:
        import os

        self.records.append(rec)
        if self.path is None:
            self.path = _REPO / "data" / "bench" / f"gpu_kernels_{rec['device'].replace(' ', '_')}.json"
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(json.dumps({"records": self.records}, indent=1))
        os.replace(tmp, self.path)


def main(argv: list[str] | None = None) -> int:
    """``samoyeds-lab bench kernels``: run the sweep and write ``data/bench/gpu_kernels_<device>.json``.

    Defaults: Mixtral-8x7B's w1 and w2, bf16 and fp16, 1/8/64/1024/4096 tokens, every op. The file is
    rewritten after every record; failed configs are records with ``status: "failed"``. Every argument is
    checked before the GPU is asked for; an error is one line ``samoyeds-lab bench kernels: error: ...`` and
    exit status 2 (``--debug``: traceback).
    """
    import sys

    from .._checkpoint import check_out_path
    from .._cli import OneLineParser, int_type, run_command

    prog = "samoyeds-lab bench kernels"
    argv = list(sys.argv[1:] if argv is None else argv)
    ap = OneLineParser(prog=prog, description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["Mixtral-8x7B"], choices=list(MODEL_SHAPES))
    ap.add_argument("--projections", nargs="+", default=["w1", "w2"], choices=["w1", "w2"],
                    help="w1: up/gate [d_ffn, d_model]; w2: down [d_model, d_ffn]")
    ap.add_argument("--tokens", nargs="+", type=int_type("--tokens", 1, 1 << 20), default=[1, 8, 64, 1024, 4096])
    ap.add_argument("--dtypes", "--dtype", dest="dtypes", nargs="+", default=["bfloat16", "float16"],
                    choices=["float16", "bfloat16"])
    ap.add_argument("--ops", nargs="+", default=list(OPS), choices=list(OPS))
    ap.add_argument("--batches", type=int_type("--batches", 1, 1000), default=5, help="timed batches per measurement")
    ap.add_argument("--calls", type=int_type("--calls", 1, 10000), default=20, help="back-to-back calls per batch")
    ap.add_argument("--warmup", type=int_type("--warmup", 0, 1000), default=3)
    ap.add_argument("--no-graphs", action="store_true", help="time plain back-to-back launches, never a CUDA graph")
    ap.add_argument("--profile", default="h100_sxm", help="GPU profile of data/hardware (for roofline_ms)")
    ap.add_argument("--out", default=None)
    ap.add_argument("--debug", action="store_true", help="show the traceback of an error")
    args = ap.parse_args(argv)

    def body() -> int:
        from ..offload.hardware import load_profile

        try:
            prof = load_profile(args.profile)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"--profile: {exc}") from None
        if prof.kind != "gpu":
            raise ValueError(f"--profile: expected a profile of kind 'gpu', got {prof.name!r} of kind {prof.kind!r}")
        sink = _RecordFile(check_out_path("--out", args.out) if args.out else None)
        for dt in dict.fromkeys(args.dtypes):
            run_kernel_bench({m: MODEL_SHAPES[m] for m in args.models}, tuple(args.tokens), dt, profile=args.profile,
                             warmup=args.warmup, repeat=args.batches, ops=tuple(args.ops),
                             projections=tuple(dict.fromkeys(args.projections)), calls=args.calls,
                             graphs=not args.no_graphs, sink=sink)
        failed = sum(r.get("status") == "failed" for r in sink.records)
        print(f"wrote {len(sink.records)} records ({failed} failed) to {sink.path}")
        return 0

    return run_command(prog, body, argv, ap)


__all__ = ["MODEL_SHAPES", "TOKENS", "RECORD_KEYS", "op_bytes", "roofline_ms", "make_record", "validate_record",
           "load_kernel_records", "run_kernel_bench", "main"]
