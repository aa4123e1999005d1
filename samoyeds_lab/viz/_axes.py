"""Log axes whose tick labels read as the value they mark (internal).

Plotly labels a short log axis with bare mantissas ("2", "5", "4") between the decades, so a tick that
means 40 can read as 4. :func:`log_ticks` picks ticks on the 1-2-5 (or, for a short range, 1…9) sequence
inside the data range and labels each with its full value; :func:`log_axis` builds the axis dict.
"""

from __future__ import annotations

import math
from typing import Any, Iterable

__all__ = ["log_axis", "log_ticks", "positive_range"]

_STEPS = ((1.0, 2.0, 5.0), (1.0, 1.5, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0), (1.0,))


def positive_range(values: Iterable[float]) -> tuple[float, float] | None:
    """(min, max) of the finite positive values, or None when there are none."""
    vs = [float(v) for v in values if v is not None and math.isfinite(float(v)) and float(v) > 0]
    return (min(vs), max(vs)) if vs else None


def _fmt(v: float) -> str:
    if v >= 1e5 or v < 1e-3:
        return f"{v:.0e}".replace("e+0", "e").replace("e-0", "e-")
    return f"{v:g}"


def log_ticks(lo: float, hi: float, *, max_ticks: int = 9) -> tuple[list[float], list[str]]:
    """Tick values in ``[lo, hi]`` (both > 0) and their labels (full values, ``40`` not ``4``).

    1-2-5 per decade; 1…9 when that gives fewer than 3 ticks (a short range); 1 per decade when 1-2-5
    gives more than ``max_ticks`` (a long range, every ``k``-th decade if needed).
    """
    if not (lo > 0 and hi > 0 and math.isfinite(lo) and math.isfinite(hi)):
        raise ValueError(f"lo, hi: expected finite positive bounds, got {lo}, {hi}")
    lo, hi = min(lo, hi), max(lo, hi)

    def ticks(steps: tuple[float, ...], every: int = 1) -> list[float]:
        out = []
        for d in range(math.floor(math.log10(lo)) - 1, math.ceil(math.log10(hi)) + 1):
            if d % every:
                continue
            for s in steps:
                v = s * 10.0 ** d
                if lo * (1 - 1e-9) <= v <= hi * (1 + 1e-9):
                    out.append(float(f"{v:.6g}"))
        return out

    vals = ticks(_STEPS[0])
    if len(vals) < 3:
        vals = ticks(_STEPS[1])
        if len(vals) > max_ticks:
            vals = vals[:: math.ceil(len(vals) / max_ticks)]
    elif len(vals) > max_ticks:
        vals = ticks(_STEPS[2])
        every = 1
        while len(vals) > max_ticks:
            every += 1
            vals = ticks(_STEPS[2], every)
    if not vals:  # a range inside one step: its two ends
        vals = [float(f"{lo:.3g}"), float(f"{hi:.3g}")]
    return vals, [_fmt(v) for v in vals]


def log_axis(title: str, lo: float, hi: float, *, pad: float = 1.15, **extra: Any) -> dict[str, Any]:
    """A plotly log axis over ``[lo/pad, hi·pad]`` with :func:`log_ticks` labels."""
    a, b = lo / pad, hi * pad
    vals, text = log_ticks(a, b)
    return dict(type="log", title=dict(text=title), range=[math.log10(a), math.log10(b)], tickvals=vals,
                ticktext=text, **extra)
