"""Paired projections pruned together: the gate and up weights of a SwiGLU expert share one row selection.

A SwiGLU neuron ``i`` computes ``silu(W_gate[i] · x) · (W_up[i] · x)``; it is dead when either row is
empty. Under the Samoyeds pattern (``n`` of every ``m`` rows per ``V``-wide window, then 2:4) gate and up
pruned one by one keep different rows of a window, so many neurons keep only one of the two. The
functions here choose the rows once for the pair (:func:`~samoyeds_lab.prune.masks.samoyeds_masks_joint`
on the pair's magnitude or Wanda scores; for second-order OBS, :func:`~samoyeds_lab.prune.obs.select_rows`
on the pair's normalised :func:`~samoyeds_lab.prune.obs.obs_row_scores`, both computed on the one Hessian
of the shared input) and keep each projection's own 2:4 choice inside the kept rows::

    masks = prune_masks_joint([W_gate, W_up], "samoyeds", method="wanda", acts=X, vector=32)
    ops   = sparsify_joint([W_gate, W_up], "samoyeds", method="wanda", acts=X, vector=32)

Patterns other than ``"samoyeds"`` keep weights in every row (N:M, VENOM, 2:4) or have no rows to share
(unstructured, dense), so they are pruned one projection at a time, exactly as
:func:`~samoyeds_lab.prune.prune_mask` / :func:`~samoyeds_lab.prune.sparsify` do.
"""

from __future__ import annotations

from typing import Any

import torch

from ..formats import compress_samoyeds
from . import masks as _m
from .api import parse_pattern, prune_mask, sparsify
from .scores import _check_weight, column_norms, score_rows

#: Methods with a joint row selection: magnitude and Wanda (fixed scores), and second-order OBS (row scores
#: ``Σ W² / [H⁻¹]_cc`` of the un-updated weights on the shared Hessian, then the OBS sweep of each projection
#: with the shared rows held fixed).
JOINT_METHODS = ("magnitude", "wanda", "obs")


def _check_pair(weights: object) -> list[torch.Tensor]:
    if isinstance(weights, torch.Tensor) or not isinstance(weights, (list, tuple)):
        raise TypeError(
            f"weights: expected a list of weights of the same shape (e.g. [W_gate, W_up]), got {type(weights).__name__}"
        )
    if not weights:
        raise ValueError(f"weights: expected at least one weight, got an empty {type(weights).__name__}")
    out = [_check_weight(f"weights[{i}]", w) for i, w in enumerate(weights)]
    for i, w in enumerate(out[1:], 1):
        if tuple(w.shape) != tuple(out[0].shape):
            raise ValueError(
                f"weights[{i}]: expected the shape of weights[0] {tuple(out[0].shape)} (paired projections share "
                f"one row selection), got {tuple(w.shape)}"
            )
        if w.device != out[0].device:
            raise ValueError(f"weights[{i}]: expected the device of weights[0] ({out[0].device}), got {w.device}")
    return out


def _check_joint_method(method: object, acts: object) -> str:
    if not isinstance(method, str):
        raise TypeError(f"method: expected one of {', '.join(map(repr, JOINT_METHODS))}, got {type(method).__name__}")
    key = method.strip().lower()
    if key not in JOINT_METHODS:
        raise ValueError(
            f"method: joint row selection scores with one of {', '.join(map(repr, JOINT_METHODS))}, got {method!r}"
            " (prune the projections one by one for other methods)"
        )
    if key in ("wanda", "obs") and acts is None:
        raise ValueError(f"acts: required for method={key!r} ([tokens, in_features] calibration activations)")
    if key == "magnitude" and acts is not None:
        raise ValueError(
            f"acts: method='magnitude' takes no activations (only method='wanda' uses them), got {type(acts).__name__}"
        )
    return key


def _normalised(row_scores: torch.Tensor) -> torch.Tensor:
    s = row_scores.to(torch.float64)
    total = float(s.sum())
    return s / total if total > 0 else s


def _obs_joint(ws: list[torch.Tensor], acts: torch.Tensor, n: int, m: int, vector: int):
    """``[(w_pruned, mask)]`` of every weight: OBS with one row selection for all (the module docstring)."""
    from . import obs as _obs

    for i, w in enumerate(ws):
        if w.ndim != 2:
            raise ValueError(f"weights[{i}]: expected a 2-D [rows, cols] weight for method='obs', got shape "
                             f"{tuple(w.shape)}")
    hess = _obs.obs_hessian(acts, ws[0].shape[-1])
    combined = sum(_normalised(_obs.obs_row_scores(w, hessian=hess, vector=vector)) for w in ws)
    rows = _obs.select_rows(combined, n, m)
    return [_obs.obs_prune(w, None, "samoyeds", rows=rows, hessian=hess, n=n, m=m, vector=vector) for w in ws]


def prune_masks_joint(
    weights: list[torch.Tensor],
    pattern: str = "samoyeds",
    method: str = "magnitude",
    acts: torch.Tensor | None = None,
    **pattern_kwargs: Any,
) -> list[torch.Tensor]:
    """Keep-masks of paired projections (gate, up) that share the Samoyeds row selection.

    For ``"samoyeds"``: scores ``S_p = |W_p|`` (magnitude) or ``|W_p| · ‖X_{:,j}‖₂`` (Wanda; ``X`` is the input
    both projections read), then :func:`~samoyeds_lab.prune.masks.samoyeds_masks_joint` (rows chosen once from
    the per-projection normalised row scores, 2:4 per projection). With ``"obs"``: ``H = 2XᵀX/n`` once,
    ``row_score_p = obs_row_scores(W_p, H)`` divided by its total, summed over ``p``, ``select_rows`` of the
    sum, then ``obs_prune(W_p, rows=…, hessian=H)`` per projection (its 2:4 step and weight updates are the
    projection's own; :func:`prune_masks_joint` returns the masks, :func:`sparsify_joint` the updated
    operands). Every other pattern: ``[prune_mask(W_p, pattern, method, acts) for W_p in weights]``.

    Parameters
    ----------
    weights : list of torch.Tensor
        ``[rows, cols]`` (or ``[..., rows, cols]``) weights of the same shape and device, fp16/bf16/fp32, finite.
    pattern : str
        As for :func:`~samoyeds_lab.prune.prune_mask` (default ``"samoyeds"``: keywords ``n=1, m=2,
        vector=128``; windows per row = ``cols / vector``).
    method : str
        ``"magnitude"`` (default), ``"wanda"`` or ``"obs"``.
    acts : torch.Tensor, optional
        ``[tokens, cols]`` calibration inputs shared by the projections; required for ``"wanda"`` and
        ``"obs"``, refused for ``"magnitude"``.
    **pattern_kwargs
        The pattern's keywords.

    Returns
    -------
    list of torch.Tensor
        One ``bool`` mask per weight.
    """
    ws = _check_pair(weights)
    kind, p = parse_pattern(pattern, **pattern_kwargs)
    if kind != "samoyeds":
        return [prune_mask(w, pattern, method, acts, **pattern_kwargs) for w in ws]
    method = _check_joint_method(method, acts)
    shape = tuple(ws[0].shape)
    if ws[0].ndim < 2:
        raise ValueError(f"weights[0]: expected a 2-D [rows, cols] weight for pattern {pattern!r}, got shape {shape}")
    n, m, vector = _m._check_samoyeds(p["n"], p["m"], p["vector"])
    _m._check_samoyeds_shape("weights[0]", shape, m, vector)
    if acts is not None:
        column_norms(acts, shape[-1])  # shape, dtype, finiteness: before any score is computed
    if method == "obs":
        return [mask for _, mask in _obs_joint(ws, acts, n, m, vector)]
    readers = [score_rows(w, method, acts, f"weights[{i}]") for i, w in enumerate(ws)]
    return _m._samoyeds_joint_rows(readers, shape, n, m, vector, ws[0].device)


def sparsify_joint(
    weights: list[torch.Tensor],
    pattern: str = "samoyeds",
    method: str = "magnitude",
    acts: torch.Tensor | None = None,
    **pattern_kwargs: Any,
) -> list[Any]:
    """Prune paired ``[rows, cols]`` projections with :func:`prune_masks_joint` and compress each.

    ``ops[p].to_dense() == weights[p] ⊙ masks[p]`` exactly (``"obs"``: the OBS-updated weight, zero outside
    the mask, as :func:`~samoyeds_lab.prune.sparsify` gives); the operands are those of
    :func:`~samoyeds_lab.prune.sparsify` (``SamoyedsWeight`` for ``"samoyeds"``, whose row indices are then
    identical across the pair). Patterns other than ``"samoyeds"`` are ``[sparsify(W_p, …) for W_p in
    weights]``.
    """
    ws = _check_pair(weights)
    for i, w in enumerate(ws):
        if w.ndim != 2:
            raise ValueError(f"weights[{i}]: expected a 2-D [rows, cols] weight, got shape {tuple(w.shape)}")
    kind, p = parse_pattern(pattern, **pattern_kwargs)
    if kind != "samoyeds":
        return [sparsify(w, pattern, method, acts, **pattern_kwargs) for w in ws]
    if _check_joint_method(method, acts) == "obs":
        n, m, vector = _m._check_samoyeds(p["n"], p["m"], p["vector"])
        _m._check_samoyeds_shape("weights[0]", tuple(ws[0].shape), m, vector)
        column_norms(acts, ws[0].shape[-1])
        pruned = [w_obs for w_obs, _ in _obs_joint(ws, acts, n, m, vector)]
    else:
        masks = prune_masks_joint(ws, pattern, method, acts, **pattern_kwargs)
        pruned = [w.masked_fill(~mk, 0) for w, mk in zip(ws, masks)]
    return [compress_samoyeds(w, n=p["n"], m=p["m"], vector=p["vector"]) for w in pruned]
