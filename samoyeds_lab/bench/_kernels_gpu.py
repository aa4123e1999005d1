"""GPU half of :func:`samoyeds_lab.bench.kernels.run_kernel_bench` (imported only when a GPU is there)."""

from __future__ import annotations

import statistics

import torch

from ..formats import compress_nm, compress_samoyeds
from ..kernels import dense_mm, spmm, ssmm
from ..kernels.build import device_arch
from ..offload.hardware import load_profile
from .kernels import make_record
from .timing import environment_record


def _time(fn, warmup: int, repeat: int) -> float:
    flush = torch.empty(256 << 20, dtype=torch.uint8, device="cuda")
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        flush.zero_()  # evict L2 (50 MB on H100)
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b))
    return statistics.median(times)


def _pattern(m: int, k: int, dtype, g) -> tuple[torch.Tensor, torch.Tensor]:
    """(2:4 dense weight, Samoyeds 1:2/V=128 dense weight) with random values, on the GPU."""
    w = torch.randn(m, k, generator=g, device="cuda").to(dtype)
    grp = w.view(m, k // 4, 4)
    keep = grp.abs().float().argsort(-1, descending=True)[..., :2]
    w24 = torch.zeros_like(grp).scatter_(-1, keep, grp.gather(-1, keep)).view(m, k)
    rowsel = (torch.rand(m // 2, k // 128, generator=g, device="cuda") < 0.5).long()
    mask = torch.zeros(m // 2, 2, k // 128, 128, device="cuda", dtype=torch.bool)
    mask.scatter_(1, rowsel.view(m // 2, 1, k // 128, 1).expand(-1, 1, -1, 128), True)
    return w24, w24 * mask.view(m, k)


def run(shapes, tokens, dtype_name, *, profile, warmup, repeat, ops):
    dtype = {"float16": torch.float16, "bfloat16": torch.bfloat16}[dtype_name]
    prof = load_profile(profile)
    env = environment_record()
    props = torch.cuda.get_device_properties(0)
    device = props.name
    driver = str(torch.version.cuda)
    versions = {k: str(v) for k, v in env.items()} if isinstance(env, dict) else {}
    g = torch.Generator(device="cuda").manual_seed(0)
    hopper = device_arch() == "90a"
    recs = []
    for model, (d_model, d_ffn) in shapes.items():
        m, k = d_ffn, d_model  # up/gate projection: [d_ffn, d_model] · x
        w24_dense, wsam_dense = _pattern(m, k, dtype, g)
        w24, wsam = compress_nm(w24_dense), compress_samoyeds(wsam_dense)
        semi = None
        try:
            from torch.sparse import to_sparse_semi_structured

            semi = to_sparse_semi_structured(w24_dense)
        except Exception:  # noqa: BLE001 - torch 2:4 unsupported on this GPU/build
            semi = None
        for t in tokens:
            x = torch.randn(4 * t, k, generator=g, device="cuda").to(dtype)
            idx = torch.arange(0, 4 * t, 4, device="cuda", dtype=torch.int32)
            xg = x[idx.long()]
            base = {"torch_dense": _time(lambda: xg @ w24_dense.T, warmup, repeat),
                    "dense_mm": _time(lambda: dense_mm(w24_dense, x, idx, backend="cupy"), warmup, repeat)}
            if semi is not None and t >= 8:  # torch's 2:4 needs >= 8 (padded) columns
                base["torch_24"] = _time(lambda: torch.mm(semi, xg.T), warmup, repeat)
            mine = {}
            if "ssmm" in ops or ("ssmm_wg" in ops and hopper):
                mine["ssmm"] = _time(lambda: ssmm(wsam, x, idx, backend="cupy", kernel="mma_sp"), warmup, repeat)
            if "ssmm_wg" in ops and hopper:  # the wgmma path, also timed against the mma.sp path of the same run
                mine["ssmm_wg"] = _time(lambda: ssmm(wsam, x, idx, backend="cupy", kernel="wgmma_sp"), warmup, repeat)
            if "spmm_24" in ops:
                mine["spmm_24"] = _time(lambda: spmm(w24, xg, backend="cupy"), warmup, repeat)
            if "dense_mm" in ops:
                mine["dense_mm"] = base["dense_mm"]
            for op, ms in mine.items():
                bases = dict(base, ssmm=mine["ssmm"]) if op == "ssmm_wg" else base
                for bname, bms in bases.items():
                    if bname == op:
                        continue
                    recs.append(make_record(device=device, driver=driver, versions=versions, op=op, model=model,
                                            m=m, k=k, tokens=t, dtype=dtype_name, ms=ms, baseline=bname,
                                            baseline_ms=bms, profile=prof))
    return recs
