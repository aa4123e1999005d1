"""Roofline ceilings for one expert GEMM: dense, 2:4 (``spmm``) and Samoyeds (``ssmm``).

A *model*, not a measurement: for a weight of ``m`` output rows × ``k`` input features applied to
``tokens`` routed tokens, count the bytes that must cross HBM at least once and the tensor-core work
that must be issued, and divide by the GPU's datasheet peaks (:mod:`samoyeds_lab.offload.hardware`)::

    t_memory  = bytes / HBM bandwidth
    t_compute = tensor FLOP / tensor peak            (sparse peak for mma.sp ops, dense peak otherwise)
    t_ceiling = max(t_memory, t_compute)             no kernel can be faster than this
    speed-up ceiling of op = t_ceiling(dense) / t_ceiling(op)

Bytes (``b`` = bytes per element of ``dtype``, every operand read or written exactly once: perfect
on-chip reuse, the most optimistic assumption, which is what makes this a ceiling):

==========  ======================================  ===============================================
op          weight operand                           other traffic
==========  ======================================  ===============================================
``dense``   ``m·k·b``                                ``tokens·k·b`` gathered activations in,
``spmm``    values ``m·k/2·b`` + 2:4 metadata        ``tokens·m·b`` output written
            (2 bits per kept value: ``m·k/8``)
``ssmm``    values ``(m·n/M)·k/2·b`` + metadata      the same, plus the token ids
            ``(m·n/M)·k/8`` + row indices            (``tokens · 4`` bytes, int32) that the kernel
            ``(k/V)·(m·n/M)·index_bits/8``           reads to gather the activation rows itself
==========  ======================================  ===============================================

NOTE: the baselines are charged for reading *already gathered* activations; a separate gather pass
(``x[ids]``, what a dense MoE layer runs before its matmul) would add ``2·tokens·k·b`` bytes to them.
Leaving it out favours the baselines, so the Samoyeds ceiling shown is, if anything, too low.

FLOP. ``flops = 2·m·k·tokens`` is the *useful* work of the layer (the dense-equivalent product the
expert needs for its routed tokens, no padding tokens, no tokens routed elsewhere); it is the same
for all three ops, so ``flops / time`` (effective TFLOP/s) compares their speed directly.
``nonzero_flops`` counts only the multiply-adds on kept weights (``2·nnz·tokens``: ½ of ``flops`` for
2:4, ``n/(2M)`` for Samoyeds). The tensor core's own work is ``tensor_flops`` in datasheet units:
``mma.sp`` processes a 2:4 row of ``k`` dense columns at the sparse peak (which vendors quote
dense-equivalent, 2× the dense peak), so ``tensor_flops = 2·rows_computed·k·tokens`` with
``rows_computed = m`` (dense, 2:4) or ``m·n/M`` (Samoyeds: the skipped rows are never computed).

At decode (a few tokens per expert) ``t_memory`` dominates and the ceiling is the byte ratio:
≈ 1.78× for 2:4 fp16 (56% of dense bytes) and ≈ 3.5× for Samoyeds 1:2, V=128 (28.3% with the uint8
row indices our kernel reads; 29% and ≈ 3.45× with the published kernel's int32 indices). At thousands
of tokens ``t_compute`` dominates for expert-sized weights: 2× for 2:4 and 4× for Samoyeds 1:2 (half
the rows, each at the sparse rate). For small experts (e.g. 1408 × 2048) the activation and output bytes,
the same for every op, can keep the sparse ops memory-bound there and cap the ratio lower.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Iterable, Sequence

import torch

from .._checks import check_int
from ..offload.hardware import HardwareProfile, load_profile

__all__ = [
    "OPS", "OP_LABELS", "GPU_PROFILES", "DTYPE_BYTES", "SAMOYEDS_PATTERN", "ROW_INDEX_BITS", "TOKEN_ID_BYTES",
    "DECODE_TOKENS", "DEFAULT_TOKENS",
    "RooflinePoint", "op_bytes", "roofline", "roofline_sweep", "speedup_ceiling", "expert_matrices", "main",
]

#: The three products modelled (names as in the kernel bench records' ``op``).
OPS = ("dense", "spmm", "ssmm")
#: Human labels for the legend.
OP_LABELS = {"dense": "dense (cuBLAS-like)", "spmm": "2:4 (mma.sp)", "ssmm": "Samoyeds 1:2 V=128 + 2:4 (SSMM)"}
#: Shipped GPU profiles the lab offers (file stems in ``data/hardware``).
GPU_PROFILES = ("h100_sxm", "h200", "a100_sxm")
#: Element sizes of the dtypes the tensor cores take here (the profiles' ``fp16_tflops`` covers both).
DTYPE_BYTES = {"float16": 2, "bfloat16": 2}
#: The Samoyeds row selection ``(n, M, V)``: n of every M rows kept per V-wide window of K.
SAMOYEDS_PATTERN = (1, 2, 128)
#: Bits per stored row index. NOTE: our ``kernels/ssmm.cu`` reads ``SamoyedsWeight.row_index`` as uint8
#: (≈0.2% of the dense bytes); the published Samoyeds kernel reads int32 (≈0.8%, pass 32);
#: :attr:`SamoyedsWeight.nbytes` counts the packed minimum, ``ceil(log2 M)`` bits.
ROW_INDEX_BITS = 8
#: Bytes per token id the SSMM kernel reads (int32).
TOKEN_ID_BYTES = 4
#: Tokens per expert in the decode regime the issue targets (≤ 64).
DECODE_TOKENS = (1, 8, 16, 64)
#: The sweep of the lab's roofline plots: powers of two from 1 to 4096 tokens per expert.
DEFAULT_TOKENS = tuple(2 ** i for i in range(13))


@dataclass(frozen=True)
class RooflinePoint:
    """The roofline ceiling of one op at one shape on one GPU profile (a model, not a measurement).

    Attributes
    ----------
    op, profile, dtype : str
        ``"dense" | "spmm" | "ssmm"``, the hardware profile's name, ``"float16" | "bfloat16"``.
    m, k, tokens : int
        Weight rows (output features), weight columns (input features), routed tokens.
    weight_bytes, activation_bytes, index_bytes, output_bytes, bytes : int
        HBM traffic: compressed weight (values + metadata + row indices), gathered activation rows,
        token ids, output rows, and their sum.
    flops, nonzero_flops, tensor_flops : float
        Useful dense-equivalent work ``2·m·k·tokens``; multiply-adds on kept weights only; the work
        the tensor core executes in datasheet units (see the module docstring).
    memory_s, compute_s, time_s : float
        ``bytes / bandwidth``, ``tensor_flops / peak``, and their maximum (the ceiling).
    bound : str
        ``"memory"`` or ``"compute"``: which term sets ``time_s``.
    """

    op: str
    profile: str
    dtype: str
    m: int
    k: int
    tokens: int
    weight_bytes: int
    activation_bytes: int
    index_bytes: int
    output_bytes: int
    bytes: int
    flops: float
    nonzero_flops: float
    tensor_flops: float
    memory_s: float
    compute_s: float
    time_s: float
    bound: str

    @property
    def time_ms(self) -> float:
        return self.time_s * 1e3

    @property
    def tflops(self) -> float:
        """Effective TFLOP/s of the useful work at the ceiling: ``flops / time_s / 1e12`` (0 if no work)."""
        return self.flops / self.time_s / 1e12 if self.time_s > 0 else 0.0

    @property
    def intensity(self) -> float:
        """Arithmetic intensity of the useful work, FLOP per byte moved."""
        return self.flops / self.bytes if self.bytes else 0.0

    def to_dict(self) -> dict:
        return {**asdict(self), "time_ms": self.time_ms, "tflops": self.tflops, "intensity": self.intensity}


# ---------------------------------------------------------------------------------------------- checks
def _check_op(op: object) -> str:
    if op not in OPS:
        raise ValueError(f"op: expected one of {OPS}, got {op!r}")
    return op  # type: ignore[return-value]


def _dtype_name(dtype: object) -> str:
    if isinstance(dtype, torch.dtype):
        name = str(dtype).replace("torch.", "")
    elif isinstance(dtype, str):
        name = {"fp16": "float16", "half": "float16", "bf16": "bfloat16"}.get(dtype, dtype)
    else:
        raise TypeError(f"dtype: expected a torch.dtype or a str such as 'float16', got {type(dtype).__name__}")
    if name not in DTYPE_BYTES:
        raise ValueError(f"dtype: expected one of {tuple(DTYPE_BYTES)} (tensor-core input types), got {dtype!r}")
    return name


def _check_pattern(samoyeds: object) -> tuple[int, int, int]:
    if not isinstance(samoyeds, (tuple, list)) or len(samoyeds) != 3:
        raise ValueError(f"samoyeds: expected a tuple (n, M, V), got {samoyeds!r}")
    n = check_int("samoyeds[0] (n)", samoyeds[0], lo=1)
    mm = check_int("samoyeds[1] (M)", samoyeds[1], lo=2)
    v = check_int("samoyeds[2] (V)", samoyeds[2], lo=4)
    if n >= mm:
        raise ValueError(f"samoyeds: expected n < M (keep n of every M rows), got n={n}, M={mm}")
    if v % 4:
        raise ValueError(f"samoyeds: expected V to be a multiple of 4 (whole 2:4 groups), got V={v}")
    return n, mm, v


def _check_shape(op: str, m: object, k: object, tokens: object, samoyeds: tuple[int, int, int]) -> tuple[int, int, int]:
    m = check_int("m", m, lo=1)
    k = check_int("k", k, lo=1)
    tokens = check_int("tokens", tokens, lo=0)
    if op in ("spmm", "ssmm") and k % 4:
        raise ValueError(f"k: expected a multiple of 4 for 2:4 sparsity ({op}), got {k}")
    if op == "ssmm":
        n, mm, v = samoyeds
        if m % mm:
            raise ValueError(f"m: expected a multiple of M={mm} (whole row groups) for ssmm, got {m}")
        if k % v:
            raise ValueError(f"k: expected a multiple of V={v} (whole windows) for ssmm, got {k}")
    return m, k, tokens


# ---------------------------------------------------------------------------------------------- model
def op_bytes(
    op: str,
    m: int,
    k: int,
    tokens: int,
    dtype: object = "float16",
    *,
    samoyeds: tuple[int, int, int] = SAMOYEDS_PATTERN,
    index_bits: int = ROW_INDEX_BITS,
) -> dict[str, int]:
    """HBM bytes of one ``op`` at ``(m, k, tokens)``: ``weight``, ``activation``, ``index``, ``output``, ``total``.

    Parameters
    ----------
    op : str
        ``"dense"``, ``"spmm"`` (2:4) or ``"ssmm"`` (Samoyeds).
    m, k : int
        Weight rows (outputs) and columns (inputs). 2:4 needs ``k % 4 == 0``; Samoyeds ``m % M == 0``
        and ``k % V == 0``.
    tokens : int
        Routed tokens (0 allowed, see Returns).
    dtype : str or torch.dtype
        ``float16`` or ``bfloat16`` (2 bytes).
    samoyeds : (n, M, V)
        The row selection of ``ssmm``.
    index_bits : int
        Bits per stored Samoyeds row index (default 8: uint8, as ``kernels/ssmm.cu`` reads them; 32 for
        the published kernel's int32; ``ceil(log2 M)`` reproduces :attr:`SamoyedsWeight.nbytes`).

    Returns
    -------
    dict
        Byte counts. With ``tokens == 0`` a kernel has nothing to do and need not read the weight,
        so every count is 0.
    """
    op = _check_op(op)
    b = DTYPE_BYTES[_dtype_name(dtype)]
    pattern = _check_pattern(samoyeds)
    m, k, tokens = _check_shape(op, m, k, tokens, pattern)
    index_bits = check_int("index_bits", index_bits, lo=1)
    if tokens == 0:
        return {"weight": 0, "activation": 0, "index": 0, "output": 0, "total": 0}
    if op == "dense":
        weight = m * k * b
    elif op == "spmm":
        kept = m * k // 2
        weight = kept * b + math.ceil(kept * 2 / 8)
    else:
        n, mm, v = pattern
        crows = m // mm * n
        kept = crows * k // 2
        weight = kept * b + math.ceil(kept * 2 / 8) + math.ceil((k // v) * crows * index_bits / 8)
    activation = tokens * k * b
    index = tokens * TOKEN_ID_BYTES if op == "ssmm" else 0
    output = tokens * m * b
    return {"weight": weight, "activation": activation, "index": index, "output": output,
            "total": weight + activation + index + output}


def roofline(
    op: str,
    m: int,
    k: int,
    tokens: int,
    profile: str | HardwareProfile = "h100_sxm",
    dtype: object = "float16",
    *,
    samoyeds: tuple[int, int, int] = SAMOYEDS_PATTERN,
    index_bits: int = ROW_INDEX_BITS,
) -> RooflinePoint:
    """The roofline ceiling of ``op`` at ``(m, k, tokens)`` on a GPU ``profile``.

    ``time_s = max(bytes / memory_bandwidth, tensor_flops / peak)`` with ``peak`` the profile's
    ``fp16_sparse_tflops`` for ``spmm``/``ssmm`` and ``fp16_tflops`` for ``dense``; see the module
    docstring for every term. Arguments as :func:`op_bytes`; ``profile`` is a shipped profile name
    (``"h100_sxm"``, ``"h200"``, ``"a100_sxm"``…), a path, or a :class:`HardwareProfile` of kind ``gpu``.
    """
    op = _check_op(op)
    name = _dtype_name(dtype)
    prof = load_profile(profile)
    if prof.kind != "gpu":
        raise ValueError(f"profile: expected a profile of kind 'gpu', got {prof.name!r} of kind {prof.kind!r}")
    nb = op_bytes(op, m, k, tokens, name, samoyeds=samoyeds, index_bits=index_bits)
    n, mm, _ = samoyeds
    m, k, tokens = int(m), int(k), int(tokens)
    flops = 2.0 * m * k * tokens
    if op == "dense":
        nonzero, tensor, peak = flops, flops, prof.flops
    elif op == "spmm":
        nonzero, tensor, peak = flops / 2, flops, prof.sparse_flops
    else:
        rows = m // mm * n
        nonzero, tensor, peak = 2.0 * rows * k * tokens / 2, 2.0 * rows * k * tokens, prof.sparse_flops
    memory_s = nb["total"] / prof.memory_bandwidth
    compute_s = tensor / peak
    return RooflinePoint(
        op=op, profile=prof.name, dtype=name, m=m, k=k, tokens=tokens,
        weight_bytes=nb["weight"], activation_bytes=nb["activation"], index_bytes=nb["index"],
        output_bytes=nb["output"], bytes=nb["total"], flops=flops, nonzero_flops=nonzero, tensor_flops=tensor,
        memory_s=memory_s, compute_s=compute_s, time_s=max(memory_s, compute_s),
        bound="compute" if compute_s > memory_s else "memory",
    )


def roofline_sweep(
    m: int,
    k: int,
    tokens: Iterable[int] = DEFAULT_TOKENS,
    profile: str | HardwareProfile = "h100_sxm",
    dtype: object = "float16",
    *,
    ops: Sequence[str] = OPS,
    samoyeds: tuple[int, int, int] = SAMOYEDS_PATTERN,
    index_bits: int = ROW_INDEX_BITS,
) -> dict[str, list[RooflinePoint]]:
    """:func:`roofline` for every op in ``ops`` and every token count: ``{op: [point per token count]}``."""
    prof = load_profile(profile)
    tokens = list(tokens)
    if not tokens:
        raise ValueError("tokens: expected at least one token count, got an empty sequence")
    if isinstance(ops, str) or not ops:
        raise ValueError(f"ops: expected a non-empty sequence of names from {OPS}, got {ops!r}")
    return {op: [roofline(op, m, k, t, prof, dtype, samoyeds=samoyeds, index_bits=index_bits) for t in tokens]
            for op in ops}


def speedup_ceiling(
    op: str,
    m: int,
    k: int,
    tokens: int,
    profile: str | HardwareProfile = "h100_sxm",
    dtype: object = "float16",
    **kw,
) -> float:
    """``roofline("dense", …).time_s / roofline(op, …).time_s``: no kernel of ``op`` beats dense by more.

    ``tokens`` must be ≥ 1 (with no tokens there is nothing to speed up).
    """
    tokens = check_int("tokens", tokens, lo=1)
    prof = load_profile(profile)
    dense = roofline("dense", m, k, tokens, prof, dtype, **kw)
    return dense.time_s / roofline(op, m, k, tokens, prof, dtype, **kw).time_s


def expert_matrices(d_model: int, d_ffn: int) -> dict[str, tuple[int, int]]:
    """The weight shapes ``(m, k)`` of one SwiGLU expert: gate/up ``(d_ffn, d_model)``, down ``(d_model, d_ffn)``."""
    d_model = check_int("d_model", d_model, lo=1)
    d_ffn = check_int("d_ffn", d_ffn, lo=1)
    return {"gate/up (w1, w3)": (d_ffn, d_model), "down (w2)": (d_model, d_ffn)}


# ---------------------------------------------------------------------------------------------- CLI
def _format_table(m: int, k: int, tokens: Sequence[int], profile: str, dtype: str) -> str:
    sweep = roofline_sweep(m, k, tokens, profile, dtype)
    prof = load_profile(profile)
    lines = [f"Roofline ceilings (a model, not a measurement): {m}x{k} {dtype} weight on {prof.name}",
             f"{'tokens':>7} " + " ".join(f"{op + ' µs':>11} {op + ' bound':>12}" for op in OPS)
             + "  ceiling 2:4  ceiling Samoyeds"]
    for i, t in enumerate(tokens):
        row = f"{t:>7} " + " ".join(f"{sweep[op][i].time_s * 1e6:>11.2f} {sweep[op][i].bound:>12}" for op in OPS)
        d = sweep["dense"][i].time_s
        s24 = d / sweep["spmm"][i].time_s if sweep["spmm"][i].time_s else float("nan")
        ss = d / sweep["ssmm"][i].time_s if sweep["ssmm"][i].time_s else float("nan")
        lines.append(row + f"  {s24:>10.2f}x  {ss:>15.2f}x")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """``samoyeds-lab bench roofline``: print the ceilings of one weight shape over a token sweep.

    An error is one line ``samoyeds-lab bench roofline: error: ...`` and exit status 2 (``--debug``: traceback).
    """
    import sys

    from .._cli import OneLineParser, int_type, run_command

    prog = "samoyeds-lab bench roofline"
    argv = list(sys.argv[1:] if argv is None else argv)
    p = OneLineParser(prog=prog, description="Roofline ceilings (HBM and tensor-core bounds) of dense, 2:4 and "
                                             "Samoyeds expert GEMMs: a model, not a measurement.")
    p.add_argument("--m", type=int_type("--m", 1, 1 << 24), default=14336,
                   help="weight rows (output features); default Mixtral-8x7B w1")
    p.add_argument("--k", type=int_type("--k", 1, 1 << 24), default=4096, help="weight columns (input features)")
    p.add_argument("--profile", default="h100_sxm", help=f"GPU profile, e.g. {', '.join(GPU_PROFILES)}")
    p.add_argument("--dtype", default="float16", choices=tuple(DTYPE_BYTES))
    p.add_argument("--tokens", type=int_type("--tokens", 1, 1 << 24), nargs="+", default=list(DEFAULT_TOKENS))
    p.add_argument("--debug", action="store_true", help="show the traceback of an error")
    args = p.parse_args(argv)

    def body() -> int:
        from ..offload.hardware import load_profile

        try:
            load_profile(args.profile)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"--profile: {exc}") from None
        print(_format_table(args.m, args.k, args.tokens, args.profile, args.dtype))
        return 0

    return run_command(prog, body, argv, p)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
