"""GPU half of :func:`samoyeds_lab.bench.kernels.run_kernel_bench` (imported only when a GPU is there).

:func:`sweep` is the whole benchmark except the clock and the device: which operands are built (Mixtral-like
up/gate ``w1`` ``[d_ffn, d_model]`` and down ``w2`` ``[d_model, d_ffn]`` projections), which ops and baselines run
on the same gathered tokens, the correctness check of every output (the op's and its launch plan's) against
the reference before anything is timed, and how records pair ops with baselines. Each op is timed twice:

* **kernel time** (``ms``): its :class:`~samoyeds_lab.kernels.plan.KernelPlan` run back to back (launches
  only: checks, tiles, packing and ``get_function`` were done when the plan was built); torch baselines are
  their own call. On a GPU every batch is one CUDA graph replay of ``calls`` runs where capture works, else
  ``calls`` plain launches (``timing.kernel.method`` says which, ``fallback`` why);
* **whole-op time** (``op_ms``): the op as a user calls it (``ssmm(...)``: checks with host syncs, tiles,
  DLPack wrapping, launches) back to back.

A config that fails (a :class:`KernelMismatchError`, a launch or capture error, out of memory) becomes a
record with ``status: "failed"`` and its ``reason`` (``ms``/``baseline_ms`` 0 where nothing was timed) and the
sweep goes on; every record is handed to ``sink`` as soon as it exists (the CLI rewrites the JSON file after
each). :func:`run` calls :func:`sweep` with CUDA tensors, CUDA events and the GPU's identity; the CPU tests
call it with CPU tensors, the reference backend and a fake clock (no time is recorded).
"""

from __future__ import annotations

from typing import Callable

import torch

from .. import reference
from ..formats import compress_nm, compress_samoyeds
from ..kernels import dense_mm, spmm, ssmm
from ..offload.hardware import load_profile
from ..records import validate_record
from .kernels import make_record, op_bytes, roofline_ms
from .timing import BatchTiming, time_batches

#: Tolerances of the pre-timing check (fp32 accumulation on both sides, 16-bit outputs).
CHECK_TOL = {torch.float16: dict(rtol=3e-2, atol=3e-2), torch.bfloat16: dict(rtol=8e-2, atol=8e-2)}
#: Expert projections: name → (rows, cols) of the weight from (d_model, d_ffn).
PROJECTIONS = {"w1": lambda d_model, d_ffn: (d_ffn, d_model), "w2": lambda d_model, d_ffn: (d_model, d_ffn)}
#: Bytes written between batches to evict L2 (at least this much, and at least twice the L2 size).
MIN_FLUSH_BYTES = 256 << 20


class KernelMismatchError(AssertionError):
    """A kernel's output differs from the reference: it is not timed, its records say ``failed``."""


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


def _reason(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:500]


def _ms(t: float | BatchTiming) -> tuple[float, dict | None]:
    if isinstance(t, BatchTiming):
        return t.median_ms, t.as_dict()
    return float(t), None


def failed_record(*, op: str, baseline: str, model: str, m: int, k: int, tokens: int, dtype: str, reason: str,
                  profile, identity: dict, ms: float = 0.0, baseline_ms: float = 0.0, **extra) -> dict:
    """A record of a config that failed: every schema key, plus ``status: "failed"`` and ``reason``.

    ``ms``, ``baseline_ms`` and ``tflops`` are 0 (so a reader that divides or takes a ratio never mistakes it
    for a measurement: readers skip ``status != "ok"``, and ``baseline_ms > 0`` filters drop it too); whatever
    was timed before the failure is kept in ``timed_ms`` / ``timed_baseline_ms``."""
    import datetime as _dt

    rec = {"device": identity["device"], "driver": identity["driver"], "versions": dict(identity["versions"]),
           "op": op, "model": model, "m": int(m), "k": int(k), "tokens": int(tokens), "dtype": dtype,
           "ms": 0.0, "baseline": baseline, "baseline_ms": 0.0, "tflops": 0.0,
           "roofline_ms": roofline_ms(op, m, k, tokens, profile, dtype), "date": _dt.date.today().isoformat(),
           "status": "failed", "reason": str(reason), "timed_ms": float(ms), "timed_baseline_ms": float(baseline_ms)}
    rec.update(extra)
    return validate_record(rec)


def sweep(shapes, tokens, dtype_name, *, profile, ops, time_fn, device: str, backend: str, hopper: bool,
          identity: dict, projections=("w1",), op_time_fn: Callable | None = None,
          sink: Callable[[dict], object] | None = None, notes: dict | None = None) -> list[dict]:
    """Run the benchmark sweep; see the module docstring.

    Parameters
    ----------
    time_fn : callable
        ``time_fn(kernel) -> ms | BatchTiming`` for the kernel time; ``kernel`` is a
        :class:`~samoyeds_lab.kernels.plan.KernelPlan` (``backend="cupy"``) or a callable (torch baselines;
        every op on other backends, where no plan exists).
    op_time_fn : callable, optional
        ``op_time_fn(fn) -> ms | BatchTiming`` for the whole-op time (default: ``time_fn``).
    device, backend : str
        Where the operands live and which kernel backend runs (``"cuda"``/``"cupy"`` for real).
    hopper : bool
        Also time the sm_90a wgmma path (op ``ssmm_wg``, recorded against ``ssmm`` too).
    identity : dict
        ``device``, ``driver``, ``versions`` of every record.
    projections : sequence of {"w1", "w2"}
        Which expert matrices of each model shape are swept.
    sink : callable, optional
        Called with every record as soon as it is made.
    notes : dict, optional
        Extra fields of every record (e.g. how L2 was flushed).
    """
    dtype = {"float16": torch.float16, "bfloat16": torch.bfloat16}[dtype_name]
    prof = load_profile(profile)
    op_time_fn = op_time_fn or time_fn
    bad = [p for p in projections if p not in PROJECTIONS]
    if bad:
        raise ValueError(f"projections: expected a subset of {sorted(PROJECTIONS)}, got {list(projections)}")
    g = torch.Generator(device=device).manual_seed(0)
    recs: list[dict] = []
    run_ops = [op for op in ops if op not in HOPPER_ONLY or hopper]

    def emit(rec):
        recs.append(rec)
        if sink is not None:
            sink(rec)

    for model, (d_model, d_ffn) in shapes.items():
        for proj in projections:
            m, k = PROJECTIONS[proj](d_model, d_ffn)
            extra = dict(projection=proj, **(notes or {}))
            try:
                w24_dense, wsam_dense = _pattern(m, k, dtype, g, device)
                w24, wsam = compress_nm(w24_dense), compress_samoyeds(wsam_dense)
            except Exception as exc:  # noqa: BLE001 - operands could not be built (e.g. out of memory)
                for t in tokens:
                    _fail_all(emit, run_ops, _reason(exc), model, m, k, t, dtype_name, prof, identity, extra)
                continue
            try:
                from torch.sparse import to_sparse_semi_structured

                semi = to_sparse_semi_structured(w24_dense)
            except Exception:  # noqa: BLE001 - torch 2:4 unsupported on this device/build
                semi = None
            for t in tokens:
                _one_tokens_count(emit, run_ops, model, m, k, t, dtype, dtype_name, prof, identity, extra, g, device,
                                  backend, w24_dense, wsam, w24, semi, time_fn, op_time_fn)
    return recs


#: The other kernels of ``ssmm`` (op -> ``kernel=``), each also recorded against the ``mma.sp`` path ``ssmm``.
SSMM_VARIANTS = {"ssmm_wg": "wgmma_sp", "ssmm_decode": "decode", "ssmm_prefill": "wgmma_prefill"}
#: Ops that exist on sm_90a only.
HOPPER_ONLY = ("ssmm_wg", "ssmm_prefill")
#: Token counts each variant is built for (outside them it is not timed: decode tiles hold 8-16 tokens,
#: prefill tiles 128+).
VARIANT_TOKENS = {"ssmm_decode": (1, 64), "ssmm_prefill": (128, 1 << 30)}


def _ops_at(run_ops, t):
    """The ops timed at ``t`` tokens (a variant only inside its token range)."""
    return [op for op in run_ops if not (op in VARIANT_TOKENS and not VARIANT_TOKENS[op][0] <= t <= VARIANT_TOKENS[op][1])]


def _fail_all(emit, run_ops, reason, model, m, k, t, dtype_name, prof, identity, extra):
    for op in _ops_at(run_ops, t):
        for bname in ("torch_dense", "dense_mm") + (("ssmm",) if op in SSMM_VARIANTS else ()):
            if bname != op:
                emit(failed_record(op=op, baseline=bname, model=model, m=m, k=k, tokens=t, dtype=dtype_name,
                                   reason=reason, profile=prof, identity=identity, **extra))


def _plans(backend, w24_dense, wsam, w24, x, idx, xg):
    """Kernel-time callables per op: launch plans on the CuPy backend, else None (the op itself is timed)."""
    if backend != "cupy":
        return {}
    from ..kernels.plan import dense_mm_plan, spmm_plan, ssmm_plan

    return {"dense_mm": lambda: dense_mm_plan(w24_dense, x, idx),
            "ssmm": lambda: ssmm_plan(wsam, x, idx, kernel="mma_sp"),
            **{op: (lambda kern=kern: ssmm_plan(wsam, x, idx, kernel=kern)) for op, kern in SSMM_VARIANTS.items()},
            "spmm_24": lambda: spmm_plan(w24, xg)}


def _one_tokens_count(emit, run_ops, model, m, k, t, dtype, dtype_name, prof, identity, extra, g, device, backend,
                      w24_dense, wsam, w24, semi, time_fn, op_time_fn):
    try:
        x = torch.randn(4 * t, k, generator=g, device=device).to(dtype)
        idx = torch.arange(0, 4 * t, 4, device=device, dtype=torch.int32)
        xg = x[idx.long()]
        want24 = reference.spmm(w24, xg, out_dtype=torch.float32)
        want_sam = reference.ssmm(wsam, x, idx, out_dtype=torch.float32)
    except Exception as exc:  # noqa: BLE001
        _fail_all(emit, run_ops, _reason(exc), model, m, k, t, dtype_name, prof, identity, extra)
        return
    calls = {  # every op and baseline on the same gathered tokens
        "torch_dense": lambda: xg @ w24_dense.T,
        "dense_mm": lambda: dense_mm(w24_dense, x, idx, backend=backend),
        "ssmm": lambda: ssmm(wsam, x, idx, backend=backend, kernel="mma_sp"),
        **{op: (lambda kern=kern: ssmm(wsam, x, idx, backend=backend, kernel=kern)) for op, kern in SSMM_VARIANTS.items()},
        "spmm_24": lambda: spmm(w24, xg, backend=backend),
    }
    if semi is not None and t >= 8:  # torch's 2:4 needs >= 8 (padded) columns
        calls["torch_24"] = lambda: torch.mm(semi, xg.T).T
    wanted = {"torch_dense": want24, "dense_mm": want24, "spmm_24": want24, "torch_24": want24,
              "ssmm": want_sam, **{op: want_sam for op in SSMM_VARIANTS}}
    plans = _plans(backend, w24_dense, wsam, w24, x, idx, xg)
    run_ops = _ops_at(run_ops, t)
    names = ["torch_dense", "dense_mm"] + [n for n in ("torch_24",) if n in calls] + run_ops
    if any(op in SSMM_VARIANTS for op in run_ops):
        names.append("ssmm")  # the other ssmm kernels are always recorded against the mma.sp path too
    done: dict[str, tuple] = {}
    failed: dict[str, str] = {}
    for name in dict.fromkeys(names):
        try:
            _check(name, calls[name](), wanted[name], dtype)
            kernel = calls[name]
            if name in plans:
                kernel = plans[name]()
                _check(f"{name} (launch plan)", kernel.run(), wanted[name], dtype)
            kms, ktiming = _ms(time_fn(kernel))
            oms, otiming = _ms(op_time_fn(calls[name]))
            done[name] = (kms, oms, {"kernel": ktiming, "op": otiming}, "plan" if name in plans else "call")
        except Exception as exc:  # noqa: BLE001 - a mismatch, a launch or capture error: recorded, the sweep goes on
            failed[name] = _reason(exc)
    bases = [b for b in ("torch_dense", "torch_24", "dense_mm") if b in done or b in failed]
    for op in run_ops:
        for bname in bases + (["ssmm"] if op in SSMM_VARIANTS else []):
            if bname == op:
                continue
            if op in failed or bname in failed:
                why = failed.get(op) or f"baseline {bname} failed: {failed[bname]}"
                emit(failed_record(op=op, baseline=bname, model=model, m=m, k=k, tokens=t, dtype=dtype_name,
                                   reason=why, profile=prof, identity=identity,
                                   ms=done[op][0] if op in done else 0.0,
                                   baseline_ms=done[bname][0] if bname in done else 0.0, **extra))
                continue
            kms, oms, timing, how = done[op]
            bkms, boms, btiming, bhow = done[bname]
            rec = make_record(op=op, model=model, m=m, k=k, tokens=t, dtype=dtype_name, ms=kms, baseline=bname,
                              baseline_ms=bkms, profile=prof, **identity)
            rec.update(status="ok", op_ms=float(oms), baseline_op_ms=float(boms), kernel_timed=how,
                       baseline_kernel_timed=bhow, op_bytes=op_bytes(op, m, k, t, dtype_name),
                       timing={"kernel": timing["kernel"], "op": timing["op"], "baseline_kernel": btiming["kernel"],
                               "baseline_op": btiming["op"]}, **extra)
            emit(validate_record(rec))


# ----------------------------------------------------------------------------------------- the GPU clock
def _event():
    return torch.cuda.Event(enable_timing=True)


def _on_current_stream(kernel):
    """A no-argument callable launching ``kernel`` on torch's current stream *now* (a plan's own stream is the
    one it was built on; under graph capture the current stream is the capturing one)."""
    from ..kernels.plan import KernelPlan

    if isinstance(kernel, KernelPlan):
        import cupy

        s = cupy.cuda.ExternalStream(torch.cuda.current_stream().cuda_stream)
        return lambda: kernel.run(stream=s)
    return kernel


def graph_capture(kernel, calls: int) -> Callable[[], None]:
    """Capture ``calls`` back-to-back runs of ``kernel`` (a plan or a torch callable) in one CUDA graph;
    return its replay. Raises whatever capture raises (the caller falls back to plain launches)."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm-up on a side stream, as torch's graph capture asks
        _on_current_stream(kernel)()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        f = _on_current_stream(kernel)
        for _ in range(calls):
            f()
    torch.cuda.synchronize()
    return graph.replay


def gpu_timers(*, calls: int = 20, batches: int = 5, warmup: int = 3, graphs: bool = True):
    """``(time_kernel, time_op, notes)`` for :func:`sweep` on the current GPU: CUDA events around batches,
    L2 flushed before every batch by writing max(256 MB, 2 × L2) bytes; the kernel timer captures a CUDA graph
    where it can (``graphs=True``)."""
    props = torch.cuda.get_device_properties(torch.cuda.current_device())
    l2 = int(getattr(props, "L2_cache_size", 0) or 0)
    nbytes = max(MIN_FLUSH_BYTES, 2 * l2)
    buf = torch.empty(nbytes, dtype=torch.uint8, device="cuda")

    def flush():
        buf.zero_()

    def time_kernel(kernel):
        run = _on_current_stream(kernel)
        cap = (lambda n: graph_capture(kernel, n)) if graphs else None
        return time_batches(run, event=_event, calls=calls, batches=batches, warmup=warmup, flush=flush,
                            flush_bytes=nbytes, capture=cap)

    def time_op(fn):
        return time_batches(fn, event=_event, calls=calls, batches=batches, warmup=warmup, flush=flush,
                            flush_bytes=nbytes)

    notes = {"l2_bytes": l2, "l2_flush": (
        f"L2 ({l2 / 2**20:.0f} MiB) flushed by writing {nbytes / 2**20:.0f} MiB before every batch of {calls} "
        f"back-to-back calls ({batches} batches, median/min/max per call); within a batch operands that fit in "
        f"L2 can be served from it (op_bytes vs l2_bytes)")}
    return time_kernel, time_op, notes


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


def run(shapes, tokens, dtype_name, *, profile, warmup, repeat, ops, projections=("w1", "w2"), calls=20,
        graphs=True, sink=None):
    """The sweep on this GPU (``repeat``: batches per measurement, ``calls``: calls per batch)."""
    from ..kernels.build import device_arch

    time_kernel, time_op, notes = gpu_timers(calls=calls, batches=repeat, warmup=warmup, graphs=graphs)
    return sweep(shapes, tokens, dtype_name, profile=profile, ops=ops, time_fn=time_kernel, op_time_fn=time_op,
                 device="cuda", backend="cupy", hopper=device_arch() == "90a", identity=gpu_identity(),
                 projections=projections, sink=sink, notes=notes)
