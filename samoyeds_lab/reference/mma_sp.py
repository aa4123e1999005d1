"""A warp-level CPU emulator of the sparse tensor-core instruction ``mma.sp``.

Emulates, for one warp of 32 lanes, ::

    mma.sp::ordered_metadata.sync.aligned.m16n8k32.row.col.f32.{f16,bf16}.{f16,bf16}.f32  d, a, b, c, e, f;
    mma.sp::ordered_metadata.sync.aligned.m16n8k16.row.col.f32.{f16,bf16}.{f16,bf16}.f32  d, a, b, c, e, f;

with every operand given *per lane*, exactly as the registers of a CUDA kernel hold them, so a kernel's
fragment code can be run and debugged on the CPU first (GPU MODE lecture 3 style). With ``g = lane >> 2``
and ``t = lane & 3`` (PTX's *groupID* and *threadID_in_group*), for ``m16n8k32``:

========  =====================  ==========================================================================
operand   per lane               element held by register ``r``, half ``i`` (low 16 bits first)
========  =====================  ==========================================================================
``a``     ``[4 regs, 2 halves]`` compressed A (16 x 16 stored values): row ``g + 8·(r & 1)``,
                                 stored column ``2t + i + 8·(r >> 1)`` — i.e. 2:4 group ``t + 4·(r >> 1)``
``b``     ``[4 regs, 2 halves]`` B (32 x 8): row ``k = 2t + i + 8·r`` (= ``2t + (j & 1) + 8·(j >> 1)`` for
                                 the PTX element number ``j = 2r + i``), column ``g``
``c/d``   ``[4]`` fp32           element ``j``: row ``g + 8·(j >> 1)``, column ``2t + (j & 1)``
``e``     one 32-bit word        only lanes ``4g + 2f`` and ``4g + 2f + 1`` are read: lane ``4g + 2f + h``
                                 holds row ``g``'s nibbles for dense columns ``16h … 16h+15`` in bits
                                 ``[15:0]`` and row ``g+8``'s in ``[31:16]``
``f``     immediate              sparsity selector, 0 or 1 (ptxas rejects 2 and 3 for m16n8k32)
========  =====================  ==========================================================================

``m16n8k16`` halves everything along K: ``a`` and ``b`` have 2 registers, and lane ``4g + f`` (``f`` in
0…3) alone supplies row ``g`` (bits ``[15:0]``) and row ``g+8`` (bits ``[31:16]``) for all 16 columns.

Inside a nibble, ``bits[1:0]`` is the position (0…3 inside its group of 4) of the stored value with the
lower index — the one in the lower half of the pair in ``a`` — and ``bits[3:2]`` that of the other. With
``::ordered_metadata`` the positions must be strictly ascending; the emulator raises ``ValueError`` for
anything else (real hardware gives undefined results). The product is computed in fp32: products of two
fp16/bf16 numbers are exact in fp32, sums are rounded in fp32 (hardware rounds differently inside its
adder tree, so compare GPU and emulator results with a tolerance unless the inputs make every sum exact).

The helpers :func:`pack_a`, :func:`pack_b`, :func:`pack_c`, :func:`pack_e` build these registers from
ordinary matrices (what ``ldmatrix`` and plain loads do in a kernel) and :func:`unpack_d` turns ``d`` back
into a 16 x 8 matrix.

Every function also accepts leading batch dimensions (``a [..., 32, 4, 2]``, ``e [..., 32]``, ``values
[..., 16, 16]`` …): a batch is a set of independent warps each issuing the instruction once, which is how
:mod:`samoyeds_lab.reference.tiled` runs all fragments of a thread block for one k-step in one call.
"""

from __future__ import annotations

import torch

from .._checks import check_int, check_tensor
from ..tiles import MMA_K, MMA_K16, MMA_M, MMA_N, WARP_SIZE

_HALF_DTYPES = (torch.float16, torch.bfloat16)
_ACC_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
_E_DTYPES = (torch.uint32, torch.int64, torch.int32)

_lane = torch.arange(WARP_SIZE)
_G = _lane >> 2  # groupID
_T = _lane & 3  # threadID_in_group


def _a_tables(regs: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Row / stored-column of A held by ``[lane, reg, half]`` for an A fragment with ``regs`` registers."""
    r = torch.arange(regs).view(1, regs, 1)
    i = torch.arange(2).view(1, 1, 2)
    row = _G.view(WARP_SIZE, 1, 1) + 8 * (r & 1)
    col = 2 * _T.view(WARP_SIZE, 1, 1) + i + 8 * (r >> 1)
    return row.expand(WARP_SIZE, regs, 2).contiguous(), col.expand(WARP_SIZE, regs, 2).contiguous()


def _b_tables(regs: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Row ``k`` / column ``n`` of B held by ``[lane, reg, half]``."""
    r = torch.arange(regs).view(1, regs, 1)
    i = torch.arange(2).view(1, 1, 2)
    k = 2 * _T.view(WARP_SIZE, 1, 1) + i + 8 * r
    n = _G.view(WARP_SIZE, 1, 1)
    return k.expand(WARP_SIZE, regs, 2).contiguous(), n.expand(WARP_SIZE, regs, 2).contiguous()


# index tables, built once: _A[k] = (rows, stored cols), _B[k] = (k rows, n cols) for dense K = k
_A = {MMA_K: _a_tables(4), MMA_K16: _a_tables(2)}
_B = {MMA_K: _b_tables(4), MMA_K16: _b_tables(2)}
_C_ROW = (_G.view(WARP_SIZE, 1) + 8 * (torch.arange(4) >> 1).view(1, 4)).contiguous()
_C_COL = (2 * _T.view(WARP_SIZE, 1) + (torch.arange(4) & 1).view(1, 4)).contiguous()
_SELECTORS = {MMA_K: 2, MMA_K16: 4}


def _k_of_a(name: str, a: torch.Tensor) -> int:
    """Dense K (32 or 16) of per-lane A/B registers ``[..., 32, regs, 2]``, validating dtype and shape."""
    check_tensor(name, a, dtypes=_HALF_DTYPES)
    tail = tuple(a.shape[-3:])
    if a.ndim >= 3 and tail == (WARP_SIZE, 4, 2):
        return MMA_K
    if a.ndim >= 3 and tail == (WARP_SIZE, 2, 2):
        return MMA_K16
    raise ValueError(
        f"{name}: expected [..., 32 lanes, 4 regs, 2 halves] (m16n8k32) or [..., 32, 2, 2] (m16n8k16), "
        f"got {tuple(a.shape)}"
    )


def _tail(name: str, t: torch.Tensor, shapes: dict) -> object:
    """Look up the last two dims of ``t`` in ``shapes`` (shape -> value), else raise naming ``name``."""
    key = tuple(t.shape[-2:]) if t.ndim >= 2 else None
    if key not in shapes:
        want = " or ".join(f"[..., {r}, {c}]" for r, c in shapes)
        raise ValueError(f"{name}: expected shape {want}, got {tuple(t.shape)}")
    return shapes[key]


def _check_selector(f: object, k: int) -> int:
    f = check_int("f", f, lo=0)
    limit = _SELECTORS[k]
    if f >= limit:
        raise ValueError(
            f"f: the sparsity selector of mma.sp.m16n8k{k} with f16/bf16 must be in 0..{limit - 1} "
            f"(ptxas rejects {f}), got {f}"
        )
    return f


# --------------------------------------------------------------------------- fragment helpers
def pack_a(values: torch.Tensor) -> torch.Tensor:
    """Per-lane A registers from a compressed tile (what ``ldmatrix.x4`` / ``.x2`` loads).

    Parameters
    ----------
    values : torch.Tensor
        fp16/bf16 ``[..., 16, 16]`` stored values of a 16 x 32 2:4 tile (m16n8k32), or ``[..., 16, 8]``
        (m16n8k16). Row ``R``'s stored columns ``2j, 2j+1`` are group ``j``'s two kept values, lower
        position first.

    Returns
    -------
    torch.Tensor
        ``[..., 32, 4, 2]`` (or ``[..., 32, 2, 2]``): ``a[lane, r, i] = values[g + 8(r&1), 2t + i + 8(r>>1)]``.
    """
    check_tensor("values", values, dtypes=_HALF_DTYPES)
    k = _tail("values", values, {(MMA_M, MMA_K // 2): MMA_K, (MMA_M, MMA_K16 // 2): MMA_K16})
    rows, cols = _A[k]
    return values[..., rows, cols]


def unpack_a(a: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`pack_a`: the ``[..., 16, 16]`` (or ``[..., 16, 8]``) stored values."""
    k = _k_of_a("a", a)
    rows, cols = _A[k]
    out = torch.empty(*a.shape[:-3], MMA_M, k // 2, dtype=a.dtype, device=a.device)
    out[..., rows, cols] = a
    return out


def pack_b(b_matrix: torch.Tensor) -> torch.Tensor:
    """Per-lane B registers from a dense ``[..., 32, 8]`` (m16n8k32) or ``[..., 16, 8]`` (m16n8k16) tile.

    ``b[lane, r, i] = B[2t + i + 8r, g]`` — the PTX element ``j = 2r + i`` sits at
    ``k = 2t + (j & 1) + 8(j >> 1)``. With tokens on N, ``B = X_gatheredᵀ`` so each lane reads pairs of
    consecutive input features of token ``g`` (``ldmatrix`` without ``.trans`` on row-major ``X``).
    """
    check_tensor("b_matrix", b_matrix, dtypes=_HALF_DTYPES)
    k = _tail("b_matrix", b_matrix, {(MMA_K, MMA_N): MMA_K, (MMA_K16, MMA_N): MMA_K16})
    ks, ns = _B[k]
    return b_matrix[..., ks, ns]


def unpack_b(b: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`pack_b`: the dense ``[..., 32, 8]`` (or ``[..., 16, 8]``) B tile."""
    k = _k_of_a("b", b)
    ks, ns = _B[k]
    out = torch.empty(*b.shape[:-3], k, MMA_N, dtype=b.dtype, device=b.device)
    out[..., ks, ns] = b
    return out


def pack_c(c_matrix: torch.Tensor) -> torch.Tensor:
    """Per-lane fp32 accumulators ``[..., 32, 4]`` from ``[..., 16, 8]``.

    ``c[lane, j] = C[g + 8(j >> 1), 2t + (j & 1)]``.
    """
    check_tensor("c_matrix", c_matrix, dtypes=_ACC_DTYPES)
    _tail("c_matrix", c_matrix, {(MMA_M, MMA_N): None})
    return c_matrix.to(torch.float32)[..., _C_ROW, _C_COL]


def unpack_d(d: torch.Tensor) -> torch.Tensor:
    """The ``[..., 16, 8]`` matrix held by per-lane accumulators ``d [..., 32, 4]`` (inverse of :func:`pack_c`)."""
    check_tensor("d", d, dtypes=_ACC_DTYPES)
    _tail("d", d, {(WARP_SIZE, 4): None})
    out = torch.empty(*d.shape[:-2], MMA_M, MMA_N, dtype=d.dtype, device=d.device)
    out[..., _C_ROW, _C_COL] = d
    return out


def pack_e(words: torch.Tensor, selector: int = 0, *, k: int = MMA_K) -> torch.Tensor:
    """Per-lane metadata registers ``e [..., 32]`` (uint32) for one ``(tile, k-step)``.

    Parameters
    ----------
    words : torch.Tensor
        m16n8k32: the 16 register-ordered words ``mma_metadata(...)[tile, kstep]`` (``[..., 16]``); word
        ``2g + h`` goes to lane ``4g + 2·selector + h``. m16n8k16 (``k=16``): 8 words, word ``g`` (row
        ``g`` in bits [15:0], row ``g+8`` in [31:16]) goes to lane ``4g + selector``.
    selector : int
        The sparsity selector ``f`` the instruction will be issued with.
    k : int
        32 or 16, the instruction's dense K.

    Returns
    -------
    torch.Tensor
        uint32 ``[..., 32]``; lanes the selector does not name hold 0 (the instruction ignores them).
    """
    k = check_int("k", k)
    if k not in _SELECTORS:
        raise ValueError(f"k: expected 32 (m16n8k32) or 16 (m16n8k16), got {k}")
    selector = _check_selector(selector, k)
    w = _e_as_int64("words", words)
    per_quad = 2 if k == MMA_K else 1
    if w.ndim < 1 or w.shape[-1] != 8 * per_quad:
        raise ValueError(f"words: expected shape [..., {8 * per_quad}] for m16n8k{k}, got {tuple(words.shape)}")
    e = torch.zeros(*w.shape[:-1], WARP_SIZE, dtype=torch.int64, device=w.device)
    e[..., _meta_lanes(selector, k).reshape(-1)] = w
    return e.to(torch.uint32)


def _meta_lanes(selector: int, k: int) -> torch.Tensor:
    """Lanes that supply metadata, ``[8 (g), per_quad (h)]``: ``4g + per_quad·selector + h``."""
    per_quad = 2 if k == MMA_K else 1
    g = torch.arange(8).view(8, 1)
    h = torch.arange(per_quad).view(1, per_quad)
    return 4 * g + per_quad * selector + h


def _e_as_int64(name: str, e: torch.Tensor) -> torch.Tensor:
    check_tensor(name, e, dtypes=_E_DTYPES)
    if e.dtype == torch.int32:
        return e.to(torch.int64) & 0xFFFFFFFF
    w = e.to(torch.int64)
    if e.dtype == torch.int64 and w.numel() and (int(w.min()) < 0 or int(w.max()) > 0xFFFFFFFF):
        raise ValueError(f"{name}: expected 32-bit values in [0, 2**32), got [{int(w.min())}, {int(w.max())}]")
    return w


# --------------------------------------------------------------------------- the instruction
def sparse_a_to_dense(a: torch.Tensor, e: torch.Tensor, f: int = 0) -> torch.Tensor:
    """The dense ``16 x 32`` (or ``16 x 16``) A that ``mma.sp`` multiplies, rebuilt from ``a``, ``e``, ``f``.

    Only the lanes the selector names are read from ``e``. For row ``R`` and group ``j``, the nibble is
    at lane ``4(R mod 8) + 2f + j // 4`` (m16n8k32; ``4(R mod 8) + f`` for m16n8k16), bits
    ``16·(R >= 8) + 4·(j mod 4)``; stored value ``2j + i`` lands at dense column ``4j + pos_i``.
    ``a [..., 32, regs, 2]`` and ``e [..., 32]`` may carry the same leading (warp) batch dimensions.

    Raises
    ------
    ValueError
        If a nibble read is not strictly ascending (``::ordered_metadata``), naming lane, row and group.
    """
    k = _k_of_a("a", a)
    f = _check_selector(f, k)
    ew = _e_as_int64("e", e)
    batch = tuple(a.shape[:-3])
    if tuple(ew.shape) != batch + (WARP_SIZE,):
        raise ValueError(
            f"e: expected one 32-bit word per lane, shape {list(batch + (WARP_SIZE,))}, got {tuple(e.shape)}"
        )
    groups = k // 4
    per_quad = 2 if k == MMA_K else 1
    R = torch.arange(MMA_M).view(MMA_M, 1)
    j = torch.arange(groups).view(1, groups)
    lane = 4 * (R % 8) + per_quad * f + j // 4  # [16, groups]
    shift = 16 * (R // 8) + 4 * (j % 4)
    nib = (ew[..., lane] >> shift) & 0xF  # [..., 16, groups]
    lo, hi = nib & 0x3, nib >> 2
    bad = lo >= hi
    if bool(bad.any()):
        *wi, r, g = (int(v) for v in bad.nonzero()[0])
        warp = f"warp {tuple(wi)}, " if wi else ""
        raise ValueError(
            f"e: illegal metadata nibble 0x{int(nib[(*wi, r, g)]):X} for {warp}row {r}, group {g} (lane "
            f"{int(lane[r, g])}, bits {int(shift[r, g])}..{int(shift[r, g]) + 3}): ::ordered_metadata "
            f"needs strictly ascending positions, got ({int(lo[(*wi, r, g)])}, {int(hi[(*wi, r, g)])})"
        )
    values = unpack_a(a)  # [..., 16, groups*2]
    pos = torch.stack([lo, hi], dim=-1).reshape(*batch, MMA_M, groups * 2)
    cols = 4 * torch.arange(groups).repeat_interleave(2) + pos
    dense = torch.zeros(*batch, MMA_M, k, dtype=a.dtype, device=a.device)
    dense.scatter_(-1, cols, values)
    return dense


def _mma_sp(a, b, c, e, f, k_expected):
    k = _k_of_a("a", a)
    if k != k_expected:
        raise ValueError(
            f"a: expected [..., 32, {k_expected // 8}, 2] registers for m16n8k{k_expected}, got {tuple(a.shape)}"
        )
    _k_of_a("b", b)  # dtype and register shape
    if tuple(b.shape) != tuple(a.shape):
        raise ValueError(f"b: expected shape {tuple(a.shape)} to match a, got {tuple(b.shape)}")
    if a.dtype != b.dtype:
        raise TypeError(
            f"b: mma.sp takes A and B of the same type (.f16.f16 or .bf16.bf16), got a {a.dtype} and b {b.dtype}"
        )
    check_tensor("c", c, dtypes=(torch.float32,))
    if tuple(c.shape) != tuple(a.shape[:-3]) + (WARP_SIZE, 4):
        raise ValueError(
            f"c: expected fp32 {list(a.shape[:-3]) + [32, 4]} (lanes, 4 accumulators), got {tuple(c.shape)}"
        )
    dense_a = sparse_a_to_dense(a, e, f).to(torch.float32)
    dense_b = unpack_b(b).to(torch.float32)
    d = torch.matmul(dense_a, dense_b) + unpack_d(c)
    return pack_c(d)


def mma_sp_m16n8k32(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor, e: torch.Tensor, f: int = 0) -> torch.Tensor:
    """``mma.sp::ordered_metadata.sync.aligned.m16n8k32.row.col.f32.{f16,bf16}.{f16,bf16}.f32 d, a, b, c, e, f``.

    Computes ``D = A · B + C`` (16 x 8, fp32) for one warp, where ``A`` (16 x 32) is rebuilt from the 2:4
    values ``a`` and the metadata of lanes ``4g + 2f``, ``4g + 2f + 1`` of ``e``.

    Parameters
    ----------
    a : torch.Tensor
        fp16/bf16 ``[..., 32, 4, 2]`` per-lane A registers (see :func:`pack_a`); leading dimensions are
        independent warps.
    b : torch.Tensor
        ``[..., 32, 4, 2]`` per-lane B registers, same dtype as ``a`` (see :func:`pack_b`).
    c : torch.Tensor
        fp32 ``[..., 32, 4]`` accumulators (see :func:`pack_c`).
    e : torch.Tensor
        ``[..., 32]`` uint32 (or int64 / int32) metadata registers; only the selected lanes are read.
    f : int
        Sparsity selector, 0 or 1.

    Returns
    -------
    torch.Tensor
        fp32 ``[..., 32, 4]`` per-lane ``d`` (see :func:`unpack_d`).
    """
    return _mma_sp(a, b, c, e, f, MMA_K)


def mma_sp_m16n8k16(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor, e: torch.Tensor, f: int = 0) -> torch.Tensor:
    """``mma.sp::ordered_metadata.sync.aligned.m16n8k16.row.col.f32.{f16,bf16}.{f16,bf16}.f32``.

    As :func:`mma_sp_m16n8k32` with K = 16: ``a``, ``b`` are ``[32, 2, 2]``, selector ``f`` in 0…3 names
    lane ``4g + f`` of each quad, which holds row ``g`` (bits [15:0]) and row ``g+8`` (bits [31:16]).
    """
    return _mma_sp(a, b, c, e, f, MMA_K16)


__all__ = [
    "mma_sp_m16n8k32", "mma_sp_m16n8k16", "sparse_a_to_dense",
    "pack_a", "unpack_a", "pack_b", "unpack_b", "pack_c", "unpack_d", "pack_e",
]
