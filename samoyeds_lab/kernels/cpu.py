"""CPU kernels: sparse expert GEMMs computed straight from the compressed operand (``kernels/cpu_sparse.c``).

Decode on a CPU is memory-bound, so an operand that is 28% of the dense bytes (Samoyeds 1:2, V=128) can
run up to ≈3.5× faster than the best dense path — if it is read as it is stored. These kernels never
build the dense weight: each 2:4 group's two kept values multiply the two ``x`` columns its metadata names,
gathered in registers (AVX-512: ``vpermt2w`` + ``vdpbf16ps``; AVX2: ``vpshufb`` / ``vpermps`` + FMA, or for
fp16 / fp32 tokens a dense fp32 tile expanded per row block and call; portable C: scalar).

Instruction-set paths (:func:`cpu_path` says which runs here and why)
---------------------------------------------------------------------
* ``avx512``: AVX-512 F/BW/VL + AVX512_BF16 (bf16 values and tokens: 32 kept values per
  ``vpermt2w``/``vdpbf16ps``; fp16/fp32: tokens converted to fp32 once, ``vpermt2ps`` + FMA).
* ``avx2``: AVX2 + FMA + F16C. Gathers of x, 8 kept values per FMA. bf16 tokens (any count): one
  ``vpshufb`` per 8 values picks them from the bf16 row straight into fp32 lanes, its control loaded from
  a 256-entry table indexed by a metadata byte of the ``lanes`` layout (below). fp16 / fp32 tokens (below
  4): converted to fp32 once, two ``vpermps``. From 4 fp16 / fp32 tokens: per block of 32 compressed rows
  and 1024 columns the kept values are expanded once per call into a dense fp32 tile (one ``vpermps`` per
  8 columns, its lanes from a 256-entry table; a scratch in L2, never the whole weight), then every block
  of 4 tokens runs plain FMAs over it: twice the multiply-adds of the kept values, but no shuffle per
  token. (bf16 tokens used such tiles from 16 tokens until the table-driven gathers beat them at every
  count measured, 16 to 256: 1.13-1.46x on the AVX2-only EPYC, 2026-12-03.)
* ``portable``: plain C, any CPU and compiler (aarch64 included), correct everywhere.
* ``none``: no C compiler: the tile-by-tile dense path below (still never the whole dense weight).

``SAMOYEDS_LAB_CPU_ISA=avx512|avx2|portable|none`` forces a path (tests force each one that can run).
The C source is compiled once per ISA with the machine's C compiler (``$CC``, ``cc``, ``gcc`` or
``clang``; nothing is downloaded) in about a second, into ``$SAMOYEDS_LAB_CACHE`` (default
``~/.cache/samoyeds-lab/cpu``), keyed by the source, flags and compiler, and reused by later processes.

The CPU layout of an operand (built once per weight and cached; :func:`cpu_operand`)
-------------------------------------------------------------------------------------
The compressed rows (2:4 ``NMWeight`` rows, or the ``rows·n/m`` compressed rows of a ``SamoyedsWeight``)
are cut into 32-column units (8 groups, 16 kept values):

* ``vals [crows, units·16]``: the format's values, zero-padded to whole units (only when ``cols % 32``);
  for the AVX-512 bf16 kernel the two units of each pair inside a window are interleaved two values at a
  time, so one broadcast 64-bit metadata word decodes to the pair's 32 gather indices in two instructions.
* ``meta uint32 [crows, units]``: per unit the 8 groups' kept positions, 2 bits each (first positions in
  the low half-word, second in the high one): the same 4 bits per group as the format's metadata.
* The ``avx2`` path reads the ``lanes`` layout, the same bytes reordered: metadata byte ``j`` holds the
  four kept positions of groups ``2j`` and ``2j+1`` (``p0(2j) | p0(2j+1)<<2 | p1(2j)<<4 | p1(2j+1)<<6``, the
  8 columns of one 128-bit lane of 16-bit tokens), so it indexes a 4 KB table of ``vpshufb`` controls with
  no decoding; bf16 values interleave each unit's two halves (slot ``2d`` = value ``d``, ``2d+1`` = value
  ``8+d``), so one 32-byte load gives both halves in fp32 with a shift and an and.
* ``rsel uint8 [crows, windows]``: Samoyeds only, the format's ``row_index`` transposed.

So the kernel reads the operand's own bytes (values + 2 bits per value + the row-index bytes) and nothing
else; the windows of each compressed row are visited grouped by candidate row inside 4096-column K-blocks,
so partial sums stay in registers and are reduced once per run of windows.

Dense fallback
--------------
Where a kernel is slower than torch's dense path at a token count (many tokens: every compressed row keeps
different columns, so a gathered token cannot be reused across rows), ``backend="auto"`` decompresses tile
by tile (:func:`dense_tiles`: 128 compressed rows at a time, then ``F.linear``) and says so
(:func:`cpu_choice`).
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import json
import os
import platform
import shutil
import subprocess
import tempfile
import threading
import time
import weakref
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..formats import NMWeight, SamoyedsWeight

#: The C source of the CPU kernels.
SOURCE = Path(__file__).resolve().parents[2] / "kernels" / "cpu_sparse.c"
#: Paths from fastest to most portable.
ISAS = ("avx512", "avx2", "portable")
_FLAGS = {
    "avx512": ["-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512bf16", "-mavx2", "-mfma", "-mf16c"],
    "avx2": ["-mavx2", "-mfma", "-mf16c"],
    "portable": [],
}
_DEFINE = {"avx512": 512, "avx2": 2, "portable": 0}
_DT = {torch.float32: 0, torch.float16: 1, torch.bfloat16: 2}
UNIT = 32  # dense columns per unit
TILE_CROWS = 128  # compressed rows per tile of the dense fallback (a tile of 1:2 rows at K=4096: 2 MB)


class _Args(ctypes.Structure):
    _fields_ = [("vals", ctypes.c_void_p), ("meta", ctypes.c_void_p), ("rsel", ctypes.c_void_p),
                ("x", ctypes.c_void_p), ("y", ctypes.c_void_p)] + [
        (n, ctypes.c_int64) for n in ("crows", "rows", "upr", "upw", "nwin", "n", "m", "vdtype", "xdtype", "T",
                                      "ldx", "ldy", "nthreads", "layout")]


# ----------------------------------------------------------------------------------------- detection
@functools.lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags as Linux names them (``/proc/cpuinfo``); empty where they cannot be read."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


@functools.lru_cache(maxsize=1)
def fast_bf16() -> bool:
    """Whether this CPU multiplies bf16 in hardware (AVX-512 BF16 / AMX-BF16 on x86, the BF16 extension on
    aarch64), so that torch's bf16 GEMM is fast; without it the dense tiles multiply in fp32."""
    return bool(cpu_flags() & {"avx512_bf16", "amx_bf16", "bf16"})


@functools.lru_cache(maxsize=1)
def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else :func:`platform.processor`."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def isa_supported(isa: str) -> str | None:
    """Why ``isa`` cannot run on this CPU (None when it can)."""
    if isa == "portable":
        return None
    machine = platform.machine().lower()
    if machine not in ("x86_64", "amd64", "i686", "x86"):
        return f"{isa} needs an x86-64 CPU, this is {machine}"
    flags = cpu_flags()
    need = {"avx512": ("avx512f", "avx512bw", "avx512vl", "avx512_bf16", "fma", "f16c"),
            "avx2": ("avx2", "fma", "f16c")}[isa]
    missing = [f for f in need if f not in flags]
    if missing:
        return f"{isa} needs CPU flags {', '.join(missing)}" + ("" if flags else " (CPU flags unreadable)")
    return None


def _compiler() -> str | None:
    for cand in (os.environ.get("CC"), "cc", "gcc", "clang"):
        if cand and shutil.which(cand):
            return shutil.which(cand)
    return None


def cache_dir() -> Path:
    """Where compiled kernels are kept across processes."""
    env = os.environ.get("SAMOYEDS_LAB_CACHE")
    if env:
        return Path(env) / "cpu"
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "samoyeds-lab" / "cpu"


@functools.lru_cache(maxsize=None)
def _has_openmp(cc: str) -> bool:
    """True when ``cc -fopenmp`` builds a shared library (gcc does; Apple clang without libomp does not)."""
    with tempfile.TemporaryDirectory() as d:
        src = Path(d) / "omp.c"
        src.write_text("#include <omp.h>\nint f(void) { return omp_get_max_threads(); }\n")
        try:
            proc = subprocess.run([cc, "-fopenmp", "-shared", "-fPIC", str(src), "-o", str(Path(d) / "omp.so")],
                                  capture_output=True, timeout=60)
        except (OSError, subprocess.SubprocessError):
            return False
        return proc.returncode == 0


@dataclass(frozen=True)
class CpuBuild:
    """One compiled ISA path: the loaded library, where it came from and how long it took."""

    isa: str
    lib: ctypes.CDLL = field(repr=False)
    path: str
    compile_s: float
    cached: bool


class CpuKernelError(RuntimeError):
    """The C compiler rejected the CPU kernels for an ISA (the message carries its output)."""


_build_lock = threading.Lock()


@functools.lru_cache(maxsize=None)
def build(isa: str) -> CpuBuild:
    """Compile (or reuse from the disk cache) and load the kernels for ``isa``; raises CpuKernelError."""
    if isa not in ISAS:
        raise ValueError(f"isa: expected one of {', '.join(map(repr, ISAS))}, got {isa!r}")
    cc = _compiler()
    if cc is None:
        raise CpuKernelError("no C compiler found ($CC, cc, gcc, clang)")
    try:
        src = SOURCE.read_bytes()
    except OSError as exc:  # e.g. a non-editable install without the repository's kernels/ folder
        raise CpuKernelError(f"the CPU kernel source {SOURCE} cannot be read ({exc.strerror})") from None
    flags = ["-O3", "-fPIC", "-shared", "-std=c11", f"-DSL_ISA={_DEFINE[isa]}"] + _FLAGS[isa]
    try:
        version = subprocess.run([cc, "--version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        version = cc
    # OpenMP where the compiler has it: the library then shares torch's OpenMP runtime (see the C source)
    if _has_openmp(cc):
        flags = flags + ["-fopenmp"]
    key = hashlib.sha256(src + json.dumps([flags, version, platform.machine()]).encode()).hexdigest()[:16]
    out = cache_dir() / f"cpu_sparse_{isa}_{key}.so"
    with _build_lock:
        cached = out.exists()
        t0 = time.perf_counter()
        if not cached:
            out.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(suffix=".so", dir=out.parent)
            os.close(fd)
            try:
                proc = subprocess.run([cc, *flags, str(SOURCE), "-o", tmp, "-lpthread", "-lm"],
                                      capture_output=True, text=True, timeout=120)
                if proc.returncode != 0:
                    raise CpuKernelError(f"{Path(cc).name} could not build the {isa} path: "
                                         f"{(proc.stderr or proc.stdout).strip()[:400]}")
                os.replace(tmp, out)  # atomic: another process sees the whole file or none
            finally:
                if os.path.exists(tmp):
                    os.unlink(tmp)
        lib = ctypes.CDLL(str(out))
    lib.sl_gemm.argtypes = [ctypes.POINTER(_Args)]
    lib.sl_gemm.restype = ctypes.c_int
    lib.sl_decompress.argtypes = [ctypes.POINTER(_Args), ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p,
                                  ctypes.c_int64, ctypes.c_int64]
    lib.sl_decompress.restype = ctypes.c_int
    if lib.sl_isa() != _DEFINE[isa]:
        raise CpuKernelError(f"{out} reports ISA {lib.sl_isa()}, expected {_DEFINE[isa]}")
    return CpuBuild(isa, lib, str(out), time.perf_counter() - t0, cached)


@dataclass(frozen=True)
class CpuPath:
    """Which CPU path runs here (``isa``: avx512 / avx2 / portable / none) and why."""

    isa: str
    reason: str
    cpu: str
    compile_s: float | None = None
    cached: bool | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.isa, str) or self.isa not in ISAS + ("none",):
            raise ValueError(f"isa: expected one of {', '.join(map(repr, ISAS + ('none',)))}, got {self.isa!r}")
        for name in ("reason", "cpu"):
            if not isinstance(getattr(self, name), str):
                raise TypeError(f"{name}: expected a str, got {type(getattr(self, name)).__name__}")
        if self.compile_s is not None:
            from .._checks import check_float

            check_float("compile_s", self.compile_s, lo=0)
        if self.cached is not None and not isinstance(self.cached, bool):
            raise TypeError(f"cached: expected a bool or None, got {type(self.cached).__name__}")

    def line(self) -> str:
        extra = ""
        if self.compile_s is not None:
            extra = " (cached build)" if self.cached else f" (built in {self.compile_s:.1f} s, cached on disk)"
        return f"CPU kernels: {self.isa}{extra} — {self.reason}"


def _forced() -> str | None:
    v = os.environ.get("SAMOYEDS_LAB_CPU_ISA")
    if v is None or v == "":
        return None
    if v not in ISAS + ("none",):
        raise ValueError(f"SAMOYEDS_LAB_CPU_ISA: expected one of {', '.join(ISAS + ('none',))}, got {v!r}")
    return v


def _probe(forced: str | None) -> CpuPath:
    model = cpu_model()
    if forced == "none":
        return CpuPath("none", "forced by SAMOYEDS_LAB_CPU_ISA=none: dense tiles only", model)
    notes = []
    for isa in ISAS if forced is None else (forced,):
        why = isa_supported(isa)
        if why is not None:
            notes.append(why)
            continue
        try:
            b = build(isa)
        except CpuKernelError as exc:
            notes.append(str(exc))
            continue
        if forced is not None:
            reason = f"forced by SAMOYEDS_LAB_CPU_ISA={forced}"
        elif isa == "avx512":
            reason = "AVX-512 BW + BF16 present: vpermt2w gathers, vdpbf16ps products"
        elif isa == "avx2":
            reason = ("AVX2 + FMA present: vpshufb gathers of bf16 tokens (fp16 / fp32 tokens from 4: a dense "
                      "fp32 tile per row block; "
                      + "; ".join(notes) + ")")
        else:
            reason = "portable C (" + "; ".join(notes) + ")"
        return CpuPath(isa, reason, model, b.compile_s, b.cached)
    return CpuPath("none", "; ".join(notes) + "; dense tiles only", model)


@functools.lru_cache(maxsize=8)
def _cpu_path(forced: str | None) -> CpuPath:
    return _probe(forced)


def cpu_path() -> CpuPath:
    """The CPU path of this process (fastest ISA that the CPU has and the compiler builds)."""
    return _cpu_path(_forced())


# ----------------------------------------------------------------------------------------- operands
def cpu_unsupported(weight: object) -> str | None:
    """Why the CPU kernels cannot take ``weight`` (None when they can)."""
    if isinstance(weight, NMWeight):
        if (weight.n, weight.m) != (2, 4):
            return f"NMWeight {weight.n}:{weight.m} (the CPU kernels take 2:4)"
        return None
    if isinstance(weight, SamoyedsWeight):
        if weight.vector % UNIT:
            return f"vector={weight.vector} (the CPU kernels need a multiple of {UNIT})"
        return None
    return f"weight format {type(weight).__name__} (the CPU kernels take NMWeight 2:4 and SamoyedsWeight)"


@dataclass(frozen=True, eq=False)
class CpuOperand:
    """A weight in the CPU layout (see the module docstring)."""

    vals: torch.Tensor
    meta: torch.Tensor
    rsel: torch.Tensor | None
    rows: int
    cols: int
    n: int
    m: int
    upw: int
    nwin: int
    layout: str

    @property
    def crows(self) -> int:
        return self.vals.shape[0]

    @property
    def upr(self) -> int:
        return self.meta.shape[1]

    @property
    def dtype(self) -> torch.dtype:
        return self.vals.dtype

    @property
    def nbytes(self) -> int:
        """Bytes the kernel reads: values, metadata words and row-selection bytes."""
        return (self.vals.numel() * self.vals.element_size() + self.meta.numel() * 4
                + (self.rsel.numel() if self.rsel is not None else 0))


@functools.lru_cache(maxsize=64)
def _pair_perm(upr: int, upw: int) -> torch.Tensor:
    """Source value index (within a row) of each value slot of the pair layout."""
    perm = np.arange(upr * 16).reshape(upr, 16)
    out = perm.copy()
    j = np.arange(32)
    src_unit, src_v = (j >> 1) & 1, (j & 1) | ((j >> 2) << 1)
    for w0 in range(0, upr, upw):
        ue = min(w0 + upw, upr)
        for u in range(w0, ue - 1, 2):
            out[u: u + 2] = perm[u + src_unit, src_v].reshape(2, 16)
    return torch.from_numpy(out.reshape(-1).copy())


_OPS: "weakref.WeakKeyDictionary[object, dict[str, CpuOperand]]" = weakref.WeakKeyDictionary()

#: operand layouts (module docstring) and their codes in the C source (sl_args.layout)
LAYOUTS = {"natural": 0, "pair": 1, "lanes": 2}
#: value slot of each natural value index inside a unit, lanes layout with bf16 values (halves interleaved)
_LANES_PERM = torch.tensor([d + 8 * h for d in range(8) for h in range(2)])


def layout_for(isa: str, weight_dtype: torch.dtype, x_dtype: torch.dtype | None = None) -> str:
    """The layout the kernels of ``isa`` read for a weight of ``weight_dtype`` (and tokens of ``x_dtype``;
    None: the dense-tile fallback, which reads whichever the kernel reads)."""
    if isa not in (*ISAS, "none"):
        raise ValueError(f"isa: expected one of {', '.join(map(repr, (*ISAS, 'none')))}, got {isa!r}")
    if isa == "avx2":
        return "lanes"
    if isa == "avx512" and weight_dtype == torch.bfloat16 and x_dtype in (None, torch.bfloat16):
        return "pair"
    return "natural"


def cpu_operand(weight: NMWeight | SamoyedsWeight, *, layout: str = "natural") -> CpuOperand:
    """The CPU layout of ``weight`` (built once per weight and layout, then cached with the weight)."""
    if layout not in LAYOUTS:
        raise ValueError(f"layout: expected one of {', '.join(map(repr, LAYOUTS))}, got {layout!r}")
    why = cpu_unsupported(weight)
    if why is not None:
        raise ValueError(f"weight: {why}")
    per = _OPS.setdefault(weight, {})
    op = per.get(layout)
    if op is not None:
        return op
    rows, cols = weight.shape
    values, positions = weight.values.detach().cpu(), weight.positions.cpu()
    crows = values.shape[0]
    upr = -(-cols // UNIT)
    pad = upr * 16 - values.shape[1]
    if pad:
        values = torch.cat([values, values.new_zeros(crows, pad)], 1)
        padpos = torch.tensor([0, 1], dtype=torch.uint8).repeat(pad // 2).expand(crows, -1)
        positions = torch.cat([positions, padpos], 1)
    pos = positions.view(crows, upr, 8, 2).to(torch.int64)
    g = torch.arange(8)
    if layout == "lanes":  # byte j: groups 2j, 2j+1 (bits 2(g&1) for first positions, 4 + 2(g&1) for second)
        sh = (8 * (g >> 1) + 2 * (g & 1))
        word = ((pos[..., 0] << sh).sum(-1)) | ((pos[..., 1] << (sh + 4)).sum(-1))
    else:
        word = ((pos[..., 0] << 2 * g).sum(-1)) | ((pos[..., 1] << 2 * g).sum(-1) << 16)
    meta = torch.from_numpy(word.numpy().astype(np.uint32).view(np.int32)).contiguous()
    if isinstance(weight, SamoyedsWeight):
        upw, nwin, n, m = weight.vector // UNIT, cols // weight.vector, weight.n, weight.m
        rsel = weight.row_index.cpu().T.contiguous()
    else:
        # plain 2:4: 4096-column "windows" that only cut K into blocks (every one belongs to the row)
        upw = min(upr, 128)
        nwin, n, m, rsel = -(-upr // upw), 1, 1, None
    if layout == "pair":
        values = values.index_select(1, _pair_perm(upr, upw))
    elif layout == "lanes" and values.dtype == torch.bfloat16:
        values = values.view(crows, upr, 16).index_select(2, _LANES_PERM).view(crows, upr * 16)
    op = CpuOperand(values.contiguous(), meta, rsel, rows, cols, n, m, upw, nwin, layout)
    per[layout] = op
    return op


# ----------------------------------------------------------------------------------------- running
def _threads(work: int, threads: int | None) -> int:
    t = torch.get_num_threads() if threads is None else int(threads)
    return max(1, min(t, work // (1 << 18) + 1))  # a few µs of work per thread at least


def _gathered(x: torch.Tensor, idx: torch.Tensor | None, dtype: torch.dtype, ldx: int) -> torch.Tensor:
    rows = x if idx is None else x.index_select(0, idx)
    xg = torch.zeros(rows.shape[0], ldx, dtype=dtype)
    xg[:, : x.shape[1]] = rows
    return xg


def _args(op: CpuOperand, xg: torch.Tensor | None, y: torch.Tensor | None, threads: int) -> _Args:
    return _Args(
        op.vals.data_ptr(), op.meta.data_ptr(), op.rsel.data_ptr() if op.rsel is not None else None,
        xg.data_ptr() if xg is not None else None, y.data_ptr() if y is not None else None,
        op.crows, op.rows, op.upr, op.upw, op.nwin, op.n, op.m, _DT[op.dtype],
        _DT[xg.dtype] if xg is not None else 0, xg.shape[0] if xg is not None else 0,
        xg.shape[1] if xg is not None else 0, y.shape[1] if y is not None else 0, threads, LAYOUTS[op.layout])


def _check_call(weight: object, x: object, idx: object, isa: object, threads: object) -> torch.Tensor | None:
    """The arguments of :func:`kernel_gemm` / :func:`dense_tiles`, checked (named errors); returns ``idx``
    as int64 (or None)."""
    from .._checks import FLOAT_DTYPES, INT_DTYPES, check_int, check_tensor

    why = cpu_unsupported(weight)
    if why is not None:
        raise ValueError(f"weight: {why}")
    check_tensor("x", x, ndim=2, dtypes=FLOAT_DTYPES)
    if x.shape[1] != weight.shape[1]:
        raise ValueError(f"x: expected shape [tokens, {weight.shape[1]}] to match the weight's columns, "
                         f"got {tuple(x.shape)}")
    if x.device.type != "cpu":
        raise ValueError(f"x: expected a CPU tensor, got one on {x.device}")
    if isa is not None and isa not in ISAS + ("none",):
        raise ValueError(f"isa: expected one of {', '.join(map(repr, ISAS + ('none',)))}, got {isa!r}")
    if threads is not None:
        check_int("threads", threads, lo=1, hi=1024)
    if idx is None:
        return None
    check_tensor("idx", idx, ndim=1, dtypes=INT_DTYPES)
    i = idx.to(torch.int64)
    if i.numel() and (int(i.min()) < 0 or int(i.max()) >= x.shape[0]):
        raise ValueError(f"idx: expected row ids in [0, {x.shape[0]}) (no SENTINEL), got values in "
                         f"[{int(i.min())}, {int(i.max())}]")
    return i


def kernel_gemm(weight: NMWeight | SamoyedsWeight, x: torch.Tensor, idx: torch.Tensor | None = None, *,
                isa: str | None = None, threads: int | None = None) -> torch.Tensor:
    """``y [len(idx), rows] = x[idx] @ dense(weight)ᵀ`` in fp32 by the CPU kernel of ``isa`` (default: this
    machine's path). ``idx`` holds valid row ids only (no SENTINEL; the caller drops those).
    """
    return _kernel_gemm(weight, x, _check_call(weight, x, idx, isa, threads), isa, threads)


def _kernel_gemm(weight, x, idx, isa, threads) -> torch.Tensor:
    # unchecked: for callers that validated already (samoyeds_lab.kernels.ops)
    isa = isa or cpu_path().isa
    if isa == "none":
        raise ValueError("isa: no CPU kernel can run here (cpu_path() is 'none'); use dense_tiles")
    b = build(isa)
    op = cpu_operand(weight, layout=layout_for(isa, weight.dtype, x.dtype))
    pair = op.layout == "pair"
    # avx2: bf16 tokens stay bf16 (vpshufb picks them into fp32 lanes); the others go fp32 (vpermps gathers
    # below 4 tokens, dense tiles from 4)
    b16 = pair or (isa == "avx2" and x.dtype == torch.bfloat16)
    xdtype = torch.bfloat16 if b16 else torch.float32
    xg = _gathered(x, idx, xdtype, op.upr * UNIT)
    y = torch.zeros(xg.shape[0], op.rows, dtype=torch.float32)
    if xg.shape[0] == 0 or op.rows == 0:
        return y
    a = _args(op, xg, y, _threads(op.vals.numel() * xg.shape[0], threads))
    if b.lib.sl_gemm(ctypes.byref(a)) != 0:
        raise RuntimeError("CPU kernel: a worker reported a failure")
    return y


def dense_tiles(weight: NMWeight | SamoyedsWeight, x: torch.Tensor, idx: torch.Tensor | None = None, *,
                isa: str | None = None) -> torch.Tensor:
    """The same product through torch's dense ``F.linear``, decompressing 128 compressed rows at a time
    (never the whole dense weight). Returns fp32 ``[len(idx), rows]``."""
    return _dense_tiles(weight, x, _check_call(weight, x, idx, isa, None), isa)


def _dense_tiles(weight, x, idx, isa) -> torch.Tensor:
    # unchecked: for callers that validated already (samoyeds_lab.kernels.ops)
    rows, cols = weight.shape
    xs = x if idx is None else x.index_select(0, idx)
    y = torch.empty(xs.shape[0], rows, dtype=torch.float32)
    if xs.shape[0] == 0 or rows == 0:
        return y.zero_()
    # fp16 GEMMs are slow on CPUs, and so are bf16 ones without hardware bf16 (then fp32 is the fast one)
    mdt = torch.float32 if weight.dtype == torch.float16 or (weight.dtype == torch.bfloat16 and not fast_bf16()) \
        else weight.dtype
    xm = xs.to(mdt)
    isa = isa or cpu_path().isa
    # the layout the kernel of this path reads (one copy of the operand in memory)
    op = cpu_operand(weight, layout=layout_for(isa, weight.dtype))
    per = TILE_CROWS
    if op.rsel is not None:
        per = max(op.n, TILE_CROWS // op.n * op.n)
    drows_per = per // op.n * op.m if op.rsel is not None else per
    tile = torch.empty(drows_per, op.upr * UNIT, dtype=op.dtype)
    lib = build(isa).lib if isa != "none" else None
    for c0 in range(0, op.crows, per):
        c1 = min(c0 + per, op.crows)
        r0 = c0 // op.n * op.m if op.rsel is not None else c0
        r1 = c1 // op.n * op.m if op.rsel is not None else c1
        if lib is not None:
            a = _args(op, None, None, torch.get_num_threads())
            lib.sl_decompress(ctypes.byref(a), c0, c1, tile.data_ptr(), tile.shape[1], r0)
            t = tile[: r1 - r0, :cols]
        else:
            t = _torch_tile(weight, c0, c1)
        y[:, r0:r1] = F.linear(xm, t.to(mdt)).to(torch.float32)
    return y


def _torch_tile(weight: NMWeight | SamoyedsWeight, c0: int, c1: int) -> torch.Tensor:
    """Dense rows of compressed rows ``[c0, c1)`` in pure torch (the no-compiler path)."""
    if isinstance(weight, NMWeight):
        part = NMWeight(weight.values[c0:c1], weight.positions[c0:c1], 2, 4, (c1 - c0, weight.shape[1]))
        return part.to_dense()
    n, m = weight.n, weight.m
    part = SamoyedsWeight(weight.values[c0:c1], weight.positions[c0:c1], weight.row_index[:, c0:c1], n, m,
                          weight.vector, ((c1 - c0) // n * m, weight.shape[1]))
    return part.to_dense()


# ----------------------------------------------------------------------------------------- auto choice
#: Recorded CPU benchmarks (``samoyeds-lab bench cpu``) that ``backend="auto"`` follows.
RECORDS = Path(__file__).resolve().parents[2] / "data" / "bench" / "cpu_kernels.json"


@dataclass(frozen=True)
class CpuChoice:
    """What ``backend="auto"`` runs on the CPU for one call: ``mode`` ``"kernel"`` or ``"dense"`` (tiles)."""

    mode: str
    reason: str

    def __post_init__(self) -> None:
        if not isinstance(self.mode, str) or self.mode not in ("kernel", "dense"):
            raise ValueError(f"mode: expected 'kernel' or 'dense', got {self.mode!r}")
        if not isinstance(self.reason, str):
            raise TypeError(f"reason: expected a str, got {type(self.reason).__name__}")


def weight_kind(weight: object) -> str:
    """``"samoyeds"`` or ``"2:4"`` (the record key of a weight, or weight class, the CPU kernels take)."""
    return "samoyeds" if isinstance(weight, SamoyedsWeight) or weight is SamoyedsWeight else "2:4"


@functools.lru_cache(maxsize=4)
def _records(path: str) -> tuple[dict, ...]:
    p = Path(path)
    files = [p] if p.suffix == ".json" else sorted(p.glob("cpu_kernels*.json"))
    out: list[dict] = []
    for f in files:
        try:
            data = json.loads(f.read_text())
        except (OSError, ValueError):
            continue
        recs = data.get("records", []) if isinstance(data, dict) else []
        out += [r for r in recs if isinstance(r, dict) and r.get("op") == "gemm"]
    return tuple(out)


def cpu_records(path: str | os.PathLike | None = None) -> list[dict]:
    """The recorded per-call CPU timings (``op == "gemm"``) of every ``data/bench/cpu_kernels*.json`` (or of
    the file ``path``); ``[]`` if none. Each record names its CPU and ISA path, so a forced path
    (``SAMOYEDS_LAB_CPU_ISA``) follows its own measurements."""
    return list(_records(str(path or RECORDS.parent)))


def cpu_choice(weight: object, tokens: int, dtype: torch.dtype = torch.bfloat16, *,
               records: list[dict] | None = None) -> CpuChoice:
    """Kernel or dense tiles for ``tokens`` positions on this CPU, and why.

    Follows the recorded measurements of this CPU model and ISA path (same weight kind and dtype, the
    recorded token count nearest to ``tokens`` on a log scale, the thread count nearest to torch's): the
    dense tiles are taken where they were measured faster than the kernel. Without a record of this CPU,
    those of the same ISA path on another CPU (the reason says so); without any: the kernel.
    """
    from .._checks import FLOAT_DTYPES, check_int

    from ..formats import WEIGHT_FORMATS

    if not (weight in (SamoyedsWeight, NMWeight) or isinstance(weight, WEIGHT_FORMATS + (torch.Tensor,))):
        raise TypeError(f"weight: expected an NMWeight or SamoyedsWeight (or one of the two classes), "
                        f"got {type(weight).__name__}")
    tokens = check_int("tokens", tokens, lo=0)
    if not isinstance(dtype, torch.dtype) or dtype not in FLOAT_DTYPES:
        raise TypeError(f"dtype: expected torch.float16/bfloat16/float32, got {dtype!r}")
    if not (weight in (SamoyedsWeight, NMWeight) or cpu_unsupported(weight) is None):
        raise ValueError(f"weight: {cpu_unsupported(weight)}")
    if records is not None:
        if not isinstance(records, (list, tuple)) or not all(isinstance(r, dict) for r in records):
            raise TypeError(f"records: expected a list of benchmark records (dicts), got {type(records).__name__}")
    path = cpu_path()
    dt = str(dtype).removeprefix("torch.")
    if records is None:  # the recorded file: decided once per (path, kind, dtype, tokens, threads) and process
        return _cached_choice(path, weight_kind(weight), dt, max(int(tokens), 1), torch.get_num_threads())
    return _choice(path, weight_kind(weight), dt, max(int(tokens), 1), torch.get_num_threads(), records)


@functools.lru_cache(maxsize=4096)
def _cached_choice(path: CpuPath, kind: str, dt: str, tokens: int, th: int) -> CpuChoice:
    return _choice(path, kind, dt, tokens, th, cpu_records())


def _choice(path: CpuPath, kind: str, dt: str, tokens: int, th: int, recs: list[dict]) -> CpuChoice:
    import math

    if path.isa == "none":
        return CpuChoice("dense", f"no CPU kernel here ({path.reason})")
    same = [r for r in recs if r.get("isa") == path.isa and r.get("kind") == kind and r.get("dtype") == dt
            and r.get("kernel_ms") and r.get("tiles_ms")]
    mine = [r for r in same if r.get("cpu") == path.cpu]
    where = "this CPU"
    if not mine and same:  # the same path measured on another CPU: better than no measurement, and said so
        mine, where = same, f"another CPU, {same[0].get('cpu')}"
    if not mine:
        return CpuChoice("kernel", f"{path.isa} kernel (no recorded {kind} {dt} measurement of the {path.isa} path)")
    near_th = min({int(r["threads"]) for r in mine}, key=lambda v: (abs(v - th), v))
    mine = [r for r in mine if int(r["threads"]) == near_th]
    t = tokens
    near = min({int(r["tokens"]) for r in mine}, key=lambda v: (abs(math.log(v) - math.log(t)), v))
    at = [r for r in mine if int(r["tokens"]) == near]
    k = sorted(r["kernel_ms"] for r in at)[len(at) // 2]
    d = sorted(r["tiles_ms"] for r in at)[len(at) // 2]
    if d < k:
        return CpuChoice("dense", f"dense tiles: recorded {d:.2f} ms vs kernel {k:.2f} ms at {near} tokens "
                                  f"({path.isa}, {near_th} threads, {where}, {_r_date(at)})")
    return CpuChoice("kernel", f"{path.isa} kernel: recorded {k:.2f} ms vs dense tiles {d:.2f} ms at {near} tokens "
                               f"({near_th} threads, {where}, {_r_date(at)})")


def _r_date(recs: list[dict]) -> str:
    return str(recs[0].get("date", "undated"))


def available_isas() -> list[str]:
    """The ISA paths this CPU runs *and* this machine's compiler builds (the tests force each of them)."""
    out = []
    for isa in ISAS:
        if isa_supported(isa) is not None:
            continue
        try:
            build(isa)
        except CpuKernelError:
            continue
        out.append(isa)
    return out


def auto_summary(records: list[dict] | None = None) -> str:
    """One line: what ``backend="auto"`` runs on this CPU per token count, from the recorded measurements."""
    path = cpu_path()
    if path.isa == "none":
        return "auto: dense tiles at every token count (no CPU kernel here)"
    recs = cpu_records() if records is None else records
    th = torch.get_num_threads()
    parts = []
    for kind in ("samoyeds", "2:4"):
        same = [r for r in recs if r.get("isa") == path.isa and r.get("kind") == kind
                and r.get("dtype") == "bfloat16" and r.get("tiles_ms") and r.get("kernel_ms")]
        mine = [r for r in same if r.get("cpu") == path.cpu] or same
        if not mine:
            continue
        near_th = min({int(r["threads"]) for r in mine}, key=lambda v: (abs(v - th), v))
        toks = sorted({int(r["tokens"]) for r in mine if int(r["threads"]) == near_th})
        dense = [t for t in toks if cpu_choice(SamoyedsWeight if kind == "samoyeds" else NMWeight, t,
                                               records=[r for r in mine]).mode == "dense"]
        parts.append(f"{kind}: kernel" + (f", dense tiles at {', '.join(map(str, dense))} tokens" if dense else
                                          " at every recorded token count"))
    if not parts:
        return "auto: the kernel at every token count (no recorded bench cpu measurement of this CPU)"
    return "auto (recorded bf16 measurements of this CPU): " + "; ".join(parts)
