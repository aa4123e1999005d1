"""The Samoyeds dual-side weight format: vector-wise row selection, then 2:4 inside the kept rows.

An expert weight ``W [rows, cols]`` (row = output feature, column = input feature ``K``) is cut into
``vector``-wide windows along ``K`` and into groups of ``m`` consecutive rows. In every (window, row
group) only ``n`` rows are kept; inside a kept row segment, 2:4 along ``K``::

             window 0 (V cols)      window 1 (V cols)
    row 0    ■ ■ . . ■ . ■ .        . . . . . . . .      1:2 rows per window: row 0 kept in window 0,
    row 1    . . . . . . . .        ■ . ■ . . ■ ■ .      row 1 kept in window 1; 2:4 inside kept rows

The kept segments of group ``r`` are glued together window after window into ``n`` *compressed rows*
``c = r·n + j``; they form a ``[rows·n/m, cols]`` 2:4 matrix (:attr:`SamoyedsWeight.inner`) whose
Sparse-Tensor-Core operand is the usual ``values [rows·n/m, cols/2]`` plus 2:4 metadata. ``row_index
[cols/vector, rows·n/m]`` says, per window, which row of its ``m``-group a compressed row stands for
(stored transposed as in the paper, so a kernel reads one window's indices contiguously). Density is
``n/m · 1/2``: 25% at 1:2, and the operand is ≈28% of the dense fp16 bytes at 1:2, V=128.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .._checks import FLOAT_DTYPES, check_int, check_tensor
from ..errors import FormatError
from .nm import NMWeight, _check_dense_shape, _choose_positions, _compress_groups, _first_violation, _pack_nibbles


@dataclass(frozen=True, eq=False)
class SamoyedsWeight:
    """A weight in the Samoyeds format (``n`` of every ``m`` rows per ``vector`` window, 2:4 inside).

    Attributes
    ----------
    values : torch.Tensor
        ``[rows·n/m, cols/2]`` kept values of the compressed rows.
    positions : torch.Tensor
        ``uint8 [rows·n/m, cols/2]`` 2:4 positions of the compressed rows.
    row_index : torch.Tensor
        ``uint8 [cols/vector, rows·n/m]``; compressed row ``c = r·n + j`` in window ``w`` is dense row
        ``m·r + row_index[w, c]`` (ascending in ``j``).
    n, m, vector : int
        The row-selection pattern.
    shape : tuple[int, int]
        The dense shape ``(rows, cols)``.
    """

    values: torch.Tensor
    positions: torch.Tensor
    row_index: torch.Tensor
    n: int
    m: int
    vector: int
    shape: tuple[int, int]

    def __post_init__(self) -> None:
        n, m, vector = _check_pattern(self.n, self.m, self.vector)
        rows, cols = _check_dense_shape("shape", self.shape)
        _check_shape("shape", rows, cols, m, vector)
        crows = rows // m * n
        check_tensor("row_index", self.row_index, ndim=2, dtypes=(torch.uint8,))
        expect = (cols // vector, crows)
        if tuple(self.row_index.shape) != expect:
            raise ValueError(f"row_index: expected shape {expect}, got {tuple(self.row_index.shape)}")
        if self.row_index.numel():
            ri = self.row_index.to(torch.int64).view(expect[0], -1, n)
            if int(ri.max()) >= m:
                raise FormatError(f"row_index: expected values < m={m}, got {int(ri.max())}")
            if n > 1 and bool((ri[..., 1:] <= ri[..., :-1]).any()):
                w, r, _ = _first_violation((ri[..., 1:] <= ri[..., :-1]).to(torch.int8), 0)
                raise FormatError(
                    f"row_index: expected ascending rows inside each group, window {w} group {r} "
                    f"has {ri[w, r].tolist()}"
                )
        # validates values/positions (shapes, dtypes, 2:4 positions)
        NMWeight(self.values, self.positions, 2, 4, (crows, cols))
        object.__setattr__(self, "shape", (rows, cols))

    @property
    def dtype(self) -> torch.dtype:
        return self.values.dtype

    @property
    def density(self) -> float:
        """Fraction of the dense matrix stored as values: ``n/m · 1/2``."""
        return self.n / self.m / 2

    @property
    def inner(self) -> NMWeight:
        """The ``[rows·n/m, cols]`` 2:4 matrix of compressed rows (what the Sparse Tensor Cores see)."""
        return NMWeight(self.values, self.positions, 2, 4, (self.values.shape[0], self.shape[1]))

    @property
    def nbytes(self) -> int:
        """Values + 2:4 metadata (2 bits per kept value) + row indices (``ceil(log2 m)`` bits each)."""
        idx_bits = max(1, math.ceil(math.log2(self.m)))
        return self.inner.nbytes + math.ceil(self.row_index.numel() * idx_bits / 8)

    def sptc_metadata(self) -> torch.Tensor:
        """Logical 2:4 metadata of the compressed rows, ``uint32 [rows·n/m, ceil(cols/32)]``.

        Same encoding as :meth:`NMWeight.sptc_metadata`.
        """
        return _pack_nibbles(self.positions)

    def dense_rows(self) -> torch.Tensor:
        """int64 ``[cols/vector, rows·n/m]``: the dense row each compressed row stands for, per window."""
        crows = self.values.shape[0]
        group = torch.arange(crows, device=self.row_index.device) // self.n
        return group * self.m + self.row_index.to(torch.int64)

    def to_dense(self) -> torch.Tensor:
        """The dense ``[rows, cols]`` matrix."""
        rows, cols = self.shape
        n, m, v = self.n, self.m, self.vector
        windows = cols // v
        inner = self.inner.to_dense().view(rows // m, n, windows, v)
        out = torch.zeros(rows // m, m, windows, v, dtype=self.values.dtype, device=self.values.device)
        idx = self.row_index.to(torch.int64).T.reshape(rows // m, n, windows, 1).expand(-1, -1, -1, v)
        out.scatter_(1, idx, inner)
        return out.view(rows, cols)

    def __repr__(self) -> str:
        rows, cols = self.shape
        return (
            f"SamoyedsWeight({self.n}:{self.m} rows per V={self.vector}, 2:4 inside, shape=({rows}, {cols}), "
            f"dtype={self.dtype}, nbytes={self.nbytes})"
        )


def _check_pattern(n: object, m: object, vector: object) -> tuple[int, int, int]:
    n = check_int("n", n, lo=1)
    m = check_int("m", m, lo=2, hi=255)
    if n >= m:
        raise ValueError(f"n: expected n < m for an N:M row selection, got n={n}, m={m}")
    vector = check_int("vector", vector, lo=4)
    if vector % 4:
        raise ValueError(f"vector: expected a multiple of 4 (2:4 groups inside a window), got {vector}")
    return n, m, vector


def _check_shape(name: str, rows: int, cols: int, m: int, vector: int) -> None:
    if rows % m:
        raise ValueError(f"{name}: expected rows to be a multiple of m={m}, got {rows} rows")
    if cols % vector:
        raise ValueError(f"{name}: expected cols to be a multiple of vector={vector}, got {cols} cols")


def compress_samoyeds(dense: torch.Tensor, n: int = 1, m: int = 2, vector: int = 128) -> SamoyedsWeight:
    """Compress a matrix that already follows the Samoyeds pattern.

    Parameters
    ----------
    dense : torch.Tensor
        ``[rows, cols]`` fp16/bf16/fp32. In every ``vector``-wide window and every group of ``m``
        consecutive rows at most ``n`` rows hold nonzeros, and those rows are 2:4 along the window.
        Prune first with :func:`samoyeds_lab.prune.sparsify` (``pattern="samoyeds"``) if it does not.
    n, m : int
        Rows kept per group (default 1 of 2).
    vector : int
        Window width along ``K`` (default 128); ``cols`` must be a multiple, and it a multiple of 4.

    Raises
    ------
    FormatError
        Naming the first window / row group with too many rows, or the first broken 2:4 group.
    """
    check_tensor("dense", dense, ndim=2, dtypes=FLOAT_DTYPES)
    n, m, vector = _check_pattern(n, m, vector)
    rows, cols = dense.shape
    _check_shape("dense", rows, cols, m, vector)
    windows = cols // vector
    w4 = dense.reshape(rows // m, m, windows, vector)
    row_used = (w4 != 0).any(-1)  # [groups, m, windows]
    counts = row_used.sum(1)  # [groups, windows]
    if counts.numel() and int(counts.max()) > n:
        r, w = _first_violation(counts, n)
        used = (row_used[r, :, w].nonzero().flatten() + r * m).tolist()
        raise FormatError(
            f"dense: not Samoyeds {n}:{m} rows per vector={vector}: window {w} (columns "
            f"{w * vector}..{w * vector + vector - 1}), rows {used} of group {r} hold nonzeros, "
            f"at most {n} allowed"
        )
    chosen = _choose_positions(row_used.transpose(1, 2), n)  # [groups, windows, n]
    idx = chosen.transpose(1, 2).reshape(-1, windows)  # [crows, windows]: row inside the group
    crows = rows // m * n
    # dense row of compressed row c in window w, then fetch the V-wide segments as whole rows of a
    # [rows·windows, V] view: one contiguous copy per segment
    drow = (torch.arange(crows, device=dense.device) // n * m).unsqueeze(1) + idx
    seg = (drow * windows + torch.arange(windows, device=dense.device)).reshape(-1)
    inner = dense.reshape(-1, vector).index_select(0, seg).reshape(crows, cols)
    values, pos, counts = _compress_groups(inner.reshape(-1, 4), 2)
    if counts is not None:
        c, g = _first_violation(counts.view(crows, -1), 2)
        w = (g * 4) // vector
        raise FormatError(
            f"dense: kept rows are not 2:4: row {int(drow[c, w])}, columns {g * 4}..{g * 4 + 3} hold "
            f"{int(counts.view(crows, -1)[c, g])} nonzeros, at most 2 allowed"
        )
    row_index = idx.T.contiguous().to(torch.uint8)
    return SamoyedsWeight(values.reshape(crows, cols // 2), pos.reshape(crows, cols // 2), row_index, n, m, vector, (rows, cols))
