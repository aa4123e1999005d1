"""Tiled SpMM / SSMM built only from the ``mma.sp`` emulator and register-ordered metadata.

This is the CUDA kernel's loop nest run on the CPU: the same block tile (:mod:`samoyeds_lab.tiles`),
the same fragments (:mod:`samoyeds_lab.reference.mma_sp`) and the same metadata words
(:func:`samoyeds_lab.formats.sptc.mma_metadata`) the GPU will read. It is slow (one Python call per
``m16n8k32`` instruction); its purpose is to prove the layouts, not to be fast. For a weight ``W``
(``rows x cols``) and activations ``x [tokens, cols]`` it computes ::

    tiled_ssmm(W, x, token_idx)[i] = W_dense @ x[token_idx[i]]       (SENTINEL ids give zero rows)
    tiled_spmm(W, x)               = x @ W_denseᵀ

exactly like :func:`samoyeds_lab.reference.ssmm` up to fp32 summation order. The sparse weight is the
``A`` operand (M = compressed weight rows), gathered tokens are ``B`` (N = tokens), so ``Yᵀ = W · Xᵀ``::

    for each block (BLOCK_M compressed rows x BLOCK_N tokens):          # one CTA
        for kstep in 0 .. ceil(cols/32)-1:                              # BLOCK_K = 32 per stage
            for each warp (2 x 2), each m16n8 fragment (4 x 4):
                acc[frag] = mma.sp.m16n8k32(A values, gathered X, acc[frag], metadata, selector 0)
            if kstep ends a Samoyeds window w:                          # row selection, no data moved
                Yᵀ[m·r + row_index[w, c], tokens] += acc[frag][c];  acc[frag] = 0

For :class:`~samoyeds_lab.formats.NMWeight` there are no windows: compressed row = dense row and the
accumulators are written once after the last k-step. Tails are zero padding: rows up to a multiple of 16
(values 0, nibble ``0x4``), columns up to a multiple of 32, tokens up to a multiple of ``TOKEN_PAD`` with
SENTINEL (zero) rows.
"""

from __future__ import annotations

import torch

from .._checks import check_tensor
from ..formats import SENTINEL, NMWeight, SamoyedsWeight
from ..formats.sptc import mma_metadata
from ..tiles import (
    BLOCK_M,
    BLOCK_N,
    FRAGS_M,
    FRAGS_N,
    MMA_K,
    MMA_M,
    MMA_N,
    TOKEN_PAD,
    WARP_TILE_M,
    WARP_TILE_N,
    WARPS,
    WARPS_N,
    ceil_div,
    round_up,
)
from .core import check_out_dtype, check_token_idx
from .mma_sp import mma_sp_m16n8k32, pack_a, pack_b, pack_e, unpack_d

_HALF_DTYPES = (torch.float16, torch.bfloat16)
#: The sparsity selector the tiled path issues (metadata words sit in lanes 4g, 4g+1).
SELECTOR = 0


def _operand(weight: object) -> tuple[NMWeight, torch.Tensor | None, int]:
    """(2:4 operand of the compressed rows, dense row of each compressed row per window or None, vector)."""
    if isinstance(weight, SamoyedsWeight):
        if weight.vector % MMA_K:
            raise ValueError(
                f"weight: the tiled Samoyeds path needs vector % {MMA_K} == 0 (a window must hold whole "
                f"m16n8k32 k-steps), got vector={weight.vector}"
            )
        return weight.inner, weight.dense_rows(), weight.vector
    if isinstance(weight, NMWeight):
        if (weight.n, weight.m) != (2, 4):
            raise ValueError(f"weight: Sparse Tensor Cores take 2:4 weights, got {weight.n}:{weight.m}")
        return weight, None, 0
    raise TypeError(f"weight: expected NMWeight (2:4) or SamoyedsWeight, got {type(weight).__name__}")


def _block_fragments(bm: int, bn: int, mtiles: int) -> list[tuple[int, int]]:
    """``(m16 tile, n8 tile)`` of every fragment of block ``(bm, bn)``, warp by warp; M tails skipped."""
    frags = []
    for warp in range(WARPS):
        wm, wn = divmod(warp, WARPS_N)
        m0 = (bm * BLOCK_M + wm * WARP_TILE_M) // MMA_M
        n0 = (bn * BLOCK_N + wn * WARP_TILE_N) // MMA_N
        for i in range(FRAGS_M):
            if m0 + i >= mtiles:  # a kernel predicates these fragments off
                continue
            frags.extend((m0 + i, n0 + j) for j in range(FRAGS_N))
    return frags


def tiled_ssmm(
    weight: NMWeight | SamoyedsWeight,
    x: torch.Tensor,
    token_idx: torch.Tensor,
    *,
    out_dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Selected-token sparse product on the ``mma.sp`` emulator: ``y[i] = W_dense @ x[token_idx[i]]``.

    Parameters
    ----------
    weight : NMWeight or SamoyedsWeight
        ``[rows, cols]``; 2:4 (``NMWeight``) or Samoyeds with ``vector % 32 == 0``; fp16/bf16.
    x : torch.Tensor
        ``[tokens, cols]``, same dtype as the weight's values.
    token_idx : torch.Tensor
        1-D integer ids into ``x``; :data:`~samoyeds_lab.formats.SENTINEL` gives zero rows.
    out_dtype : torch.dtype, optional
        Result dtype (default ``x.dtype``); accumulation is always fp32.

    Returns
    -------
    torch.Tensor
        ``[len(token_idx), rows]`` on ``x``'s device (the emulation itself runs on the CPU).
    """
    out_dtype = check_out_dtype(out_dtype)
    inner, dense_rows, vector = _operand(weight)
    check_tensor("x", x, ndim=2, dtypes=_HALF_DTYPES)
    if inner.dtype != x.dtype:
        raise TypeError(
            f"x: mma.sp takes A and B of the same type; weight values are {inner.dtype}, x is {x.dtype}"
        )
    rows, cols = weight.shape
    if x.shape[1] != cols:
        raise ValueError(
            f"x: expected shape [tokens, {cols}] to match the weight's {cols} columns, got {tuple(x.shape)}"
        )
    idx = check_token_idx(token_idx, x.shape[0]).cpu()
    ntok = idx.numel()
    device, x = x.device, x.cpu()  # the emulator runs on the CPU whatever the inputs' device

    crows = inner.shape[0]
    mtiles, ksteps = ceil_div(crows, MMA_M), ceil_div(cols, MMA_K)
    meta = mma_metadata(inner.sptc_metadata().cpu())  # [mtiles, ksteps, 16], rows padded with 0x4
    values = torch.zeros(mtiles * MMA_M, ksteps * MMA_K // 2, dtype=x.dtype)
    values[:crows, : cols // 2] = inner.values.cpu()
    npad = round_up(ntok, TOKEN_PAD)
    gathered = torch.zeros(npad, ksteps * MMA_K, dtype=x.dtype)  # the kernel's B rows, gathered by id
    valid = idx != SENTINEL
    gathered[:ntok][valid, :cols] = x[idx[valid]]
    dense_rows = None if dense_rows is None else dense_rows.cpu()
    if dense_rows is None:  # plain 2:4: compressed row c is dense row c, one "window" spanning all of K
        dense_rows = torch.arange(crows).view(1, crows)
        window_steps = max(ksteps, 1)
    else:
        window_steps = vector // MMA_K
    yt = torch.zeros(rows, npad, dtype=torch.float32)  # Yᵀ, written only at window boundaries

    # NOTE: the fragments of a block are emulated as one batch of warps per k-step (one emulator call per
    # k-step instead of one per fragment); each fragment still goes through its own mma.sp instruction.
    vtiles = values.view(mtiles, MMA_M, ksteps, MMA_K // 2).permute(0, 2, 1, 3)  # [mt, ks, 16, 16]
    xtiles = gathered.view(npad // MMA_N, MMA_N, ksteps, MMA_K).permute(0, 2, 3, 1)  # [nt, ks, 32, 8] = B
    for bm in range(ceil_div(mtiles * MMA_M, BLOCK_M)):
        for bn in range(npad // BLOCK_N):
            frags = _block_fragments(bm, bn, mtiles)
            if not frags:
                continue
            mt = torch.tensor([fr[0] for fr in frags])
            nt = torch.tensor([fr[1] for fr in frags])
            acc = torch.zeros(len(frags), 32, 4)  # the working accumulators, one [32, 4] per fragment
            for ks in range(ksteps):
                a = pack_a(vtiles[mt, ks])  # [frags, 32, 4, 2]   (ldmatrix.x4 of the A tile)
                b = pack_b(xtiles[nt, ks])  # [frags, 32, 4, 2]   (ldmatrix of gathered token rows)
                e = pack_e(meta[mt, ks], SELECTOR)  # [frags, 32]: lanes 4g, 4g+1 load one word each
                acc = mma_sp_m16n8k32(a, b, acc, e, SELECTOR)
                if (ks + 1) % window_steps == 0 or ks == ksteps - 1:  # end of a window: row selection
                    w = ks // window_steps
                    d = unpack_d(acc)  # [frags, 16, 8]
                    for f, (m_tile, n_tile) in enumerate(frags):
                        crow = torch.arange(m_tile * MMA_M, min((m_tile + 1) * MMA_M, crows))
                        yt[dense_rows[w, crow], n_tile * MMA_N : (n_tile + 1) * MMA_N] += d[f, : crow.numel()]
                    acc = torch.zeros_like(acc)
    return yt[:, :ntok].T.contiguous().to(device=device, dtype=out_dtype or x.dtype)


def tiled_spmm(
    weight: NMWeight | SamoyedsWeight, x: torch.Tensor, *, out_dtype: torch.dtype | None = None
) -> torch.Tensor:
    """Sparse weight x all tokens on the ``mma.sp`` emulator: ``y = x @ W_denseᵀ`` (``[tokens, rows]``).

    Same as :func:`tiled_ssmm` with ``token_idx = arange(tokens)``.
    """
    out_dtype = check_out_dtype(out_dtype)
    _operand(weight)
    check_tensor("x", x, ndim=2, dtypes=_HALF_DTYPES)
    return tiled_ssmm(weight, x, torch.arange(x.shape[0]), out_dtype=out_dtype)


__all__ = ["tiled_spmm", "tiled_ssmm"]
