"""Second-order (OBS / SparseGPT-style) pruning: choose the mask *and* update the kept weights.

A layer ``Y = X Wᵀ`` (``W [rows, K]``, calibration inputs ``X [n, K]``) is pruned to minimise the
output error ``||X Wᵀ − X Ŵᵀ||²`` row by row. Its quadratic form is the Hessian

    H = 2 XᵀX / n   (+ λ I,  λ = percdamp · mean diag(H))

shared by every row. Optimal Brain Surgeon (OBS) removes a weight ``w_q`` at the cost (saliency)
``w_q² / [H⁻¹]_qq`` and moves the weights still free by ``δ = −(w_q / [H⁻¹]_qq) · H⁻¹[:, q]``.
SparseGPT (Frantar & Alistarh, arXiv 2301.00774) makes this cheap for all rows at once: the columns are
visited left to right and, once column ``c`` is passed, it is frozen. The inverse Hessians of the
shrinking free sets ``{c, …, K−1}`` are the rows of the upper Cholesky factor ``U`` of ``H⁻¹``
(``H⁻¹ = UᵀU``), so pruning column ``c`` of a row with error ``e = w_c / U_cc`` updates the later
columns by ``−e · U[c, c+1:]``, and the saliency of a still-free weight is ``w_c² / U_cc²``. Updates
are applied inside a block of ``blocksize`` columns at once and to later columns lazily, one matrix
product per block (arithmetically the same result as the column-by-column sweep).

Where the mask is chosen
------------------------
``unstructured``  per column block (as SparseGPT does): in every block the largest saliencies are
                  kept, the number kept per block chosen so the whole weight keeps exactly
                  ``floor(density · numel + 1/2)`` (block ``[c0, c1)`` keeps
                  ``k(c1) − k(c0)`` with ``k(c) = floor(density · rows · c + 1/2)``). The density is
                  therefore the same in every column block, adaptive across rows.
``n:m``           per group of ``m`` columns, when the sweep reaches the group (on updated weights).
``samoyeds``      step 1 first, on the *un-updated* weights with the full ``diag(H⁻¹)``: the row score of
                  a window is the sum of the saliencies ``w²/[H⁻¹]_cc`` that would survive the 2:4 step
                  (the 2 largest of every 4); in every group of ``m`` rows the ``n`` highest-scoring
                  rows of each window are kept (or ``rows=`` gives the choice). Step 2: 2:4 inside the
                  kept rows, per group of 4 columns when the sweep reaches it. Pruned row segments are
                  zeroed column by column like any pruned weight, so their error is propagated to the
                  later columns of the same row.
``venom``         per span of ``4/gcd(n, 4)`` blocks of ``m`` columns (the fewest whole blocks whose kept
                  columns form whole 2:4 groups), when the sweep reaches the span: the ``n`` columns of
                  every ``v x m`` block with the largest saliency summed over its ``v`` rows, then 2:4
                  over the kept columns of each row, as :func:`~samoyeds_lab.prune.venom_mask` does on
                  the span's saliencies.

NOTE: why the Samoyeds row score sums only the post-2:4 saliencies. Of two rows competing for one slot,
keeping row ``a`` costs ``all(b) + low(a)`` (row ``b`` removed entirely, the 2-of-4 losers of ``a``)
and keeping ``b`` costs ``all(a) + low(b)``; since ``all = high + low`` the cheaper choice keeps the row
with the larger ``high`` (the post-2:4 sum). This is also what
:func:`~samoyeds_lab.prune.samoyeds_mask` does with magnitude/Wanda scores.

Dead input columns (``H_cc = 0``: the input feature is zero on every calibration token) get ``H_cc = 1``
before damping, saliency 0 (they are pruned first) and no coupling to other columns. Unlike SparseGPT's
reference code, their kept weights are left as they are rather than set to 0: the calibration data says
nothing about them.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from .._checks import check_float, check_int, check_tensor
from . import masks as _m
from .scores import _check_finite, _check_weight, column_norms

__all__ = ["obs_hessian", "obs_prune", "obs_row_scores", "obs_update", "select_rows"]


# ---------------------------------------------------------------------------------------------------
# Hessian and its inverse factors
# ---------------------------------------------------------------------------------------------------
def obs_hessian(acts: torch.Tensor, in_features: int | None = None) -> torch.Tensor:
    """The layer Hessian ``H = 2 XᵀX / n`` of calibration inputs ``X [n, K]``, in fp32.

    Parameters
    ----------
    acts : torch.Tensor
        ``[tokens, K]`` (or ``[..., K]``, leading dimensions are tokens) inputs of the layer,
        fp16/bf16/fp32/fp64, finite, at least one token.
    in_features : int, optional
        The weight's input dimension ``K``; checked against ``acts.shape[-1]`` when given.

    Returns
    -------
    torch.Tensor
        fp32 ``[K, K]``, symmetric positive semi-definite.
    """
    if in_features is None:
        check_tensor("acts", acts, ndim=tuple(range(2, 9)))
        in_features = acts.shape[-1]
    column_norms(acts, in_features)  # shape, dtype, finiteness, >= 1 token
    x = acts.reshape(-1, in_features).to(torch.float32)
    h = torch.matmul(x.T, x)
    h.mul_(2.0 / x.shape[0])
    return h


def _check_hessian(hessian: object, k: int) -> torch.Tensor:
    check_tensor("hessian", hessian, shape=(k, k), dtypes=(torch.float32, torch.float64))
    assert isinstance(hessian, torch.Tensor)
    _check_finite("hessian", hessian)
    return hessian


def _inverse_factors(h: torch.Tensor, percdamp: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(U, diag(H⁻¹), alive)`` of the damped Hessian: ``H⁻¹ = UᵀU``, ``U`` upper (fp32).

    Dead columns (``H_cc == 0``) get ``H_cc = 1`` before damping. The factorisation runs in fp32 and is
    retried in fp64 if fp32 finds the matrix not positive definite.

    NOTE: ``U`` without forming ``H⁻¹``. With ``J`` the reversal permutation, the Cholesky factor of
    ``J H J = L Lᵀ`` gives ``H = R Rᵀ`` with ``R = J L J`` upper triangular, so ``H⁻¹ = R⁻ᵀ R⁻¹`` and
    ``U = R⁻¹`` (upper, positive diagonal): one Cholesky and one triangular inverse, several times
    faster on a CPU than ``cholesky_inverse`` followed by a second Cholesky.
    ``diag(H⁻¹)_j = Σ_i U_ij²``.
    """
    alive = torch.diagonal(h) != 0
    last_error = ""
    for dtype in (torch.float32, torch.float64):
        hd = h.to(dtype=dtype, copy=True)
        diag = torch.diagonal(hd)
        diag[~alive] = 1.0
        diag.add_(percdamp * float(diag.mean()))
        low, info = torch.linalg.cholesky_ex(hd.flip(0, 1))
        if int(info) != 0:
            last_error = f"leading minor {int(info)} not positive"
            continue
        eye = torch.eye(h.shape[0], dtype=dtype, device=h.device)
        u = torch.linalg.solve_triangular(low.flip(0, 1), eye, upper=True)
        if not bool(torch.isfinite(u).all()):
            last_error = "the inverse factor overflows"
            continue
        return u.to(torch.float32), u.square().sum(0).to(torch.float32), alive
    raise ValueError(
        f"percdamp: the damped Hessian is not positive definite even in fp64 ({last_error}); "
        f"expected a larger percdamp than {percdamp} or more calibration tokens"
    )


def _prepare(w: object, acts: object, hessian: object, percdamp: object):
    w = _check_weight("w", w)
    if w.ndim != 2:
        raise ValueError(f"w: expected a 2-D [rows, in_features] weight for method 'obs', got shape {tuple(w.shape)}")
    if w.shape[1] == 0:
        raise ValueError(f"w: expected at least one input column, got shape {tuple(w.shape)}")
    _check_finite("w", w)
    percdamp = check_float("percdamp", percdamp, lo=0.0, lo_open=True)
    k = w.shape[1]
    if hessian is None:
        if acts is None:
            raise ValueError(
                "acts: required for method 'obs' ([tokens, in_features] calibration inputs of the layer), got None"
            )
        h = obs_hessian(acts, k)  # type: ignore[arg-type]
    else:
        if acts is not None:
            raise ValueError("hessian: give either acts or a precomputed hessian, not both")
        h = _check_hessian(hessian, k)
    h = h.to(w.device)
    u, hinv_diag, alive = _inverse_factors(h, percdamp)
    return w, u, hinv_diag, alive


# ---------------------------------------------------------------------------------------------------
# Samoyeds step 1: row selection
# ---------------------------------------------------------------------------------------------------
_ROW_CHUNK = 2048


def _row_scores(wf: torch.Tensor, hinv_diag: torch.Tensor, alive: torch.Tensor, vector: int) -> torch.Tensor:
    rows, k = wf.shape
    windows = k // vector
    inv = torch.where(alive, 1.0 / hinv_diag, torch.zeros_like(hinv_diag))
    out = torch.empty(rows, windows, dtype=torch.float32, device=wf.device)
    for lo in range(0, rows, _ROW_CHUNK):
        hi = min(rows, lo + _ROW_CHUNK)
        s = wf[lo:hi].to(torch.float32).square().mul_(inv).view(hi - lo, k // 4, 4)
        keep = _m._top_n_mask(s, 2)
        out[lo:hi] = (s * keep).view(hi - lo, windows, vector).sum(-1)
    return out


def obs_row_scores(
    w: torch.Tensor,
    acts: torch.Tensor | None = None,
    *,
    vector: int = 128,
    percdamp: float = 0.01,
    hessian: torch.Tensor | None = None,
) -> torch.Tensor:
    """OBS row scores of every ``vector``-wide window, for the Samoyeds row selection.

    ``row_score[r, g] = Σ_{c in window g, kept by 2:4} W[r, c]² / [H⁻¹]_cc`` on the un-updated weights
    (the 2 largest saliencies of every 4 columns; dead columns score 0). Scores of two weights that
    share their inputs (a SwiGLU expert's gate and up) can be added before :func:`select_rows`, so both
    keep the same rows.

    Parameters
    ----------
    w : torch.Tensor
        ``[rows, K]`` weight, fp16/bf16/fp32, finite; ``K % vector == 0``.
    acts : torch.Tensor, optional
        ``[tokens, K]`` calibration inputs (or give ``hessian``).
    vector : int
        Window width, a multiple of 4 (default 128).
    percdamp : float
        Dampening ``λ = percdamp · mean diag(H)``, ``> 0`` (default 0.01).
    hessian : torch.Tensor, optional
        A precomputed ``[K, K]`` :func:`obs_hessian` (instead of ``acts``).

    Returns
    -------
    torch.Tensor
        fp32 ``[rows, K // vector]``.
    """
    w, _u, hinv_diag, alive = _prepare(w, acts, hessian, percdamp)
    vector = check_int("vector", vector, lo=4)
    if vector % 4:
        raise ValueError(f"vector: expected a multiple of 4 (2:4 groups inside a window), got {vector}")
    _m._check_div("w", tuple(w.shape), "cols (dim -1)", w.shape[1], "vector", vector)
    return _row_scores(w, hinv_diag, alive, vector)


def select_rows(row_scores: torch.Tensor, n: int = 1, m: int = 2) -> torch.Tensor:
    """Keep the ``n`` highest-scoring rows of every group of ``m`` consecutive rows, per window.

    Parameters
    ----------
    row_scores : torch.Tensor
        ``[rows, windows]`` float scores (e.g. :func:`obs_row_scores`, or the sum of two of them),
        ``rows % m == 0``, no NaN.
    n, m : int
        ``1 <= n < m <= 255``.

    Returns
    -------
    torch.Tensor
        ``bool [rows, windows]``, ``True`` = row kept in that window; exactly ``n`` per group and window
        (equal scores: lower row first). This is the ``rows=`` argument of :func:`obs_prune`.
    """
    check_tensor("row_scores", row_scores, ndim=2, dtypes=_m.SCORE_DTYPES)
    n, m, _ = _m._check_samoyeds(n, m, 4)
    rows, windows = row_scores.shape
    _m._check_div("row_scores", tuple(row_scores.shape), "rows (dim 0)", rows, "m", m)
    if row_scores.numel() and bool(torch.isnan(row_scores).any()):
        raise ValueError("row_scores: expected no NaN scores, got NaN")
    groups = row_scores.view(rows // m, m, windows).transpose(1, 2)
    return _m._top_n_mask(groups, n).transpose(1, 2).reshape(rows, windows)


def _check_rows(rows_sel: object, shape: tuple[int, int], n: int, m: int, vector: int, device) -> torch.Tensor:
    want = (shape[0], shape[1] // vector)
    check_tensor("rows", rows_sel, shape=want, dtypes=(torch.bool,))
    assert isinstance(rows_sel, torch.Tensor)
    counts = rows_sel.view(want[0] // m, m, want[1]).sum(1)
    if bool((counts != n).any()):
        g, win = (int(i) for i in (counts != n).nonzero()[0])
        raise ValueError(
            f"rows: expected exactly n={n} kept rows in every group of m={m} rows and window, got "
            f"{int(counts[g, win])} in rows {g * m}..{g * m + m - 1}, window {win}"
        )
    return rows_sel.to(device)


# ---------------------------------------------------------------------------------------------------
# the sweep
# ---------------------------------------------------------------------------------------------------
def _top_k_flat(s: torch.Tensor, k: int) -> torch.Tensor:
    """``bool`` of ``s.shape`` keeping the ``k`` largest (ties: lower flat index)."""
    flat = s.reshape(-1)
    keep = torch.zeros(flat.shape, dtype=torch.bool, device=s.device)
    if k > 0:
        idx = torch.sort(flat, descending=True, stable=True).indices[:k]
        keep[idx] = True
    return keep.view(s.shape)


#: Columns per inner sub-block (rank-1 updates stay inside it; a GEMM updates the rest of the block).
_INNER = 16


def _sweep(wt: torch.Tensor, u: torch.Tensor, alive: torch.Tensor, block: int, group: int, choose) -> torch.Tensor:
    """Column sweep over ``wt = Wᵀ [K, rows]`` (fp32, updated in place); returns the mask ``[K, rows]``.

    ``choose(c, sal, out)`` fills ``out = mask[c:c+g]`` from the saliencies ``sal [g, rows]`` of the
    columns ``c … c+g−1`` (``g = group``, less at the end) when the sweep reaches column ``c`` (a multiple
    of ``group``; ``block`` is a multiple of ``group``).

    NOTE: two levels of lazy updates. Inside a block, rank-1 updates only reach the end of the current
    sub-block of ``_INNER`` columns (rounded to whole groups), and one matrix product brings the rest of
    the block up to date; the rest of the weight is updated once per block (as SparseGPT). A group's
    columns are always current when it is chosen: it lies inside one sub-block or starts at one.
    """
    k, rows = wt.shape
    mask_t = torch.zeros(k, rows, dtype=torch.bool, device=wt.device)
    d = torch.diagonal(u)
    inv_d = d.reciprocal().tolist()
    inv_d2 = torch.where(alive, d.square().reciprocal(), torch.zeros_like(d))
    inner = _INNER if group % _INNER == 0 else group * -(-_INNER // group)
    err = torch.empty(block, rows, dtype=torch.float32, device=wt.device)
    for c1 in range(0, k, block):
        c2 = min(k, c1 + block)
        w1 = wt[c1:c2]
        u1 = u[c1:c2, c1:c2]
        for s1 in range(0, c2 - c1, inner):
            s2 = min(c2 - c1, s1 + inner)
            for i in range(s1, s2):
                c = c1 + i
                if c % group == 0:
                    g = min(group, c2 - c)
                    sal = w1[i : i + g].square().mul_(inv_d2[c : c + g, None])
                    choose(c, sal, mask_t[c : c + g])
                e = err[i]
                torch.mul(w1[i], inv_d[c], out=e)
                e.masked_fill_(mask_t[c], 0.0)  # (w − q) / d with q = w ⊙ mask
                if i + 1 < s2:
                    w1[i + 1 : s2].addr_(u1[i, i + 1 : s2], e, alpha=-1.0)
                w1[i].masked_fill_(~mask_t[c], 0.0)
            if s2 < c2 - c1:
                w1[s2:].addmm_(u1[s1:s2, s2:].T, err[s1:s2], alpha=-1.0)
        if c2 < k:
            wt[c2:].addmm_(u[c1:c2, c2:].T, err[: c2 - c1], alpha=-1.0)
    return mask_t


def obs_prune(
    w: torch.Tensor,
    acts: torch.Tensor | None,
    pattern: str = "2:4",
    *,
    blocksize: int = 128,
    percdamp: float = 0.01,
    rows: torch.Tensor | None = None,
    hessian: torch.Tensor | None = None,
    **pattern_kwargs: Any,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Prune ``w`` with second-order (OBS / SparseGPT) saliency and update the weights it keeps.

    See the module docstring for the algorithm and where each pattern's mask is chosen. All arithmetic
    is fp32 (the Cholesky factorisation falls back to fp64 if fp32 fails) whatever ``w``'s dtype.

    Parameters
    ----------
    w : torch.Tensor
        ``[rows, K]`` weight (``Y = X Wᵀ``), fp16/bf16/fp32, finite.
    acts : torch.Tensor or None
        ``[tokens, K]`` calibration inputs of this layer (for an expert: the tokens routed to it),
        finite; ``None`` only with ``hessian``.
    pattern : str
        ``"n:m"`` / ``"nm"``, ``"samoyeds"``, ``"venom"``, ``"unstructured"`` or ``"dense"``
        (see :func:`~samoyeds_lab.prune.parse_pattern`; default ``"2:4"``).
    blocksize : int
        Columns updated together before the lazy update of the rest (default 128, ``>= 1``); rounded
        up to a multiple of the pattern's column group (``m`` for N:M, 4 for Samoyeds, the span for
        VENOM). The result does not depend on it beyond fp32 rounding.
    percdamp : float
        Dampening ``λ = percdamp · mean diag(H)`` added to the diagonal, ``> 0`` (default 0.01).
    rows : torch.Tensor, optional
        Samoyeds only: a precomputed row selection, ``bool [rows, K // vector]`` with ``True`` = row
        kept in that window and exactly ``n`` per group of ``m`` rows (e.g. :func:`select_rows` of
        the summed :func:`obs_row_scores` of gate and up). Default: chosen from ``w``'s own scores.
    hessian : torch.Tensor, optional
        A precomputed :func:`obs_hessian` ``[K, K]`` (fp32/fp64) instead of ``acts`` (two weights with
        the same inputs share it).
    **pattern_kwargs
        The pattern's arguments (``n``, ``m``, ``vector``, ``v``, ``density``).

    Returns
    -------
    tuple[torch.Tensor, torch.Tensor]
        ``(w_pruned, mask)``: the updated weight in ``w``'s dtype, exactly zero where ``mask`` is
        ``False``, and the ``bool`` keep-mask (the pattern's exact count, as the other methods).

    Raises
    ------
    TypeError, ValueError
        Naming the argument: ``w`` not 2-D or not finite, ``acts`` of the wrong shape or not finite,
        ``percdamp <= 0``, ``blocksize < 1``, a bad pattern, ``rows`` of the wrong shape or counts or
        given for a pattern other than Samoyeds, an update that overflows ``w``'s dtype.
    """
    from .api import parse_pattern  # api imports this module

    kind, p = parse_pattern(pattern, **pattern_kwargs)
    blocksize = check_int("blocksize", blocksize, lo=1)
    w, u, hinv_diag, alive = _prepare(w, acts, hessian, percdamp)
    shape = (w.shape[0], w.shape[1])
    if rows is not None and kind != "samoyeds":
        raise ValueError(f"rows: only the 'samoyeds' pattern takes a row selection, got pattern {pattern!r}")
    if kind == "dense":
        return w.clone(), torch.ones(shape, dtype=torch.bool, device=w.device)

    if kind == "unstructured":
        density = _m._check_density(p["density"])
        total_rows = shape[0]
        group = blocksize

        def kept_before(c: int) -> int:
            return _m.kept_count(total_rows * c, density)

        def choose(c, sal, out):
            k = kept_before(c + sal.shape[0]) - kept_before(c)
            out.copy_(_top_k_flat(sal.T, k).T)  # ties: lower (row, col) index first

    elif kind == "nm":
        n, m = _m._check_nm(p["n"], p["m"])
        _m._check_div("w", shape, "the last dimension (cols)", shape[1], "m", m)
        group = m

        def choose(c, sal, out):
            out.copy_(_m._top_n_mask(sal.T, n).T)

    elif kind == "samoyeds":
        n, m, vector = _m._check_samoyeds(p["n"], p["m"], p["vector"])
        _m._check_samoyeds_shape("w", shape, m, vector)
        if rows is None:
            keep_rows = select_rows(_row_scores(w, hinv_diag, alive, vector), n, m)
        else:
            keep_rows = _check_rows(rows, shape, n, m, vector, w.device)
        group = 4

        def choose(c, sal, out):
            out.copy_(_m._top_n_mask(sal.T, 2).T & keep_rows[:, c // vector])

    else:  # venom
        v, n, m = _m._check_venom(p["v"], p["n"], p["m"])
        _m._check_venom_shape("w", shape, v, n, m)
        group = m * (4 // math.gcd(n, 4))

        def choose(c, sal, out):
            out.copy_(_m.venom_mask(sal.T.contiguous(), v=v, n=n, m=m).T)

    block = -(-blocksize // group) * group
    wt = w.T.to(torch.float32, copy=True).contiguous()
    mask_t = _sweep(wt, u, alive, block, group, choose)
    out = wt.T.to(w.dtype)
    if not bool(torch.isfinite(out).all()):
        raise ValueError(
            f"w: the OBS update overflows {w.dtype} (max |update| {float(wt.abs().max()):.3g}); expected a "
            f"larger percdamp than {percdamp} or an fp32 weight"
        )
    return out.contiguous(), mask_t.T.contiguous()


def obs_update(
    w: torch.Tensor,
    acts: torch.Tensor | None,
    mask: torch.Tensor,
    *,
    blocksize: int = 128,
    percdamp: float = 0.01,
    hessian: torch.Tensor | None = None,
) -> torch.Tensor:
    """The OBS weight update for a *given* keep-mask (e.g. a magnitude or Wanda mask).

    The same left-to-right sweep as :func:`obs_prune`, with the mask fixed instead of chosen. For every
    row the pruned weight at column ``c`` is removed optimally *given the columns before it*: the free
    set is ``{c+1, …}``, so kept weights left of a pruned one are frozen. The result is therefore the
    least-squares optimum ``min ||X (Ŵ − W)ᵀ||`` over the kept set (on the damped Hessian) exactly when
    every row's pruned columns precede its kept ones; otherwise its error is above the optimum's, and for
    an arbitrary mask not always below the un-updated ``W ⊙ mask``'s (a frozen kept weight cannot undo a
    later removal's update). The lazy block updates change nothing but fp32 rounding.

    Parameters
    ----------
    w, acts, blocksize, percdamp, hessian
        As for :func:`obs_prune`.
    mask : torch.Tensor
        ``bool`` of ``w.shape``, ``True`` = kept.

    Returns
    -------
    torch.Tensor
        The updated weight in ``w``'s dtype, exactly zero where ``mask`` is ``False``.
    """
    blocksize = check_int("blocksize", blocksize, lo=1)
    w, u, _hinv_diag, alive = _prepare(w, acts, hessian, percdamp)
    check_tensor("mask", mask, dtypes=(torch.bool,))
    if tuple(mask.shape) != tuple(w.shape):
        raise ValueError(f"mask: expected the shape of w {tuple(w.shape)}, got {tuple(mask.shape)}")
    mask_t = mask.to(w.device).T

    def choose(c, sal, out):
        out.copy_(mask_t[c : c + sal.shape[0]])

    wt = w.T.to(torch.float32, copy=True).contiguous()
    _sweep(wt, u, alive, blocksize, blocksize, choose)
    out = wt.T.to(w.dtype)
    if not bool(torch.isfinite(out).all()):
        raise ValueError(f"w: the OBS update overflows {w.dtype}; expected a larger percdamp than {percdamp}")
    return out.contiguous()
