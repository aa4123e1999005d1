"""Fused SSMM vs a separate gather pass + sparse GEMM: the bytes and modelled time of "dual-side" sparsity.

A *model* built on :mod:`samoyeds_lab.bench.roofline` (same byte counts, same datasheet peaks). An expert
with weight ``m x k`` gets ``tokens`` routed rows of the batch ``x``. Four ways to compute its product:

=====================  ===================================================  ==================================
path                   kernels                                              sparsity used
=====================  ===================================================  ==================================
``dense+gather``       gather pass ``xg = x[ids]``, then a dense GEMM       none
``2:4+gather``         gather pass, then a 2:4 ``mma.sp`` GEMM              weights only (2:4)
``samoyeds+gather``    gather pass, then the Samoyeds GEMM on ``xg``        weights only (rows + 2:4)
``samoyeds fused``     one SSMM kernel: the token ids are its B addresses   both sides (weights + tokens)
=====================  ===================================================  ==================================

The gather pass is memory-bound and moves ``tokens·k·b`` bytes in (rows of ``x``), the same out (the
copy ``xg``) and ``4·tokens`` of int32 ids; the GEMM after it reads ``xg`` back. The fused kernel reads
the ids and the rows of ``x`` once, straight into shared memory. Time of a path = the sum of its
kernels' roofline ceilings ``max(bytes / bandwidth, tensor FLOP / peak)`` (the two kernels of a separate
path run one after the other; launch latency is not modelled, which favours the separate paths).

"Dual-side", in bytes: relative to ``2:4+gather`` the fused Samoyeds kernel saves the *weight side*
(Samoyeds vs 2:4 operand bytes) and the *activation side* (the gather pass's copy written and read back).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from .._checks import check_int
from ..offload.hardware import HardwareProfile, load_profile
from .roofline import ROW_INDEX_BITS, SAMOYEDS_PATTERN, TOKEN_ID_BYTES, _dtype_name, op_bytes, roofline

__all__ = ["FUSION_PATHS", "FUSION_LABELS", "PathCost", "fusion_costs", "dual_side_savings"]

#: The four paths, in the order the labs show them.
FUSION_PATHS = ("dense+gather", "2:4+gather", "samoyeds+gather", "samoyeds fused")
#: Legend labels.
FUSION_LABELS = {
    "dense+gather": "gather pass + dense GEMM",
    "2:4+gather": "gather pass + 2:4 GEMM (weights-only sparsity)",
    "samoyeds+gather": "gather pass + Samoyeds GEMM (weights only)",
    "samoyeds fused": "Samoyeds SSMM, fused gather (dual-side)",
}
_GEMM_OP = {"dense+gather": "dense", "2:4+gather": "spmm", "samoyeds+gather": "ssmm", "samoyeds fused": "ssmm"}


@dataclass(frozen=True)
class PathCost:
    """Modelled HBM bytes and time of one path (see the module docstring); a model, not a measurement.

    Attributes
    ----------
    path, profile, dtype : str
    m, k, tokens : int
    weight_bytes, x_bytes, copy_bytes, index_bytes, output_bytes, bytes : int
        Weight operand; rows of ``x`` read (by the gather pass or by the fused kernel); the copy ``xg``
        written by the gather pass plus read back by the GEMM (0 when fused); int32 token ids; output;
        total.
    gather_s, gemm_s, time_s : float
        Roofline ceiling of the gather pass (0 when fused), of the product kernel, and their sum.
    gemm_bound : str
        ``"memory"`` or ``"compute"`` for the product kernel.
    """

    path: str
    profile: str
    dtype: str
    m: int
    k: int
    tokens: int
    weight_bytes: int
    x_bytes: int
    copy_bytes: int
    index_bytes: int
    output_bytes: int
    bytes: int
    gather_s: float
    gemm_s: float
    time_s: float
    gemm_bound: str

    @property
    def time_us(self) -> float:
        return self.time_s * 1e6

    def to_dict(self) -> dict:
        return {**asdict(self), "time_us": self.time_us}


def fusion_costs(
    m: int,
    k: int,
    tokens: int,
    profile: str | HardwareProfile = "h100_sxm",
    dtype: object = "float16",
    *,
    samoyeds: tuple[int, int, int] = SAMOYEDS_PATTERN,
    index_bits: int = ROW_INDEX_BITS,
) -> dict[str, PathCost]:
    """The four paths of the module docstring for one expert GEMM: ``{path: PathCost}``.

    Parameters
    ----------
    m, k : int
        Weight rows (outputs) and columns (inputs), e.g. Mixtral-8x7B w1 ``14336, 4096``; the Samoyeds
        pattern needs ``m % M == 0`` and ``k % V == 0``.
    tokens : int
        Routed tokens of this expert, ``>= 1``.
    profile : str or HardwareProfile
        A GPU profile (``"h100_sxm"``, ``"h200"``, ``"a100_sxm"``, ``"rtx_4070_super"``…).
    dtype : str or torch.dtype
        ``float16`` or ``bfloat16``.
    samoyeds, index_bits
        As :func:`samoyeds_lab.bench.roofline.op_bytes`.
    """
    tokens = check_int("tokens", tokens, lo=1)
    prof = load_profile(profile)
    if prof.kind != "gpu":
        raise ValueError(f"profile: expected a profile of kind 'gpu', got {prof.name!r} of kind {prof.kind!r}")
    name = _dtype_name(dtype)
    out = {}
    for path in FUSION_PATHS:
        op = _GEMM_OP[path]
        point = roofline(op, m, k, tokens, prof, name, samoyeds=samoyeds, index_bits=index_bits)
        nb = op_bytes(op, m, k, tokens, name, samoyeds=samoyeds, index_bits=index_bits)
        x_bytes, ids = nb["activation"], tokens * TOKEN_ID_BYTES
        if path == "samoyeds fused":
            copy, gather_s, gemm_bytes = 0, 0.0, nb["total"]
        else:
            copy = 2 * x_bytes  # xg written by the gather pass, read back by the GEMM
            gather_s = (x_bytes + ids + x_bytes) / prof.memory_bandwidth
            gemm_bytes = nb["weight"] + nb["activation"] + nb["output"]  # reads xg, no ids
        gemm_s = max(gemm_bytes / prof.memory_bandwidth, point.compute_s)
        out[path] = PathCost(
            path=path, profile=prof.name, dtype=name, m=point.m, k=point.k, tokens=tokens,
            weight_bytes=nb["weight"], x_bytes=x_bytes, copy_bytes=copy, index_bytes=ids,
            output_bytes=nb["output"], bytes=nb["weight"] + x_bytes + copy + ids + nb["output"],
            gather_s=gather_s, gemm_s=gemm_s, time_s=gather_s + gemm_s,
            gemm_bound="compute" if point.compute_s > gemm_bytes / prof.memory_bandwidth else "memory",
        )
    return out


def dual_side_savings(costs: dict[str, PathCost]) -> dict[str, float]:
    """Bytes the fused Samoyeds kernel saves over ``2:4+gather``, split by side, and the time ratio.

    Returns ``weight_side`` (2:4 minus Samoyeds weight bytes), ``activation_side`` (the gather pass's
    copy, written and read back), ``total`` (their sum = the difference of the paths' bytes),
    ``bytes_ratio`` (2:4+gather bytes / fused bytes) and ``time_ratio`` (modelled time, same order).
    """
    if not isinstance(costs, dict) or set(costs) != set(FUSION_PATHS):
        keys = f" with keys {sorted(costs)!r}" if isinstance(costs, dict) else ""
        raise ValueError(f"costs: expected the dict fusion_costs returns (keys {FUSION_PATHS}), got "
                         f"{type(costs).__name__}{keys}")
    base, fused = costs["2:4+gather"], costs["samoyeds fused"]
    weight = base.weight_bytes - fused.weight_bytes
    activation = base.copy_bytes - fused.copy_bytes
    return {"weight_side": weight, "activation_side": activation, "total": base.bytes - fused.bytes,
            "bytes_ratio": base.bytes / fused.bytes, "time_ratio": base.time_s / fused.time_s}
