"""Pure-torch CPU references for the sparse products (the ground truth every kernel is tested against).

For a weight ``W [rows, cols]`` in any format and activations ``x [tokens, cols]``::

    spmm(W, x)[i]            = W_dense @ x[i]              i.e.  y = x @ W_denseᵀ      [tokens, rows]
    ssmm(W, x, token_idx)[i] = W_dense @ x[token_idx[i]]                              [len(token_idx), rows]

Products are accumulated in fp32 (the Samoyeds paper's code accumulates in fp16; we do not) and the
result is returned in ``x.dtype`` unless ``out_dtype`` says otherwise. A :data:`SENTINEL` token id gives
a zero row, so padded selections can be passed straight through.
"""

from __future__ import annotations

import torch

from .._checks import FLOAT_DTYPES, INT_DTYPES, check_int, check_tensor
from ..formats import SENTINEL, WEIGHT_FORMATS


#: dtypes a product may be returned in (``out_dtype``).
OUT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def check_out_dtype(out_dtype: object) -> torch.dtype | None:
    """``out_dtype`` if it is ``None`` or a floating torch dtype, else raise naming it (internal)."""
    if out_dtype is None:
        return None
    if not isinstance(out_dtype, torch.dtype):
        raise TypeError(f"out_dtype: expected a torch.dtype such as torch.float32, got {type(out_dtype).__name__} "
                        f"({out_dtype!r})")
    if out_dtype not in OUT_DTYPES:
        raise TypeError(
            f"out_dtype: expected a floating dtype (float16/bfloat16/float32/float64), got {out_dtype} "
            f"(a product is not rounded to integers or bools)"
        )
    return out_dtype


def dense_of(weight: object, name: str = "weight") -> torch.Tensor:
    """The dense matrix of ``weight`` (any format of :mod:`samoyeds_lab.formats`, or a 2-D tensor)."""
    if not isinstance(name, str):
        raise TypeError(f"name: expected a str (the argument named in errors), got {type(name).__name__}")
    if isinstance(weight, WEIGHT_FORMATS):
        return weight.to_dense()
    if isinstance(weight, torch.Tensor):
        return check_tensor(name, weight, ndim=2, dtypes=FLOAT_DTYPES)
    raise TypeError(
        f"{name}: expected a 2-D tensor or one of {', '.join(c.__name__ for c in WEIGHT_FORMATS)}, "
        f"got {type(weight).__name__}"
    )


def _check_x(x: torch.Tensor, cols: int) -> None:
    check_tensor("x", x, ndim=2, dtypes=FLOAT_DTYPES)
    if x.shape[1] != cols:
        raise ValueError(f"x: expected shape [tokens, {cols}] to match the weight's {cols} columns, got {tuple(x.shape)}")


def check_token_idx(token_idx: torch.Tensor, num_tokens: int) -> torch.Tensor:
    """Validate a 1-D integer token-id tensor against ``num_tokens`` rows; return it as int64."""
    num_tokens = check_int("num_tokens", num_tokens, lo=0)
    check_tensor("token_idx", token_idx, ndim=1, dtypes=INT_DTYPES)
    idx = token_idx.to(torch.int64)
    if idx.numel():
        bad = ((idx < 0) & (idx != SENTINEL)) | (idx >= num_tokens)
        if bool(bad.any()):
            i = int(bad.nonzero()[0])
            raise ValueError(
                f"token_idx: expected ids in [0, {num_tokens}) or SENTINEL={SENTINEL}, "
                f"got {int(idx[i])} at position {i}"
            )
    return idx


def spmm(weight: object, x: torch.Tensor, *, out_dtype: torch.dtype | None = None) -> torch.Tensor:
    """Sparse weight × dense activations: ``y = x @ dense(weight)ᵀ`` with fp32 accumulation.

    Parameters
    ----------
    weight : NMWeight | SamoyedsWeight | VenomWeight | CSRWeight | DenseWeight | torch.Tensor
        ``[rows, cols]``.
    x : torch.Tensor
        ``[tokens, cols]`` fp16/bf16/fp32.
    out_dtype : torch.dtype, optional
        Result dtype (default ``x.dtype``), a floating dtype.

    Returns
    -------
    torch.Tensor
        ``[tokens, rows]``.
    """
    out_dtype = check_out_dtype(out_dtype)
    w = dense_of(weight)
    _check_x(x, w.shape[1])
    y = x.to(torch.float32) @ w.to(torch.float32).T
    return y.to(out_dtype or x.dtype)


def ssmm(
    weight: object, x: torch.Tensor, token_idx: torch.Tensor, *, out_dtype: torch.dtype | None = None
) -> torch.Tensor:
    """Sparse weight × *selected* tokens: ``y[i] = dense(weight) @ x[token_idx[i]]``, fp32 accumulate.

    Parameters
    ----------
    weight : any weight format or a 2-D tensor
        ``[rows, cols]``.
    x : torch.Tensor
        ``[tokens, cols]`` all tokens of the batch.
    token_idx : torch.Tensor
        1-D integer ids of the rows of ``x`` to use (e.g. ``TokenSelection.tokens_of(e)`` or a padded
        segment); :data:`SENTINEL` entries give zero rows. An empty selection gives ``[0, rows]``.

    Returns
    -------
    torch.Tensor
        ``[len(token_idx), rows]`` in ``out_dtype`` (default ``x.dtype``).
    """
    out_dtype = check_out_dtype(out_dtype)
    w = dense_of(weight)
    _check_x(x, w.shape[1])
    idx = check_token_idx(token_idx, x.shape[0])
    valid = idx != SENTINEL
    gathered = torch.zeros(idx.numel(), x.shape[1], dtype=torch.float32, device=x.device)
    gathered[valid] = x[idx[valid]].to(torch.float32)
    y = gathered @ w.to(torch.float32).T
    return y.to(out_dtype or x.dtype)
