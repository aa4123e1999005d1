"""CPU references: pure-torch products and a warp-level emulator of ``mma.sp`` with the kernels' layouts."""

from .core import check_token_idx, dense_of, spmm, ssmm

__all__ = ["spmm", "ssmm", "dense_of", "check_token_idx"]
