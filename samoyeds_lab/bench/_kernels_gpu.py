"""GPU half of :func:`samoyeds_lab.bench.kernels.run_kernel_bench` (imported only when a GPU is there).

:func:`sweep` is the whole benchmark except the clock and the device: which operands are built, which ops
and baselines run on the same gathered tokens, the one-time correctness check of every kernel output
against the reference before it is timed, and how records pair ops with baselines. :func:`run` calls it
with CUDA tensors, CUDA-event timing and the GPU's identity; the CPU tests call it with CPU tensors, the
reference backend and a fake clock, so the bookkeeping is tested without a GPU (and no time is recorded).
"""

from __future__ import annotations

import statistics
from typing import Callable

import torch

from .. import reference
from ..formats import compress_nm, compress_samoyeds
from ..kernels import dense_mm, spmm, ssmm
from ..offload.hardware import load_profile
from .kernels import make_record

#: Tolerances of the pre-timing check (fp32 accumulation on both sides, 16-bit outputs).
CHECK_TOL = {torch.float16: dict(rtol=3e-2, atol=3e-2), torch.bfloat16: dict(rtol=8e-2, atol=8e-2)}


class KernelMismatchError(AssertionError):
    """A kernel's output differs from the reference: nothing is timed or recorded for it."""


def _cuda_time(fn: Callable[[], object], warmup: int, repeat: int) -> float:
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


def _pattern(m: int, k: int, dtype, g, device) -> tuple[torch.Tensor, torch.Tensor]:
    """(2:4 dense weight, Samoyeds 1:2/V=128 dense weight) with random values."""
    w = torch.randn(m, k, generator=g, device=device).to(dtype)
    grp = w.view(m, k // 4, 4)
    keep = grp.abs().float().argsort(-1, descending=True)[..., :2]
    w24 = torch.zeros_like(grp).scatter_(-1, keep, grp.gather(-1, keep)).view(m, k)
    rowsel = (torch.rand(m // 2, k // 128, generator=g, device=device) < 0.5).long()
    mask = torch.zeros(m // 2, 2, k // 128, 128, device=device, dtype=torch.bool)
    mask.scatter_(1, rowsel.view(m // 2, 1, k // 128, 1).expand(-1, 1, -1, 128), True)
    return w24, w24 * mask.view(m, k)


def _check(name: str, got: torch.Tensor, want: torch.Tensor, dtype) -> None:
    try:
        torch.testing.assert_close(got.float(), want.float(), **CHECK_TOL[dtype])
    except AssertionError as exc:
        raise KernelMismatchError(f"{name} differs from the reference; not timed: {exc}") from None


def sweep(shapes, tokens, dtype_name, *, profile, ops, time_fn, device: str, backend: str, hopper: bool,
          identity: dict) -> list[dict]:
    """Run the benchmark sweep; see the module docstring.

    Parameters
    ----------
    time_fn : callable
        ``time_fn(fn) -> ms`` (median of timed calls of ``fn``).
    device, backend : str
        Where the operands live and which kernel backend runs (``"cuda"``/``"cupy"`` for real).
    hopper : bool
        Also time the sm_90a wgmma path (op ``ssmm_wg``, recorded against ``ssmm`` too).
    identity : dict
        ``device``, ``driver``, ``versions`` of every record.
    """
    dtype = {"float16": torch.float16, "bfloat16": torch.bfloat16}[dtype_name]
    prof = load_profile(profile)
    g = torch.Generator(device=device).manual_seed(0)
    recs = []
    for model, (d_model, d_ffn) in shapes.items():
        m, k = d_ffn, d_model  # up/gate projection: [d_ffn, d_model] · x
        w24_dense, wsam_dense = _pattern(m, k, dtype, g, device)
        w24, wsam = compress_nm(w24_dense), compress_samoyeds(wsam_dense)
        try:
            from torch.sparse import to_sparse_semi_structured

            semi = to_sparse_semi_structured(w24_dense)
        except Exception:  # noqa: BLE001 - torch 2:4 unsupported on this device/build
            semi = None
        for t in tokens:
            x = torch.randn(4 * t, k, generator=g, device=device).to(dtype)
            idx = torch.arange(0, 4 * t, 4, device=device, dtype=torch.int32)
            xg = x[idx.long()]
            calls = {  # every op and baseline on the same gathered tokens
                "torch_dense": lambda: xg @ w24_dense.T,
                "dense_mm": lambda: dense_mm(w24_dense, x, idx, backend=backend),
                "ssmm": lambda: ssmm(wsam, x, idx, backend=backend, kernel="mma_sp"),
                "ssmm_wg": lambda: ssmm(wsam, x, idx, backend=backend, kernel="wgmma_sp"),
                "spmm_24": lambda: spmm(w24, xg, backend=backend),
            }
            if semi is not None and t >= 8:  # torch's 2:4 needs >= 8 (padded) columns
                calls["torch_24"] = lambda: torch.mm(semi, xg.T).T
            want24 = reference.spmm(w24, xg, out_dtype=torch.float32)
            want_sam = reference.ssmm(wsam, x, idx, out_dtype=torch.float32)
            wanted = {"torch_dense": want24, "dense_mm": want24, "spmm_24": want24, "torch_24": want24,
                      "ssmm": want_sam, "ssmm_wg": want_sam}
            run_ops = [op for op in ops if op != "ssmm_wg" or hopper]
            names = ["torch_dense", "dense_mm"] + [n for n in ("torch_24",) if n in calls] + run_ops
            if "ssmm_wg" in run_ops:
                names.append("ssmm")  # the wgmma path is always recorded against the mma.sp path too
            ms = {}
            for name in dict.fromkeys(names):
                _check(name, calls[name](), wanted[name], dtype)
                ms[name] = time_fn(calls[name])
            base = {b: ms[b] for b in ("torch_dense", "torch_24", "dense_mm") if b in ms}
            for op in run_ops:
                bases = dict(base, ssmm=ms["ssmm"]) if op == "ssmm_wg" else base
                for bname, bms in bases.items():
                    if bname == op:
                        continue
                    recs.append(make_record(op=op, model=model, m=m, k=k, tokens=t, dtype=dtype_name, ms=ms[op],
                                            baseline=bname, baseline_ms=bms, profile=prof, **identity))
    return recs


def gpu_identity() -> dict:
    """``device`` (the GPU's name), ``driver`` (the CUDA driver version) and ``versions`` of the software."""
    import cupy

    from ..kernels.build import nvrtc_version
    from .timing import environment_record

    env = environment_record()
    drv = cupy.cuda.runtime.driverGetVersion()
    versions = {k: str(v) for k, v in env.items()}
    versions.update(torch_cuda_runtime=str(torch.version.cuda), cupy=str(cupy.__version__),
                    nvrtc=".".join(map(str, nvrtc_version())))
    return {"device": torch.cuda.get_device_properties(0).name, "driver": f"{drv // 1000}.{drv % 1000 // 10}",
            "versions": versions}


def run(shapes, tokens, dtype_name, *, profile, warmup, repeat, ops):
    from ..kernels.build import device_arch

    return sweep(shapes, tokens, dtype_name, profile=profile, ops=ops,
                 time_fn=lambda fn: _cuda_time(fn, warmup, repeat), device="cuda", backend="cupy",
                 hopper=device_arch() == "90a", identity=gpu_identity())
