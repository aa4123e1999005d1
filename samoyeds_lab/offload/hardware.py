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
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

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
        path = Path(path)
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
        p.fp16_tflops is not None
        and p.fp16_sparse_tflops is not None
        and p.fp16_sparse_tflops < p.fp16_tflops
    ):
        raise ValueError(
            f"{origin}: field 'fp16_sparse_tflops': expected >= fp16_tflops={p.fp16_tflops}, "
            f"got {p.fp16_sparse_tflops}"
        )


def list_profiles(directory: str | os.PathLike | None = None) -> list[str]:
    """Names (file stems) of the profiles in ``directory`` (default :func:`profiles_dir`), sorted."""
    d = Path(directory) if directory is not None else profiles_dir()
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
    d = Path(directory) if directory is not None else profiles_dir()
    if s.endswith(".json") or os.sep in s or "/" in s:
        path = Path(s)
    else:
        path = d / f"{s}.json"
        if not path.is_file():
            raise ValueError(
                f"name_or_path: expected one of the profiles {list_profiles(d)} in {d} or a path "
                f"to a .json file, got {s!r}"
            )
    if not path.is_file():
        raise ValueError(f"name_or_path: no such profile file {str(path)!r}")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise CorruptFileError(f"{path}: not valid JSON ({e})") from None
    return HardwareProfile.from_dict(data, origin=str(path))
