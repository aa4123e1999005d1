"""GPU kernels (``kernels/*.cu`` loaded as CuPy RawModules) behind one API with a CPU reference fallback.

``spmm``, ``ssmm``, ``ssmm_grouped`` and ``dense_mm`` take and return torch tensors and pick the
backend per call (``backend="auto" | "cupy" | "cpu" | "reference"``; ``cpu``: the CPU kernels of
:mod:`samoyeds_lab.kernels.cpu`, see :mod:`samoyeds_lab.kernels.ops`);
``ssmm`` / ``ssmm_grouped`` also the CUDA path (``kernel="auto" | "mma_sp" | "wgmma_sp"``, the last on
Hopper only; ``auto`` follows recorded measurements, :func:`choose_ssmm_kernel`).
:mod:`samoyeds_lab.kernels.build` owns the NVRTC options and the compile cache;
:mod:`samoyeds_lab.kernels.launch` the launch geometry; :mod:`samoyeds_lab.kernels.plan` launch plans
(``ssmm_plan`` …: every check and all host work done once, ``plan.run()`` = the kernel launches only, what
the GPU benchmark times). The tile sizes the CUDA sources and the CPU
``mma.sp`` emulator agree on live in :mod:`samoyeds_lab.tiles`. Nothing here imports CuPy at import time.
"""

from .build import KernelCompileError, KernelUnavailableError, compile_source, nvrtc_options
from .cpu import CpuChoice, CpuPath, cpu_choice, cpu_path
from .ops import BACKENDS, EPILOGUES, KERNELS, available, choose_ssmm_kernel, dense_mm, spmm, ssmm, ssmm_grouped
from .plan import KernelPlan, dense_mm_plan, spmm_plan, ssmm_plan

__all__ = [
    "spmm", "ssmm", "ssmm_grouped", "dense_mm", "available", "compile_source", "nvrtc_options",
    "cpu_path", "cpu_choice", "CpuPath", "CpuChoice",
    "ssmm_plan", "spmm_plan", "dense_mm_plan", "KernelPlan",
    "BACKENDS", "EPILOGUES", "KERNELS", "choose_ssmm_kernel", "KernelCompileError", "KernelUnavailableError",
]
