"""Public kernel ops with backend selection: ``spmm``, ``ssmm``, ``ssmm_grouped``, ``dense_mm``.

Every op has one signature for both backends:

* ``"cupy"``: the CUDA kernels of ``kernels/*.cu`` (SM80+ GPU, CuPy, NVRTC); torch tensors are handed
  over through DLPack (zero-copy) and the kernels run on torch's current stream.
* ``"cpu"``: the CPU kernels of ``kernels/cpu_sparse.c`` (:mod:`samoyeds_lab.kernels.cpu`: AVX-512,
  AVX2 or portable C, computed from the compressed operand, fp16/bf16/fp32), CPU tensors, 2:4
  ``NMWeight`` and ``SamoyedsWeight`` (``vector % 32 == 0``).
* ``"reference"``: the pure-torch references of :mod:`samoyeds_lab.reference` (any device, any format).
* ``"auto"`` (default): ``"cupy"`` when it can run this call (CUDA tensors, a supported weight format,
  fp16/bf16); on CPU tensors with a format the CPU kernels take, the CPU kernel or — where recorded
  measurements of this CPU (or the built-in defaults) say the kernel is slower than torch's dense path at
  that many tokens — the tile-by-tile dense path (:func:`samoyeds_lab.kernels.cpu.cpu_choice` says which
  and why); else ``"reference"``. On a GPU older than SM80 (or without CuPy) it warns once, in one line,
  and uses the reference.

Formulas (``W`` the dense weight ``[rows, cols]``, positions ``p`` of a token list)::

    spmm(W, x)[p, r]                 = Σ_k W[r, k] · x[p, k]
    ssmm(W, x, idx)[p, r]            = Σ_k W[r, k] · x[idx[p], k]               (SENTINEL idx: 0)
    epilogue="silu_mul":  out[p, r]  = silu(ssmm[p, r]) · up[p, r]                (SwiGLU, gate in W)
    epilogue="scatter_add": out[s[p], r] += scale[p] · ssmm[p, r]     s = scatter_idx (default idx)

All products accumulate in fp32. Every argument is checked before a backend is chosen, so a bad one gets
the same error on every backend; ``x`` must be finite (NaN/inf activations are refused, not propagated:
the dense reference and the sparse kernels would disagree where they meet pruned weights).

Every CuPy call first builds its launches (:class:`~samoyeds_lab.kernels.launch.LaunchSpec`: checks, token tiles
on the device, allocation, kernel choice) and then launches them; :mod:`samoyeds_lab.kernels.plan` builds the
same launches once so that a timed or repeated call is the kernel launches only (``ssmm_plan(...).run()``).

``ssmm`` / ``ssmm_grouped`` take ``kernel=``: ``"mma_sp"`` (warp-level ``mma.sp`` m16n8k32, SM80+),
``"wgmma_sp"`` (Hopper ``wgmma.mma_async.sp`` m64n64k32 with B read through a shared-memory descriptor,
sm_90a only) or ``"auto"``: ``"mma_sp"`` unless recorded benchmarks of *this* GPU model
(``data/bench/gpu_kernels*.json``, op ``ssmm_wg`` against baseline ``ssmm``) show the wgmma path faster
at the nearest recorded tokens count — the choice is made by measurement, never assumed. ``"decode"``
(``kernels/ssmm_decode.cu``, :mod:`samoyeds_lab.kernels.decode`: few tokens per tile, register window
accumulators, in-kernel split-K reduction) is chosen by ``"auto"`` for at most 16 tokens per expert only where
records of op ``ssmm_decode`` against ``ssmm`` on this GPU model show it faster. ``"wgmma_prefill"``
(``kernels/ssmm_prefill_sm90.cu``, :mod:`samoyeds_lab.kernels.prefill`, sm_90a only: 128 tokens per tile, a
producer warpgroup feeding mbarrier stages, two ``wgmma.sp`` consumer warpgroups, register window flush; 2:4
and 1:2 Samoyeds weights; ``split_k`` is ignored) is chosen by ``"auto"`` only where records of op
``ssmm_prefill`` against ``ssmm`` show it faster than both other paths.
"""

from __future__ import annotations

import functools
import warnings
import weakref
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .. import reference, tiles
from .._checks import FLOAT_DTYPES, INT_DTYPES, check_bool, check_int, check_tensor
from ..formats import SENTINEL, WEIGHT_FORMATS, NMWeight, SamoyedsWeight, TokenSelection
from ..formats.sptc import mma_metadata
from .build import KernelUnavailableError, device_arch, load_module
from .launch import (FINALIZE_THREADS, LaunchSpec, check_grid, device_token_tiles, finalize_blocks, is_pointer_arg,
                     num_token_tiles, smem_bytes, split_plan)

BACKENDS = ("auto", "cupy", "cpu", "reference")
KERNELS = ("auto", "mma_sp", "wgmma_sp", "decode")
KERNELS = KERNELS + ("wgmma_prefill",)  # kernels/ssmm_prefill_sm90.cu (samoyeds_lab.kernels.prefill), sm_90a only
EPILOGUES = {"plain": 0, "silu_mul": 1, "scatter_add": 2}
_HALF = (torch.float16, torch.bfloat16)


# ----------------------------------------------------------------------------------------- availability
@functools.lru_cache(maxsize=1)
def _unavailable_reason() -> str | None:
    from ..device import device_info

    info = device_info()
    if info.backend != "cupy":
        return "; ".join(info.reasons[:1]) or "no SM80+ GPU with CuPy"
    try:
        from cuda.bindings import nvrtc  # noqa: F401
    except ImportError:
        return "NVRTC is missing (pip install cuda-bindings nvidia-cuda-nvrtc)"
    return None


def available() -> bool:
    """True when the CuPy kernels can run here (SM80+ GPU, CuPy with a driver, NVRTC)."""
    return _unavailable_reason() is None


_warned: set[str] = set()


def _warn_once(msg: str) -> None:
    if msg not in _warned:
        _warned.add(msg)
        warnings.warn(f"samoyeds_lab.kernels: {msg}; using the torch reference", RuntimeWarning, stacklevel=4)


def _check_kernel(kernel: object) -> str:
    if not isinstance(kernel, str) or kernel not in KERNELS:
        raise ValueError(f"kernel: expected one of {', '.join(map(repr, KERNELS))}, got {kernel!r}")
    return str(kernel)


def _arch() -> str:
    return device_arch()


def _device_name() -> str:
    return torch.cuda.get_device_name()


def choose_ssmm_kernel(tokens: int, dtype: torch.dtype | str, device: str,
                       records: Sequence[dict] | None = None) -> str:
    """``"wgmma_sp"``, ``"wgmma_prefill"`` or ``"mma_sp"`` for ``tokens`` positions per expert on ``device``, from
    measurements.

    Uses the records of op ``ssmm_wg`` timed against baseline ``ssmm`` (the mma.sp path, same shapes, same
    run) on the same device name and dtype; at the recorded tokens count nearest to ``tokens`` (log scale) the
    wgmma path is chosen when the median of its time ratios over the recorded shapes is below 1.
    Records with a ``status`` other than ``"ok"`` (failed configs) are ignored. Without such records: ``"mma_sp"``.
    Records of op ``ssmm_prefill`` (the prefill kernel against the same baseline) give ``"wgmma_prefill"`` when
    their median ratio at the nearest recorded tokens count is below 1 and below the wgmma path's.

    Parameters
    ----------
    records : sequence of dict, optional
        Benchmark records (default: :func:`samoyeds_lab.records.load_kernel_records`).
    """
    import math
    import statistics

    tokens = check_int("tokens", tokens, lo=0)
    if not isinstance(device, str):
        raise TypeError(f"device: expected the GPU's name as a str, got {type(device).__name__}")
    if dtype not in ("float16", "bfloat16", torch.float16, torch.bfloat16):
        raise ValueError(f"dtype: expected float16 or bfloat16 (str or torch dtype), got {dtype!r}")
    if records is None:
        records = _recorded_kernel_records()
    _check_records(records)
    dt = dtype if isinstance(dtype, str) else {torch.float16: "float16", torch.bfloat16: "bfloat16"}.get(dtype, str(dtype))
    mine = [r for r in records if r.get("op") == "ssmm_wg" and r.get("baseline") == "ssmm"
            and r.get("device") == device and r.get("dtype") == dt and r.get("status", "ok") == "ok"
            and r.get("baseline_ms", 0) > 0]
    pf = _prefill_ratio(records, tokens, dt, device)
    if not mine:
        return "wgmma_prefill" if pf is not None and pf < 1.0 else "mma_sp"
    t = max(int(tokens), 1)
    try:
        near = min({int(r["tokens"]) for r in mine}, key=lambda v: (abs(math.log(max(v, 1)) - math.log(t)), v))
        ratio = statistics.median(float(r["ms"]) / float(r["baseline_ms"]) for r in mine if int(r["tokens"]) == near)
    except (KeyError, TypeError, ValueError, ZeroDivisionError) as exc:
        raise ValueError(f"records: expected ssmm_wg records with numeric 'tokens', 'ms' and 'baseline_ms', "
                         f"got a malformed one ({type(exc).__name__}: {exc})") from None
    if pf is not None and pf < min(ratio, 1.0):
        return "wgmma_prefill"
    return "wgmma_sp" if ratio < 1.0 else "mma_sp"


def _prefill_ratio(records, tokens: int, dt: str, device: str) -> float | None:
    """Median time ratio of op ``ssmm_prefill`` against baseline ``ssmm`` at the recorded tokens count nearest
    to ``tokens`` (log scale) on ``device`` / ``dt``; None without such records."""
    import math
    import statistics

    mine = [r for r in records if r.get("op") == "ssmm_prefill" and r.get("baseline") == "ssmm"
            and r.get("device") == device and r.get("dtype") == dt and r.get("status", "ok") == "ok"
            and r.get("baseline_ms", 0) > 0]
    if not mine:
        return None
    t = max(int(tokens), 1)
    try:
        near = min({int(r["tokens"]) for r in mine}, key=lambda v: (abs(math.log(max(v, 1)) - math.log(t)), v))
        return statistics.median(float(r["ms"]) / float(r["baseline_ms"]) for r in mine if int(r["tokens"]) == near)
    except (KeyError, TypeError, ValueError, ZeroDivisionError) as exc:
        raise ValueError(f"records: expected ssmm_prefill records with numeric 'tokens', 'ms' and 'baseline_ms', "
                         f"got a malformed one ({type(exc).__name__}: {exc})") from None


def _check_records(records: object) -> None:
    """``records`` must be a list/tuple of dicts (benchmark records)."""
    if not isinstance(records, (list, tuple)):
        raise TypeError(f"records: expected a list of benchmark records (dicts), got {type(records).__name__}")
    for i, r in enumerate(records):
        if not isinstance(r, dict):
            raise TypeError(f"records: expected a list of benchmark records (dicts), got {type(r).__name__} "
                            f"at index {i}")


@functools.lru_cache(maxsize=1)
def _recorded_kernel_records() -> tuple[dict, ...]:
    from ..records import load_kernel_records

    return tuple(load_kernel_records())


def _resolve_kernel(kernel: str, tokens: int, dtype: torch.dtype) -> str:
    """The kernel a CUDA call runs: an explicit ``"wgmma_sp"`` needs sm_90a (named error otherwise)."""
    arch = _arch()
    if kernel == "wgmma_prefill" and arch != "90a":
        raise KernelUnavailableError(f"kernel: 'wgmma_prefill' needs a Hopper GPU (sm_90a); this GPU builds for "
                                     f"sm_{arch}")
    if kernel == "wgmma_prefill":
        return kernel
    if kernel == "wgmma_sp":
        if arch != "90a":
            raise ValueError(f"kernel: 'wgmma_sp' needs a Hopper GPU (sm_90a); this GPU builds for sm_{arch}")
        return kernel
    if kernel == "decode":  # kernels/ssmm_decode.cu (SM80+; samoyeds_lab.kernels.decode)
        return kernel
    if (kernel == "auto" and 0 < tokens <= _decode().MAX_TOKENS
            and _decode_auto(int(tokens), str(dtype).removeprefix("torch."), _device_name())):
        return "decode"
    if kernel == "auto" and arch == "90a":
        return _auto_choice(max(int(tokens), 1), str(dtype).removeprefix("torch."), _device_name())
    return "mma_sp"


def _decode():
    from . import decode

    return decode


@functools.lru_cache(maxsize=4096)
def _decode_auto(tokens: int, dtype: str, device: str) -> bool:
    # the decode kernel only where recorded measurements of this GPU say it is faster (no records: never)
    return _decode().choose_decode(tokens, dtype, device, _recorded_kernel_records())


def _module(module: str, arch: str):
    """The CuPy module of a LaunchSpec's ``module`` (decode builds carry their -D config in the name)."""
    if module.startswith("ssmm_prefill_sm90:"):  # the prefill builds carry their -DPF_* config in the name
        from .prefill import load_module as _prefill_module

        return _prefill_module(module)
    if module.startswith("ssmm_decode:"):
        return _decode().load_module(module, arch)
    return load_module(module, arch)


@functools.lru_cache(maxsize=4096)
def _auto_choice(tokens: int, dtype: str, device: str) -> str:
    # once per (tokens, dtype, device) and process: MoE layers call ssmm per expert and layer
    return choose_ssmm_kernel(tokens, dtype, device, _recorded_kernel_records())


def _check_backend(backend: object) -> str:
    if not isinstance(backend, str) or backend not in BACKENDS:
        raise ValueError(f"backend: expected one of {', '.join(map(repr, BACKENDS))}, got {backend!r}")
    return str(backend)


def _use_cupy(backend: str, tensors: Sequence[torch.Tensor], unsupported: str | None) -> bool:
    """Decide the backend of one call; raise for an explicit ``"cupy"`` that cannot run."""
    if backend == "reference":
        return False
    on_cuda = all(t.is_cuda for t in tensors)
    reason = _unavailable_reason()
    if backend == "cupy":
        if reason is not None:
            raise KernelUnavailableError(f"backend: 'cupy' cannot run here: {reason}")
        if not on_cuda:
            raise ValueError("backend: 'cupy' needs CUDA tensors, got tensors on "
                             + ", ".join(sorted({str(t.device) for t in tensors})))
        if unsupported is not None:
            raise ValueError(f"backend: 'cupy' does not support this call: {unsupported}")
        return True
    if not on_cuda:
        return False
    if reason is not None:
        _warn_once(reason)
        return False
    if unsupported is not None:  # CUDA tensors the kernels cannot take: say so once, then use the reference
        _warn_once(f"this call is not supported by the kernels ({unsupported})")
        return False
    return True


def _cpu_mode(backend: str, weight: object, x: torch.Tensor, tensors: Sequence[torch.Tensor], tokens: int) -> str | None:
    """``"kernel"`` / ``"dense"`` when the CPU path runs this call, None for the reference (or CUDA).

    An explicit ``backend="cpu"`` always runs the kernel (or dense tiles where no kernel can be built);
    it raises for CUDA tensors or a format the CPU kernels do not take.
    """
    from . import cpu

    if backend in ("reference", "cupy"):
        return None
    on_cpu = all(t.device.type == "cpu" for t in tensors)
    if torch.is_grad_enabled() and any(t.requires_grad for t in tensors):
        # the C kernels are not differentiable: auto takes the reference (which is), "cpu" says so
        if backend == "cpu":
            raise ValueError("backend: 'cpu' kernels are not differentiable and an input requires grad; "
                             "use backend='reference' (or 'auto') or torch.no_grad()")
        return None
    why = cpu.cpu_unsupported(weight)
    if backend == "cpu":
        if not on_cpu:
            raise ValueError("backend: 'cpu' needs CPU tensors, got tensors on "
                             + ", ".join(sorted({str(t.device) for t in tensors})))
        if why is not None:
            raise ValueError(f"backend: 'cpu' does not support this call: {why}")
        return "kernel" if cpu.cpu_path().isa != "none" else "dense"
    if not on_cpu or why is not None:
        return None
    choice = cpu.cpu_choice(weight, tokens, x.dtype)
    if choice.mode == "dense" and choice.reason not in _said:  # say so, once per reason, on the package logger
        _said.add(choice.reason)
        import logging

        logging.getLogger("samoyeds_lab.kernels").info("backend='auto' runs %s: %s", choice.mode, choice.reason)
    return choice.mode


_said: set[str] = set()


def _cpu_products(mode: str, weight, x: torch.Tensor, idx: torch.Tensor | None) -> torch.Tensor:
    """fp32 ``[positions, rows]`` products on the CPU path; SENTINEL positions give zero rows."""
    from . import cpu

    # the ops validated every argument already: the unchecked entries (no second pass over the ids)
    if mode == "kernel":
        def fn(w, xx, i):
            return cpu._kernel_gemm(w, xx, i, None, None)
    else:
        def fn(w, xx, i):
            return cpu._dense_tiles(w, xx, i, None)
    if idx is None:
        return fn(weight, x, None)
    valid = idx != SENTINEL
    if bool(valid.all()):
        return fn(weight, x, idx)
    y = torch.zeros(idx.numel(), weight.shape[0], dtype=torch.float32)
    if bool(valid.any()):
        y[valid] = fn(weight, x, idx[valid])
    return y


# ----------------------------------------------------------------------------------------- operands
_META: "weakref.WeakKeyDictionary[object, torch.Tensor]" = weakref.WeakKeyDictionary()


def _meta_of(weight: NMWeight | SamoyedsWeight) -> torch.Tensor:
    """Register-ordered metadata ``int32 [ceil(crows/16), ceil(cols/32), 16]`` (cached per weight)."""
    m = _META.get(weight)
    if m is None:
        m = mma_metadata(weight.sptc_metadata()).view(torch.int32).contiguous()
        _META[weight] = m
    return m


def _sparse_unsupported(weight: object, x: torch.Tensor) -> str | None:
    """Why the sparse kernels cannot take ``weight`` × ``x`` (None when they can)."""
    if not isinstance(weight, (NMWeight, SamoyedsWeight)):
        return f"weight format {type(weight).__name__} (kernels take NMWeight 2:4 and SamoyedsWeight)"
    if isinstance(weight, NMWeight) and (weight.n, weight.m) != (2, 4):
        return f"NMWeight {weight.n}:{weight.m} (Sparse Tensor Cores take 2:4)"
    if weight.dtype not in _HALF or x.dtype != weight.dtype:
        return f"dtypes weight {weight.dtype} / x {x.dtype} (both fp16 or both bf16)"
    if isinstance(weight, SamoyedsWeight):
        if weight.vector % tiles.MMA_K:
            return f"vector={weight.vector} (must be a multiple of {tiles.MMA_K})"
        if tiles.BLOCK_M % weight.n:
            return f"n={weight.n} (must divide BLOCK_M={tiles.BLOCK_M})"
        need = smem_bytes("ssmm", weight.n, weight.m)
        if need > _smem_limit():
            return f"{weight.n}:{weight.m} needs {need} B of shared memory per block, the GPU has {_smem_limit()}"
    if x.stride(-1) != 1:
        return "x must have unit stride along its last dimension"
    return None


@functools.lru_cache(maxsize=None)
def _device_props() -> tuple[int, int]:
    import cupy

    props = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)
    return int(props.get("sharedMemPerBlockOptin", props["sharedMemPerBlock"])), int(props["multiProcessorCount"])


def _smem_per_sm() -> int:
    """Shared memory per SM (bytes; 228 KB on Hopper, what the decode split-K plan assumes elsewhere)."""
    if not available():
        return 228 * 1024
    import cupy

    props = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)
    return int(props.get("sharedMemPerMultiprocessor", 228 * 1024))


def _smem_limit() -> int:
    return _device_props()[0] if available() else 1 << 30


def _cp(t: torch.Tensor | None):
    """Zero-copy CuPy view of a torch tensor (16-bit floats as int16, 32-bit words as int32); None → NULL."""
    if t is None:
        return np.uint64(0)
    import cupy

    if t.dtype in _HALF:
        t = t.view(torch.int16)
    elif t.dtype == torch.uint32:
        t = t.view(torch.int32)
    return cupy.from_dlpack(t.detach())


def _launch(module: str, fn: str, grid, smem: int, args, block: int = tiles.THREADS) -> None:
    grid = check_grid(grid)  # before any CuPy call: a too-large grid is a clear ValueError, not a launch failure
    import cupy

    kern = _module(module, device_arch()).get_function(fn)
    if smem > 48 * 1024:
        kern.max_dynamic_shared_size_bytes = smem
    stream = cupy.cuda.ExternalStream(torch.cuda.current_stream().cuda_stream)
    kern(grid, (block,), args, shared_mem=smem, stream=stream)


def _kernel_function(module: str, fn: str, smem: int):
    """The CuPy function of ``fn`` in ``kernels/<module>.cu`` (compiled once per process), with its dynamic
    shared-memory limit raised when ``smem`` needs more than the default 48 KB."""
    kern = _module(module, device_arch()).get_function(fn)
    if smem > 48 * 1024:
        kern.max_dynamic_shared_size_bytes = smem
    return kern


def _run_specs(specs: Sequence[LaunchSpec]) -> None:
    """Launch ``specs`` in order the way every op call does (DLPack views, torch's current stream)."""
    for spec in specs:
        args = tuple(_cp(a) if is_pointer_arg(a) else a for a in spec.args)
        if spec.is_finalize:
            _finalize(spec.module, spec.fn.removesuffix("_finalize"), spec.finalize_total, args)
        else:
            if spec.block != tiles.THREADS:  # the prefill kernel: 3 warpgroups
                _launch(spec.module, spec.fn, spec.grid, spec.smem, args, block=spec.block)
            else:
                _launch(spec.module, spec.fn, spec.grid, spec.smem, args)


def _main_spec(module: str, fn: str, grid, smem: int, args: tuple) -> LaunchSpec:
    return LaunchSpec(module, fn, check_grid(grid), tiles.THREADS, int(smem), tuple(args))


def _finalize_spec(module: str, fn: str, total: int, args: tuple) -> LaunchSpec:
    return LaunchSpec(module, fn + "_finalize", (finalize_blocks(total), 1, 1), FINALIZE_THREADS, 0, tuple(args),
                      finalize_total=int(total))


def _finalize(module: str, fn: str, total: int, args) -> None:
    import cupy

    kern = load_module(module, device_arch()).get_function(fn + "_finalize")
    blocks = max(1, min(-(-total // 256), 65535))
    stream = cupy.cuda.ExternalStream(torch.cuda.current_stream().cuda_stream)
    kern((blocks,), (256,), args, stream=stream)


def _dt(x: torch.Tensor) -> str:
    return "bf16" if x.dtype == torch.bfloat16 else "f16"


# ----------------------------------------------------------------------------------------- validation
# NOTE: every public op validates *all* of its arguments here, before it picks a backend, so the same bad
# input gets the same error (class and message) from "reference", "cpu" and "cupy"; only the refusals
# that are about the backend itself ("cupy" cannot run here, "cpu" does not take this format) come later.
def _weight_shape(weight: object, name: str = "weight") -> tuple[int, int]:
    """``(rows, cols)`` of a weight (any format of :mod:`samoyeds_lab.formats` or a 2-D float tensor)."""
    if isinstance(weight, torch.Tensor):
        check_tensor(name, weight, ndim=2, dtypes=FLOAT_DTYPES)
        return int(weight.shape[0]), int(weight.shape[1])
    if isinstance(weight, WEIGHT_FORMATS):
        rows, cols = weight.shape
        return int(rows), int(cols)
    reference.dense_of(weight, name)  # raises the TypeError naming the formats
    raise AssertionError("unreachable")  # pragma: no cover


def _check_split_k(split_k: object) -> int | None:
    """None (automatic) or an int >= 1; the same rule on every backend (the reference ignores the value)."""
    return None if split_k is None else check_int("split_k", split_k, lo=1)


#: The last ``x`` found finite and its version counter: the expert paths call the ops 2-3 times per expert on
#: the same activations, which are then checked once, not once per call (a weak reference, so a new tensor
#: at a reused address is never mistaken for it; an in-place write bumps ``_version``).
_FINITE_X: tuple = (None, -1)


def _check_x(x: object, cols: int) -> torch.Tensor:
    # NOTE: finite is checked (a reduction, and a host sync on CUDA, like the token-id range check): a NaN/inf
    # that only meets pruned weights would be NaN through the reference's dense product (0·NaN) but finite
    # through the sparse kernels, which never read pruned weights; refusing it keeps the backends equal.
    global _FINITE_X
    check_tensor("x", x, ndim=2, dtypes=FLOAT_DTYPES)
    try:
        now = x._version
    except RuntimeError:  # an inference-mode tensor has no version counter: check it every time
        now = None
    ref, version = _FINITE_X
    if now is None or ref is None or ref() is not x or version != now:
        check_tensor("x", x, finite=True)
        if now is not None:
            _FINITE_X = (weakref.ref(x), now)
    if x.shape[1] != cols:
        raise ValueError(f"x: expected shape [tokens, {cols}] to match the weight's {cols} columns, got {tuple(x.shape)}")
    return x


def _check_epilogue(epilogue, positions, rows, dtype, device, up, out, scatter_idx, scale):
    if not isinstance(epilogue, str) or epilogue not in EPILOGUES:
        raise ValueError(f"epilogue: expected one of {', '.join(map(repr, EPILOGUES))}, got {epilogue!r}")
    if epilogue == "silu_mul":
        check_tensor("up", up, ndim=2, dtypes=(dtype,))
        if tuple(up.shape) != (positions, rows):
            raise ValueError(f"up: expected {dtype} [{positions}, {rows}] for epilogue='silu_mul', "
                             f"got {up.dtype} {tuple(up.shape)}")
    elif up is not None:
        raise ValueError(f"up: only used by epilogue='silu_mul', got it with epilogue={epilogue!r}")
    if epilogue == "scatter_add":
        check_tensor("out", out, ndim=2, dtypes=(dtype, torch.float32))
        if out.shape[1] != rows or not out.is_contiguous():
            raise ValueError(f"out: expected a contiguous [out_rows, {rows}] tensor, got {tuple(out.shape)}")
        if scatter_idx is not None:
            check_tensor("scatter_idx", scatter_idx, ndim=1, dtypes=INT_DTYPES)
            if scatter_idx.numel() != positions:
                raise ValueError(f"scatter_idx: expected {positions} entries (one per position), got {scatter_idx.numel()}")
            s = scatter_idx.to(torch.int64)
            if s.numel() and bool((((s < 0) & (s != SENTINEL)) | (s >= out.shape[0])).any()):
                i = int((((s < 0) & (s != SENTINEL)) | (s >= out.shape[0])).nonzero()[0])
                raise ValueError(f"scatter_idx: expected rows in [0, {out.shape[0]}) or SENTINEL, "
                                 f"got {int(s[i])} at position {i}")
        if scale is not None:
            check_tensor("scale", scale, ndim=1, dtypes=FLOAT_DTYPES, finite=True)
            if scale.numel() != positions:
                raise ValueError(f"scale: expected {positions} entries (one per position), got {scale.numel()}")
    else:
        for name, v in (("out", out), ("scatter_idx", scatter_idx), ("scale", scale)):
            if v is not None:
                raise ValueError(f"{name}: only used by epilogue='scatter_add', got it with epilogue={epilogue!r}")


def _reference_epilogue(y32, epilogue, dtype, up, out, scatter_idx, scale):
    """Apply an epilogue to fp32 products ``y32 [positions, rows]`` the way the kernels do."""
    if epilogue == "plain":
        return y32.to(dtype)
    if epilogue == "silu_mul":
        return (F.silu(y32) * up.to(torch.float32)).to(dtype)
    s = scatter_idx.to(torch.int64)
    valid = s != SENTINEL
    v = y32[valid]
    if scale is not None:
        v = v * scale.to(torch.float32)[valid].unsqueeze(1)
    out.index_add_(0, s[valid], v.to(out.dtype))
    return out


# ----------------------------------------------------------------------------------------- the ops
def _ssmm_checked(weight, x, token_idx, epilogue, up, out, scatter_idx, scale):
    """Every check of :func:`ssmm`'s arguments (the token-id range and x's finite values are host syncs on
    CUDA). Returns ``rows, cols, idx, positions, scatter_idx`` (defaulted) and the tensors of the call."""
    rows, cols = _weight_shape(weight)
    _check_x(x, cols)
    if token_idx is None:
        positions = x.shape[0]
        idx = None
    else:
        idx = reference.check_token_idx(token_idx, x.shape[0])
        positions = idx.numel()
    if epilogue == "scatter_add" and scatter_idx is None:
        scatter_idx = idx if idx is not None else torch.arange(positions, device=x.device)
    _check_epilogue(epilogue, positions, rows, x.dtype, x.device, up, out, scatter_idx, scale)
    tensors = [x] + [t for t in (token_idx, up, out, scatter_idx, scale) if t is not None]
    if isinstance(weight, (NMWeight, SamoyedsWeight)):
        tensors.append(weight.values)
    return rows, cols, idx, positions, scatter_idx, tensors


def ssmm(
    weight: object,
    x: torch.Tensor,
    token_idx: torch.Tensor | None,
    *,
    epilogue: str = "plain",
    up: torch.Tensor | None = None,
    out: torch.Tensor | None = None,
    scatter_idx: torch.Tensor | None = None,
    scale: torch.Tensor | None = None,
    split_k: int | None = None,
    backend: str = "auto",
    kernel: str = "auto",
) -> torch.Tensor:
    """Sparse weight × tokens gathered by id (the Samoyeds SSMM), with a fused epilogue.

    Parameters
    ----------
    weight : SamoyedsWeight | NMWeight (2:4) | any format of :mod:`samoyeds_lab.formats` | 2-D tensor
        ``[rows, cols]``. The CUDA kernel takes ``SamoyedsWeight`` (``vector % 32 == 0``) and 2:4
        ``NMWeight`` in fp16/bf16; other formats always use the reference.
    x : torch.Tensor
        ``[tokens, cols]``, same dtype as the weight for the kernel.
    token_idx : torch.Tensor or None
        1-D integer ids of the rows of ``x`` per output position; :data:`~samoyeds_lab.formats.SENTINEL`
        gives a zero row (padded selections pass straight through). ``None``: position ``p`` reads row ``p``.
    epilogue : {"plain", "silu_mul", "scatter_add"}
        ``plain``: return ``y [positions, rows]``. ``silu_mul``: return ``silu(y) · up``.
        ``scatter_add``: ``out[scatter_idx[p]] += scale[p] · y[p]`` in place, return ``out``.
    up : torch.Tensor, optional
        ``[positions, rows]`` (``silu_mul``).
    out, scatter_idx, scale : torch.Tensor, optional
        ``scatter_add`` target ``[out_rows, rows]`` (x's dtype or fp32), destination row per position
        (default ``token_idx``; SENTINEL skipped) and fp32-convertible multiplier per position
        (routing weights; default 1).
    split_k : int, optional
        Number of K splits for the kernel (default: automatic, more splits for few tokens).
    backend : {"auto", "cupy", "cpu", "reference"}
    kernel : {"auto", "mma_sp", "wgmma_sp", "decode", "wgmma_prefill"}
        Which CUDA kernel runs (see the module docstring); ignored by the reference backend.

    Returns
    -------
    torch.Tensor
        ``[positions, rows]`` (``plain``/``silu_mul``) or ``out`` (``scatter_add``).
    """
    backend = _check_backend(backend)
    kernel = _check_kernel(kernel)
    split_k = _check_split_k(split_k)
    rows, cols, idx, positions, scatter_idx, tensors = _ssmm_checked(weight, x, token_idx, epilogue, up, out,
                                                                     scatter_idx, scale)
    mode = _cpu_mode(backend, weight, x, tensors, positions)
    if mode is not None:
        y32 = _cpu_products(mode, weight, x, idx)
        return _reference_epilogue(y32, epilogue, x.dtype, up, out, scatter_idx, scale)
    if not _use_cupy(backend, tensors, _sparse_unsupported(weight, x)):
        if idx is None:
            y32 = reference.spmm(weight, x, out_dtype=torch.float32)
        else:
            y32 = reference.ssmm(weight, x, idx, out_dtype=torch.float32)
        return _reference_epilogue(y32, epilogue, x.dtype, up, out, scatter_idx, scale)
    offsets = [0, positions]
    return _ssmm_cupy([weight], x, idx, offsets, epilogue, up, out, scatter_idx, scale, split_k, gather=idx is not None,
                      kernel=kernel)


def _ssmm_cupy(weights, x, idx, offsets, epilogue, up, out, scatter_idx, scale, split_k, *, gather=True,
               kernel="auto"):
    out, specs = _ssmm_specs(weights, x, idx, offsets, epilogue, up, out, scatter_idx, scale, split_k, gather=gather,
                             kernel=kernel)
    _run_specs(specs)
    return out


def _ssmm_specs(weights, x, idx, offsets, epilogue, up, out, scatter_idx, scale, split_k, *, gather=True,
                kernel="auto") -> tuple[torch.Tensor, list[LaunchSpec]]:
    """The output tensor and the launches of one (grouped) ssmm call; all host work of the call is here.

    Token tiles are built on the device (one packed copy for several experts), the output and split-K
    workspace are allocated, the kernel is chosen; nothing is launched. A call with no positions or rows
    has no launches; ``cols == 0`` has its (zero-product) epilogue applied here, once.
    """
    w0 = weights[0]
    rows, cols = w0.shape
    positions = int(offsets[-1])
    choice = _resolve_kernel(kernel, -(-positions // max(len(weights), 1)), x.dtype)  # before any early return
    if epilogue != "scatter_add":
        out = torch.empty(positions, rows, dtype=x.dtype, device=x.device)
    if positions == 0 or rows == 0:
        return out, []
    if cols == 0:
        y32 = torch.zeros(positions, rows, dtype=torch.float32, device=x.device)
        return _reference_epilogue(y32, epilogue, x.dtype, up, out, scatter_idx, scale), []
    if choice == "decode":
        props = _device_props()
        return _decode().decode_specs(weights, x, idx, offsets, epilogue, up, out, scatter_idx, scale, split_k,
                                      gather=gather, epilogues=EPILOGUES, sms=props[1], smem_per_sm=_smem_per_sm(),
                                      device_name=_device_name())
    if choice == "wgmma_prefill":
        from . import prefill as _prefill

        why = _prefill.prefill_unsupported(w0)
        if why is None:
            return out, _prefill.prefill_specs(weights, x, idx if gather else None, offsets, EPILOGUES[epilogue], up,
                                               out, scatter_idx, scale)
        if kernel == "wgmma_prefill":
            raise ValueError(f"kernel: 'wgmma_prefill' does not take {why}")
        choice = "mma_sp"  # auto: the measured-faster prefill kernel cannot take this weight
    if len(weights) == 1:
        values, meta = w0.values.contiguous(), _meta_of(w0)
        row_index = w0.row_index.contiguous() if isinstance(w0, SamoyedsWeight) else None
    else:
        values = torch.stack([w.values for w in weights]).contiguous()
        meta = torch.stack([_meta_of(w) for w in weights]).contiguous()
        row_index = torch.stack([w.row_index for w in weights]).contiguous() if isinstance(w0, SamoyedsWeight) else None
    crows = w0.values.shape[0]
    sel_n, sel_m, vector = (w0.n, w0.m, w0.vector) if isinstance(w0, SamoyedsWeight) else (1, 1, cols)
    wg = choice == "wgmma_sp"
    if wg and smem_bytes("ssmm", sel_n, sel_m, wgmma=True) > _smem_limit():
        if kernel == "wgmma_sp":
            raise ValueError(f"kernel: 'wgmma_sp' needs {smem_bytes('ssmm', sel_n, sel_m, wgmma=True)} B of shared "
                             f"memory per block for {sel_n}:{sel_m}, the GPU has {_smem_limit()}")
        wg = False
    dev = x.device
    ntiles = num_token_tiles(offsets)
    ksteps = tiles.ceil_div(cols, tiles.MMA_K)
    unit = vector // tiles.MMA_K if row_index is not None else 1
    mblocks = tiles.ceil_div(crows, tiles.BLOCK_M)
    plan = split_plan(ksteps, unit, mblocks * ntiles, split_k=split_k, sms=_device_props()[1])
    grid = check_grid((mblocks, ntiles, plan.splits))  # before anything is allocated or copied
    tt = device_token_tiles(offsets, dev)
    ws = torch.empty(plan.splits, positions, rows, dtype=torch.float32, device=dev) if plan.splits > 1 else None
    tok = idx.to(device=dev, dtype=torch.int32).contiguous() if (gather and idx is not None) else None
    sidx = scatter_idx.to(device=dev, dtype=torch.int32).contiguous() if epilogue == "scatter_add" else None
    sc = scale.to(device=dev, dtype=torch.float32).contiguous() if (epilogue == "scatter_add" and scale is not None) else None
    upc = up.contiguous() if up is not None else None
    ep_args = (np.int32(EPILOGUES[epilogue]), out, np.int32(rows), np.int32(out.dtype == torch.float32),
               upc, sidx, sc)
    fn = f"ssmm_wg_{_dt(x)}" if wg else f"ssmm_{_dt(x)}"
    args = (values, meta, row_index, x, np.int32(x.stride(0)), np.int32(x.shape[0]), tok,
            tt.expert, tt.start, tt.count, np.int32(rows), np.int32(crows), np.int32(cols), np.int32(sel_n),
            np.int32(sel_m), np.int32(vector), np.int32(plan.steps_per_split), ws, np.int64(positions)) + ep_args
    specs = [_main_spec("ssmm", fn, grid, smem_bytes("ssmm", sel_n, sel_m, wgmma=wg), args)]
    if plan.splits > 1:
        specs.append(_finalize_spec("ssmm", fn, positions * rows,
                                    (ws, np.int32(plan.splits), np.int64(positions), np.int32(rows)) + ep_args))
    return out, specs


def ssmm_grouped(
    weights: Sequence[object],
    x: torch.Tensor,
    selection: TokenSelection,
    *,
    padded: bool = True,
    gather: bool = True,
    epilogue: str = "plain",
    up: torch.Tensor | None = None,
    out: torch.Tensor | None = None,
    routing_weights: torch.Tensor | None = None,
    split_k: int | None = None,
    backend: str = "auto",
    kernel: str = "auto",
) -> torch.Tensor:
    """All experts of a layer in one launch: position ``p`` of expert ``e``'s segment uses ``weights[e]``.

    Positions are ``selection.padded_token_ids`` (``padded=True``) or ``selection.token_ids``; expert
    ``e`` owns ``[offsets[e], offsets[e+1])`` of them. ``gather=True``: position ``p`` reads
    ``x[token_id[p]]`` (``x`` = ``[num_tokens, cols]`` hidden states); ``gather=False``: it reads
    ``x[p]`` (``x`` = ``[positions, cols]``, e.g. the SwiGLU activations of the previous stage).

    Epilogues, ``split_k``, ``backend`` and ``kernel`` as in :func:`ssmm`; ``scatter_add`` adds ``routing_weights.flatten()[slot[p]] · y[p]``
    into ``out[token_id[p]]`` (``routing_weights`` = the router's ``[tokens, k]`` top-k weights,
    default 1; SENTINEL positions skipped).

    Returns
    -------
    torch.Tensor
        ``[positions, rows]`` or ``out``.
    """
    backend = _check_backend(backend)
    kernel = _check_kernel(kernel)
    split_k = _check_split_k(split_k)
    padded = check_bool("padded", padded)
    gather = check_bool("gather", gather)
    if not isinstance(selection, TokenSelection):
        raise TypeError(f"selection: expected a TokenSelection, got {type(selection).__name__}")
    if not isinstance(weights, (list, tuple)):
        raise TypeError(f"weights: expected a list of {selection.num_experts} weights (one per expert), "
                        f"got {type(weights).__name__}")
    weights = list(weights)
    for i, w in enumerate(weights):
        _weight_shape(w, f"weights[{i}]")
    if len(weights) != selection.num_experts:
        raise ValueError(f"weights: expected {selection.num_experts} experts (selection.num_experts), got {len(weights)}")
    shapes = {tuple(getattr(w, "shape", ())) for w in weights}
    kinds = {(type(w), getattr(w, "n", None), getattr(w, "m", None), getattr(w, "vector", None), getattr(w, "dtype", None)) for w in weights}
    if len(shapes) != 1 or len(kinds) != 1:
        raise ValueError(f"weights: expected one format, pattern, dtype and shape for all experts, got shapes {sorted(shapes)}")
    rows, cols = next(iter(shapes))
    ids = selection.padded_token_ids if padded else selection.token_ids
    slots = selection.padded_slot_ids if padded else selection.slot_ids
    offsets = (selection.padded_offsets if padded else selection.offsets).tolist()
    positions = int(offsets[-1])
    if gather:
        _check_x(x, cols)
        if x.shape[0] < selection.num_tokens:
            raise ValueError(f"x: expected at least {selection.num_tokens} token rows for gather=True, got {x.shape[0]}")
    else:
        _check_x(x, cols)
        if x.shape[0] != positions:
            raise ValueError(f"x: expected {positions} rows (one per position) for gather=False, got {x.shape[0]}")
    scale = None
    if epilogue == "scatter_add":
        if routing_weights is not None:
            check_tensor("routing_weights", routing_weights, dtypes=FLOAT_DTYPES, finite=True)
            if routing_weights.numel() != selection.num_tokens * selection.top_k:
                raise ValueError(f"routing_weights: expected {selection.num_tokens * selection.top_k} entries "
                                 f"([tokens, k]), got shape {tuple(routing_weights.shape)}")
            flat = routing_weights.reshape(-1).to(torch.float32)
            s = slots.to(device=flat.device, dtype=torch.int64)
            scale = torch.where(s != SENTINEL, flat[s.clamp(min=0)], torch.zeros((), device=flat.device))
        scatter_idx = ids.to(x.device)
    else:
        scatter_idx = None
        if routing_weights is not None:
            check_tensor("routing_weights", routing_weights, dtypes=FLOAT_DTYPES)
            raise ValueError(f"routing_weights: only used by epilogue='scatter_add', got it with epilogue={epilogue!r}")
    _check_epilogue(epilogue, positions, rows, x.dtype, x.device, up, out, scatter_idx, scale)
    tensors = [x] + [t for t in (up, out, scale) if t is not None] + [getattr(w, "values", x) for w in weights]
    counts = [offsets[e + 1] - offsets[e] for e in range(len(weights))]
    mode = _cpu_mode(backend, weights[0], x, tensors, max(counts, default=0))
    if mode is not None:  # expert by expert on the CPU kernels (each expert decides kernel / dense tiles)
        y32 = torch.zeros(positions, rows, dtype=torch.float32)
        for e, w in enumerate(weights):
            a, b = offsets[e], offsets[e + 1]
            if a == b:
                continue
            m_e = mode if backend == "cpu" else _cpu_mode(backend, w, x, tensors, b - a)
            if gather:
                y32[a:b] = _cpu_products(m_e, w, x, ids[a:b].to(torch.int64))
            else:
                y32[a:b] = _cpu_products(m_e, w, x[a:b], None)
        return _reference_epilogue(y32, epilogue, x.dtype, up, out, scatter_idx, scale)
    if _use_cupy(backend, tensors, _sparse_unsupported(weights[0], x)):
        idx = ids.to(x.device) if gather else None
        return _ssmm_cupy(weights, x, idx, offsets, epilogue, up, out, scatter_idx, scale, split_k, gather=gather,
                          kernel=kernel)
    # reference: expert by expert
    y32 = torch.zeros(positions, rows, dtype=torch.float32, device=x.device)
    for e, w in enumerate(weights):
        a, b = offsets[e], offsets[e + 1]
        if a == b:
            continue
        if gather:
            y32[a:b] = reference.ssmm(w, x, ids[a:b].to(x.device), out_dtype=torch.float32)
        else:
            y32[a:b] = reference.spmm(w, x[a:b], out_dtype=torch.float32)
    return _reference_epilogue(y32, epilogue, x.dtype, up, out, scatter_idx, scale)


def spmm(weight: object, x: torch.Tensor, *, split_k: int | None = None, backend: str = "auto") -> torch.Tensor:
    """Sparse weight × all tokens: ``y = x · Wᵀ`` (``[tokens, rows]``), fp32 accumulate.

    2:4 ``NMWeight`` runs ``kernels/spmm.cu``; ``SamoyedsWeight`` runs ``kernels/ssmm.cu`` without a
    gather; any other format (and CPU tensors) the reference.
    """
    backend = _check_backend(backend)
    split_k = _check_split_k(split_k)
    rows, cols = _weight_shape(weight)
    if isinstance(weight, SamoyedsWeight):
        return ssmm(weight, x, None, split_k=split_k, backend=backend)
    _check_x(x, cols)
    tensors = [x] + ([weight.values] if isinstance(weight, NMWeight) else [])
    if isinstance(weight, NMWeight):
        mode = _cpu_mode(backend, weight, x, tensors, x.shape[0])
        if mode is not None:
            return _cpu_products(mode, weight, x, None).to(x.dtype)
    elif backend == "cpu":
        _cpu_mode(backend, weight, x, tensors, x.shape[0])  # raises the named error
    if not _use_cupy(backend, tensors, _sparse_unsupported(weight, x)):
        return reference.spmm(weight, x)
    out, specs = _spmm_specs(weight, x, split_k)
    _run_specs(specs)
    return out


def _spmm_specs(weight: NMWeight, x: torch.Tensor, split_k: int | None) -> tuple[torch.Tensor, list[LaunchSpec]]:
    """Output and launches of ``spmm`` on a 2:4 ``NMWeight`` (the arguments are checked already)."""
    rows, cols = weight.shape
    tokens = x.shape[0]
    out = torch.empty(tokens, rows, dtype=x.dtype, device=x.device)
    if tokens == 0 or rows == 0:
        return out, []
    if cols == 0:
        return out.zero_(), []
    ksteps = tiles.ceil_div(cols, tiles.MMA_K)
    mblocks, ntiles = tiles.ceil_div(rows, tiles.BLOCK_M), tiles.ceil_div(tokens, tiles.BLOCK_N)
    plan = split_plan(ksteps, 1, mblocks * ntiles, split_k=split_k, sms=_device_props()[1])
    grid = check_grid((mblocks, ntiles, plan.splits))
    ws = torch.empty(plan.splits, tokens, rows, dtype=torch.float32, device=x.device) if plan.splits > 1 else None
    fn = f"spmm_{_dt(x)}"
    args = (weight.values.contiguous(), _meta_of(weight), x, np.int32(x.stride(0)), np.int32(tokens),
            np.int32(rows), np.int32(cols), np.int32(plan.steps_per_split), ws, out, np.int32(rows))
    specs = [_main_spec("spmm", fn, grid, smem_bytes("spmm"), args)]
    if plan.splits > 1:
        specs.append(_finalize_spec("spmm", fn, tokens * rows, (ws, np.int32(plan.splits), np.int64(tokens),
                                                                np.int32(rows), out, np.int32(rows))))
    return out, specs


def dense_mm(
    weight: torch.Tensor,
    x: torch.Tensor,
    token_idx: torch.Tensor | None = None,
    *,
    split_k: int | None = None,
    backend: str = "auto",
) -> torch.Tensor:
    """Dense weight × (gathered) tokens with ``mma.sync``: ``y[p] = W @ x[token_idx[p]]`` (``[positions, rows]``).

    The baseline kernel of the family (same tiles, pipeline and tails as the sparse ones); ``weight``
    is a dense ``[rows, cols]`` tensor with ``cols % 4 == 0`` for the kernel.
    """
    backend = _check_backend(backend)
    split_k = _check_split_k(split_k)
    rows, cols, idx, tensors, unsupported = _dense_checked(weight, x, token_idx)
    if backend == "cpu":
        if any(t.device.type != "cpu" for t in tensors):
            raise ValueError("backend: 'cpu' needs CPU tensors")
        backend = "reference"  # the dense baseline on a CPU is torch's own GEMM
    if not _use_cupy(backend, tensors, unsupported):
        return reference.spmm(weight, x) if idx is None else reference.ssmm(weight, x, idx)
    out, specs = _dense_specs(weight, x, idx, split_k)
    _run_specs(specs)
    return out


def _dense_checked(weight, x, token_idx):
    """Every check of :func:`dense_mm`'s arguments: ``rows, cols, idx, tensors, unsupported``."""
    check_tensor("weight", weight, ndim=2, dtypes=FLOAT_DTYPES)
    rows, cols = weight.shape
    _check_x(x, cols)
    idx = None if token_idx is None else reference.check_token_idx(token_idx, x.shape[0])
    unsupported = None
    if weight.dtype not in _HALF or x.dtype != weight.dtype:
        unsupported = f"dtypes weight {weight.dtype} / x {x.dtype} (both fp16 or both bf16)"
    elif cols % 4 or weight.stride(-1) != 1 or x.stride(-1) != 1:
        unsupported = "cols must be a multiple of 4 and weight/x unit-stride along K"
    tensors = [weight, x] + ([token_idx] if token_idx is not None else [])
    return rows, cols, idx, tensors, unsupported


def _dense_specs(weight: torch.Tensor, x: torch.Tensor, idx: torch.Tensor | None,
                 split_k: int | None) -> tuple[torch.Tensor, list[LaunchSpec]]:
    """Output and launches of ``dense_mm`` (the arguments are checked already)."""
    rows, cols = weight.shape
    positions = x.shape[0] if idx is None else idx.numel()
    out = torch.empty(positions, rows, dtype=x.dtype, device=x.device)
    if positions == 0 or rows == 0:
        return out, []
    if cols == 0:
        return out.zero_(), []
    ksteps = tiles.ceil_div(cols, tiles.MMA_K)
    mblocks, ntiles = tiles.ceil_div(rows, tiles.BLOCK_M), tiles.ceil_div(positions, tiles.BLOCK_N)
    plan = split_plan(ksteps, 1, mblocks * ntiles, split_k=split_k, sms=_device_props()[1])
    grid = check_grid((mblocks, ntiles, plan.splits))
    ws = torch.empty(plan.splits, positions, rows, dtype=torch.float32, device=x.device) if plan.splits > 1 else None
    tok = idx.to(device=x.device, dtype=torch.int32).contiguous() if idx is not None else None
    fn = f"dense_mm_{_dt(x)}"
    args = (weight, np.int32(weight.stride(0)), x, np.int32(x.stride(0)), np.int32(x.shape[0]), tok,
            np.int32(positions), np.int32(rows), np.int32(cols), np.int32(plan.steps_per_split), ws, out,
            np.int32(rows))
    specs = [_main_spec("dense_mm", fn, grid, smem_bytes("dense_mm"), args)]
    if plan.splits > 1:
        specs.append(_finalize_spec("dense_mm", fn, positions * rows, (ws, np.int32(plan.splits), np.int64(positions),
                                                                       np.int32(rows), out, np.int32(rows))))
    return out, specs


__all__ = ["BACKENDS", "EPILOGUES", "available", "spmm", "ssmm", "ssmm_grouped", "dense_mm"]
