"""CPU references: pure-torch products, a warp-level emulator of ``mma.sp`` with the kernels' layouts, and a
warpgroup-level emulator of Hopper's ``wgmma.mma_async.sp`` (shared-memory matrix descriptors included)."""

from .core import check_token_idx, dense_of, spmm, ssmm
from .mma_sp import (
    mma_sp_m16n8k16,
    mma_sp_m16n8k32,
    pack_a,
    pack_b,
    pack_c,
    pack_e,
    sparse_a_to_dense,
    unpack_a,
    unpack_b,
    unpack_d,
)
from .tiled import tiled_spmm, tiled_ssmm
from .wgmma import SmemDescriptor, load_k_major, wgmma_sp_m64nNk32

__all__ = [
    "spmm", "ssmm", "dense_of", "check_token_idx",
    "mma_sp_m16n8k32", "mma_sp_m16n8k16", "sparse_a_to_dense",
    "pack_a", "unpack_a", "pack_b", "unpack_b", "pack_c", "unpack_d", "pack_e",
    "tiled_spmm", "tiled_ssmm",
    "SmemDescriptor", "load_k_major", "wgmma_sp_m64nNk32",
]
