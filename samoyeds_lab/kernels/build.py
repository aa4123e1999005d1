"""Compiling ``kernels/*.cu``: the one place that decides the NVRTC options, and the per-process cache.

Every kernel source is a self-contained, header-free translation unit. It is compiled with NVRTC from
PyPI (``cuda-bindings`` + ``nvidia-cuda-nvrtc``), which works without a GPU, to a cubin for an explicit
architecture (``sm_80``, ``sm_90a``, …), and the cubin is loaded into a CuPy ``RawModule``. The CPU tests
call :func:`compile_source` with exactly the options :func:`nvrtc_options` gives the loader, so "it
compiles in CI" means "the loader's compile succeeds".

The tile sizes reach the sources as ``-D`` defines built from :mod:`samoyeds_lab.tiles`
(:func:`tile_defines`); the ``#ifndef`` defaults inside each ``.cu`` repeat the same numbers so that a
bare ``nvcc`` build agrees (``tests/kernels/test_compile.py`` checks both).
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import os
import re
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

from .. import tiles
from ..errors import SamoyedsLabError

#: Directory of the CUDA sources (``<repo>/kernels``).
KERNEL_DIR = Path(__file__).resolve().parents[2] / "kernels"
#: Kernel families, one ``.cu`` each.
SOURCES = ("spmm", "ssmm", "dense_mm")
#: Architectures the CPU tests compile for.
TEST_ARCHS = ("80", "90a")
#: Accumulator-tile padding (floats) of the shared-memory epilogue tile (bank-conflict padding).
ACC_PAD = 4
#: C++ dialect passed to NVRTC and nvcc.
CXX_STD = "c++17"

_TILE_NAMES = ("BLOCK_M", "BLOCK_N", "BLOCK_K", "WARPS_M", "WARPS_N", "MMA_M", "MMA_N", "MMA_K", "STAGES")


class KernelCompileError(SamoyedsLabError, RuntimeError):
    """NVRTC (or the driver loading its cubin) rejected a kernel source; the message carries the log."""


class KernelUnavailableError(SamoyedsLabError, RuntimeError):
    """The CuPy backend cannot run here (no CuPy, no driver, GPU older than SM80, NVRTC missing)."""


def tile_defines() -> dict[str, int]:
    """The ``-D`` defines every kernel gets: tile constants of :mod:`samoyeds_lab.tiles`, ``ACC_PAD``,
    and the token ``SENTINEL`` of :mod:`samoyeds_lab.formats.tokens`."""
    from ..formats.tokens import SENTINEL

    out = {name: int(getattr(tiles, name)) for name in _TILE_NAMES}
    out["ACC_PAD"] = ACC_PAD
    out["SENTINEL"] = int(SENTINEL)
    return out


def normalize_arch(arch: object) -> str:
    """``"sm_90a"``, ``"90a"``, ``90``, ``(9, 0)`` → ``"90a"``/``"90"`` (what follows ``sm_``).

    Raises
    ------
    ValueError
        For anything that is not an SM80+ architecture.
    """
    if isinstance(arch, tuple) and len(arch) == 2:
        arch = f"{int(arch[0])}{int(arch[1])}"
    s = str(arch).lower().removeprefix("sm_").removeprefix("compute_")
    m = re.fullmatch(r"(\d{2,3})([af]?)", s)
    if not m or int(m.group(1)) < 80:
        raise ValueError(f"arch: expected an SM80+ architecture like 'sm_80' or 'sm_90a', got {arch!r}")
    return s


def nvrtc_options(arch: object) -> tuple[str, ...]:
    """The NVRTC options of every kernel build for ``arch`` (also used by the CPU compile tests).

    ``-arch`` is always explicit so that Hopper gets ``sm_90a`` (CuPy alone would pick ``sm_90``).
    """
    a = normalize_arch(arch)
    defines = tuple(f"-D{k}={v}" for k, v in tile_defines().items())
    return (f"--gpu-architecture=sm_{a}", f"--std={CXX_STD}", "--device-as-default-execution-space") + defines


def nvcc_options(arch: object) -> tuple[str, ...]:
    """The same build for ``nvcc`` (used by the CPU tests when ``nvcc`` is on the machine)."""
    a = normalize_arch(arch)
    return (f"-arch=sm_{a}", f"-std={CXX_STD}") + tuple(f"-D{k}={v}" for k, v in tile_defines().items())


def source_path(name: str | Path) -> Path:
    """Path of ``kernels/<name>.cu`` (or ``name`` itself when it is a path to a ``.cu`` file)."""
    if isinstance(name, Path):
        if name.suffix != ".cu":
            raise ValueError(f"name: expected a .cu file, got {name}")
        if not name.is_file():
            raise FileNotFoundError(f"name: expected an existing .cu file, got {name} (no such file)")
        return name
    if not isinstance(name, str):
        raise TypeError(f"name: expected one of {', '.join(SOURCES)} or a Path to a .cu file, got {type(name).__name__}")
    if name not in SOURCES:
        raise ValueError(f"name: expected one of {', '.join(SOURCES)}, got {name!r}")
    return KERNEL_DIR / f"{name}.cu"


@dataclass(frozen=True)
class CompileResult:
    """Output of one NVRTC compile: the cubin, the PTX it went through, and NVRTC's log."""

    name: str
    arch: str
    options: tuple[str, ...]
    cubin: bytes
    ptx: str
    log: str


def _nvrtc():
    try:
        from cuda.bindings import nvrtc
    except ImportError as exc:  # pragma: no cover - depends on the installation
        raise KernelUnavailableError(
            "NVRTC from PyPI is not installed (pip install cuda-bindings nvidia-cuda-nvrtc): " + str(exc)
        ) from None
    return nvrtc


def _check(nvrtc, result, what: str, log: str = "") -> None:
    if result != nvrtc.nvrtcResult.NVRTC_SUCCESS:
        _, msg = nvrtc.nvrtcGetErrorString(result)
        raise KernelCompileError(f"{what} failed: {msg.decode() if isinstance(msg, bytes) else msg}\n{log}")


def nvrtc_version() -> tuple[int, int]:
    """(major, minor) of the NVRTC library that :func:`compile_source` uses."""
    nvrtc = _nvrtc()
    res, major, minor = nvrtc.nvrtcVersion()
    _check(nvrtc, res, "nvrtcVersion")
    return int(major), int(minor)


# NOTE: NVRTC runs in a short-lived child process. A successful nvrtcCompileProgram inside the Python
# process that uses torch leaves torch.load unable to read float tensors saved elsewhere ("record size
# (128 bytes) does not match expected size (0 bytes ...)", torch 2.13 + NVRTC 13.5 from PyPI, seen here);
# a child process keeps whatever NVRTC changes out of the caller. tests/kernels/test_compile.py checks it.
_WORKER = r"""
import base64, json, sys
from cuda.bindings import nvrtc
req = json.loads(sys.stdin.read())
res, prog = nvrtc.nvrtcCreateProgram(base64.b64decode(req["source"]), req["name"].encode(), 0, [], [])
if res != nvrtc.nvrtcResult.NVRTC_SUCCESS:
    print(json.dumps({"ok": False, "log": "nvrtcCreateProgram failed: %s" % (res,)})); sys.exit(0)
try:
    opts = [o.encode() for o in req["options"]]
    (res,) = nvrtc.nvrtcCompileProgram(prog, len(opts), opts)
    _, size = nvrtc.nvrtcGetProgramLogSize(prog)
    buf = b" " * size
    nvrtc.nvrtcGetProgramLog(prog, buf)
    out = {"ok": res == nvrtc.nvrtcResult.NVRTC_SUCCESS, "log": buf.rstrip(b"\x00 ").decode(errors="replace")}
    if out["ok"]:
        _, psize = nvrtc.nvrtcGetPTXSize(prog)
        ptx = b" " * psize
        nvrtc.nvrtcGetPTX(prog, ptx)
        _, csize = nvrtc.nvrtcGetCUBINSize(prog)
        cubin = b" " * csize
        nvrtc.nvrtcGetCUBIN(prog, cubin)
        out["ptx"] = base64.b64encode(ptx).decode()
        out["cubin"] = base64.b64encode(cubin).decode()
finally:
    nvrtc.nvrtcDestroyProgram(prog)
print(json.dumps(out))
"""


def _compile_in_subprocess(path: Path, options: tuple[str, ...]) -> tuple[bool, str, bytes, bytes]:
    """Run NVRTC on ``path`` in a child Python: ``(ok, log, ptx, cubin)``."""
    req = {"source": base64.b64encode(path.read_bytes()).decode(), "name": path.name, "options": list(options)}
    proc = subprocess.run([sys.executable, "-c", _WORKER], input=json.dumps(req), capture_output=True, text=True)
    if proc.returncode != 0:
        raise KernelCompileError(f"the NVRTC worker for {path.name} failed (exit {proc.returncode}):\n{proc.stderr}")
    try:
        out = json.loads(proc.stdout.strip().splitlines()[-1])
    except (json.JSONDecodeError, IndexError) as exc:
        raise KernelCompileError(f"the NVRTC worker for {path.name} gave no result ({exc}):\n{proc.stderr}") from None
    if not out["ok"]:
        return False, out["log"], b"", b""
    return True, out["log"], base64.b64decode(out["ptx"]), base64.b64decode(out["cubin"])


_CACHE: dict[tuple[str, str, tuple[str, ...]], CompileResult] = {}
_LOCK = threading.Lock()


def compile_source(name: str | Path, arch: object, *, extra_options: tuple[str, ...] = ()) -> CompileResult:
    """Compile ``kernels/<name>.cu`` for ``arch`` with :func:`nvrtc_options` (cached per process).

    Parameters
    ----------
    name : str
        ``"spmm"``, ``"ssmm"`` or ``"dense_mm"`` (or a ``Path`` to another header-free ``.cu``, e.g.
        the one-warp layout probe of the GPU tests).
    arch : str | int | tuple
        Target, e.g. ``"sm_80"`` or ``"sm_90a"``.
    extra_options : tuple of str
        Appended after the standard options (tests use ``-DSAMOYEDS_ORDERED_METADATA=0``).

    Raises
    ------
    KernelCompileError
        With NVRTC's full log when the source does not compile.
    """
    path = source_path(name)
    if not isinstance(extra_options, (tuple, list)) or not all(isinstance(o, str) for o in extra_options):
        raise TypeError(f"extra_options: expected a tuple of str options, got {type(extra_options).__name__} "
                        f"{extra_options!r:.60}")
    options = nvrtc_options(arch) + tuple(extra_options)
    key = (str(path), normalize_arch(arch), options)
    with _LOCK:
        if key in _CACHE:
            return _CACHE[key]
    _nvrtc()  # a clear KernelUnavailableError here when NVRTC is not installed
    ok, log, ptx, cubin = _compile_in_subprocess(path, options)
    if not ok:
        raise KernelCompileError(
            f"NVRTC could not compile {path.name} for sm_{key[1]} with options {' '.join(options)}:\n{log}"
        )
    out = CompileResult(path.stem, key[1], options, cubin, ptx.rstrip(b"\x00").decode(errors="replace"), log)
    with _LOCK:
        _CACHE[key] = out
    return out


def _cache_dir() -> Path:
    base = os.environ.get("SAMOYEDS_LAB_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "samoyeds_lab")
    d = Path(base) / "cubin"
    d.mkdir(parents=True, exist_ok=True)
    return d


@functools.lru_cache(maxsize=None)
def load_module(name: str | Path, arch: str):
    """A CuPy ``RawModule`` for ``kernels/<name>.cu`` on ``arch`` (compiled once per process).

    The cubin from :func:`compile_source` is written to a content-addressed file and loaded with
    ``cupy.RawModule(path=...)``, so the GPU runs exactly what the CPU tests compiled.
    """
    try:
        import cupy
    except ImportError as exc:
        raise KernelUnavailableError(f"CuPy is not installed: {exc}") from None
    res = compile_source(name, arch)
    digest = hashlib.sha256(res.cubin).hexdigest()[:20]
    path = _cache_dir() / f"{res.name}-sm_{res.arch}-{digest}.cubin"
    if not path.exists():
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_bytes(res.cubin)
        os.replace(tmp, path)
    try:
        return cupy.RawModule(path=str(path))
    except Exception as exc:
        raise KernelCompileError(
            f"the driver could not load the cubin of {res.name}.cu for sm_{res.arch} "
            f"(NVRTC {'.'.join(map(str, nvrtc_version()))}; a driver older than this NVRTC rejects its "
            f"cubins): {exc}\nNVRTC log:\n{res.log}"
        ) from exc


def device_arch() -> str:
    """The architecture to build for on the current CuPy device: ``"90a"`` on Hopper, else ``"<cc>"``."""
    import cupy

    cc = cupy.cuda.Device().compute_capability  # e.g. "90"
    return "90a" if cc == "90" else cc


__all__ = [
    "KERNEL_DIR", "SOURCES", "TEST_ARCHS", "ACC_PAD", "KernelCompileError", "KernelUnavailableError",
    "CompileResult", "tile_defines", "normalize_arch", "nvrtc_options", "nvcc_options", "source_path",
    "compile_source", "nvrtc_version", "load_module", "device_arch",
]
