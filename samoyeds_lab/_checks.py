"""Small argument validators shared by the public API (internal)."""

from __future__ import annotations

from typing import Iterable

import torch

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
INT_DTYPES = (torch.int8, torch.uint8, torch.int16, torch.int32, torch.int64)


def _dtype_names(dtypes: Iterable[torch.dtype]) -> str:
    return "/".join(str(d).replace("torch.", "") for d in dtypes)


def check_tensor(
    name: str,
    t: object,
    *,
    ndim: int | None = None,
    dtypes: Iterable[torch.dtype] | None = None,
) -> torch.Tensor:
    """Return ``t`` if it is a tensor with ``ndim`` dimensions and one of ``dtypes``, else raise."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(t).__name__}")
    if ndim is not None and t.ndim != ndim:
        raise ValueError(f"{name}: expected a {ndim}-D tensor, got shape {tuple(t.shape)}")
    if dtypes is not None:
        dtypes = tuple(dtypes)
        if t.dtype not in dtypes:
            raise TypeError(f"{name}: expected dtype {_dtype_names(dtypes)}, got {t.dtype}")
    return t


def check_int(name: str, v: object, *, lo: int | None = None, hi: int | None = None) -> int:
    """Return ``v`` as an int if it is an integer within ``[lo, hi]``, else raise."""
    if isinstance(v, bool) or not isinstance(v, int):
        try:
            import numpy as np

            if isinstance(v, np.integer):
                v = int(v)
            else:
                raise TypeError
        except TypeError:
            raise TypeError(f"{name}: expected an int, got {type(v).__name__} ({v!r})") from None
    if lo is not None and v < lo:
        raise ValueError(f"{name}: expected an int >= {lo}, got {v}")
    if hi is not None and v > hi:
        raise ValueError(f"{name}: expected an int <= {hi}, got {v}")
    return int(v)


def check_divisible(name: str, value: int, divisor: int, divisor_name: str) -> None:
    """Raise a ValueError if ``value`` (the size called ``name``) is not a multiple of ``divisor``."""
    if value % divisor != 0:
        raise ValueError(
            f"{name}: expected a multiple of {divisor_name}={divisor}, got {value}"
        )
