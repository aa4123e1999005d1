"""Argument rules shared by the figure builders and panels (internal), on top of :mod:`samoyeds_lab._checks`.

Same message shape as the package's rules, ``"<name>: expected <what>, got <given>"``; wrong kinds raise
``TypeError``, wrong values ``ValueError``.
"""

from __future__ import annotations

import numbers
from typing import Any, Iterable, Mapping

import torch

from .._checks import _short, check_float, check_positive_int

#: The most experts a figure colours (an expert colour list, a timeline's colour bands): far above any
#: MoE model (DeepSeek-V3: 256), and small enough that a mistyped size fails at once instead of hanging.
MAX_EXPERTS = 1 << 16


def check_text(name: str, v: object, *, optional: bool = False) -> str | None:
    """Return ``v`` if it is a str (or None with ``optional``), else raise a TypeError."""
    if v is None and optional:
        return None
    if not isinstance(v, str):
        raise TypeError(f"{name}: expected a str, got {type(v).__name__} ({_short(v)})")
    return v


def check_optional_positive_int(name: str, v: object) -> int | None:
    """``None`` or an int ``>= 1``."""
    return None if v is None else check_positive_int(name, v)


def check_optional_float(name: str, v: object, **kw: Any) -> float | None:
    """``None`` or a finite real number (see :func:`samoyeds_lab._checks.check_float`)."""
    return None if v is None else check_float(name, v, **kw)


def check_str_keys(name: str, mapping: Mapping, what: str) -> None:
    """Raise a TypeError if a key of ``mapping`` is not a str (``what`` says what the keys are)."""
    for k in mapping:
        if not isinstance(k, str):
            raise TypeError(f"{name}: expected str {what}, got {type(k).__name__} {k!r}")


def check_fractions(name: str, t: torch.Tensor, *, tol: float = 1e-9) -> None:
    """Raise a ValueError unless every value of ``t`` is finite and in ``[0, 1]`` (with ``tol``)."""
    if t.numel() and (not bool(torch.isfinite(t).all()) or bool((t < -tol).any()) or bool((t > 1 + tol).any())):
        bad = t[~torch.isfinite(t) | (t < -tol) | (t > 1 + tol)]
        raise ValueError(f"{name}: expected fractions in [0, 1], got {bad.numel()} value(s) outside, e.g. "
                         f"{float(bad.reshape(-1)[0]):g}")


def check_counts(name: str, t: torch.Tensor) -> None:
    """Raise a ValueError unless every value of ``t`` is a finite, non-negative whole number."""
    if not t.numel():
        return
    d = t.double()
    ok = torch.isfinite(d) & (d >= 0) & (d == d.round())
    if not bool(ok.all()):
        bad = float(d[~ok].reshape(-1)[0])
        raise ValueError(f"{name}: expected non-negative whole-number counts, got {bad:g}")


def offered(value: object, options: Iterable[Any]) -> bool:
    """Whether ``value`` is one of ``options`` *and of its kind*: ``True`` is not ``1`` and ``2.0`` is not
    ``2`` unless the options hold floats (a widget given either would show a value it does not offer)."""
    options = tuple(options)
    if isinstance(value, bool):
        return any(isinstance(o, bool) and o == value for o in options)
    if isinstance(value, numbers.Real) and not isinstance(value, numbers.Integral):
        if not any(isinstance(o, numbers.Real) and not isinstance(o, numbers.Integral) for o in options):
            return False
    try:
        return value in options
    except Exception:  # noqa: BLE001 - a value whose == raises is not one of ours
        return False
