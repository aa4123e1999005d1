"""Launch plans: all host work of a kernel call done once, so that running it is kernel launches only.

A call such as ``ssmm(weight, x, idx)`` does a lot besides launching: it checks the token ids against
``x`` (a reduction read back to the host: a sync) and ``x``'s values (another), builds token tiles,
converts the ids, allocates the output and split-K workspace, wraps ~20 tensors for CuPy (DLPack) and
fetches the kernel from its module. A timing bracket around the call measures all of that, not the
kernel. :func:`ssmm_plan` (and :func:`spmm_plan`, :func:`dense_mm_plan`) do every one of those steps once,
with exactly the code the op runs (:func:`samoyeds_lab.kernels.ops._ssmm_specs` builds the launches of
both), and hand back a :class:`KernelPlan`:

* the arguments are packed once as raw device pointers (``numpy.uint64`` of ``tensor.data_ptr()``,
  the plan keeps every tensor alive) and numpy scalars: no DLPack wrapper at run time;
* every kernel's CuPy function is fetched once (``RawModule.get_function``) and its dynamic shared
  memory limit set once;
* the output (and workspace) is allocated once: :meth:`KernelPlan.run` returns the same tensor each time;
* the stream is wrapped once (torch's current stream when the plan is built).

:meth:`KernelPlan.run` then makes the plan's launches (the main kernel, plus the split-K finalize kernel
when the plan splits K: :attr:`KernelPlan.launches_per_run`) and nothing else: no host sync, no host→device
copy, no torch op. It may take a new ``x`` of the *same* shape, strides, dtype and device (its pointer is
swapped in, host arithmetic only); anything else is refused with a named ``ValueError``. ``x``'s values
are checked (finite) when the plan is built, not again by :meth:`KernelPlan.run` (that check is a host
sync): call the op itself for checked calls. Epilogue ``scatter_add`` adds into ``out`` on every run.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from ..formats import NMWeight, SamoyedsWeight
from . import ops
from .launch import LaunchSpec, check_scalar_arg, is_pointer_arg


def _stream_handle(device: torch.device) -> int:
    """The raw handle of torch's current stream on ``device`` (what every op launches on)."""
    return int(torch.cuda.current_stream(device).cuda_stream)


def _pointer(a: torch.Tensor | None) -> np.uint64:
    return np.uint64(0) if a is None else np.uint64(a.data_ptr())


class KernelPlan:
    """Prepared launches of one op call; :meth:`run` (or calling the plan) launches them.

    Attributes
    ----------
    op : str
        ``"ssmm"``, ``"spmm"`` or ``"dense_mm"``.
    out : torch.Tensor
        The output every run writes (``scatter_add``: the user's ``out``, added into).
    specs : tuple of LaunchSpec
        What is launched, in order (main kernel, then the split-K finalize kernel if any).
    launches_per_run : int
        ``len(specs)``: 1, or 2 with split-K (0 for an empty call).
    x_shape, x_stride, x_dtype, x_device
        What a new ``x`` given to :meth:`run` must match.
    """

    def __init__(self, op: str, out: torch.Tensor, specs: Sequence[LaunchSpec], x: torch.Tensor, *, cupy=None):
        self.op = op
        self.out = out
        self.specs = tuple(specs)
        self.launches_per_run = len(self.specs)
        self.x_shape, self.x_stride = tuple(x.shape), tuple(x.stride())
        self.x_dtype, self.x_device = x.dtype, x.device
        self._x = x
        self._keep: list[torch.Tensor] = []  # every tensor a pointer refers to stays alive with the plan
        self._x_slots: list[tuple[int, int]] = []  # (launch, argument) positions holding x's pointer
        self._launches: list[tuple[object, tuple, tuple, int, list]] = []
        self._packed: list[tuple] = []
        if not self.specs:
            self._stream = None
            return
        if cupy is None:
            import cupy
        self._stream = cupy.cuda.ExternalStream(_stream_handle(x.device))
        for i, spec in enumerate(self.specs):
            kern = ops._kernel_function(spec.module, spec.fn, spec.smem)
            args = []
            for j, a in enumerate(spec.args):
                if is_pointer_arg(a):
                    if a is x:
                        self._x_slots.append((i, j))
                    if a is not None:
                        self._keep.append(a)
                    args.append(_pointer(a))
                else:
                    check_scalar_arg(a)
                    args.append(a)
            self._launches.append((kern, spec.grid, (spec.block,), spec.smem, args))
        self._packed = [tuple(a) for (_, _, _, _, a) in self._launches]

    def _set_x(self, x: torch.Tensor) -> None:
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"x: expected a torch.Tensor like the plan's, got {type(x).__name__}")
        got = (tuple(x.shape), tuple(x.stride()), x.dtype, x.device)
        want = (self.x_shape, self.x_stride, self.x_dtype, self.x_device)
        if got != want:
            raise ValueError(f"x: expected shape {self.x_shape}, strides {self.x_stride}, {self.x_dtype} on "
                             f"{self.x_device} (what the plan was built for), got shape {got[0]}, strides {got[1]}, "
                             f"{got[2]} on {got[3]}; build a new plan for a new shape")
        ptr = _pointer(x)
        for i, j in self._x_slots:
            args = list(self._packed[i])
            args[j] = ptr
            self._packed[i] = tuple(args)
        self._x = x

    def run(self, x: torch.Tensor | None = None, *, stream=None) -> torch.Tensor:
        """Launch the plan; return :attr:`out`.

        Parameters
        ----------
        x : torch.Tensor, optional
            New activations of exactly the plan's shape, strides, dtype and device (default: the plan's).
            Their values are not checked here.
        stream : cupy.cuda.Stream, optional
            Stream to launch on (default: torch's current stream when the plan was built), e.g. a stream
            being captured into a CUDA graph.
        """
        if x is not None and x is not self._x:
            self._set_x(x)
        s = self._stream if stream is None else stream
        for (kern, grid, block, smem, _), args in zip(self._launches, self._packed):
            kern(grid, block, args, shared_mem=smem, stream=s)
        return self.out

    __call__ = run

    def __repr__(self) -> str:
        fns = ", ".join(f"{s.fn}{list(s.grid)}" for s in self.specs)
        return f"KernelPlan({self.op}: {fns or 'no launches'})"


def _require_cupy(tensors, unsupported) -> None:
    ops._use_cupy("cupy", tensors, unsupported)  # raises the named error of backend="cupy"


def ssmm_plan(weight: SamoyedsWeight | NMWeight, x: torch.Tensor, token_idx: torch.Tensor | None, *,
              epilogue: str = "plain", up: torch.Tensor | None = None, out: torch.Tensor | None = None,
              scatter_idx: torch.Tensor | None = None, scale: torch.Tensor | None = None,
              split_k: int | None = None, kernel: str = "auto") -> KernelPlan:
    """A :class:`KernelPlan` of ``ssmm(weight, x, token_idx, ..., backend="cupy")``.

    Arguments as in :func:`samoyeds_lab.kernels.ssmm` (every check of the op runs here, once, including
    the host-syncing token-id range and finite-``x`` checks). Needs the CuPy backend (an SM80+ GPU; CUDA
    tensors): otherwise the op's ``backend="cupy"`` error.
    """
    kernel = ops._check_kernel(kernel)
    split_k = ops._check_split_k(split_k)
    rows, cols, idx, positions, scatter_idx, tensors = ops._ssmm_checked(weight, x, token_idx, epilogue, up, out,
                                                                         scatter_idx, scale)
    _require_cupy(tensors, ops._sparse_unsupported(weight, x))
    out, specs = ops._ssmm_specs([weight], x, idx, [0, positions], epilogue, up, out, scatter_idx, scale, split_k,
                                 gather=idx is not None, kernel=kernel)
    return KernelPlan("ssmm", out, specs, x)


def spmm_plan(weight: SamoyedsWeight | NMWeight, x: torch.Tensor, *, split_k: int | None = None) -> KernelPlan:
    """A :class:`KernelPlan` of ``spmm(weight, x, backend="cupy")`` (2:4 ``NMWeight`` on ``spmm.cu``;
    ``SamoyedsWeight`` on ``ssmm.cu`` without a gather, as the op does)."""
    split_k = ops._check_split_k(split_k)
    if isinstance(weight, SamoyedsWeight):
        return ssmm_plan(weight, x, None, split_k=split_k)
    _, cols = ops._weight_shape(weight)
    ops._check_x(x, cols)
    tensors = [x] + ([weight.values] if isinstance(weight, NMWeight) else [])
    _require_cupy(tensors, ops._sparse_unsupported(weight, x))
    out, specs = ops._spmm_specs(weight, x, split_k)
    return KernelPlan("spmm", out, specs, x)


def dense_mm_plan(weight: torch.Tensor, x: torch.Tensor, token_idx: torch.Tensor | None = None, *,
                  split_k: int | None = None) -> KernelPlan:
    """A :class:`KernelPlan` of ``dense_mm(weight, x, token_idx, backend="cupy")`` (the dense baseline)."""
    split_k = ops._check_split_k(split_k)
    _, _, idx, tensors, unsupported = ops._dense_checked(weight, x, token_idx)
    _require_cupy(tensors, unsupported)
    out, specs = ops._dense_specs(weight, x, idx, split_k)
    return KernelPlan("dense_mm", out, specs, x)


__all__ = ["KernelPlan", "ssmm_plan", "spmm_plan", "dense_mm_plan"]
