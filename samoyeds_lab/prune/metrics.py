"""How much a mask changes a layer: relative reconstruction error, in weight space or on activations."""

from __future__ import annotations

import math

import torch

from .._checks import check_tensor
from .scores import _check_finite, _check_weight, column_norms


def reconstruction_error(
    w: torch.Tensor, mask: torch.Tensor, acts: torch.Tensor | None = None
) -> torch.Tensor:
    """Relative error of the pruned layer ``W ⊙ mask``, on the outputs or on the weights.

    With calibration activations ``X [tokens, in]``::

        err = ||W Xᵀ − (W ⊙ mask) Xᵀ||_F / ||W Xᵀ||_F  =  ||(W ⊙ ¬mask) Xᵀ||_F / ||W Xᵀ||_F

    and without them the weight-space error ``||W ⊙ ¬mask||_F / ||W||_F``. Computed in fp32. A layer
    whose reference norm is zero has error 0 if the pruned part is zero too, else ``inf``.

    Parameters
    ----------
    w : torch.Tensor
        ``[out, in]`` weight (any ``[..., in]`` shape), fp16/bf16/fp32, finite.
    mask : torch.Tensor
        ``bool`` of ``w.shape``, ``True`` = kept.
    acts : torch.Tensor, optional
        ``[tokens, in]`` calibration activations (the layer's inputs).

    Returns
    -------
    torch.Tensor
        0-d fp32 tensor (``float(err)`` for a Python number).
    """
    w = _check_weight("w", w)
    check_tensor("mask", mask, dtypes=(torch.bool,))
    if tuple(mask.shape) != tuple(w.shape):
        raise ValueError(f"mask: expected the shape of w {tuple(w.shape)}, got {tuple(mask.shape)}")
    _check_finite("w", w)
    wf = w.to(torch.float32)
    dropped = wf.masked_fill(mask.to(w.device), 0.0)
    if acts is None:
        num = torch.linalg.vector_norm(dropped)
        den = torch.linalg.vector_norm(wf)
    else:
        column_norms(acts, w.shape[-1])  # validates shape, dtype, finiteness
        x = acts.reshape(math.prod(acts.shape[:-1]), w.shape[-1]).to(device=w.device, dtype=torch.float32)
        num = torch.linalg.vector_norm(torch.matmul(dropped, x.T))
        den = torch.linalg.vector_norm(torch.matmul(wf, x.T))
    if float(den) == 0.0:
        return torch.tensor(0.0 if float(num) == 0.0 else math.inf, dtype=torch.float32, device=w.device)
    return (num / den).to(torch.float32)
