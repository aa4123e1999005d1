"""Hardware profiles: the handful of numbers the offloading cost model needs, with their sources.

A profile is one JSON file in ``data/hardware/`` (or anywhere, loaded by path). Every file names its
``source`` (the vendor datasheet or standard the numbers come from) and its ``schema_version``; a learner
can copy one, edit a number and load the copy with :func:`load_profile`.

Units (decimal, as in datasheets): memory in GB = 1e9 bytes, bandwidths in GB/s = 1e9 bytes/s per
direction, compute in TFLOP/s = 1e12 floating-point operations per second (one multiply-add = 2 FLOP).

Kinds and the fields each one requires (besides ``schema_version``, ``name``, ``kind``, ``source``):

==============  =======================================================================================
``gpu``         ``fp16_tflops``, ``fp16_sparse_tflops``, ``memory_gb``, ``memory_bandwidth_gbs``,
                ``link_bandwidth_gbs`` (its host link)
``host``        ``fp16_tflops`` (CPU), ``memory_gb``, ``memory_bandwidth_gbs`` (DRAM)
``near_data``   ``fp16_tflops`` (near-data units), ``memory_gb``, ``memory_bandwidth_gbs`` (internal),
                ``link_bandwidth_gbs`` (its CXL/PCIe link)
``link``        ``link_bandwidth_gbs``
==============  =======================================================================================

Optional everywhere: any numeric field above, ``link`` (name of the link profile), ``url``, ``notes``.
For ``host`` and ``near_data`` profiles ``fp16_sparse_tflops`` is the *measured* dense-equivalent FLOP/s
of a sparse kernel working from the compressed operand, which on a CPU may be below the dense rate (only
GPU datasheets promise sparse ≥ dense).

:func:`probe_host` measures this machine (read bandwidth, dense and sparse-kernel throughput) and
returns a ``host`` profile whose ``source`` says it was probed, when and on which CPU.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

from samoyeds_lab._checks import check_alloc, check_path
from samoyeds_lab.errors import CorruptFileError

SCHEMA_VERSION = 1
KINDS = ("gpu", "host", "near_data", "link")
NUMERIC_FIELDS = (
    "fp16_tflops",
    "fp16_sparse_tflops",
    "memory_gb",
    "memory_bandwidth_gbs",
    "link_bandwidth_gbs",
)
_UNITS = {
    "fp16_tflops": "TFLOP/s",
    "fp16_sparse_tflops": "TFLOP/s",
    "memory_gb": "GB",
    "memory_bandwidth_gbs": "GB/s",
    "link_bandwidth_gbs": "GB/s",
}
REQUIRED_BY_KIND = {
    "gpu": ("fp16_tflops", "fp16_sparse_tflops", "memory_gb", "memory_bandwidth_gbs", "link_bandwidth_gbs"),
    "host": ("fp16_tflops", "memory_gb", "memory_bandwidth_gbs"),
    "near_data": ("fp16_tflops", "memory_gb", "memory_bandwidth_gbs", "link_bandwidth_gbs"),
    "link": ("link_bandwidth_gbs",),
}
COMMON_REQUIRED = ("schema_version", "name", "kind", "source")

_REPO = Path(__file__).resolve().parents[2]


def profiles_dir() -> Path:
    """Directory of the shipped profiles: ``$SAMOYEDS_LAB_HARDWARE_DIR`` if set, else ``data/hardware``."""
    env = os.environ.get("SAMOYEDS_LAB_HARDWARE_DIR")
    return Path(env) if env else _REPO / "data" / "hardware"


@dataclass(frozen=True)
class HardwareProfile:
    """One device, memory or link, with the peak figures of its datasheet.

    Attributes
    ----------
    name, kind, source : str
        Identifier, one of ``"gpu" | "host" | "near_data" | "link"``, and the datasheet/standard cited.
    fp16_tflops : float or None
        Peak dense fp16/bf16 tensor throughput, TFLOP/s (fp32 accumulate where the vendor splits).
    fp16_sparse_tflops : float or None
        Peak 2:4-sparse fp16/bf16 tensor throughput, TFLOP/s (dense-equivalent FLOP).
    memory_gb, memory_bandwidth_gbs : float or None
        Memory capacity (1e9 bytes) and its bandwidth (1e9 bytes/s).
    link_bandwidth_gbs : float or None
        Bandwidth of the device's link to the rest of the system, per direction, 1e9 bytes/s.
    link, url, notes : str or None
        Name of the link profile, the datasheet's address, free text (derivations, assumptions).
    schema_version : int
        Always :data:`SCHEMA_VERSION` for now.
    """

    name: str
    kind: str
    source: str
    fp16_tflops: float | None = None
    fp16_sparse_tflops: float | None = None
    memory_gb: float | None = None
    memory_bandwidth_gbs: float | None = None
    link_bandwidth_gbs: float | None = None
    link: str | None = None
    url: str | None = None
    notes: str | None = None
    schema_version: int = SCHEMA_VERSION

    def __post_init__(self) -> None:
        _validate(self, f"HardwareProfile {self.name!r}")

    # Convenience accessors in SI units (raise, naming the field, if the profile lacks it).
    def _si(self, field: str, scale: float) -> float:
        v = getattr(self, field)
        if v is None:
            raise ValueError(
                f"HardwareProfile {self.name!r}: field {field!r} is needed here but the profile "
                f"(kind {self.kind!r}) does not set it"
            )
        return float(v) * scale

    @property
    def flops(self) -> float:
        """Peak dense FLOP/s (``fp16_tflops · 1e12``)."""
        return self._si("fp16_tflops", 1e12)

    @property
    def sparse_flops(self) -> float:
        """Peak 2:4-sparse FLOP/s (``fp16_sparse_tflops · 1e12``)."""
        return self._si("fp16_sparse_tflops", 1e12)

    @property
    def memory_bytes(self) -> float:
        """Memory capacity in bytes (``memory_gb · 1e9``)."""
        return self._si("memory_gb", 1e9)

    @property
    def memory_bandwidth(self) -> float:
        """Memory bandwidth in bytes/s (``memory_bandwidth_gbs · 1e9``)."""
        return self._si("memory_bandwidth_gbs", 1e9)

    @property
    def link_bandwidth(self) -> float:
        """Link bandwidth in bytes/s per direction (``link_bandwidth_gbs · 1e9``)."""
        return self._si("link_bandwidth_gbs", 1e9)

    def to_dict(self) -> dict:
        """The JSON-ready dict (``None`` fields left out), the inverse of :meth:`from_dict`."""
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}

    @classmethod
    def from_dict(cls, data: object, *, origin: str = "profile") -> "HardwareProfile":
        """Build and validate a profile from a dict; errors name ``origin`` and the field."""
        if not isinstance(data, dict):
            raise CorruptFileError(f"{origin}: expected a JSON object, got {type(data).__name__}")
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - fields)
        if unknown:
            raise CorruptFileError(
                f"{origin}: unknown field {unknown[0]!r}; expected fields among {sorted(fields)}"
            )
        for f in COMMON_REQUIRED:
            if f not in data:
                raise CorruptFileError(f"{origin}: missing field {f!r} (required in every profile)")
        kind = data["kind"]
        if kind in REQUIRED_BY_KIND:
            for f in REQUIRED_BY_KIND[kind]:
                if data.get(f) is None:
                    raise CorruptFileError(
                        f"{origin}: missing field {f!r} (required for kind {kind!r}, in {_UNITS[f]})"
                    )
        try:
            return cls(**data)
        except (ValueError, TypeError) as e:
            msg = str(e)
            prefix = f"HardwareProfile {data.get('name')!r}: "
            if msg.startswith(prefix):
                msg = msg[len(prefix):]
            raise CorruptFileError(f"{origin}: {msg}") from None

    def save(self, path: str | os.PathLike) -> Path:
        """Write the profile as JSON to ``path`` and return the path."""
        path = check_path("path", path, must_exist=False)
        if path.is_dir():
            raise ValueError(f"path: expected a file name, got the directory {str(path)!r}")
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        return path


def _validate(p: HardwareProfile, origin: str) -> None:
    if p.schema_version != SCHEMA_VERSION or isinstance(p.schema_version, bool):
        raise ValueError(
            f"{origin}: field 'schema_version': expected {SCHEMA_VERSION}, got {p.schema_version!r}"
        )
    for f in ("name", "kind", "source"):
        v = getattr(p, f)
        if not isinstance(v, str) or not v.strip():
            raise TypeError(f"{origin}: field {f!r}: expected a non-empty string, got {v!r}")
    if p.kind not in KINDS:
        raise ValueError(f"{origin}: field 'kind': expected one of {KINDS}, got {p.kind!r}")
    for f in ("link", "url", "notes"):
        v = getattr(p, f)
        if v is not None and not isinstance(v, str):
            raise TypeError(f"{origin}: field {f!r}: expected a string or null, got {type(v).__name__}")
    for f in NUMERIC_FIELDS:
        v = getattr(p, f)
        if v is None:
            if f in REQUIRED_BY_KIND[p.kind]:
                raise ValueError(f"{origin}: missing field {f!r} (required for kind {p.kind!r})")
            continue
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise TypeError(
                f"{origin}: field {f!r}: expected a number in {_UNITS[f]}, got {type(v).__name__} ({v!r})"
            )
        if not math.isfinite(v) or v <= 0:
            raise ValueError(
                f"{origin}: field {f!r}: expected a finite number > 0 in {_UNITS[f]}, got {v!r}"
            )
    if (
        p.kind == "gpu"
        and p.fp16_tflops is not None
        and p.fp16_sparse_tflops is not None
        and p.fp16_sparse_tflops < p.fp16_tflops
    ):
        raise ValueError(
            f"{origin}: field 'fp16_sparse_tflops': expected >= fp16_tflops={p.fp16_tflops}, "
            f"got {p.fp16_sparse_tflops}"
        )


def list_profiles(directory: str | os.PathLike | None = None) -> list[str]:
    """Names (file stems) of the profiles in ``directory`` (default :func:`profiles_dir`), sorted."""
    d = check_path("directory", directory, kind="dir") if directory is not None else profiles_dir()
    return sorted(p.stem for p in d.glob("*.json"))


def load_profile(
    name_or_path: str | os.PathLike | HardwareProfile,
    *,
    directory: str | os.PathLike | None = None,
) -> HardwareProfile:
    """Load and validate a profile by shipped name (``"h100_sxm"``) or by path to a JSON file.

    A :class:`HardwareProfile` is returned unchanged, so functions can accept either.

    Raises
    ------
    ValueError
        Unknown name (the message lists the available ones), unreadable JSON, or a profile with a
        missing, unknown or out-of-range field (the message names the file and the field).
    """
    if isinstance(name_or_path, HardwareProfile):
        return name_or_path
    if not isinstance(name_or_path, (str, os.PathLike)):
        raise TypeError(
            f"name_or_path: expected a profile name, a path or a HardwareProfile, "
            f"got {type(name_or_path).__name__}"
        )
    s = os.fspath(name_or_path)
    if isinstance(s, bytes) or not s:
        raise ValueError(f"name_or_path: expected a profile name or a path, got {name_or_path!r}")
    d = check_path("directory", directory, kind="dir") if directory is not None else profiles_dir()
    if s.endswith(".json") or os.sep in s or "/" in s:
        path = Path(s)
    else:
        path = d / f"{s}.json"
        if not path.is_file():
            raise ValueError(
                f"name_or_path: expected one of the profiles {list_profiles(d)} in {d} or a path "
                f"to a .json file, got {s!r}"
            )
    if not path.exists():
        raise FileNotFoundError(f"name_or_path: no such profile file {str(path)!r}")
    if not path.is_file():
        raise ValueError(f"name_or_path: expected a profile .json file, got the directory {str(path)!r}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CorruptFileError(f"{path}: not valid JSON ({type(e).__name__}: {e})") from None
    return HardwareProfile.from_dict(data, origin=str(path))


# ------------------------------------------------------------------------------------------------ probe
def _physical_memory_gb() -> float:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1e9
    except (ValueError, OSError, AttributeError):  # pragma: no cover - non-POSIX
        return 16.0


@dataclass(frozen=True)
class HostProbe:
    r"""What :func:`probe_host` measured (the profile keeps the rates; this keeps every number).

    Attributes
    ----------
    profile : HardwareProfile
        ``host`` profile: ``memory_bandwidth_gbs`` = read bandwidth, ``fp16_tflops`` = dense matmul
        rate, ``fp16_sparse_tflops`` = sparse-kernel dense-equivalent rate, both in the probe's dtype.
    read_bandwidth_gbs : float
        ``torch.sum`` over ``bandwidth_bytes`` (:func:`samoyeds_lab.bench.cpu.read_bandwidth`).
    dense_tflops, sparse_tflops : float
        :math:`2 n \cdot rows \cdot cols / t` at ``compute_tokens`` tokens (dense FLOP counted for both).
    dense_stream_gbs, sparse_stream_gbs : float
        Bytes read per second by one-token calls, cache flushed: dense ``rows·cols·b`` and the compressed
        operand's :attr:`~samoyeds_lab.kernels.cpu.CpuOperand.nbytes`.
    dense_bytes, compressed_bytes : int
    shape : tuple[int, int]
    dtype, pattern, cpu, isa, date : str
    threads, compute_tokens : int
    """

    profile: HardwareProfile
    read_bandwidth_gbs: float
    dense_tflops: float
    sparse_tflops: float
    dense_stream_gbs: float
    sparse_stream_gbs: float
    dense_bytes: int
    compressed_bytes: int
    shape: tuple
    dtype: str
    pattern: str
    cpu: str
    isa: str
    date: str
    threads: int
    compute_tokens: int


def probe_host(*, rows: int = 2048, cols: int = 2048, dtype=None, pattern: str = "samoyeds",
               compute_tokens: int = 128, bandwidth_bytes: int = 1 << 28, repeats: int = 3,
               threads: int | None = None, seed: int = 0, name: str | None = None) -> HostProbe:
    """Measure this machine and return a ``host`` :class:`HardwareProfile` built from the measurements.

    One random ``rows × cols`` matrix is pruned (``pattern``: ``"samoyeds"`` 1:2 with V=128, or ``"2:4"``;
    magnitude) and timed three ways with the last-level cache flushed before every call
    (:func:`samoyeds_lab.bench.cpu.time_flushed`): torch's dense ``F.linear`` on the pruned weight, and
    the CPU sparse kernel (:func:`samoyeds_lab.kernels.cpu.kernel_gemm`) on the compressed operand, each at
    1 token (bytes/s) and at ``compute_tokens`` tokens (FLOP/s); plus the read bandwidth.
    A second or two on 2 cores at the defaults.

    Parameters
    ----------
    rows, cols : int
        Matrix shape (multiples of 128 for ``"samoyeds"``, of 32 for ``"2:4"``).
    dtype : torch.dtype, optional
        ``torch.bfloat16`` (default), ``torch.float16`` or ``torch.float32``; the profile's
        ``fp16_*`` fields hold the rates in this dtype.
    compute_tokens : int
        Tokens of the throughput probe (enough to be compute-bound).
    bandwidth_bytes : int
        Bytes summed by the read-bandwidth probe.
    repeats : int
        Timed repeats per probe (median).
    threads : int, optional
        Torch (and kernel) threads during the probe; default torch's current count.
    name : str, optional
        Profile name (default names the CPU and thread count).

    Raises
    ------
    ValueError
        Bad shapes, pattern, dtype or counts (the message names the argument); no CPU kernel can run here.
    """
    import datetime as _dt

    import torch
    import torch.nn.functional as F

    from .._checks import check_int
    from ..bench.cpu import read_bandwidth, threads as _threads_ctx, time_flushed
    from ..kernels import cpu as ck
    from ..prune import sparsify

    dtype = torch.bfloat16 if dtype is None else dtype
    if dtype not in (torch.bfloat16, torch.float16, torch.float32):
        raise ValueError(f"dtype: expected torch.bfloat16, torch.float16 or torch.float32, got {dtype!r}")
    if not isinstance(pattern, str) or pattern not in ("samoyeds", "2:4"):
        raise ValueError(f"pattern: expected 'samoyeds' or '2:4', got {pattern!r}")
    unit = 128 if pattern == "samoyeds" else 32
    rows = check_int("rows", rows, lo=unit)
    cols = check_int("cols", cols, lo=unit)
    for nm, v in (("rows", rows), ("cols", cols)):
        if v % unit:
            raise ValueError(f"{nm}: expected a multiple of {unit} for pattern {pattern!r}, got {v}")
    compute_tokens = check_int("compute_tokens", compute_tokens, lo=1)
    # the weight, its pruned and dense copies and the CPU operand: a handful of rows × cols fp32 matrices
    check_alloc("rows", (6, rows, cols), 4, what="probe matrices (rows x cols, a few copies)")
    check_alloc("compute_tokens", (2, compute_tokens, cols), 4, what="probe activations (compute_tokens x cols)")
    if name is not None and (not isinstance(name, str) or not name.strip()):
        raise TypeError(f"name: expected a non-empty str or None, got {type(name).__name__} ({name!r})")
    bandwidth_bytes = check_int("bandwidth_bytes", bandwidth_bytes, lo=1 << 20, hi=1 << 34)
    repeats = check_int("repeats", repeats, lo=1)
    if threads is not None:
        threads = check_int("threads", threads, lo=1, hi=max(1, os.cpu_count() or 1) * 4)
    path = ck.cpu_path()
    if path.isa == "none":
        raise ValueError(f"probe_host: no CPU sparse kernel can run on this machine ({path.reason})")
    g = torch.Generator().manual_seed(check_int("seed", seed, lo=0))
    w = (torch.randn(rows, cols, generator=g) * cols ** -0.5).to(dtype)
    op = (sparsify(w, "samoyeds", method="magnitude", n=1, m=2, vector=128) if pattern == "samoyeds"
          else sparsify(w, "2:4", method="magnitude"))
    dense = op.to_dense().to(dtype).contiguous()
    mdt = torch.float32 if dtype == torch.float16 else dtype  # fp16 GEMMs are slow on CPUs (as dense_tiles)
    dense_m = dense.to(mdt)
    x1 = torch.randn(1, cols, generator=g).to(dtype)
    xn = torch.randn(compute_tokens, cols, generator=g).to(dtype)
    with torch.no_grad(), _threads_ctx(threads):
        nth = torch.get_num_threads()
        bw = read_bandwidth(bandwidth_bytes, repeat=repeats)
        ck.kernel_gemm(op, x1)  # builds the CPU layout once (not timed)
        t_d1 = time_flushed(lambda: F.linear(x1.to(mdt), dense_m), repeat=repeats)["ms"] * 1e-3
        t_s1 = time_flushed(lambda: ck.kernel_gemm(op, x1), repeat=repeats)["ms"] * 1e-3
        t_dn = time_flushed(lambda: F.linear(xn.to(mdt), dense_m), repeat=repeats)["ms"] * 1e-3
        t_sn = time_flushed(lambda: ck.kernel_gemm(op, xn), repeat=repeats)["ms"] * 1e-3
    dense_bytes = rows * cols * dense_m.element_size()
    comp = ck.cpu_operand(op).nbytes
    flop = 2.0 * compute_tokens * rows * cols
    dt_name = str(dtype).removeprefix("torch.")
    date = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d")
    cores = os.cpu_count() or 1
    prof = HardwareProfile(
        name=name or f"this host: {path.cpu}, {nth} thread{'s' if nth > 1 else ''} (probed)",
        kind="host",
        source=(f"probed on this machine by samoyeds_lab.offload.hardware.probe_host on {date}: {path.cpu}, "
                f"{cores} cores, {nth} threads, CPU kernel path {path.isa}"),
        fp16_tflops=flop / t_dn / 1e12,
        fp16_sparse_tflops=flop / t_sn / 1e12,
        memory_gb=round(_physical_memory_gb(), 3),
        memory_bandwidth_gbs=bw,
        notes=(f"MEASURED, not a datasheet. memory_bandwidth_gbs: torch.sum over {bandwidth_bytes / 2**20:.0f} MiB. "
               f"fp16_tflops: torch F.linear ({str(mdt).removeprefix('torch.')}) on a pruned {rows}x{cols} "
               f"{dt_name} matrix at {compute_tokens} tokens; fp16_sparse_tflops: the {path.isa} sparse kernel on "
               f"its {pattern} operand ({comp / dense_bytes:.0%} of the dense bytes), dense-equivalent FLOP, same "
               f"tokens. One-token streaming: dense {dense_bytes / t_d1 / 1e9:.1f} GB/s, sparse kernel "
               f"{comp / t_s1 / 1e9:.1f} GB/s of compressed bytes. Medians of {repeats}, cache flushed; "
               f"a shared machine makes these noisy."),
    )
    return HostProbe(prof, bw, flop / t_dn / 1e12, flop / t_sn / 1e12, dense_bytes / t_d1 / 1e9,
                     comp / t_s1 / 1e9, int(dense_bytes), int(comp), (rows, cols), dt_name, pattern,
                     path.cpu, path.isa, date, int(nth), compute_tokens)
