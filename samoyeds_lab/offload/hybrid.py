r"""Real hybrid execution of an MoE expert layer: hot experts on the "fast" side, cold ones near data.

This runs MoNDE's split for real on this machine and times it, so the cost model of
:mod:`samoyeds_lab.offload.cost` can be compared with a measurement:

* **fast side** (the "GPU"): for every hot expert, its weights are *moved* (``device="cuda"``: a
  host-to-device copy; ``device="cpu"``: a real ``memcpy`` of the three matrices into a staging buffer,
  standing in for the link), then the expert runs on its gathered tokens, in the calling thread;
* **near side**: every cold expert runs where its weights live, on CPU worker threads of a
  :class:`~concurrent.futures.ThreadPoolExecutor` (torch releases the GIL inside its kernels); only
  activations cross: its tokens' rows are copied in and its output rows copied back;
* both sides run **concurrently**; the results are scattered into the output in expert order, so the
  output equals :meth:`samoyeds_lab.moe.SwiGLUExperts.forward_grouped` on one device.

**Compressed near-data experts.** When the experts have been sparsified
(:meth:`~samoyeds_lab.moe.SwiGLUExperts.sparsify` with ``pattern="samoyeds"`` or ``"2:4"``), the near side
(``near_format="auto"`` or ``"compressed"``) computes each cold expert with the CPU sparse kernels straight
from its compressed operands, never building a dense weight (:func:`samoyeds_lab.kernels.ssmm`)::

    u = ssmm(Up_e, x, t_e)                                       # [n_e, I]
    h = ssmm(Gate_e, x, t_e, epilogue="silu_mul", up=u)          # silu(x Gateᵀ) ⊙ u, fused
    ssmm(Down_e, h, None, epilogue="scatter_add", out=acc,       # acc[t_e] += w_e · (h Downᵀ)
         scatter_idx=t_e, scale=w_e)

on the same worker threads (one fp32 accumulator per worker, added into the output at the end). So the
near side reads the compressed bytes (≈28 % of bf16 for Samoyeds 1:2 V=128) instead of ``P·b``. The fast
side is unchanged: it moves and runs the (pruned) dense weights. The output equals the dense computation
on the same pruned weights up to fp32 summation order (tested).

.. warning::

   On a CPU-only machine both "devices" are **the same CPU cores**: the fast side is the calling
   thread, the near side a worker thread, each using ``threads`` torch threads (torch's intra-op thread
   count is process-wide). There is no faster device and no real link, so moving weights never pays
   for itself at equal thread counts; what the run shows is (a) whether the cost model's *structure*
   (per-path sums, concurrent max) predicts the measured time once calibrated, and (b) with more threads
   on the fast side (:func:`measure_paths`), the crossover shape of "move the weights" vs "move the
   activations". Two sides sharing cores and memory bandwidth is exactly what the model does not
   describe, and the measurement shows it.

Calibration (:func:`calibrate_host`) measures, at the expert's own shapes, the matmul FLOP/s, the
weight-copy bandwidth (the "link") and the weight-streaming bandwidth of a one-token expert call (the
roofline floor), per torch thread count, and :meth:`HostCalibration.profiles` turns them into a pair of
in-memory :class:`~samoyeds_lab.offload.hardware.HardwareProfile` objects (``gpu`` and ``near_data``
kinds; the ``fp16_*`` fields then hold the measured *fp32* rates).
"""

from __future__ import annotations

import os
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from .._checks import FLOAT_DTYPES, check_alloc, check_int, check_positive_int
from ..formats import NMWeight, SamoyedsWeight, TokenSelection
from ..moe.experts import SwiGLUExperts, _check_routing
from .hardware import HardwareProfile

__all__ = [
    "DEFAULT_SHAPE",
    "NEAR_FORMATS",
    "HostCalibration",
    "HybridRun",
    "HybridTiming",
    "HybridExecutor",
    "PathSweep",
    "PlacementCheck",
    "calibrate_host",
    "check_placements",
    "compressed_bytes",
    "compressed_ops",
    "make_experts",
    "measure_paths",
    "time_hybrid",
]

#: A Mixtral-like expert layer scaled down to run in milliseconds on 2 CPU cores (Mixtral-8x7B: 8 experts,
#: hidden 4096, intermediate 14336; the same 3.5 ratio here).
DEFAULT_SHAPE = {"num_experts": 8, "hidden": 512, "intermediate": 1792}
#: What the near side computes from: ``"auto"`` (compressed operands when the experts have CPU-kernel ones),
#: ``"dense"`` (the dense weights) or ``"compressed"`` (required).
NEAR_FORMATS = ("auto", "dense", "compressed")
_NEAR_BACKENDS = ("cpu", "auto", "reference")


def make_experts(num_experts: int = 8, hidden: int = 512, intermediate: int = 1792, *, seed: int = 0,
                 dtype: torch.dtype = torch.float32) -> SwiGLUExperts:
    """A seeded :class:`SwiGLUExperts` (``nn.Linear``-style init) for hybrid runs, without gradients."""
    E = check_positive_int("num_experts", num_experts)
    H = check_positive_int("hidden", hidden)
    I = check_positive_int("intermediate", intermediate)
    if not isinstance(dtype, torch.dtype) or dtype not in FLOAT_DTYPES:
        raise TypeError(f"dtype: expected one of torch.float16, torch.bfloat16, torch.float32, got {dtype!r}")
    check_alloc("num_experts", (E, 3 * H, I), torch.float32, what="expert weights [num_experts, 3 * hidden, intermediate]")
    seed = check_int("seed", seed, lo=0)
    num_experts, hidden, intermediate = E, H, I
    g = torch.random.fork_rng()
    with g:
        torch.manual_seed(check_int("seed", seed, lo=0))
        ex = SwiGLUExperts(num_experts, hidden, intermediate)
    ex.requires_grad_(False)
    return ex.to(dtype)


@contextmanager
def _torch_threads(n: int):
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def _swiglu(x, wg, wu, wd):
    return (F.silu(x @ wg.T) * (x @ wu.T)) @ wd.T


def _median_time(fn, repeats: int, warmup: int = 1, *, best: bool = False) -> float:
    for _ in range(warmup):
        fn()
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return min(ts) if best else statistics.median(ts)


def _copy_weights(dst, src) -> None:
    """``dst[i].copy_(src[i])`` on one torch thread: the CPU stand-in for moving weights over a link.

    NOTE: a memcpy is bandwidth-bound and one thread gets most of it; a multi-threaded copy on a shared,
    loaded machine waits at every OpenMP barrier for a descheduled thread (measured: 50x slower here).
    """
    with _torch_threads(1):
        for d, s in zip(dst, src):
            d.copy_(s)


def _check_experts(experts: object) -> SwiGLUExperts:
    if not isinstance(experts, SwiGLUExperts):
        raise TypeError(f"experts: expected a SwiGLUExperts, got {type(experts).__name__}")
    if experts.w_gate.device.type != "cpu":
        raise ValueError(f"experts: expected weights in host memory (device cpu: the near side computes where they "
                         f"live), got device {experts.w_gate.device}")
    return experts


def _threads_arg(name: str, v: object) -> int:
    return check_int(name, v, lo=1, hi=max(1, os.cpu_count() or 1) * 4)


def compressed_ops(experts: SwiGLUExperts) -> list[tuple] | None:
    """Per expert ``(gate, up, down)`` compressed operands the CPU kernels take, or None.

    None when the experts were never sparsified, or when any operand is a format the CPU kernels do not
    take (only 2:4 ``NMWeight`` and ``SamoyedsWeight`` with ``vector % 32 == 0``). Raises ``ValueError``
    naming ``experts`` when the operands are stale (the dense weights changed since ``sparsify``).
    """
    experts = _check_experts(experts)
    if experts.compressed is None:
        return None
    from ..kernels import cpu as ck

    try:
        experts._check_compressed()
    except ValueError as e:
        raise ValueError(f"experts: {e}") from None
    ops = [tuple(experts.compressed[p][e] for p in ("gate", "up", "down")) for e in range(experts.num_experts)]
    for trio in ops:
        for op in trio:
            if not isinstance(op, (NMWeight, SamoyedsWeight)) or ck.cpu_unsupported(op) is not None:
                return None
    return ops


def compressed_bytes(experts: SwiGLUExperts, expert: int = 0) -> int:
    """Bytes the CPU kernels read for one expert call: its three operands' CPU layouts (values, metadata,
    row-selection bytes; :attr:`samoyeds_lab.kernels.cpu.CpuOperand.nbytes`)."""
    from ..kernels import cpu as ck

    ops = compressed_ops(experts)
    if ops is None:
        raise ValueError("experts: expected experts sparsified with pattern 'samoyeds' (vector % 32 == 0) or "
                         "'2:4' (CPU-kernel operands), got none")
    e = check_int("expert", expert, lo=0, hi=experts.num_experts - 1)
    return int(sum(ck.cpu_operand(op).nbytes for op in ops[e]))


def _swiglu_compressed(ops, x: torch.Tensor, tok: torch.Tensor, w: torch.Tensor | None, acc: torch.Tensor | None,
                       backend: str) -> torch.Tensor:
    """One expert from its compressed operands: ``acc[tok] += w · down(silu(gate(x[tok])) ⊙ up(x[tok]))``.

    With ``acc=None`` the rows are returned ``[n, H]`` (fp32) instead of scattered.
    """
    from ..kernels import ssmm

    gate, up, down = ops
    u = ssmm(up, x, tok, backend=backend)
    h = ssmm(gate, x, tok, epilogue="silu_mul", up=u, backend=backend)
    if acc is None:
        acc = torch.zeros(tok.numel(), down.shape[0], dtype=torch.float32)
        tok = torch.arange(tok.numel())
    return ssmm(down, h, None, epilogue="scatter_add", out=acc, scatter_idx=tok, scale=w, backend=backend)


def _near_backend(v: object) -> str:
    if not isinstance(v, str) or v not in _NEAR_BACKENDS:
        raise ValueError(f"near_backend: expected one of {_NEAR_BACKENDS}, got {v!r}")
    return v


def _near_format(experts: SwiGLUExperts, v: object):
    """``(format, ops)``: the near side's format and, when compressed, the per-expert operands."""
    if not isinstance(v, str) or v not in NEAR_FORMATS:
        raise ValueError(f"near_format: expected one of {NEAR_FORMATS}, got {v!r}")
    if v == "dense":
        return "dense", None
    ops = compressed_ops(experts)
    if ops is None:
        if v == "compressed":
            raise ValueError("near_format: 'compressed' needs experts sparsified with pattern 'samoyeds' "
                             "(vector % 32 == 0) or '2:4' (call experts.sparsify(...)), got "
                             + ("no compressed operands" if experts.compressed is None
                                else "operands the CPU kernels do not take"))
        return "dense", None
    return "compressed", ops


# ----------------------------------------------------------------------------------------- calibration
@dataclass(frozen=True)
class HostCalibration:
    r"""What :func:`calibrate_host` measured on this machine, per torch thread count.

    Attributes
    ----------
    flops : dict[int, float]
        FLOP/s of one expert call at ``probe_tokens`` tokens: :math:`2 n P / t`.
    stream_bandwidth : dict[int, float]
        Bytes/s at which a one-token expert call streams the weights: :math:`P b / t(n{=}1)` (the roofline
        floor of both paths).
    copy_bandwidth : dict[int, float]
        Bytes/s of copying the expert's weights (``dst.copy_(src)`` on one thread, counting the bytes moved
        once): the stand-in for the link; the same for every thread count.
    expert_params : int
        :math:`P` of one expert (three matrices).
    bytes_per_param : int
        :math:`b` of the weights' dtype.
    hidden : int
        :math:`d`.
    probe_tokens : int
    memory_gb : float
        Physical memory of this machine (1e9 bytes), for the profiles.
    sparse_flops, sparse_stream_bandwidth : dict[int, float]
        Only for sparsified experts (else empty): the same two probes on the near side's compressed path
        (:func:`_swiglu_compressed`, the CPU kernels): dense-equivalent FLOP/s :math:`2 n P / t` and
        compressed bytes per second of a one-token call :math:`W / t(n{=}1)`.
    compressed_bytes : int
        :math:`W`, bytes the CPU kernels read per expert call (0 for dense experts).
    """

    flops: dict
    stream_bandwidth: dict
    copy_bandwidth: dict
    expert_params: int
    bytes_per_param: int
    hidden: int
    probe_tokens: int
    memory_gb: float
    sparse_flops: dict = field(default_factory=dict)
    sparse_stream_bandwidth: dict = field(default_factory=dict)
    compressed_bytes: int = 0

    @property
    def has_compressed(self) -> bool:
        """True when the compressed near path was calibrated."""
        return bool(self.sparse_flops)

    def profiles(self, fast_threads: int = 1, near_threads: int = 1, *,
                 compressed: bool = False) -> tuple[HardwareProfile, HardwareProfile]:
        """``(fast, near)`` profiles: this CPU with ``fast_threads`` / ``near_threads`` torch threads.

        Both use the copy bandwidth as ``link_bandwidth_gbs`` (the cost model takes the slower of the two,
        i.e. the smaller thread count's). The ``fp16_*`` fields hold the measured rates of the weights'
        dtype (fp32 by default): the cost model only needs a FLOP/s. With ``compressed=True`` the near
        profile describes the compressed path: ``fp16_sparse_tflops`` = :attr:`sparse_flops` and
        ``memory_bandwidth_gbs`` = :attr:`sparse_stream_bandwidth` (use it with :meth:`cost_kwargs`).
        """
        if compressed and not self.has_compressed:
            raise ValueError("compressed: the calibration has no compressed near path (calibrate sparsified "
                             "experts), got compressed=True")
        out = []
        for side, t, kind in (("fast", fast_threads, "gpu"), ("near", near_threads, "near_data")):
            if t not in self.flops:
                raise ValueError(f"{side}_threads: expected one of the calibrated thread counts "
                                 f"{sorted(self.flops)}, got {t!r}")
            f = self.flops[t] / 1e12
            bw = self.stream_bandwidth[t]
            extra = {"fp16_sparse_tflops": f} if kind == "gpu" else {}
            what = "dense"
            if kind == "near_data" and compressed:
                extra = {"fp16_sparse_tflops": self.sparse_flops[t] / 1e12}
                bw = self.sparse_stream_bandwidth[t]
                what = "compressed"
            out.append(HardwareProfile(
                name=f"this CPU, {t} thread{'s' if t > 1 else ''} ({side} side, {what})", kind=kind,
                source="measured here by samoyeds_lab.offload.hybrid.calibrate_host",
                fp16_tflops=f, memory_gb=self.memory_gb,
                memory_bandwidth_gbs=bw / 1e9,
                link_bandwidth_gbs=self.copy_bandwidth[t] / 1e9,
                notes=(f"CPU stand-in: FLOP/s of the {self.bytes_per_param * 8}-bit expert matmuls at "
                       f"{self.probe_tokens} tokens, weight-copy bandwidth as the link, one-token weight "
                       f"streaming as the memory bandwidth"
                       + (" (the CPU sparse kernels' FLOP/s and compressed-byte streaming for the near side)"
                          if what == "compressed" else "") + ". Not a GPU."), **extra))
        return out[0], out[1]

    def cost_kwargs(self, *, compressed: bool = False) -> dict:
        """Keyword arguments of the cost model that go with :meth:`profiles` (bytes per parameter and per
        activation; with ``compressed``, the near side's compressed bytes and sparse FLOP/s)."""
        kw = {"bytes_per_param": self.bytes_per_param, "bytes_per_act": self.bytes_per_param}
        if compressed:
            if not self.has_compressed:
                raise ValueError("compressed: the calibration has no compressed near path, got compressed=True")
            kw.update(near_bytes=float(self.compressed_bytes), near_sparse=True)
        return kw


def _memory_gb() -> float:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1e9
    except (ValueError, OSError, AttributeError):  # pragma: no cover - non-POSIX
        return 16.0


def calibrate_host(experts: SwiGLUExperts, *, threads=(1,), probe_tokens: int = 256, repeats: int = 5,
                   seed: int = 0) -> HostCalibration:
    """Measure this machine's FLOP/s and bandwidths at ``experts``' shapes (a fraction of a second).

    Parameters
    ----------
    experts : SwiGLUExperts
        Host-memory experts; expert 0 is the probe.
    threads : iterable of int
        Torch thread counts to calibrate (one entry per count in the result).
    probe_tokens : int
        Tokens of the compute probe (enough to be compute-bound).
    repeats : int
        Timed repeats per probe (the best one counts; one warm-up).

    For sparsified experts (CPU-kernel operands), the near side's compressed path is probed as well
    (:attr:`HostCalibration.sparse_flops`, :attr:`~HostCalibration.sparse_stream_bandwidth`).
    """
    experts = _check_experts(experts)
    ops = compressed_ops(experts)
    ths = tuple(sorted({_threads_arg("threads", t) for t in (threads if not isinstance(threads, int) else (threads,))}))
    if not ths:
        raise ValueError("threads: expected at least one thread count, got none")
    probe_tokens = check_int("probe_tokens", probe_tokens, lo=1)
    repeats = check_int("repeats", repeats, lo=1)
    seed = check_int("seed", seed, lo=0)
    check_alloc("probe_tokens", (2, probe_tokens, max(experts.hidden, experts.intermediate)), 4,
                what="probe activations [probe_tokens, hidden]")
    wg, wu, wd = experts.w_gate[0], experts.w_up[0], experts.w_down[0]
    P = wg.numel() + wu.numel() + wd.numel()
    b = wg.element_size()
    H = experts.hidden
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(probe_tokens, H, generator=gen).to(wg.dtype)
    x1 = x[:1].clone()
    stage = [torch.empty_like(w) for w in (wg, wu, wd)]
    flops, stream, copy, sflops, sstream = {}, {}, {}, {}, {}
    W = compressed_bytes(experts) if ops is not None else 0
    tok_c, tok_1 = torch.arange(probe_tokens), torch.zeros(1, dtype=torch.int64)
    with torch.no_grad():
        for t in ths:
            with _torch_threads(t):
                # NOTE: best of the repeats, not the median: the machine's capability, not the other
                # processes' load (the hybrid timings themselves are medians).
                tc = _median_time(lambda: _swiglu(x, wg, wu, wd), repeats, best=True)
                t1 = _median_time(lambda: _swiglu(x1, wg, wu, wd), max(repeats, 5), best=True)
                if ops is not None:
                    sc = _median_time(lambda: _swiglu_compressed(ops[0], x, tok_c, None, None, "cpu"),
                                      repeats, best=True)
                    s1 = _median_time(lambda: _swiglu_compressed(ops[0], x1, tok_1, None, None, "cpu"),
                                      max(repeats, 5), best=True)
                    sflops[t] = 2.0 * probe_tokens * P / sc
                    sstream[t] = W / s1
            with _torch_threads(1):  # NOTE: copies always run on one thread, see _copy_weights
                tcp = _median_time(lambda: _copy_weights(stage, (wg, wu, wd)), repeats, best=True)
            flops[t] = 2.0 * probe_tokens * P / tc
            stream[t] = P * b / t1
            copy[t] = P * b / tcp
    return HostCalibration(flops, stream, copy, int(P), int(b), int(H), probe_tokens, _memory_gb(),
                           sflops, sstream, int(W))


# ---------------------------------------------------------------------------------------------- execution
@dataclass
class HybridRun:
    """One hybrid forward.

    Attributes
    ----------
    output : torch.Tensor
        ``[T, H]``, equal to the one-device computation.
    total_s : float
        Wall time of the whole call (selection, both sides, scatter), seconds.
    fast_s, near_s : float
        Wall time of the fast side (weight moves + hot experts) and of the near side (the slowest worker:
        activation copies + cold experts), seconds, measured inside each side.
    on_gpu : numpy.ndarray of bool
        The placement used.
    tokens_per_expert : numpy.ndarray of int
    near_format : str
        ``"dense"`` or ``"compressed"``: what the near side computed from.
    """

    output: torch.Tensor
    total_s: float
    fast_s: float
    near_s: float
    on_gpu: np.ndarray
    tokens_per_expert: np.ndarray
    near_format: str = "dense"


class HybridExecutor:
    """Run a :class:`SwiGLUExperts` layer with hot experts on the fast side and cold ones on CPU workers.

    Parameters
    ----------
    experts : SwiGLUExperts
        Weights in host memory (where the near side computes).
    device : str
        ``"cpu"`` (default; the fast side is the calling thread) or ``"cuda"`` (the fast side is the GPU:
        hot experts' weights are copied host→device each call unless ``resident``).
    near_workers : int
        Worker threads of the near side (cold experts are spread over them, busiest first).
    threads : int
        Torch intra-op threads while a call runs (process-wide: both sides use it, and so do the CPU
        sparse kernels). Default 1, so on a 2-core machine the fast thread and one near worker each get
        one core.
    near_format : {"auto", "dense", "compressed"}
        What the near side computes from. ``"auto"``: the compressed operands when the experts were
        sparsified into a format the CPU kernels take (Samoyeds with ``vector % 32 == 0``, 2:4), else the
        dense weights. ``"compressed"`` requires them.
    near_backend : {"cpu", "auto", "reference"}
        ``backend`` of the near side's :func:`~samoyeds_lab.kernels.ssmm` calls: ``"cpu"`` (default)
        always the CPU kernels; ``"auto"`` lets ssmm pick kernel or tile-by-tile dense per recorded
        measurements; ``"reference"`` the pure-torch reference (for checking).

    Use as a context manager, or call :meth:`close` to stop the workers.
    """

    def __init__(self, experts: SwiGLUExperts, *, device: str = "cpu", near_workers: int = 1, threads: int = 1,
                 near_format: str = "auto", near_backend: str = "cpu") -> None:
        self.experts = _check_experts(experts)
        self.near_format, self._ops = _near_format(experts, near_format)
        self.near_backend = _near_backend(near_backend)
        if not isinstance(device, str) or device not in ("cpu", "cuda"):
            raise ValueError(f"device: expected 'cpu' or 'cuda', got {device!r}")
        if device == "cuda" and not torch.cuda.is_available():
            raise ValueError("device: 'cuda' requested but torch.cuda.is_available() is False on this machine")
        self.device = device
        self.near_workers = _threads_arg("near_workers", near_workers)
        self.threads = _threads_arg("threads", threads)
        self._closed = False
        self._pool = ThreadPoolExecutor(self.near_workers, thread_name_prefix="near-data")
        w = experts.weights()
        self._host = [tuple(w[p][e] for p in ("gate", "up", "down")) for e in range(experts.num_experts)]
        if device == "cuda":
            # NOTE: pinned host memory makes the per-call host→device weight copies real DMA transfers.
            self._host = [tuple(m.pin_memory() for m in ws) for ws in self._host]
            self._stage = None
        else:
            self._stage = [torch.empty_like(m) for m in self._host[0]]

    def close(self) -> None:
        """Shut the near-side workers down (a closed executor refuses :meth:`forward`)."""
        self._closed = True
        self._pool.shutdown(wait=True)

    def _check_open(self) -> None:
        if getattr(self, "_closed", False):
            raise RuntimeError("HybridExecutor: this executor is closed (close() or its `with` block ended); "
                               "create a new HybridExecutor")

    def __enter__(self) -> "HybridExecutor":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _fast_weights(self, e: int, resident: bool):
        ws = self._host[e]
        if self.device == "cuda":
            return tuple(m.to("cuda", non_blocking=True) for m in ws)
        if resident:
            return ws
        _copy_weights(self._stage, ws)  # the "link": a real copy of P·b bytes
        return self._stage

    @torch.no_grad()
    def forward(self, x: torch.Tensor, topk_ids: torch.Tensor, topk_weights: torch.Tensor, on_gpu,
                *, resident=None) -> HybridRun:
        """``y_t = Σⱼ w_{t,j} · expert_{ids[t,j]}(x_t)`` with expert ``e`` on the fast side iff ``on_gpu[e]``.

        Parameters
        ----------
        x : torch.Tensor
            ``[T, H]`` activations, on the fast device (``cpu`` or ``cuda``).
        topk_ids, topk_weights : torch.Tensor
            ``[T, k]`` routing (as for :meth:`SwiGLUExperts.forward`).
        on_gpu : array-like of bool, shape (E,)
            The placement (e.g. :attr:`samoyeds_lab.offload.placement.Placement.mask`).
        resident : array-like of bool, shape (E,), optional
            Experts whose weights need no move to the fast side.
        """
        self._check_open()
        ex = self.experts
        E, H = ex.num_experts, ex.hidden
        _check_routing(x, topk_ids, topk_weights, H, E, ex.w_gate.dtype)  # the experts' own rule, same errors
        if x.device.type != self.device:
            raise ValueError(f"x: expected a tensor on {self.device!r} (the fast side), got {x.device}")
        mask = _bool("on_gpu", on_gpu, E)
        res = _bool("resident", resident, E) if resident is not None else np.zeros(E, dtype=bool)
        with _torch_threads(self.threads):
            t0 = time.perf_counter()
            sel = TokenSelection.from_topk(topk_ids, E, pad_to=1)
            bounds = sel.offsets.tolist()
            counts = np.diff(np.asarray(bounds))
            tok = sel.token_ids.long()
            wflat = topk_weights.reshape(-1).index_select(0, sel.slot_ids.long()).to(x.dtype).unsqueeze(1)
            seg = {e: (tok[bounds[e]:bounds[e + 1]], wflat[bounds[e]:bounds[e + 1]]) for e in range(E) if counts[e]}
            fast = [e for e in seg if mask[e]]
            cold = sorted((e for e in seg if not mask[e]), key=lambda e: -counts[e])
            groups: list[list[int]] = [[] for _ in range(self.near_workers)]
            load = [0] * self.near_workers
            for e in cold:  # longest-processing-time first onto the least loaded worker
                i = load.index(min(load))
                groups[i].append(e)
                load[i] += int(counts[e])
            x_host = x if self.device == "cpu" else None
            if self.device == "cuda" and cold:
                x_host = x.to("cpu")  # NOTE: one device→host copy, then each cold expert gathers its rows

            ops, backend = self._ops, self.near_backend

            def near(group: list[int]):
                s = time.perf_counter()
                out = {}
                if ops is not None:
                    # compressed: the CPU kernels gather the rows themselves; one fp32 accumulator per worker
                    acc = torch.zeros(x.shape[0], H, dtype=torch.float32)
                    for e in group:
                        t, w = seg[e]
                        _swiglu_compressed(ops[e], x_host, t.cpu(), w.cpu().reshape(-1).float(), acc, backend)
                    out[("acc", id(group))] = acc.to(self.device) if self.device == "cuda" else acc  # back: T·d
                    return out, time.perf_counter() - s
                for e in group:
                    t, w = seg[e]
                    xin = x_host.index_select(0, t.cpu())  # activations in: n·d copied
                    y = _swiglu(xin, *self._host[e]) * w.cpu()
                    out[e] = y.to(self.device) if self.device == "cuda" else y.clone()  # and back: n·d
                return out, time.perf_counter() - s

            futures = [self._pool.submit(near, g) for g in groups if g]
            s = time.perf_counter()
            results = {}
            for e in fast:
                t, w = seg[e]
                results[e] = _swiglu(x.index_select(0, t), *self._fast_weights(e, bool(res[e]))) * w
            if self.device == "cuda":
                torch.cuda.synchronize()
            fast_s = time.perf_counter() - s if fast else 0.0
            near_s = 0.0
            for f in futures:
                r, dt = f.result()
                results.update(r)
                near_s = max(near_s, dt)
            accs = [results.pop(k) for k in [k for k in results if isinstance(k, tuple)]]
            if ops is None:
                out = torch.zeros_like(x)
                for e in sorted(results):  # expert order: the additions per row happen as in forward_grouped
                    out.index_add_(0, seg[e][0], results[e])
            else:
                out32 = torch.zeros(x.shape, dtype=torch.float32, device=x.device)
                for e in sorted(results):
                    out32.index_add_(0, seg[e][0], results[e].float())
                for a in accs:
                    out32 += a
                out = out32.to(x.dtype)
            if self.device == "cuda":
                torch.cuda.synchronize()
            total = time.perf_counter() - t0
        return HybridRun(out, total, fast_s, near_s, mask, counts.astype(np.int64), self.near_format)

    __call__ = forward


def _bool(name: str, v, E: int) -> np.ndarray:
    if hasattr(v, "detach") and hasattr(v, "cpu"):
        v = v.detach().cpu().numpy()
    a = np.asarray(v)
    if a.dtype != bool:
        raise TypeError(f"{name}: expected a bool mask of shape ({E},), got dtype {a.dtype}")
    if a.shape != (E,):
        raise ValueError(f"{name}: expected shape ({E},) (one entry per expert), got {a.shape}")
    return a


@dataclass(frozen=True)
class HybridTiming:
    """Medians over the timed repeats of :func:`time_hybrid` (seconds), and every sample."""

    total_s: float
    fast_s: float
    near_s: float
    samples: tuple = field(default_factory=tuple)


def time_hybrid(executor: HybridExecutor, x, topk_ids, topk_weights, on_gpu, *, resident=None,
                repeats: int = 5, warmup: int = 1) -> HybridTiming:
    """Run :meth:`HybridExecutor.forward` ``warmup + repeats`` times; medians of the timed ones."""
    if not isinstance(executor, HybridExecutor):
        raise TypeError(f"executor: expected a HybridExecutor, got {type(executor).__name__}")
    repeats = check_int("repeats", repeats, lo=1)
    warmup = check_int("warmup", warmup, lo=0)
    executor._check_open()
    runs = []
    for i in range(warmup + repeats):
        r = executor.forward(x, topk_ids, topk_weights, on_gpu, resident=resident)
        if i >= warmup:
            runs.append((r.total_s, r.fast_s, r.near_s))
    tot, fs, ns = (statistics.median(c) for c in zip(*runs))
    return HybridTiming(tot, fs, ns, tuple(runs))


# ------------------------------------------------------------------------------------------ path sweep
@dataclass(frozen=True)
class PathSweep:
    """Measured per-expert path times vs tokens (one expert alone on each side), seconds.

    Attributes
    ----------
    n_tokens : numpy.ndarray of int
    fast_s : numpy.ndarray
        "Move the weights": weight copy + expert on ``n`` tokens with ``fast_threads`` threads.
    near_s : numpy.ndarray
        "Move the activations": copy ``n`` rows in, expert with ``near_threads`` threads in a worker thread,
        copy the result back.
    fast_threads, near_threads : int
    crossover : int or None
        First measured ``n`` with ``fast_s <= near_s`` (None if none).
    near_format : str
        ``"dense"`` or ``"compressed"`` (the near path's weights).
    """

    n_tokens: np.ndarray
    fast_s: np.ndarray
    near_s: np.ndarray
    fast_threads: int
    near_threads: int
    crossover: int | None
    near_format: str = "dense"


def measure_paths(experts: SwiGLUExperts, n_tokens, *, fast_threads: int = 1, near_threads: int = 1,
                  repeats: int = 3, seed: int = 0, near_format: str = "auto", near_backend: str = "cpu") -> PathSweep:
    """Time one expert's two paths alone for every token count (expert 0; CPU).

    Each path runs by itself (no contention), with its own torch thread count, so giving the fast side
    more threads than the near side models a faster "GPU" and produces a crossover. ``near_format`` and
    ``near_backend`` as in :class:`HybridExecutor`: with compressed operands the near path runs the CPU
    sparse kernels (gather, fused silu_mul, routing-weighted scatter-add) on expert 0's operands.
    """
    experts = _check_experts(experts)
    fmt, ops = _near_format(experts, near_format)
    backend = _near_backend(near_backend)
    ft = _threads_arg("fast_threads", fast_threads)
    nt = _threads_arg("near_threads", near_threads)
    repeats = check_int("repeats", repeats, lo=1)
    seed = check_int("seed", seed, lo=0)
    ns = np.asarray(n_tokens)
    if ns.ndim != 1 or ns.size == 0 or not np.issubdtype(ns.dtype, np.integer) or (ns < 1).any():
        raise ValueError(f"n_tokens: expected a non-empty 1-D sequence of ints >= 1, got {n_tokens!r}")
    check_alloc("n_tokens", (2 * int(ns.max()), max(experts.hidden, experts.intermediate)), 4,
                what="activations [2 * max(n_tokens), hidden]")
    ws = (experts.w_gate[0], experts.w_up[0], experts.w_down[0])
    stage = [torch.empty_like(w) for w in ws]
    gen = torch.Generator().manual_seed(seed)
    xall = torch.randn(int(ns.max()) * 2, experts.hidden, generator=gen).to(ws[0].dtype)
    fast, near = [], []
    with torch.no_grad(), ThreadPoolExecutor(1) as pool:
        for n in ns.tolist():
            idx = torch.arange(0, 2 * n, 2)  # every other row: a real gather

            def f():
                _copy_weights(stage, ws)
                with _torch_threads(ft):
                    return _swiglu(xall.index_select(0, idx), *stage)

            if ops is None:
                def g():
                    return pool.submit(lambda: _swiglu(xall.index_select(0, idx), *ws).clone()).result()
            else:
                wts = torch.ones(n)

                def g():
                    acc = torch.zeros(xall.shape[0], experts.hidden, dtype=torch.float32)
                    return pool.submit(lambda: _swiglu_compressed(ops[0], xall, idx, wts, acc, backend)).result()

            with _torch_threads(ft):
                fast.append(_median_time(f, repeats))
            with _torch_threads(nt):
                near.append(_median_time(g, repeats))
    fast_a, near_a = np.asarray(fast), np.asarray(near)
    wins = np.nonzero(fast_a <= near_a)[0]
    return PathSweep(ns.astype(np.int64), fast_a, near_a, ft, nt, int(ns[wins[0]]) if wins.size else None, fmt)


# ------------------------------------------------------------------------------------------ model vs run
@dataclass(frozen=True)
class PlacementCheck:
    """One placement run for real and compared with its modelled time (seconds)."""

    label: str
    mask: np.ndarray
    modelled_s: float
    modelled_fast_s: float
    modelled_near_s: float
    timing: HybridTiming
    spread_s: float  # half the inter-quartile range of the measured totals

    @property
    def ratio(self) -> float:
        """Measured / modelled."""
        return self.timing.total_s / self.modelled_s if self.modelled_s else float("inf")

    def line(self) -> str:
        t = self.timing
        return (f"{self.label:9s} fast {self.mask.astype(int)}: modelled {1e3 * self.modelled_s:6.1f} ms "
                f"(fast {1e3 * self.modelled_fast_s:5.1f} / near {1e3 * self.modelled_near_s:5.1f})  measured "
                f"{1e3 * t.total_s:6.1f} ms (fast {1e3 * t.fast_s:5.1f} / near {1e3 * t.near_s:5.1f}), "
                f"ratio {self.ratio:4.2f}")


def check_placements(executor: HybridExecutor, x, topk_ids, topk_weights, cases, *, reference=None,
                     rtol: float = 1e-4, atol: float = 1e-5, repeats: int = 5, warmup: int = 1) -> list[PlacementCheck]:
    """Run every placement of ``cases`` for real, check its output, time it and set it beside its model.

    ``cases`` is a sequence of ``(label, on_gpu mask, cost)`` where ``cost`` has ``total`` (or ``time``),
    ``gpu_time`` and ``near_time`` in seconds (a :class:`~samoyeds_lab.offload.cost.LayerCost` or a
    :class:`~samoyeds_lab.offload.placement.Placement`). With ``reference`` (the one-device forward), every
    run's output must match it within ``rtol``/``atol`` (AssertionError otherwise).
    """
    if not isinstance(executor, HybridExecutor):
        raise TypeError(f"executor: expected a HybridExecutor, got {type(executor).__name__}")
    out = []
    for label, mask, cost in cases:
        mask = np.asarray(mask, dtype=bool)
        run = executor(x, topk_ids, topk_weights, mask)
        if reference is not None and not torch.allclose(run.output, reference, rtol=rtol, atol=atol):
            raise AssertionError(f"cases: placement {label!r} gave another output than the one-device forward "
                                 f"(max |diff| {float((run.output - reference).abs().max()):.3g})")
        tm = time_hybrid(executor, x, topk_ids, topk_weights, mask, repeats=repeats, warmup=warmup)
        q1, q3 = np.percentile([s[0] for s in tm.samples], [25, 75])
        total = float(getattr(cost, "total", getattr(cost, "time", float("nan"))))
        out.append(PlacementCheck(str(label), mask, total, float(cost.gpu_time), float(cost.near_time), tm,
                                  float((q3 - q1) / 2)))
    return out
