"""Argument validators shared by the public API (internal): one rule per concept.

Every rule raises with the same message shape, ``"<name>: expected <what>, got <given>"``, so the same bad
input gets the same error from every entry point and every backend:

==================  =========================================================================================
concept             rule
==================  =========================================================================================
tensor              :func:`check_tensor` (type, ndim, shape, dtype, device, non-empty, finite values)
ids                 :func:`check_ids` (integer tensor, every id in ``[0, num)``, optionally distinct per row)
integer / size      :func:`check_int` (range), :func:`check_positive_int`, :func:`check_alloc` (a size is
                    checked against this machine's memory *before* anything is allocated)
real number         :func:`check_float` (finite unless allowed, range, open or closed ends)
choice / flag       :func:`check_choice`, :func:`check_bool`
pattern             :func:`check_nm` (an N:M pair with ``1 <= n <= m``), :func:`check_divisible`
instance / profile  :func:`check_instance` (the profile, weight and trace types are checked with it)
path                :func:`check_path` (a str / PathLike naming an existing file or directory)
==================  =========================================================================================

Wrong kinds (not a tensor, not an int, a wrong dtype) raise ``TypeError``; wrong values raise ``ValueError``
(``FileNotFoundError`` for a missing path). Pattern violations of a tensor's *contents* are
:class:`samoyeds_lab.errors.FormatError` and corrupt files :class:`samoyeds_lab.errors.CorruptFileError`,
both raised where the format is known.
"""

from __future__ import annotations

import math
import numbers
import os
from pathlib import Path
from typing import Any, Iterable, Sequence

import torch

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
INT_DTYPES = (torch.int8, torch.uint8, torch.int16, torch.int32, torch.int64)


def _dtype_names(dtypes: Iterable[torch.dtype]) -> str:
    return "/".join(str(d).replace("torch.", "") for d in dtypes)


def _short(v: object, limit: int = 60) -> str:
    r = repr(v)
    return r if len(r) <= limit else r[: limit - 3] + "..."


def check_tensor(
    name: str,
    t: object,
    *,
    ndim: int | Sequence[int] | None = None,
    dtypes: Iterable[torch.dtype] | None = None,
    shape: Sequence[int | None] | None = None,
    nonempty: bool = False,
    finite: bool = False,
    device: str | torch.device | None = None,
) -> torch.Tensor:
    """Return ``t`` if it is a tensor that passes every given condition, else raise.

    ``ndim`` may be one int or a tuple of allowed ranks; ``shape`` is a sequence of sizes with ``None`` for
    "any" (it implies ``ndim``); ``finite`` checks the values (a reduction, so not on a hot path);
    ``device`` compares the device type (``"cpu"``, ``"cuda"``).
    """
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(t).__name__}")
    if shape is not None:
        ndim = len(shape)
    if ndim is not None:
        allowed = (ndim,) if isinstance(ndim, int) else tuple(ndim)
        if t.ndim not in allowed:
            what = " or ".join(f"{d}-D" for d in allowed)
            raise ValueError(f"{name}: expected a {what} tensor, got shape {tuple(t.shape)}")
    if dtypes is not None:
        dtypes = tuple(dtypes)
        if t.dtype not in dtypes:
            raise TypeError(f"{name}: expected dtype {_dtype_names(dtypes)}, got {t.dtype}")
    if shape is not None and any(s is not None and s != g for s, g in zip(shape, t.shape)):
        want = "[" + ", ".join("*" if s is None else str(s) for s in shape) + "]"
        raise ValueError(f"{name}: expected shape {want}, got {tuple(t.shape)}")
    if nonempty and t.numel() == 0:
        raise ValueError(f"{name}: expected a non-empty tensor, got shape {tuple(t.shape)}")
    if device is not None and t.device.type != torch.device(device).type:
        raise ValueError(f"{name}: expected a tensor on {torch.device(device).type}, got one on {t.device}")
    if finite and t.is_floating_point() and t.numel() and t.device.type != "meta" and not bool(torch.isfinite(t).all()):
        bad = int((~torch.isfinite(t)).sum())
        raise ValueError(f"{name}: expected finite values, got {bad} NaN/inf of {t.numel()}")
    return t


def check_ids(
    name: str,
    ids: object,
    *,
    num: int,
    ndim: int | Sequence[int] | None = None,
    distinct_rows: bool = False,
    num_name: str = "num_experts",
) -> torch.Tensor:
    """Return ``ids`` if it is an integer tensor of ids in ``[0, num)``, else raise.

    ``distinct_rows`` also requires the ids along the last dimension (one token's choices) to differ.
    """
    t = check_tensor(name, ids, ndim=ndim, dtypes=INT_DTYPES)
    if t.numel():
        lo, hi = int(t.min()), int(t.max())
        if lo < 0 or hi >= num:
            raise ValueError(f"{name}: expected ids in [0, {num_name}={num}), got values in [{lo}, {hi}]")
        if distinct_rows and t.ndim >= 1 and t.shape[-1] > 1:
            s = torch.sort(t.reshape(-1, t.shape[-1]), dim=-1).values
            dup = (s[:, 1:] == s[:, :-1]).any(dim=-1)
            if bool(dup.any()):
                row = int(dup.nonzero()[0, 0])
                raise ValueError(
                    f"{name}: expected distinct ids in every row, got a repeated id in row {row} "
                    f"({t.reshape(-1, t.shape[-1])[row].tolist()})"
                )
    return t


def check_int(name: str, v: object, *, lo: int | None = None, hi: int | None = None) -> int:
    """Return ``v`` as an int if it is an integer within ``[lo, hi]``, else raise."""
    if isinstance(v, bool) or not isinstance(v, numbers.Integral):
        raise TypeError(f"{name}: expected an int, got {type(v).__name__} ({_short(v)})")
    v = int(v)
    if lo is not None and v < lo:
        raise ValueError(f"{name}: expected an int >= {lo}, got {v}")
    if hi is not None and v > hi:
        raise ValueError(f"{name}: expected an int <= {hi}, got {v}")
    return v


def check_positive_int(name: str, v: object, *, hi: int | None = None) -> int:
    """Return ``v`` as an int if it is an integer ``>= 1`` (and ``<= hi``), else raise."""
    return check_int(name, v, lo=1, hi=hi)


def check_float(
    name: str,
    v: object,
    *,
    lo: float | None = None,
    hi: float | None = None,
    lo_open: bool = False,
    hi_open: bool = False,
    allow_inf: bool = False,
) -> float:
    """Return ``v`` as a float if it is a real number in the given range, else raise.

    NaN is always refused; ``±inf`` only passes with ``allow_inf`` (and the range). ``lo_open`` /
    ``hi_open`` make an end exclusive (``lo=0, lo_open=True`` is "positive").
    """
    if isinstance(v, bool) or not isinstance(v, numbers.Real):
        if isinstance(v, torch.Tensor) and v.numel() == 1 and not v.dtype.is_complex:
            v = v.item()
        else:
            raise TypeError(f"{name}: expected a real number, got {type(v).__name__} ({_short(v)})")
    f = float(v)
    if math.isnan(f) or (math.isinf(f) and not allow_inf):
        raise ValueError(f"{name}: expected a finite number, got {f}")
    if lo is not None and (f <= lo if lo_open else f < lo):
        raise ValueError(f"{name}: expected a number {'>' if lo_open else '>='} {lo}, got {f}")
    if hi is not None and (f >= hi if hi_open else f > hi):
        raise ValueError(f"{name}: expected a number {'<' if hi_open else '<='} {hi}, got {f}")
    return f


def check_bool(name: str, v: object) -> bool:
    """Return ``v`` if it is a bool (NumPy's included), else raise (``0``/``1``/strings are refused)."""
    if isinstance(v, bool):
        return v
    try:
        import numpy as np

        if isinstance(v, np.bool_):
            return bool(v)
    except ImportError:  # pragma: no cover
        pass
    raise TypeError(f"{name}: expected a bool, got {type(v).__name__} ({_short(v)})")


def check_choice(name: str, v: object, choices: Iterable[Any]) -> Any:
    """Return ``v`` if it is one of ``choices`` (compared with ``==``, hashable types only), else raise."""
    choices = tuple(choices)
    try:
        ok = any(type(v) is type(c) and v == c for c in choices) or (
            isinstance(v, str) and v in choices)
    except Exception:  # noqa: BLE001 - a value whose == raises is not one of ours
        ok = False
    if not ok:
        raise ValueError(f"{name}: expected one of {', '.join(map(repr, choices))}; got {_short(v)}")
    return v


def check_nm(n_name: str, n: object, m_name: str, m: object, *, m_max: int | None = None) -> tuple[int, int]:
    """Return ``(n, m)`` if they form an N:M pattern (``1 <= n <= m``, ``m <= m_max``), else raise."""
    m = check_int(m_name, m, lo=1, hi=m_max)
    n = check_int(n_name, n, lo=1)
    if n > m:
        raise ValueError(f"{n_name}: expected an int <= {m_name}={m} (keep N of M), got {n}")
    return n, m


def check_divisible(name: str, value: int, divisor: int, divisor_name: str) -> None:
    """Raise a ValueError if ``value`` (the size called ``name``) is not a multiple of ``divisor``."""
    if value % divisor != 0:
        raise ValueError(
            f"{name}: expected a multiple of {divisor_name}={divisor}, got {value}"
        )


def check_instance(name: str, v: object, types: type | tuple[type, ...], what: str | None = None) -> Any:
    """Return ``v`` if it is an instance of ``types``, else raise a TypeError naming what was expected."""
    if not isinstance(v, types):
        if what is None:
            ts = types if isinstance(types, tuple) else (types,)
            what = " or ".join(t.__name__ for t in ts)
        raise TypeError(f"{name}: expected {what}, got {type(v).__name__}")
    return v


def check_path(name: str, p: object, *, kind: str = "file", must_exist: bool = True) -> Path:
    """Return ``p`` as a :class:`Path` if it is a str / PathLike (naming an existing ``kind``), else raise.

    ``kind`` is ``"file"``, ``"dir"`` or ``"any"``.
    """
    if isinstance(p, bytes) or not isinstance(p, (str, os.PathLike)):
        raise TypeError(f"{name}: expected a path (str or os.PathLike), got {type(p).__name__}")
    path = Path(p)
    if str(p) == "":
        raise ValueError(f"{name}: expected a path, got an empty string")
    if must_exist:
        if not path.exists():
            raise FileNotFoundError(f"{name}: {path}: no such {'directory' if kind == 'dir' else 'file'}")
        if kind == "file" and not path.is_file():
            raise ValueError(f"{name}: expected a file, got a directory {path}")
        if kind == "dir" and not path.is_dir():
            raise ValueError(f"{name}: expected a directory, got a file {path}")
    return path


def machine_memory_bytes() -> int:
    """This machine's physical memory in bytes (a large fallback where the OS does not say)."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):  # pragma: no cover - non-POSIX
        return 1 << 40


def _gb(b: float) -> str:
    return f"{b / 1e9:.1f} GB" if b >= 1e8 else f"{b / 1e6:.1f} MB"


def check_alloc(name: str, shape: Sequence[int], dtype: torch.dtype | int, *,
                limit_bytes: int | None = None, what: str = "tensor") -> int:
    """Raise before allocating a ``shape`` tensor of ``dtype`` that cannot fit in memory.

    ``name`` is the argument that set the size; ``dtype`` may be an item size in bytes. The limit is half
    of this machine's memory unless ``limit_bytes`` says otherwise. Returns the byte count.
    """
    item = dtype if isinstance(dtype, int) else torch.empty((), dtype=dtype).element_size()
    numel = 1
    for s in shape:
        numel *= int(s)
    nbytes = numel * item
    limit = machine_memory_bytes() // 2 if limit_bytes is None else int(limit_bytes)
    if nbytes > limit:
        raise ValueError(
            f"{name}: too large: a {what} of shape {tuple(int(s) for s in shape)} would need {_gb(nbytes)}, "
            f"more than the {_gb(limit)} allowed on this machine"
        )
    return nbytes
