"""How much a mask changes a layer: relative reconstruction error, in weight space or on activations, and
for a SwiGLU expert the fraction of neurons that keep both their gate and their up weights."""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

from .._checks import check_int, check_tensor
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


class LiveNeurons(NamedTuple):
    """Result of :func:`live_neuron_fraction`.

    Attributes
    ----------
    per_window : torch.Tensor
        ``float64 [windows]``: for window ``w``, the fraction of neurons whose gate *and* up rows both keep a
        weight inside window ``w`` (both projections read that slice of ``x``).
    overall : float
        The fraction of neurons whose gate row and up row each keep at least one weight anywhere: the
        neurons with ``silu(gate·x) ⊙ (up·x)`` not identically zero.
    paired_per_window : torch.Tensor
        ``float64 [windows]``: in window ``w``, of the neurons whose gate or up keeps a weight there, the
        fraction whose gate and up both do (0 where neither keeps anything).
    paired : float
        Of the neurons whose gate or up keeps any weight, the fraction whose gate and up both do.
    """

    per_window: torch.Tensor
    overall: float
    paired_per_window: torch.Tensor
    paired: float


def live_neuron_fraction(
    gate_mask: torch.Tensor, up_mask: torch.Tensor, vector: int | None = None
) -> LiveNeurons:
    """Fraction of SwiGLU neurons that survive pruning: gate and up both keep at least one weight.

    Neuron ``i`` of an expert computes ``silu(W_gate[i] · x) · (W_up[i] · x)``; if all of row ``i`` of either
    projection is pruned the product is 0 for every input and the neuron is dead. With ``G = gate_mask``,
    ``U = up_mask`` (``[..., I, H]``, ``True`` = kept), ``V = vector`` and ``N`` the number of neurons
    (all rows of all leading matrices)::

        per_window[w] = #{i : any(G[i, wV:(w+1)V]) and any(U[i, wV:(w+1)V])} / N
        overall       = #{i : any(G[i, :]) and any(U[i, :])} / N

    and, among the neurons that keep anything at all, the fraction that keep both (how much of what the
    masks keep is usable)::

        paired_per_window[w] = #{both in window w} / #{G or U keeps a weight in window w}
        paired               = #{both anywhere}    / #{G or U keeps a weight anywhere}

    With one window per row (``V = H``, e.g. V=128 on hidden 128) ``per_window[0] == overall``. Samoyeds
    masks keep ``n`` of every ``m`` row segments per window, so ``per_window[w] <= n/m`` always; masks that
    share their kept rows (:func:`~samoyeds_lab.prune.masks.samoyeds_masks_joint`) reach it, with
    ``paired = paired_per_window[w] = 1`` (when every kept row segment holds a weight), and ``overall`` is
    then the fraction of neurons kept in at least one window (``n/m`` with one window per row; up to 1 with
    several). Independent selection loses the neurons where the two choices disagree.

    Parameters
    ----------
    gate_mask, up_mask : torch.Tensor
        ``bool [..., I, H]`` keep-masks (or ``W != 0`` of the pruned weights) of the same shape and device.
    vector : int, optional
        Window width ``V`` (a divisor of ``H``); ``None`` = the whole row is one window.

    Returns
    -------
    LiveNeurons
        ``(per_window, overall, paired_per_window, paired)``, the tensors ``float64 [H / V]`` on the CPU;
        all 0 for masks with no rows (``H / V`` windows) or no columns (no windows).
    """
    check_tensor("gate_mask", gate_mask, dtypes=(torch.bool,))
    check_tensor("up_mask", up_mask, dtypes=(torch.bool,))
    if gate_mask.ndim < 2:
        raise ValueError(f"gate_mask: expected a [..., I, H] mask (2-D or higher), got shape {tuple(gate_mask.shape)}")
    if tuple(up_mask.shape) != tuple(gate_mask.shape):
        raise ValueError(
            f"up_mask: expected the shape of gate_mask {tuple(gate_mask.shape)} (gate and up of one expert), got "
            f"{tuple(up_mask.shape)}"
        )
    if up_mask.device != gate_mask.device:
        raise ValueError(f"up_mask: expected the device of gate_mask ({gate_mask.device}), got {up_mask.device}")
    cols = gate_mask.shape[-1]
    v = max(cols, 1) if vector is None else check_int("vector", vector, lo=1)
    if cols % v:
        raise ValueError(f"vector: expected a divisor of the masks' last dimension H={cols}, got {v}")
    windows = cols // v
    neurons = math.prod(gate_mask.shape[:-1])
    if neurons == 0 or cols == 0:
        zeros = torch.zeros(windows, dtype=torch.float64)
        return LiveNeurons(zeros, 0.0, zeros.clone(), 0.0)
    g = gate_mask.reshape(neurons, windows, v).any(-1)  # [N, windows]
    u = up_mask.reshape(neurons, windows, v).any(-1)
    both = (g & u).sum(0).to(torch.float64).cpu()
    either = (g | u).sum(0).to(torch.float64).cpu()
    g_any, u_any = g.any(-1), u.any(-1)
    both_any = int(torch.count_nonzero(g_any & u_any))
    either_any = int(torch.count_nonzero(g_any | u_any))
    paired_per_window = torch.where(either > 0, both / either.clamp(min=1), torch.zeros((), dtype=torch.float64))
    return LiveNeurons(both / neurons, both_any / neurons, paired_per_window,
                       both_any / either_any if either_any else 0.0)
