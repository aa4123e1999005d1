"""The tiled SSMM emulator, one k-step at a time: what the kernel's registers and loads hold at each step.

:func:`samoyeds_lab.reference.tiled.tiled_ssmm` runs the kernel's loop nest on the CPU and returns only
the product. :func:`ssmm_steps` runs the *same* loop (same block tile, same ``mma.sp`` emulator calls, same
order of fp32 additions) and records a :class:`KStep` after every k-step of every block::

    for each block (BLOCK_M compressed rows x BLOCK_N tokens):
        for kstep in 0 .. ceil(cols/32)-1:
            B tile  <- x[token_idx[n], 32·kstep : 32·kstep+32]   for the block's token slots n   (gather)
            acc[c]  += A[c, window w] · B                          for every compressed row c      (live)
            if kstep ends window w:                                                               (flush)
                Yᵀ[m·(c // n) + row_index[w, c], tokens] += acc[c];  acc[c] = 0

A compressed row ``c`` of a Samoyeds weight stands for a *different* dense row in every V-window: the
row ``m·r + row_index[w, c]`` of its group ``r = c // n`` (at 1:2 that is ``2r`` or ``2r + 1``). The
kernel therefore cannot keep one accumulator per output row: it keeps one per *compressed* row, and at
every window boundary adds it into the output row that window names and starts again from zero. The
token side needs no copy either: the ids themselves are the addresses of the B rows (a SENTINEL slot
loads nothing and stays zero). :func:`gather_plan` lays out those loads next to the two-pass
alternative that first materialises the gathered copy ``x[token_idx]``.

The last step's :attr:`KStep.out` is, bit for bit, ``tiled_ssmm(..., out_dtype=torch.float32)`` (same
additions in the same order), and equals :func:`samoyeds_lab.reference.ssmm` exactly whenever every
product and partial sum is exact in fp32 (small integer entries, as in the lab's example).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .._checks import check_alloc, check_instance, check_int, check_tensor
from ..formats import SENTINEL, NMWeight, SamoyedsWeight, TokenSelection
from ..formats.sptc import mma_metadata
from ..tiles import BLOCK_M, BLOCK_N, MMA_K, MMA_M, MMA_N, TOKEN_PAD, ceil_div, round_up
from .core import check_token_idx
from .mma_sp import mma_sp_m16n8k32, pack_a, pack_b, pack_e, unpack_d
from .tiled import _HALF_DTYPES, SELECTOR, _block_fragments, _operand

__all__ = ["KStep", "ssmm_steps", "BLoad", "GatherPlan", "gather_plan", "example_ssmm", "STEP_TRACE_LIMIT_BYTES"]

#: The snapshots of a trace (one output copy per step) may take at most this many bytes.
STEP_TRACE_LIMIT_BYTES = 1 << 28
_ID_BYTES = 4  # the kernel reads int32 token ids


@dataclass(frozen=True, eq=False)
class KStep:
    """The state of one block of the SSMM kernel after one k-step (see the module docstring).

    Attributes
    ----------
    index : int
        Position of this step in the trace (blocks in launch order, k-steps inside a block).
    block : tuple[int, int]
        ``(bm, bn)``: the block's compressed-row tile and token tile.
    kstep, window : int
        The k-step (``MMA_K = 32`` dense columns each) and the V-window it belongs to.
    cols : tuple[int, int]
        The dense columns ``[k0, k1)`` of the weight and of ``x`` read in this step.
    crows : torch.Tensor
        int64 compressed rows of the block (real rows only, tail padding left out).
    row_group : int
        ``m``, the rows per group (2 at 1:2; 1 for a plain 2:4 weight, whose compressed row is the dense row).
    group, row_in_group, dense_row : torch.Tensor
        int64, one per compressed row: its row group ``r = c // n``, the row index of this window
        (``row_index[w, c]``), and ``dense_row = m·r + row_in_group``: where its accumulator is flushed.
    slots : torch.Tensor
        int64 positions in ``token_idx`` of the block's real token slots (the output rows it writes).
    b_tokens : torch.Tensor
        int64 ``[BLOCK_N]`` the token ids the block's B load reads this step, one per slot of the token
        tile: ``x[b_tokens[n], k0:k1]``; :data:`SENTINEL` (padding) reads nothing and stays zero.
    acc : torch.Tensor
        fp32 ``[len(crows), len(slots)]`` the live accumulators after this step's ``mma.sp`` (before a
        flush zeroes them).
    flush : bool
        This k-step ends a window: every accumulator was added into ``out[:, dense_row]`` and zeroed.
    out : torch.Tensor
        fp32 ``[len(token_idx), rows]`` the output after this step (the rows flushed so far).
    """

    index: int
    block: tuple[int, int]
    kstep: int
    window: int
    cols: tuple[int, int]
    crows: torch.Tensor
    row_group: int
    group: torch.Tensor
    row_in_group: torch.Tensor
    dense_row: torch.Tensor
    slots: torch.Tensor
    b_tokens: torch.Tensor
    acc: torch.Tensor
    flush: bool
    out: torch.Tensor


def ssmm_steps(weight: NMWeight | SamoyedsWeight, x: torch.Tensor, token_idx: torch.Tensor) -> list[KStep]:
    """Run :func:`~samoyeds_lab.reference.tiled.tiled_ssmm` and record every k-step of every block.

    Parameters
    ----------
    weight : NMWeight or SamoyedsWeight
        ``[rows, cols]`` 2:4 (one "window" spanning all of K, compressed row = dense row) or Samoyeds
        with ``vector % 32 == 0``; fp16/bf16. Meant for small examples: the trace keeps one output
        snapshot per step (at most :data:`STEP_TRACE_LIMIT_BYTES` in all).
    x : torch.Tensor
        ``[tokens, cols]``, same dtype as the weight's values.
    token_idx : torch.Tensor
        1-D integer ids into ``x``; :data:`~samoyeds_lab.formats.SENTINEL` slots give zero rows.

    Returns
    -------
    list[KStep]
        One step per (block, k-step); ``steps[-1].out`` is the product ``W_dense @ x[token_idx[i]]``
        in fp32 (an empty list when ``token_idx`` is empty: there is no block to run).
    """
    inner, dense_rows, vector = _operand(weight)
    check_tensor("x", x, ndim=2, dtypes=_HALF_DTYPES)
    if inner.dtype != x.dtype:
        raise TypeError(f"x: mma.sp takes A and B of the same type; weight values are {inner.dtype}, x is {x.dtype}")
    rows, cols = weight.shape
    if x.shape[1] != cols:
        raise ValueError(f"x: expected shape [tokens, {cols}] to match the weight's {cols} columns, "
                         f"got {tuple(x.shape)}")
    idx = check_token_idx(token_idx, x.shape[0]).cpu()
    x = x.detach().cpu()
    ntok, crows = idx.numel(), inner.shape[0]
    mtiles, ksteps = ceil_div(crows, MMA_M), ceil_div(cols, MMA_K)
    npad = round_up(ntok, TOKEN_PAD)
    nblocks = ceil_div(mtiles * MMA_M, BLOCK_M) * (npad // BLOCK_N)
    check_alloc("weight", (nblocks * ksteps, ntok, rows), torch.float32, limit_bytes=STEP_TRACE_LIMIT_BYTES,
                what="step trace (one output snapshot per k-step; use a smaller example)")

    meta = mma_metadata(inner.sptc_metadata().cpu())
    values = torch.zeros(mtiles * MMA_M, ksteps * MMA_K // 2, dtype=x.dtype)
    values[:crows, : cols // 2] = inner.values.cpu()
    padded_idx = torch.full((npad,), SENTINEL, dtype=torch.int64)
    padded_idx[:ntok] = idx
    gathered = torch.zeros(npad, ksteps * MMA_K, dtype=x.dtype)
    valid = padded_idx != SENTINEL
    gathered[valid, :cols] = x[padded_idx[valid]]
    if dense_rows is None:
        dense_rows, window_steps, n_keep, m_group = torch.arange(crows).view(1, crows), max(ksteps, 1), 1, 1
    else:
        dense_rows, window_steps = dense_rows.cpu(), vector // MMA_K
        n_keep, m_group = weight.n, weight.m
    yt = torch.zeros(rows, npad, dtype=torch.float32)
    vtiles = values.view(mtiles, MMA_M, ksteps, MMA_K // 2).permute(0, 2, 1, 3)
    xtiles = gathered.view(npad // MMA_N, MMA_N, ksteps, MMA_K).permute(0, 2, 3, 1)

    steps: list[KStep] = []
    for bm in range(ceil_div(mtiles * MMA_M, BLOCK_M)):
        for bn in range(npad // BLOCK_N):
            frags = _block_fragments(bm, bn, mtiles)
            if not frags:
                continue
            mt = torch.tensor([fr[0] for fr in frags])
            nt = torch.tensor([fr[1] for fr in frags])
            block_c = torch.arange(bm * BLOCK_M, min((bm + 1) * BLOCK_M, crows))
            block_s = torch.arange(bn * BLOCK_N, min((bn + 1) * BLOCK_N, ntok))
            acc = torch.zeros(len(frags), 32, 4)
            for ks in range(ksteps):
                acc = mma_sp_m16n8k32(pack_a(vtiles[mt, ks]), pack_b(xtiles[nt, ks]), acc,
                                      pack_e(meta[mt, ks], SELECTOR), SELECTOR)
                d = unpack_d(acc)  # [frags, 16, 8]
                live = torch.zeros(BLOCK_M, BLOCK_N)  # the block's accumulators as one matrix
                for f, (m_tile, n_tile) in enumerate(frags):
                    r0, c0 = m_tile * MMA_M - bm * BLOCK_M, n_tile * MMA_N - bn * BLOCK_N
                    live[r0: r0 + MMA_M, c0: c0 + MMA_N] = d[f]
                w = ks // window_steps
                flush = (ks + 1) % window_steps == 0 or ks == ksteps - 1
                if flush:  # the same additions, in the same order, as tiled_ssmm
                    for f, (m_tile, n_tile) in enumerate(frags):
                        crow = torch.arange(m_tile * MMA_M, min((m_tile + 1) * MMA_M, crows))
                        yt[dense_rows[w, crow], n_tile * MMA_N: (n_tile + 1) * MMA_N] += d[f, : crow.numel()]
                drow = dense_rows[w, block_c]
                group = block_c // n_keep
                steps.append(KStep(
                    index=len(steps), block=(bm, bn), kstep=ks, window=w,
                    cols=(ks * MMA_K, min((ks + 1) * MMA_K, cols)),
                    crows=block_c, row_group=m_group, group=group, row_in_group=drow - m_group * group, dense_row=drow,
                    slots=block_s, b_tokens=padded_idx[bn * BLOCK_N: (bn + 1) * BLOCK_N].clone(),
                    acc=live[: block_c.numel(), : block_s.numel()].clone(), flush=flush,
                    out=yt[:, :ntok].T.clone(),
                ))
                if flush:
                    acc = torch.zeros_like(acc)
    return steps


# ---------------------------------------------------------------------------------------------- gather
@dataclass(frozen=True, eq=False)
class BLoad:
    """One B-tile load of the SSMM kernel: a token tile's slots at one k-step.

    Attributes
    ----------
    tile, kstep : int
        The token tile (``BLOCK_N`` slots) and the k-step (``MMA_K`` columns).
    cols : tuple[int, int]
        Dense columns ``[k0, k1)`` of ``x`` read.
    slots : torch.Tensor
        int64 ``[BLOCK_N]`` positions in the padded token list.
    fused_rows : torch.Tensor
        int64 row of ``x`` each slot reads in the fused kernel: the token id itself, or
        :data:`SENTINEL` (nothing read; the shared-memory row is zero-filled).
    separate_rows : torch.Tensor
        int64 row of the materialised copy ``xg`` a plain GEMM reads after a gather pass: the slot.
    """

    tile: int
    kstep: int
    cols: tuple[int, int]
    slots: torch.Tensor
    fused_rows: torch.Tensor
    separate_rows: torch.Tensor


@dataclass(frozen=True, eq=False)
class GatherPlan:
    """Where the activation operand of one expert's SSMM comes from: fused gather vs a separate pass.

    Attributes
    ----------
    token_ids : torch.Tensor
        int64 the padded token list (a multiple of ``TOKEN_PAD``, tail :data:`SENTINEL`).
    num_tokens, cols, element_bytes : int
        Rows and columns of ``x`` and the bytes of one element.
    loads : list[BLoad]
        Every B-tile load, tile by tile, k-step by k-step.
    fused_bytes, separate_bytes : dict[str, int]
        Activation-side HBM bytes of each path: ``ids`` (int32 token ids read), ``x_read`` (rows of
        ``x`` read), ``copy_written`` / ``copy_read`` (the materialised ``xg``, separate path only) and
        ``total``. SENTINEL slots cost the fused path nothing; the separate path writes and reads them
        as zero rows of ``xg``; slots past the end of the given list are predicated off on both paths.
    """

    token_ids: torch.Tensor
    num_tokens: int
    cols: int
    element_bytes: int
    loads: list[BLoad]
    fused_bytes: dict[str, int]
    separate_bytes: dict[str, int]

    @property
    def real(self) -> torch.Tensor:
        """bool mask of the real (non-SENTINEL) slots."""
        return self.token_ids != SENTINEL

    def fused_b(self, x: torch.Tensor) -> torch.Tensor:
        """The B operand the fused kernel builds, ``[slots, cols]``: row ``n`` loaded from ``x[token_ids[n]]``."""
        x = self._check_x(x)
        b = torch.zeros(self.token_ids.numel(), self.cols, dtype=x.dtype, device=x.device)
        for ld in self.loads:
            ok = ld.fused_rows != SENTINEL
            k0, k1 = ld.cols
            b[ld.slots[ok], k0:k1] = x[ld.fused_rows[ok], k0:k1]
        return b

    def separate_b(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(xg, B)``: the gather pass's materialised copy ``xg = x[token_ids]`` (zero rows for SENTINEL),
        then the B operand a plain GEMM loads from it at contiguous rows."""
        x = self._check_x(x)
        xg = torch.zeros(self.token_ids.numel(), self.cols, dtype=x.dtype, device=x.device)
        xg[self.real] = x[self.token_ids[self.real]]
        b = torch.zeros_like(xg)
        for ld in self.loads:
            k0, k1 = ld.cols
            b[ld.slots, k0:k1] = xg[ld.separate_rows, k0:k1]
        return xg, b

    def _check_x(self, x: object) -> torch.Tensor:
        check_tensor("x", x, shape=(self.num_tokens, self.cols))
        return x


def gather_plan(
    token_idx: torch.Tensor | TokenSelection,
    num_tokens: int,
    cols: int,
    *,
    expert: int | None = None,
    element_bytes: int = 2,
) -> GatherPlan:
    """The B-tile loads of one expert's SSMM, fused (ids as addresses) and after a separate gather pass.

    Parameters
    ----------
    token_idx : torch.Tensor or TokenSelection
        1-D integer ids (SENTINEL allowed), padded here with SENTINEL to a multiple of ``TOKEN_PAD``;
        or a selection, with ``expert`` naming whose padded list to take.
    num_tokens : int
        Rows of ``x`` (ids must be below it).
    cols : int
        Columns of ``x`` (input features), ``>= 1``.
    expert : int, optional
        Required with a :class:`TokenSelection`, refused with a tensor.
    element_bytes : int
        Bytes per element of ``x`` (2 for fp16/bf16).

    Returns
    -------
    GatherPlan
    """
    num_tokens = check_int("num_tokens", num_tokens, lo=0)
    cols = check_int("cols", cols, lo=1)
    element_bytes = check_int("element_bytes", element_bytes, lo=1, hi=8)
    if isinstance(token_idx, TokenSelection):
        if expert is None:
            raise ValueError("expert: expected the expert whose token list to take from the TokenSelection, got None")
        if token_idx.num_tokens != num_tokens:
            raise ValueError(f"num_tokens: expected the selection's num_tokens={token_idx.num_tokens}, "
                             f"got {num_tokens}")
        ids = token_idx.padded_tokens_of(expert)
    else:
        check_instance("token_idx", token_idx, torch.Tensor, "a 1-D integer tensor or a TokenSelection")
        if expert is not None:
            raise ValueError(f"expert: only meaningful with a TokenSelection, got expert={expert!r} with a tensor")
        ids = token_idx
    idx = check_token_idx(ids, num_tokens).cpu()
    npad = round_up(idx.numel(), TOKEN_PAD)
    check_alloc("token_idx", (npad // BLOCK_N * ceil_div(cols, MMA_K), BLOCK_N, 3), torch.int64,
                limit_bytes=STEP_TRACE_LIMIT_BYTES, what="list of B-tile loads")
    padded = torch.full((npad,), SENTINEL, dtype=torch.int64)
    padded[: idx.numel()] = idx
    loads = []
    for tile in range(npad // BLOCK_N):
        slots = torch.arange(tile * BLOCK_N, (tile + 1) * BLOCK_N)
        for ks in range(ceil_div(cols, MMA_K)):
            loads.append(BLoad(tile=tile, kstep=ks, cols=(ks * MMA_K, min((ks + 1) * MMA_K, cols)), slots=slots,
                               fused_rows=padded[slots].clone(), separate_rows=slots.clone()))
    real, listed = int((padded != SENTINEL).sum()), idx.numel()
    row = cols * element_bytes
    # NOTE: the tile tail beyond the given list is predicated off on both paths (never in HBM); SENTINEL
    # entries *in* the list are zero rows the separate gather writes and the GEMM reads back.
    fused = {"ids": listed * _ID_BYTES, "x_read": real * row, "copy_written": 0, "copy_read": 0}
    separate = {"ids": listed * _ID_BYTES, "x_read": real * row, "copy_written": listed * row,
                "copy_read": listed * row}
    for d in (fused, separate):
        d["total"] = sum(d.values())
    return GatherPlan(token_ids=padded, num_tokens=num_tokens, cols=cols, element_bytes=element_bytes, loads=loads,
                      fused_bytes=fused, separate_bytes=separate)


def example_ssmm(
    rows: int = 8, cols: int = 192, vector: int = 64, *, num_tokens: int = 10, seed: int = 0,
    dtype: torch.dtype = torch.float16,
) -> tuple[SamoyedsWeight, torch.Tensor, torch.Tensor]:
    """A small Samoyeds 1:2 problem with integer entries (every fp32 sum exact): ``(weight, x, token_idx)``.

    The weight is ``rows x cols`` (``cols // vector`` windows), magnitude-pruned from integers in
    ``[-3, 3]``; ``x`` is ``[num_tokens, cols]`` integers in ``[-2, 2]``; ``token_idx`` picks a few tokens
    out of order and ends with one :data:`SENTINEL` slot, as a padded expert list does.
    """
    from ..formats import compress_samoyeds
    from ..prune import prune_mask

    rows = check_int("rows", rows, lo=2, hi=256)
    vector = check_int("vector", vector, lo=MMA_K, hi=1024)
    cols = check_int("cols", cols, lo=vector, hi=4096)
    num_tokens = check_int("num_tokens", num_tokens, lo=2, hi=256)
    seed = check_int("seed", seed, lo=0)
    if rows % 2:
        raise ValueError(f"rows: expected an even number (1:2 row groups), got {rows}")
    if vector % MMA_K or cols % vector:
        raise ValueError(f"vector: expected a multiple of {MMA_K} that divides cols={cols}, got {vector}")
    if dtype not in _HALF_DTYPES:
        raise TypeError(f"dtype: expected float16 or bfloat16 (mma.sp inputs), got {dtype}")
    g = torch.Generator().manual_seed(seed)
    dense = torch.randint(-3, 4, (rows, cols), generator=g).to(torch.float32)
    dense[dense == 0] = 1.0  # no accidental zeros: the pruning decides what is kept
    dense = dense + torch.rand(rows, cols, generator=g) * 0.5 * dense.sign()  # distinct magnitudes...
    mask = prune_mask(dense, "samoyeds", n=1, m=2, vector=vector)
    weight = compress_samoyeds((dense.round() * mask).to(dtype), 1, 2, vector)  # ...integer values
    x = torch.randint(-2, 3, (num_tokens, cols), generator=g).to(dtype)
    picks = torch.randperm(num_tokens, generator=g)[: max(1, min(4, num_tokens - 1))]
    token_idx = torch.cat([picks, torch.tensor([SENTINEL])])
    return weight, x, token_idx
