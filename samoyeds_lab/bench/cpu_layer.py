"""A whole MoE layer on the CPU, measured: the ``samoyeds`` backend (CPU kernels) vs ``dense`` and ``grouped``.

A Mixtral-shaped block (``E`` experts of ``H → I → H`` SwiGLU, top-``k`` routing; random weights pruned to
Samoyeds 1:2 V=128 with magnitude scores, so every backend computes on the same pruned weights) is run at
decode batches and one prefill; the router's top-k is drawn uniformly (seeded), the same for every backend.
Times are medians of ``repeat`` forward passes of the expert layer (router excluded: it is the same for all
backends), the cache flushed before each, reported in ms per token. ``dense`` and ``grouped`` are also timed
on fp32 copies of the same pruned weights (``baseline_dtypes``): on a CPU without AVX-512 BF16 torch's bf16
matmul is slow, and the baseline is the fastest thing a user would run instead; ``speedup_vs_grouped`` /
``speedup_vs_dense`` are against the fastest dtype of that backend at that token count.
"""

from __future__ import annotations

from typing import Callable, Iterable, Sequence

import torch

from .._checks import check_int
from .cpu import cpu_device, threads, time_flushed

#: (name, hidden, intermediate, experts, top_k)
MIXTRAL = ("mixtral-8x7b layer", 4096, 14336, 8, 2)
BATCHES = (1, 2, 4, 8)
PREFILL = 128
LAYER_BACKENDS = ("samoyeds", "grouped", "dense")


def make_layer(hidden: int, intermediate: int, num_experts: int, *, dtype: torch.dtype = torch.bfloat16,
               seed: int = 0, vector: int = 128):
    """SwiGLU experts with random weights (``nn.Linear`` init, seeded), pruned + compressed (Samoyeds 1:2)."""
    from ..moe import SwiGLUExperts

    torch.manual_seed(seed)
    ex = SwiGLUExperts(num_experts, hidden, intermediate).to(dtype)
    ex.requires_grad_(False)
    ex.sparsify("samoyeds", n=1, m=2, vector=vector)
    return ex


def routing(tokens: int, num_experts: int, top_k: int, *, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Uniform random distinct top-k experts per token and softmax-normalised weights (seeded)."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.stack([torch.randperm(num_experts, generator=g)[:top_k] for _ in range(tokens)])
    w = torch.softmax(torch.randn(tokens, top_k, generator=g), -1)
    return ids, w


def bench_layer(experts=None, *, shape: tuple = MIXTRAL, batches: Iterable[int] = BATCHES, prefill: int | None = PREFILL,
                backends: Sequence[str] = LAYER_BACKENDS, nthreads: int | None = None, repeat: int = 5,
                dtype: torch.dtype = torch.bfloat16, progress: Callable[[str], None] | None = None,
                baseline_dtypes: Sequence[torch.dtype] = (torch.float32,)) -> list[dict]:
    """Records ``{op: "moe_layer", backend, dtype, tokens, ms, min_ms, max_ms, ms_per_token, speedup_vs_grouped,
    ...}``: every backend in ``dtype``, and ``dense`` / ``grouped`` also in each of ``baseline_dtypes``."""
    import copy
    name, H, I, E, k = shape
    for d in baseline_dtypes:  # checked before the (slow) layer is built
        if not isinstance(d, torch.dtype) or not d.is_floating_point:
            raise TypeError(f"baseline_dtypes: expected floating torch dtypes, got {d!r}")
    if experts is None:
        if progress:
            progress(f"building and pruning {E} experts of {H}x{I} ({dtype})")
        experts = make_layer(H, I, E, dtype=dtype)
    toks = [check_int("batches", b, lo=1) for b in batches] + ([check_int("prefill", prefill, lo=1)] if prefill else [])
    extra = {}
    for d in baseline_dtypes:
        if d != dtype and d not in extra and any(b != "samoyeds" for b in backends):
            if progress:
                progress(f"copying the pruned experts to {d} for the dense baselines")
            extra[d] = copy.deepcopy(experts).to(d)
    dev = cpu_device()
    out: list[dict] = []
    with threads(nthreads), torch.no_grad():
        th = torch.get_num_threads()
        for T in toks:
            ids, w = routing(T, E, k, seed=T)
            x = torch.randn(T, H, generator=torch.Generator().manual_seed(T)).to(dtype)
            reps = repeat if T <= 8 else max(2, repeat // 2)
            per = {}
            for b in backends:
                per[(b, dtype)] = time_flushed(lambda: experts(x, ids, w, backend=b), repeat=reps)
            for d, ex_d in extra.items():
                xd = x.to(d)
                for b in backends:
                    if b != "samoyeds":
                        per[(b, d)] = time_flushed(lambda: ex_d(xd, ids, w, backend=b), repeat=reps)
            best = {}
            for (b, _), r in per.items():
                best[b] = min(best.get(b, r["ms"]), r["ms"])
            for (b, d), r in per.items():
                rec = {"op": "moe_layer", "name": name, "backend": b, "hidden": H, "intermediate": I, "experts": E,
                       "top_k": k, "tokens": T, "phase": "decode" if T <= 8 else "prefill", "threads": th,
                       "dtype": str(d).removeprefix("torch."), **r, "ms_per_token": r["ms"] / T, **dev}
                if "grouped" in best:
                    rec["speedup_vs_grouped"] = best["grouped"] / r["ms"]
                if "dense" in best:
                    rec["speedup_vs_dense"] = best["dense"] / r["ms"]
                out.append(rec)
            if progress:
                progress(f"{T} tokens: " + ", ".join(f"{b} {str(d).removeprefix('torch.')} {r['ms']:.1f} ms"
                                                     for (b, d), r in per.items()))
    return out
