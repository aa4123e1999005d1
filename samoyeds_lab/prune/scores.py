"""Importance scores for pruning: magnitude and Wanda (activation-aware), always computed in fp32.

A weight ``W [out, in]`` multiplies activations ``X [tokens, in]`` as ``Y = X Wᵀ``. Removing ``W[i, j]``
changes output ``i`` of every token ``t`` by ``W[i, j]·X[t, j]``, so the size of that change over the
calibration tokens is ``|W[i, j]| · ||X[:, j]||₂``: the Wanda score (Sun et al., ICLR'24). Magnitude
pruning assumes every input feature has the same scale and keeps ``|W[i, j]|`` only. The two agree
when every column of ``X`` has the same norm and differ most when a few input features are outliers,
which is exactly the situation of LLM activations.
"""

from __future__ import annotations

import math

import torch

from .._checks import FLOAT_DTYPES, check_tensor
from .masks import ScoreRows

#: dtypes accepted for calibration activations.
ACT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def _check_weight(name: str, w: object, min_ndim: int = 1) -> torch.Tensor:
    check_tensor(name, w, dtypes=FLOAT_DTYPES)
    assert isinstance(w, torch.Tensor)
    if w.ndim < min_ndim:
        raise ValueError(f"{name}: expected a {min_ndim}-D or higher tensor, got shape {tuple(w.shape)}")
    return w


def _raise_not_finite(name: str, t: torch.Tensor, row_offset: int = 0) -> None:
    """Raise a ValueError naming the first non-finite entry of ``t`` (its row shifted by ``row_offset``)."""
    idx = tuple(int(i) for i in (~torch.isfinite(t)).nonzero()[0])
    value = float(t[idx])
    if row_offset:
        idx = (idx[0] + row_offset,) + idx[1:]
    raise ValueError(f"{name}: expected finite values, found {value} at index {idx}")


def _check_finite(name: str, t: torch.Tensor) -> None:
    if t.numel() and not bool(torch.isfinite(t).all()):
        _raise_not_finite(name, t)


def _check_abs_finite(name: str, s: torch.Tensor, t: torch.Tensor, row_offset: int = 0) -> None:
    """Check ``t`` is finite given ``s = |t|``: one max-reduction (NaN and inf both propagate to it)."""
    if s.numel() and not math.isfinite(float(s.max())):
        _raise_not_finite(name, t.reshape(s.shape).float(), row_offset)


def column_norms(acts: object, in_features: int, *, name: str = "acts") -> torch.Tensor:
    """``||X[:, j]||₂`` for every input feature ``j``, in fp32.

    Parameters
    ----------
    acts : torch.Tensor
        ``[tokens, in_features]`` (or ``[..., in_features]``, leading dimensions are tokens) calibration
        activations, fp16/bf16/fp32/fp64, finite, at least one token.
    in_features : int
        The weight's input dimension (its last).

    Returns
    -------
    torch.Tensor
        fp32 ``[in_features]``.
    """
    check_tensor(name, acts, dtypes=ACT_DTYPES)
    assert isinstance(acts, torch.Tensor)
    if acts.ndim < 2:
        raise ValueError(
            f"{name}: expected [tokens, in_features={in_features}] activations, got shape {tuple(acts.shape)}"
        )
    if acts.shape[-1] != in_features:
        raise ValueError(
            f"{name}: expected in_features={in_features} (the weight's last dimension) as the last "
            f"dimension, got shape {tuple(acts.shape)}"
        )
    tokens = math.prod(acts.shape[:-1])
    if tokens == 0:
        raise ValueError(f"{name}: expected at least one calibration token, got shape {tuple(acts.shape)}")
    x = acts.reshape(tokens, in_features)
    norms = torch.linalg.vector_norm(x, ord=2, dim=0, dtype=torch.float32)
    if not bool(torch.isfinite(norms).all()):  # NaN/inf in acts propagate to their column's norm
        _check_finite(name, x)
        j = int((~torch.isfinite(norms)).nonzero()[0])
        raise ValueError(f"{name}: the fp32 norm of column {j} overflows ({float(norms[j])})")
    return norms


def magnitude_scores(w: torch.Tensor) -> torch.Tensor:
    """Magnitude scores ``S = |W|`` in fp32.

    Parameters
    ----------
    w : torch.Tensor
        Weight of any shape, fp16/bf16/fp32, finite.

    Returns
    -------
    torch.Tensor
        fp32 tensor of ``w.shape``.
    """
    return _magnitude("w", w)


def _magnitude(name: str, w: object) -> torch.Tensor:
    w = _check_weight(name, w)
    s = torch.empty(w.shape, dtype=torch.float32, device=w.device).copy_(w).abs_()
    _check_abs_finite(name, s, w)
    return s


def wanda_scores(w: torch.Tensor, acts: torch.Tensor) -> torch.Tensor:
    """Wanda scores ``S[i, j] = |W[i, j]| · ||X[:, j]||₂`` in fp32.

    Parameters
    ----------
    w : torch.Tensor
        ``[out, in]`` weight (or ``[..., in]``), fp16/bf16/fp32, finite.
    acts : torch.Tensor
        ``[tokens, in]`` calibration activations (inputs of this layer), finite.

    Returns
    -------
    torch.Tensor
        fp32 tensor of ``w.shape``.

    Notes
    -----
    Wanda compares scores per output row; every structured pattern here selects inside a row (N:M,
    2:4) or across rows of the same columns, so the scores are used as they are. With equal column
    norms ``c``, ``S = c·|W|`` and every mask equals the magnitude mask.
    """
    return _wanda("w", w, acts)


def _wanda(name: str, w: object, acts: object) -> torch.Tensor:
    w = _check_weight(name, w)
    norms = column_norms(acts, w.shape[-1]).to(w.device)
    s = torch.empty(w.shape, dtype=torch.float32, device=w.device).copy_(w).abs_()
    _check_abs_finite(name, s, w)
    return s.mul_(norms)


def score_rows(w: torch.Tensor, method: str, acts: torch.Tensor | None, name: str = "w") -> ScoreRows:
    """Row reader of the scores of ``w`` (viewed ``[-1, in]``) for the chunked mask builders (internal).

    Validates ``w``/``acts`` up front except finiteness of ``w``, which is checked per row block.
    """
    cols = w.shape[-1]
    flat = w.reshape(math.prod(w.shape[:-1]), cols)
    norms = column_norms(acts, cols).to(w.device) if method == "wanda" else None

    def rows(lo: int, hi: int) -> torch.Tensor:
        block = flat[lo:hi]
        s = torch.empty(block.shape, dtype=torch.float32, device=w.device).copy_(block).abs_()
        _check_abs_finite(f"{name} (as [-1, in])", s, block, row_offset=lo)
        if norms is not None:
            s.mul_(norms)
        return s

    return rows
