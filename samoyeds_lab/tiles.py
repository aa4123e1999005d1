"""Tile sizes shared by the CUDA kernels and the CPU emulator (:mod:`samoyeds_lab.reference.tiled`).

Everything here is a plain Python ``int`` so that the kernel wrappers can paste the values into the CUDA
sources as ``-D`` defines and the emulator can walk exactly the same loops. Nothing imports CuPy.

One ``mma.sp.sync.aligned.m16n8k32`` instruction (one warp) computes ::

    D[16 x 8] (fp32) = A[16 x 32] (2:4 sparse, stored as 16 x 16 values + metadata) · B[32 x 8] + C

With the sparse *weight* in A and the gathered tokens in B (``Yᵀ[out, tok] = W[out, in] · Xᵀ``), M runs
over (compressed) weight rows, N over tokens and K over input features.

Block tile (as in the Samoyeds SSMM kernel)::

                 BLOCK_N = 64 tokens
              +---------+---------+
              | warp 0  | warp 1  |   each warp: WARP_TILE_M x WARP_TILE_N = 64 x 32
    BLOCK_M   | 4x4 mma | 4x4 mma |   = (64/16) x (32/8) = 4 x 4 m16n8 fragments
    = 128     +---------+---------+
    compressed| warp 2  | warp 3  |   the K loop advances BLOCK_K = 32 dense columns
    rows      |         |         |   (one mma.sp k-step) per pipeline stage
              +---------+---------+

For the Samoyeds 1:2 format 128 compressed rows stand for 256 dense output rows.
"""

from __future__ import annotations

#: Threads per warp.
WARP_SIZE = 32

# --------------------------------------------------------------------------- one mma.sp instruction
#: Rows of A / D per ``mma.sp`` (weight rows).
MMA_M = 16
#: Columns of B / D per ``mma.sp`` (tokens).
MMA_N = 8
#: Dense K per ``mma.sp.m16n8k32`` (input features); A holds ``MMA_K // 2`` values per row.
MMA_K = 32
#: Stored (compressed) K of A per ``mma.sp.m16n8k32``: 2 of every 4 dense columns.
MMA_K_COMPRESSED = MMA_K // 2
#: Dense K of the smaller ``mma.sp.m16n8k16`` form (8 stored values per row).
MMA_K16 = 16

# --------------------------------------------------------------------------- 2:4 metadata
#: Dense columns per 2:4 group; each group is described by one 4-bit nibble.
GROUP = 4
#: Bits of metadata per group (two 2-bit positions).
NIBBLE_BITS = 4
#: Groups per 32-bit metadata word (``32 / NIBBLE_BITS``).
GROUPS_PER_WORD = 8
#: Dense columns covered by one 32-bit logical metadata word (= one m16n8k32 k-step).
COLS_PER_META_WORD = GROUP * GROUPS_PER_WORD
#: Metadata registers one m16n8k32 ``(tile, k-step)`` needs: 16 rows x 32 columns x 4 bits / 32 bits.
META_WORDS_PER_MMA = MMA_M * MMA_K * NIBBLE_BITS // GROUP // 32

# --------------------------------------------------------------------------- thread-block tile
#: Compressed weight rows per thread block.
BLOCK_M = 128
#: Dense K per pipeline stage (one ``mma.sp`` k-step).
BLOCK_K = 32
#: Tokens per thread block.
BLOCK_N = 64
#: Warps per thread block.
WARPS = 4
#: Warp grid inside a block: ``WARPS_M x WARPS_N``.
# NOTE: the Samoyeds paper fixes 4 warps per 128 x 64 tile; the 2 x 2 arrangement is our choice (it
# gives square-ish 64 x 32 warp tiles, 16 fragments per warp, and lets every warp share B loads with one
# neighbour and A loads with the other).
WARPS_M = 2
WARPS_N = 2
#: Threads per block.
THREADS = WARPS * WARP_SIZE
#: Rows / tokens one warp owns.
WARP_TILE_M = BLOCK_M // WARPS_M
WARP_TILE_N = BLOCK_N // WARPS_N
#: ``m16n8`` fragments per warp along M and N.
FRAGS_M = WARP_TILE_M // MMA_M
FRAGS_N = WARP_TILE_N // MMA_N
#: Shared-memory pipeline depth (``cp.async`` double buffering).
STAGES = 2
#: Token lists handed to the SSMM kernel are padded (with SENTINEL ids) to a multiple of this.
TOKEN_PAD = BLOCK_N

assert WARPS_M * WARPS_N == WARPS
assert BLOCK_K % MMA_K == 0 and WARP_TILE_M % MMA_M == 0 and WARP_TILE_N % MMA_N == 0
assert META_WORDS_PER_MMA == 16


def ceil_div(a: int, b: int) -> int:
    """``ceil(a / b)`` for non-negative ints."""
    return -(-a // b)


def round_up(a: int, b: int) -> int:
    """The smallest multiple of ``b`` that is ``>= a``."""
    return ceil_div(a, b) * b


__all__ = [
    "WARP_SIZE", "MMA_M", "MMA_N", "MMA_K", "MMA_K_COMPRESSED", "MMA_K16",
    "GROUP", "NIBBLE_BITS", "GROUPS_PER_WORD", "COLS_PER_META_WORD", "META_WORDS_PER_MMA",
    "BLOCK_M", "BLOCK_K", "BLOCK_N", "WARPS", "WARPS_M", "WARPS_N", "THREADS",
    "WARP_TILE_M", "WARP_TILE_N", "FRAGS_M", "FRAGS_N", "STAGES", "TOKEN_PAD",
    "ceil_div", "round_up",
]
