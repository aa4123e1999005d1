"""What this machine can run: the single source of truth behind every notebook's banner.

``device_info()`` never raises: a missing CuPy, a CuPy without a driver, or an old GPU all give a
:class:`DeviceInfo` whose ``reasons`` say why the fast path is off.
"""

from __future__ import annotations

import functools
import platform
from dataclasses import dataclass, field

import torch


@dataclass(frozen=True)
class DeviceInfo:
    """Facts about the machine, as far as samoyeds-lab is concerned.

    Attributes
    ----------
    backend : str
        ``"cupy"`` when the CuPy kernels can run (CuPy + driver + a GPU with compute capability ≥ 8.0),
        else ``"reference"`` (pure-torch CPU references).
    gpu_name : str | None
    compute_capability : tuple[int, int] | None
    sptc : bool
        Sparse Tensor Cores (``mma.sp``, SM80+) usable.
    sm90a : bool
        Hopper's ``wgmma.mma_async.sp`` path (compute capability 9.0) usable.
    reasons : tuple[str, ...]
        Why each fast path is unavailable (empty when everything is on).
    cpu_isa : str
        The CPU kernels' instruction-set path (``avx512`` / ``avx2`` / ``portable`` / ``none``, see
        :func:`samoyeds_lab.kernels.cpu.cpu_path`); ``cpu_reason`` says why.
    nvrtc : str | None
        The NVRTC that compiles the CUDA kernels (:func:`samoyeds_lab.kernels.build.nvrtc_provider`):
        ``"cuda-bindings"`` (PyPI wheels) or ``"cupy"`` (``cupy.cuda.nvrtc``), ``None`` when neither is
        installed (then the CUDA kernels cannot be built here).
    nvrtc_version : str | None
        The installed distribution(s) behind ``nvrtc``, e.g. ``"nvidia-cuda-nvrtc=13.5.37,cuda-bindings=13.5.0"``.
    """

    backend: str
    gpu_name: str | None
    compute_capability: tuple[int, int] | None
    sptc: bool
    sm90a: bool
    cupy_version: str | None
    torch_version: str
    torch_cuda: bool
    cpu: str
    threads: int
    reasons: tuple[str, ...] = field(default=())
    cpu_isa: str = "none"
    cpu_reason: str = "not probed"
    nvrtc: str | None = None
    nvrtc_version: str | None = None

    def __post_init__(self) -> None:
        from ._checks import check_bool, check_choice, check_int, check_positive_int

        check_choice("backend", self.backend, ("cupy", "reference"))
        for name in ("sptc", "sm90a", "torch_cuda"):
            check_bool(name, getattr(self, name))
        for name in ("torch_version", "cpu", "cpu_isa", "cpu_reason"):
            if not isinstance(getattr(self, name), str):
                raise TypeError(f"{name}: expected a str, got {type(getattr(self, name)).__name__}")
        if self.nvrtc is not None and self.nvrtc not in ("cuda-bindings", "cupy"):
            raise ValueError(f"nvrtc: expected 'cuda-bindings', 'cupy' or None, got {self.nvrtc!r}")
        for name in ("gpu_name", "cupy_version", "nvrtc_version"):
            if getattr(self, name) is not None and not isinstance(getattr(self, name), str):
                raise TypeError(f"{name}: expected a str or None, got {type(getattr(self, name)).__name__}")
        cc = self.compute_capability
        if cc is not None:
            if not isinstance(cc, tuple):
                raise TypeError(f"compute_capability: expected a (major, minor) tuple or None, got {type(cc).__name__}")
            if len(cc) != 2:
                raise ValueError(f"compute_capability: expected (major, minor), got {cc!r}")
            for i, v in enumerate(cc):
                check_int(f"compute_capability[{i}]", v, lo=0)
        check_positive_int("threads", self.threads)
        if not isinstance(self.reasons, tuple) or not all(isinstance(r, str) for r in self.reasons):
            raise TypeError(f"reasons: expected a tuple of str, got {type(self.reasons).__name__}")
        if self.backend == "cupy" and not self.sptc:
            raise ValueError("backend: 'cupy' needs Sparse Tensor Cores (sptc=True), got sptc=False")

    def banner(self) -> str:
        """A few lines saying which backend runs, and why the GPU paths are on or off."""
        if self.backend == "cupy":
            cc = ".".join(map(str, self.compute_capability or ()))
            head = f"samoyeds-lab · backend: CuPy kernels on {self.gpu_name} (compute capability {cc})"
        else:
            kern = f"CPU kernels ({self.cpu_isa})" if self.cpu_isa != "none" else "CPU reference (pure torch)"
            head = f"samoyeds-lab · backend: {kern} · GPU figures are shown as recorded or modelled"
        lines = [
            head,
            f"  Sparse Tensor Cores (mma.sp, SM80+): {'yes' if self.sptc else 'no'}"
            f" · Hopper sm_90a (wgmma.sp): {'yes' if self.sm90a else 'no'}",
            f"  torch {self.torch_version} (CUDA {'yes' if self.torch_cuda else 'no'}) · "
            f"cupy {self.cupy_version or 'not installed'} · CPU: {self.cpu}, {self.threads} threads",
        ]
        nv = f"{self.nvrtc} ({self.nvrtc_version})" if self.nvrtc else "not installed"
        lines.append(f"  NVRTC (compiles kernels/*.cu): {nv}")
        lines.append(f"  CPU path: {self.cpu_isa} — {self.cpu_reason}")
        lines += [f"  why not: {r}" for r in self.reasons]
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.banner()


def _probe_cupy() -> tuple[str | None, str | None, tuple[int, int] | None, list[str]]:
    """(cupy version, gpu name, compute capability, reasons), never raising."""
    reasons: list[str] = []
    try:
        import cupy  # noqa: F401
    except Exception as exc:  # ImportError, or a broken CUDA install raising on import
        kind = "not installed" if isinstance(exc, ImportError) else f"fails to import ({exc!s:.120})"
        reasons.append(f"CuPy {kind} (pip install -e '.[gpu]' on a machine with an NVIDIA driver)")
        return None, None, None, reasons
    version = getattr(cupy, "__version__", "?")
    try:
        available = bool(cupy.is_available())
    except Exception as exc:
        available = False
        reasons.append(f"CuPy cannot reach a GPU: {exc!s:.120}")
    if not available:
        if not reasons:
            reasons.append("CuPy is installed but finds no usable GPU/driver (cupy.is_available() is False)")
        return version, None, None, reasons
    try:
        dev = cupy.cuda.Device()
        cc = (int(dev.compute_capability[:-1]), int(dev.compute_capability[-1]))
        props = cupy.cuda.runtime.getDeviceProperties(dev.id)
        name = props["name"].decode() if isinstance(props["name"], bytes) else str(props["name"])
    except Exception as exc:
        reasons.append(f"CuPy sees a GPU but cannot query it: {exc!s:.120}")
        return version, None, None, reasons
    return version, name, cc, reasons


def _cpu_name() -> str:
    try:
        from .kernels.cpu import cpu_model

        return f"{cpu_model()} ({platform.machine()})"
    except Exception:
        return platform.processor() or platform.machine()


@functools.lru_cache(maxsize=1)
def device_info() -> DeviceInfo:
    """Probe once per process what can run here (cached). Never raises."""
    cupy_version, name, cc, reasons = _probe_cupy()
    sptc = cc is not None and cc >= (8, 0)
    sm90a = cc == (9, 0)
    if cc is not None and not sptc:
        reasons.append(f"{name} has compute capability {cc[0]}.{cc[1]}; Sparse Tensor Cores need 8.0+ "
                       "(kernels fall back to the CPU reference)")
    if sptc and not sm90a:
        reasons.append("sm_90a (wgmma.sp) needs a Hopper GPU (compute capability 9.0); mma.sp path is used")
    elif cc is None:
        reasons.append("sm_90a (wgmma.sp) needs a Hopper GPU")
    try:
        from .kernels.build import _provider_version, nvrtc_provider

        nvrtc = nvrtc_provider()
        nvrtc_version = _provider_version(nvrtc) if nvrtc else None
    except Exception as exc:  # e.g. a bad SAMOYEDS_LAB_NVRTC: a reason, not a crash
        nvrtc, nvrtc_version = None, None
        reasons.append(f"NVRTC lookup failed: {exc!s:.160}")
    if nvrtc is None:
        reasons.append("no NVRTC to compile kernels/*.cu (pip install cuda-bindings nvidia-cuda-nvrtc, or CuPy with "
                       "its NVRTC): the CUDA kernels cannot be built here")
    try:
        torch_cuda = bool(torch.cuda.is_available())
    except Exception:
        torch_cuda = False
    try:
        from .kernels.cpu import cpu_path

        from .kernels.cpu import auto_summary

        cp = cpu_path()
        cpu_isa, cpu_reason = cp.isa, cp.reason + (
            "" if cp.compile_s is None else (" (cached build)" if cp.cached else f" (built in {cp.compile_s:.1f} s)"))
        cpu_reason += "; " + auto_summary()
    except Exception as exc:  # never raises: a broken compiler is a reason, not a crash
        cpu_isa, cpu_reason = "none", f"CPU kernels unavailable: {exc!s:.160}"
    return DeviceInfo(
        backend="cupy" if sptc else "reference",
        gpu_name=name,
        compute_capability=cc,
        sptc=sptc,
        sm90a=sm90a,
        cupy_version=cupy_version,
        torch_version=torch.__version__,
        torch_cuda=torch_cuda,
        cpu=_cpu_name(),
        threads=torch.get_num_threads(),
        reasons=tuple(reasons),
        cpu_isa=cpu_isa,
        cpu_reason=cpu_reason,
        nvrtc=nvrtc,
        nvrtc_version=nvrtc_version,
    )
