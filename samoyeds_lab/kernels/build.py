"""Compiling ``kernels/*.cu``: the one place that decides the NVRTC options, and the compile cache.

Every kernel family includes ``kernels/sptc_common.cuh`` (the cp.async / ldmatrix / ``mma.sp`` helpers they
share); NVRTC gets every ``kernels/*.cuh`` as a named in-memory header. The source is compiled to a cubin
for an explicit architecture (``sm_80``, ``sm_90a``, …) with NVRTC from PyPI (``cuda-bindings`` +
``nvidia-cuda-nvrtc``), or, where that wheel is absent, with CuPy's NVRTC (``cupy.cuda.nvrtc``); both work
without a GPU. :func:`nvrtc_provider` says which one is used. The CPU tests call :func:`compile_source` with
exactly the options :func:`nvrtc_options` gives the loader, so "it compiles in CI" means "the loader's
compile succeeds".

Compiles are cached in memory and on disk (``$SAMOYEDS_LAB_CACHE/cubin``, default
``~/.cache/samoyeds-lab/cubin``; ``SAMOYEDS_LAB_CUBIN_CACHE=0`` keeps only the per-process cache). The key hashes
the source, every header, the options, the architecture and the NVRTC provider with its version, so a
second process reuses the first one's cubin without running NVRTC (:func:`cache_stats` counts both).

The tile sizes reach the sources as ``-D`` defines built from :mod:`samoyeds_lab.tiles`
(:func:`tile_defines`); the ``#ifndef`` defaults in ``kernels/sptc_common.cuh`` repeat the same numbers so
that a bare ``nvcc`` build agrees (``tests/kernels/test_compile.py`` checks both).
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
#: The header every family includes (tile defaults and the shared device helpers).
COMMON_HEADER = KERNEL_DIR / "sptc_common.cuh"
#: NVRTC providers, in order of preference.
NVRTC_PROVIDERS = ("cuda-bindings", "cupy")
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
    """Output of one NVRTC compile: the cubin, the PTX it went through, NVRTC's log, and the cubin's file in the
    disk cache (``None`` when the disk cache is off)."""

    name: str
    arch: str
    options: tuple[str, ...]
    cubin: bytes
    ptx: str
    log: str
    cache_path: Path | None = None


def headers() -> tuple[tuple[str, bytes], ...]:
    """``(include name, contents)`` of every ``kernels/*.cuh``: the named headers NVRTC gets (sorted)."""
    return tuple((p.name, p.read_bytes()) for p in sorted(KERNEL_DIR.glob("*.cuh")))


def _has_module(name: str) -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):  # a parent package missing or broken
        return False


def _cuda_bindings_nvrtc_present() -> bool:
    """The PyPI NVRTC: ``cuda.bindings.nvrtc`` importable and the ``nvidia-cuda-nvrtc`` library installed."""
    return _has_module("cuda.bindings.nvrtc")


def _cupy_nvrtc_present() -> bool:
    return _has_module("cupy.cuda.nvrtc")


def nvrtc_provider() -> str | None:
    """Which NVRTC :func:`compile_source` uses: ``"cuda-bindings"`` (PyPI ``cuda-bindings`` +
    ``nvidia-cuda-nvrtc``), else ``"cupy"`` (``cupy.cuda.nvrtc``), else ``None``.

    ``SAMOYEDS_LAB_NVRTC=cupy`` (or ``cuda-bindings``) insists on one; it is ``None`` when that one is absent.
    """
    want = os.environ.get("SAMOYEDS_LAB_NVRTC", "").strip().lower()
    present = {"cuda-bindings": _cuda_bindings_nvrtc_present, "cupy": _cupy_nvrtc_present}
    if want:
        if want not in present:
            raise ValueError(f"SAMOYEDS_LAB_NVRTC: expected one of {', '.join(NVRTC_PROVIDERS)}, got {want!r}")
        return want if present[want]() else None
    for name in NVRTC_PROVIDERS:
        if present[name]():
            return name
    return None


@functools.lru_cache(maxsize=None)
def _provider_version(provider: str) -> str:
    """The installed version of a provider's distribution (part of the disk-cache key; no library loaded)."""
    from importlib import metadata

    dists = {"cuda-bindings": ("nvidia-cuda-nvrtc", "cuda-bindings"),
             "cupy": ("cupy-cuda13x", "cupy-cuda12x", "cupy", "nvidia-cuda-nvrtc")}.get(provider, ())
    out = []
    for d in dists:
        try:
            out.append(f"{d}={metadata.version(d)}")
        except metadata.PackageNotFoundError:
            pass
    return ",".join(out) or "unknown"


def _require_provider() -> str:
    prov = nvrtc_provider()
    if prov is None:
        raise KernelUnavailableError(
            "no NVRTC found: install the PyPI wheels (pip install cuda-bindings nvidia-cuda-nvrtc) or CuPy "
            "with its NVRTC (cupy-cuda13x[ctk])"
            + (f" (SAMOYEDS_LAB_NVRTC={os.environ['SAMOYEDS_LAB_NVRTC']})" if os.environ.get("SAMOYEDS_LAB_NVRTC") else "")
        )
    return prov


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
    if _require_provider() == "cupy":
        from cupy.cuda import nvrtc as cnvrtc

        major, minor = cnvrtc.getVersion()
        return int(major), int(minor)
    nvrtc = _nvrtc()
    res, major, minor = nvrtc.nvrtcVersion()
    _check(nvrtc, res, "nvrtcVersion")
    return int(major), int(minor)


# NOTE: NVRTC runs in a short-lived child process. A successful nvrtcCompileProgram inside the Python
# process that uses torch leaves torch.load unable to read float tensors saved elsewhere ("record size
# (128 bytes) does not match expected size (0 bytes ...)", torch 2.13 + NVRTC 13.5 from PyPI, seen here);
# a child process keeps whatever NVRTC changes out of the caller. tests/kernels/test_compile.py checks it.
# The request carries the source, the named headers and the options; the answer is one JSON line.
_WORKER_CUDA_BINDINGS = r"""
import base64, json, sys
from cuda.bindings import nvrtc
req = json.loads(sys.stdin.read())
hdrs = [base64.b64decode(h) for h in req["headers"]]
names = [n.encode() for n in req["include_names"]]
res, prog = nvrtc.nvrtcCreateProgram(base64.b64decode(req["source"]), req["name"].encode(), len(hdrs), hdrs, names)
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

# CuPy's thin NVRTC wrapper: createProgram(src, name, headers, include_names) takes str, compileProgram
# raises NVRTCError on a failed compile, getPTX / getCUBIN return bytes without the trailing NUL.
_WORKER_CUPY = r"""
import base64, json, sys
from cupy.cuda import nvrtc
req = json.loads(sys.stdin.read())
hdrs = [base64.b64decode(h).decode() for h in req["headers"]]
prog = nvrtc.createProgram(base64.b64decode(req["source"]).decode(), req["name"], hdrs, req["include_names"])
try:
    try:
        nvrtc.compileProgram(prog, list(req["options"]))
        ok = True
    except nvrtc.NVRTCError:
        ok = False
    out = {"ok": ok, "log": nvrtc.getProgramLog(prog).rstrip("\x00 ")}
    if ok:
        out["ptx"] = base64.b64encode(nvrtc.getPTX(prog)).decode()
        out["cubin"] = base64.b64encode(nvrtc.getCUBIN(prog)).decode()
finally:
    nvrtc.destroyProgram(prog)
print(json.dumps(out))
"""
_WORKERS = {"cuda-bindings": _WORKER_CUDA_BINDINGS, "cupy": _WORKER_CUPY}

_STATS = {"nvrtc": 0, "disk": 0, "memory": 0}


def cache_stats() -> dict[str, int]:
    """How this process got its compiles so far: ``{"nvrtc": runs of NVRTC, "disk": cubins read from the disk
    cache, "memory": per-process cache hits}`` (a copy)."""
    with _LOCK:
        return dict(_STATS)


def _compile_in_subprocess(path: Path, options: tuple[str, ...], provider: str,
                           hdrs: tuple[tuple[str, bytes], ...]) -> tuple[bool, str, bytes, bytes]:
    """Run NVRTC (``provider``) on ``path`` with the named headers in a child Python: ``(ok, log, ptx, cubin)``."""
    if os.environ.get("SAMOYEDS_LAB_FORBID_NVRTC"):
        raise KernelCompileError(f"NVRTC was asked to compile {path.name} while SAMOYEDS_LAB_FORBID_NVRTC is set "
                                 "(the disk cache was expected to serve it)")
    req = {"source": base64.b64encode(path.read_bytes()).decode(), "name": path.name, "options": list(options),
           "headers": [base64.b64encode(c).decode() for _, c in hdrs], "include_names": [n for n, _ in hdrs]}
    with _LOCK:
        _STATS["nvrtc"] += 1
    proc = subprocess.run([sys.executable, "-c", _WORKERS[provider]], input=json.dumps(req), capture_output=True,
                          text=True)
    if proc.returncode != 0:
        raise KernelCompileError(f"the NVRTC worker ({provider}) for {path.name} failed (exit {proc.returncode}):\n"
                                 f"{proc.stderr}")
    try:
        out = json.loads(proc.stdout.strip().splitlines()[-1])
    except (json.JSONDecodeError, IndexError) as exc:
        raise KernelCompileError(f"the NVRTC worker ({provider}) for {path.name} gave no result ({exc}):\n"
                                 f"{proc.stderr}") from None
    if not out["ok"]:
        return False, out["log"], b"", b""
    return True, out["log"], base64.b64decode(out["ptx"]), base64.b64decode(out["cubin"])


_CACHE: dict[tuple, CompileResult] = {}
_LOCK = threading.Lock()


def _cache_dir() -> Path | None:
    """``$SAMOYEDS_LAB_CACHE/cubin`` (default ``~/.cache/samoyeds-lab/cubin``), created; ``None`` when the
    disk cache is off (``SAMOYEDS_LAB_CUBIN_CACHE=0``) or cannot be created."""
    if os.environ.get("SAMOYEDS_LAB_CUBIN_CACHE", "").strip().lower() in ("0", "off", "no", "false"):
        return None
    env = os.environ.get("SAMOYEDS_LAB_CACHE")  # the same root as the CPU kernels' cache (kernels/cpu.py)
    base = Path(env) if env else Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "samoyeds-lab"
    d = base / "cubin"
    try:
        d.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None
    return d


def cache_key(path: Path, options: tuple[str, ...], arch: str, provider: str,
              hdrs: tuple[tuple[str, bytes], ...] | None = None) -> str:
    """The disk-cache key of one compile: SHA-256 over the source, every named header (name and contents),
    the options, the architecture and the NVRTC provider with its installed version."""
    h = hashlib.sha256()
    for part in (b"samoyeds-lab cubin v1", path.name.encode(), path.read_bytes()):
        h.update(len(part).to_bytes(8, "little") + part)
    for name, content in (headers() if hdrs is None else hdrs):
        for part in (name.encode(), content):
            h.update(len(part).to_bytes(8, "little") + part)
    for part in (arch, provider, _provider_version(provider), *options):
        b = part.encode()
        h.update(len(b).to_bytes(8, "little") + b)
    return h.hexdigest()


def _disk_paths(d: Path, stem: str, arch: str, key: str) -> tuple[Path, Path]:
    base = d / f"{stem}-sm_{arch}-{key[:32]}"
    return base.with_suffix(".cubin"), base.with_suffix(".json")


def _read_disk(d: Path, stem: str, arch: str, key: str, options: tuple[str, ...]) -> CompileResult | None:
    cub, meta = _disk_paths(d, stem, arch, key)
    try:
        info = json.loads(meta.read_text())
        cubin = cub.read_bytes()
    except (OSError, ValueError):
        return None
    if (not isinstance(info, dict) or info.get("key") != key or cubin[:4] != b"\x7fELF"
            or hashlib.sha256(cubin).hexdigest() != info.get("cubin_sha256")):
        return None  # a torn or foreign file: compile again (and overwrite it)
    return CompileResult(stem, arch, options, cubin, str(info.get("ptx", "")), str(info.get("log", "")), cub)


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f"{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _write_disk(d: Path, res: CompileResult, key: str) -> Path | None:
    cub, meta = _disk_paths(d, res.name, res.arch, key)
    try:
        _write_atomic(cub, res.cubin)  # the cubin first: a reader trusts a .json only with its cubin's hash
        info = {"key": key, "name": res.name, "arch": res.arch, "options": list(res.options), "log": res.log,
                "ptx": res.ptx, "cubin_sha256": hashlib.sha256(res.cubin).hexdigest()}
        _write_atomic(meta, json.dumps(info).encode())
    except OSError:
        return None
    return cub


def compile_source(name: str | Path, arch: object, *, extra_options: tuple[str, ...] = ()) -> CompileResult:
    """Compile ``kernels/<name>.cu`` for ``arch`` with :func:`nvrtc_options`, cached in memory and on disk.

    Parameters
    ----------
    name : str
        ``"spmm"``, ``"ssmm"`` or ``"dense_mm"`` (or a ``Path`` to another ``.cu``, e.g. the one-warp layout
        probe of the GPU tests; it may include ``kernels/*.cuh`` by name).
    arch : str | int | tuple
        Target, e.g. ``"sm_80"`` or ``"sm_90a"``.
    extra_options : tuple of str
        Appended after the standard options (tests use ``-DSAMOYEDS_ORDERED_METADATA=0``).

    Returns
    -------
    CompileResult
        ``cache_path`` is the cubin's file in the disk cache (``None`` when the disk cache is off).

    Raises
    ------
    KernelUnavailableError
        When no NVRTC is installed (neither the PyPI wheels nor CuPy's) and the disk cache has no cubin.
    KernelCompileError
        With NVRTC's full log when the source does not compile.
    """
    path = source_path(name)
    if not isinstance(extra_options, (tuple, list)) or not all(isinstance(o, str) for o in extra_options):
        raise TypeError(f"extra_options: expected a tuple of str options, got {type(extra_options).__name__} "
                        f"{extra_options!r:.60}")
    options = nvrtc_options(arch) + tuple(extra_options)
    a = normalize_arch(arch)
    hdrs = headers()
    provider = nvrtc_provider()
    key = cache_key(path, options, a, provider or "none", hdrs)
    mkey = (str(path), key)
    with _LOCK:
        if mkey in _CACHE:
            _STATS["memory"] += 1
            return _CACHE[mkey]
    d = _cache_dir()
    out = _read_disk(d, path.stem, a, key, options) if d is not None and provider is not None else None
    if out is not None:
        with _LOCK:
            _STATS["disk"] += 1
    else:
        provider = _require_provider()  # a clear KernelUnavailableError when no NVRTC is installed
        ok, log, ptx, cubin = _compile_in_subprocess(path, options, provider, hdrs)
        if not ok:
            raise KernelCompileError(
                f"NVRTC ({provider}) could not compile {path.name} for sm_{a} with options {' '.join(options)}:\n{log}"
            )
        out = CompileResult(path.stem, a, options, cubin, ptx.rstrip(b"\x00").decode(errors="replace"), log)
        if d is not None:
            cp = _write_disk(d, out, key)
            if cp is not None:
                out = CompileResult(out.name, a, options, cubin, out.ptx, log, cp)
    with _LOCK:
        _CACHE[mkey] = out
    return out


def clear_memory_cache() -> None:
    """Forget this process's compiles (the disk cache stays): the next :func:`compile_source` reads the disk."""
    with _LOCK:
        _CACHE.clear()
    load_module.cache_clear()


@functools.lru_cache(maxsize=None)
def load_module(name: str | Path, arch: str):
    """A CuPy ``RawModule`` for ``kernels/<name>.cu`` on ``arch`` (compiled once per process).

    The cubin of :func:`compile_source` (its file in the disk cache, or a temporary content-addressed file
    when the disk cache is off) is loaded with ``cupy.RawModule(path=...)``, so the GPU runs exactly what
    the CPU tests compiled.
    """
    try:
        import cupy
    except ImportError as exc:
        raise KernelUnavailableError(f"CuPy is not installed: {exc}") from None
    res = compile_source(name, arch)
    path = res.cache_path
    if path is None:
        import tempfile

        digest = hashlib.sha256(res.cubin).hexdigest()[:20]
        path = Path(tempfile.gettempdir()) / f"samoyeds_lab-{res.name}-sm_{res.arch}-{digest}.cubin"
        if not path.exists():
            _write_atomic(path, res.cubin)
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
    "CompileResult", "COMMON_HEADER", "NVRTC_PROVIDERS", "tile_defines", "normalize_arch", "nvrtc_options",
    "nvcc_options", "source_path", "headers", "nvrtc_provider", "cache_key", "cache_stats", "clear_memory_cache",
    "compile_source", "nvrtc_version", "load_module", "device_arch",
]
