"""Launch geometry of the kernels, as plain Python (no CuPy): token tiles, split-K plans, shared memory.

Everything a kernel launch needs besides the data pointers is computed here so the CPU tests can check
it against the tile constants and against :class:`~samoyeds_lab.formats.TokenSelection` offsets.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .. import tiles
from .build import ACC_PAD

#: Bytes of one pipeline stage per kernel family (A tile + B tile + metadata), mirroring the ``.cu``
#: macros ``A_STAGE_BYTES + B_STAGE_BYTES + M_STAGE_BYTES``.
STAGE_BYTES = {
    "ssmm": tiles.BLOCK_M * tiles.MMA_K_COMPRESSED * 2 + tiles.BLOCK_N * tiles.MMA_K * 2
    + (tiles.BLOCK_M // tiles.MMA_M) * tiles.META_WORDS_PER_MMA * 4,
    "dense_mm": tiles.BLOCK_M * tiles.MMA_K * 2 + tiles.BLOCK_N * tiles.MMA_K * 2,
}
STAGE_BYTES["spmm"] = STAGE_BYTES["ssmm"]


#: The wgmma (sm_90a) ssmm kernels round their shared-memory base up to this many bytes (``SMEM_ALIGN`` in
#: kernels/ssmm.cu) so the 64-byte swizzle the tensor cores derive from address bits matches the B layout.
SMEM_ALIGN = 1024


def smem_bytes(kind: str, sel_n: int = 1, sel_m: int = 1, *, wgmma: bool = False) -> int:
    """Dynamic shared memory of one block: stages + token ids + the fp32 dense-row accumulator tile.

    ``sel_n:sel_m`` is the Samoyeds row selection (1:1 for plain 2:4 and dense): the accumulator tile
    holds ``BLOCK_M / sel_n · sel_m`` dense rows for ``BLOCK_N`` tokens, padded by ``ACC_PAD`` floats.
    ``wgmma=True`` (``ssmm`` only) adds :data:`SMEM_ALIGN` bytes of alignment slack.
    """
    if kind not in STAGE_BYTES:
        raise ValueError(f"kind: expected one of {sorted(STAGE_BYTES)}, got {kind!r}")
    if wgmma and kind != "ssmm":
        raise ValueError(f"wgmma: only the 'ssmm' kernels have a wgmma variant, got kind={kind!r}")
    r_tile = tiles.BLOCK_M // sel_n * sel_m
    return (tiles.STAGES * STAGE_BYTES[kind] + tiles.BLOCK_N * 4 + tiles.BLOCK_N * (r_tile + ACC_PAD) * 4
            + (SMEM_ALIGN if wgmma else 0))


@dataclass(frozen=True)
class TokenTiles:
    """Per-block token tiles (grid y): expert, first position, number of positions (<= BLOCK_N)."""

    expert: torch.Tensor  # int32 [tiles]
    start: torch.Tensor  # int32 [tiles]
    count: torch.Tensor  # int32 [tiles]

    def __len__(self) -> int:
        return int(self.expert.numel())


def token_tiles(offsets: list[int] | torch.Tensor, block_n: int = tiles.BLOCK_N) -> TokenTiles:
    """Cut every expert's segment ``[offsets[e], offsets[e+1])`` into tiles of at most ``block_n`` positions.

    Empty experts get no tile; the tiles partition ``[0, offsets[-1])`` exactly (every position is
    computed once, which the split-K finalize pass relies on).
    """
    offs = offsets.tolist() if isinstance(offsets, torch.Tensor) else list(offsets)
    ex, st, ct = [], [], []
    for e in range(len(offs) - 1):
        a, b = int(offs[e]), int(offs[e + 1])
        if b < a:
            raise ValueError(f"offsets: expected non-decreasing offsets, got {offs[e]} then {offs[e + 1]}")
        for s in range(a, b, block_n):
            ex.append(e)
            st.append(s)
            ct.append(min(block_n, b - s))
    as_t = lambda v: torch.tensor(v, dtype=torch.int32)  # noqa: E731
    return TokenTiles(as_t(ex), as_t(st), as_t(ct))


def device_token_tiles(offsets: list[int] | torch.Tensor, device: torch.device | str,
                       block_n: int = tiles.BLOCK_N) -> TokenTiles:
    """:func:`token_tiles` placed on ``device`` with no host→device copy for one segment, one copy otherwise.

    A single segment ``[0, n)`` (every ``ssmm`` / ``spmm`` / ``dense_mm`` call) is built on the device
    itself (``arange`` + ``clamp``: kernel launches, no host sync); the tiles of several experts are cut
    on the host from ``offsets`` and copied once as one packed ``int32 [3, tiles]`` tensor.
    """
    offs = offsets.tolist() if isinstance(offsets, torch.Tensor) else list(offsets)
    if len(offs) == 2 and int(offs[0]) == 0 and int(offs[1]) >= 0:
        n = int(offs[1])
        start = torch.arange(0, n, block_n, dtype=torch.int32, device=device)
        count = (n - start).clamp_(max=block_n)
        return TokenTiles(torch.zeros_like(start), start, count)
    tt = token_tiles(offs, block_n)
    packed = torch.stack([tt.expert, tt.start, tt.count]).to(device)
    return TokenTiles(packed[0], packed[1], packed[2])


def num_token_tiles(offsets: list[int], block_n: int = tiles.BLOCK_N) -> int:
    """Number of tiles :func:`token_tiles` cuts from ``offsets`` (host arithmetic only)."""
    return sum(-(-(int(b) - int(a)) // block_n) for a, b in zip(offsets[:-1], offsets[1:]) if b > a)


def finalize_blocks(total: int) -> int:
    """Blocks (256 threads each, grid-stride) of a split-K ``*_finalize`` launch over ``total`` outputs."""
    return max(1, min(-(-total // 256), 65535))


#: Threads per block of the ``*_finalize`` kernels.
FINALIZE_THREADS = 256


@dataclass(frozen=True)
class LaunchSpec:
    """One kernel launch before any CuPy call: what :mod:`samoyeds_lab.kernels.ops` and a
    :class:`~samoyeds_lab.kernels.plan.KernelPlan` both launch.

    ``args`` follows the ``extern "C"`` signature: torch tensors (and None for NULL) are device pointers,
    numpy scalars are values. ``finalize_total`` is set (outputs covered) for a split-K finalize launch.
    """

    module: str
    fn: str
    grid: tuple[int, int, int]
    block: int
    smem: int
    args: tuple
    finalize_total: int | None = None

    @property
    def is_finalize(self) -> bool:
        return self.finalize_total is not None


def is_pointer_arg(a: object) -> bool:
    """True for the arguments of a :class:`LaunchSpec` that are device pointers (tensors; None = NULL)."""
    return a is None or isinstance(a, torch.Tensor)


def check_scalar_arg(a: object) -> None:
    """A non-pointer launch argument must be a numpy scalar (its dtype fixes the bytes CuPy packs)."""
    if not isinstance(a, np.generic):
        raise TypeError(f"args: expected tensors, None or numpy scalars, got {type(a).__name__}")


@dataclass(frozen=True)
class SplitPlan:
    """Split-K plan: ``splits`` blocks along K, each covering ``steps_per_split`` m16n8k32 k-steps."""

    splits: int
    steps_per_split: int


def split_plan(ksteps: int, unit_steps: int, blocks: int, *, split_k: int | None = None, sms: int = 132) -> SplitPlan:
    """Choose a split-K plan.

    Parameters
    ----------
    ksteps : int
        k-steps of the whole product (``ceil(cols / 32)``).
    unit_steps : int
        Splits must start on multiples of this (``vector / 32`` for Samoyeds windows, else 1).
    blocks : int
        Blocks of the launch without splitting (``m-blocks x token tiles``).
    split_k : int, optional
        Requested number of splits (clamped to what K allows); default: enough splits for about two
        blocks per SM, at most 16 (decode shapes have few token tiles and need K parallelism to stream
        the weight at full bandwidth), and 1 when the grid is already large.
    sms : int
        Streaming multiprocessors of the device.
    """
    units = max(1, -(-ksteps // unit_steps))
    if split_k is None:
        want = -(-2 * sms // max(blocks, 1))
        split_k = max(1, min(16, want))
    elif isinstance(split_k, bool) or not isinstance(split_k, int) or split_k < 1:
        raise ValueError(f"split_k: expected None or an int >= 1, got {split_k!r}")
    split_k = min(split_k, units)
    per = -(-units // split_k) * unit_steps
    splits = max(1, -(-max(ksteps, 1) // per))
    return SplitPlan(splits, per)


#: CUDA's grid limits (compute capability >= 3.0): ``gridDim.x <= 2^31 - 1``, ``gridDim.y, gridDim.z <= 65535``.
GRID_LIMITS = (2**31 - 1, 65535, 65535)
_GRID_AXES = ("x (weight row blocks)", "y (token tiles)", "z (K splits)")


def check_grid(grid: tuple[int, ...]) -> tuple[int, int, int]:
    """Validate a launch grid ``(x, y, z)`` against :data:`GRID_LIMITS`; return it as three ints.

    The kernels put weight row blocks on x, token tiles (``BLOCK_N`` positions each) on y and K splits
    on z, so y caps one launch at ``65535 · BLOCK_N`` (≈ 4.19 M) positions.

    Raises
    ------
    ValueError
        A dimension < 1 or above its limit (names the axis and what it counts).
    """
    g = tuple(int(v) for v in grid) + (1,) * (3 - len(grid))
    if len(g) != 3:
        raise ValueError(f"grid: expected at most 3 dimensions, got {grid!r}")
    for axis, (v, lim) in enumerate(zip(g, GRID_LIMITS)):
        if not 1 <= v <= lim:
            extra = (f"; at most {lim * tiles.BLOCK_N} positions per launch, split the token list"
                     if axis == 1 else "")
            raise ValueError(f"grid: expected 1 <= gridDim.{_GRID_AXES[axis]} <= {lim}, got {v}{extra}")
    return g


__all__ = ["STAGE_BYTES", "SMEM_ALIGN", "smem_bytes", "TokenTiles", "token_tiles", "device_token_tiles",
           "num_token_tiles", "finalize_blocks", "FINALIZE_THREADS", "LaunchSpec", "is_pointer_arg",
           "check_scalar_arg", "SplitPlan", "split_plan", "GRID_LIMITS", "check_grid"]
