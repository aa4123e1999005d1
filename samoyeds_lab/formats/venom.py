"""VENOM-style column-vector sparsity (V:N:M), and the dense / CSR baselines for memory comparisons.

VENOM (Castro et al., SC'23) cuts a matrix into blocks of ``v`` rows × ``m`` columns and keeps the
same ``n`` columns for all ``v`` rows of a block; inside the kept columns each row is 2:4. Here ``n``
counts the *kept columns*, so VENOM's own "V:2:M" (2 nonzeros per row per block, 4 columns kept) is
``compress_venom(dense, v=V, n=4, m=M)``; the density is ``n/m · 1/2``. The column choice gathers along
``K`` — the dimension Samoyeds keeps free for the token gather, which is why Samoyeds selects rows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .._checks import FLOAT_DTYPES, check_int, check_tensor
from ..errors import FormatError
from .nm import NMWeight, _check_dense_shape, _choose_positions, _first_violation


@dataclass(frozen=True, eq=False)
class VenomWeight:
    """A V:N:M column-vector sparse matrix.

    Attributes
    ----------
    values, positions : torch.Tensor
        ``[rows, cols·n/m/2]``: the 2:4 compression of the kept columns (glued block after block).
    column_index : torch.Tensor
        ``uint8 [rows/v, cols·n/m]``: kept column ``b·n + j`` of row block ``i`` is dense column
        ``b·m + column_index[i, b·n + j]``.
    v, n, m : int
        Rows per block, kept columns per block, columns per block.
    shape : tuple[int, int]
    """

    values: torch.Tensor
    positions: torch.Tensor
    column_index: torch.Tensor
    v: int
    n: int
    m: int
    shape: tuple[int, int]

    def __post_init__(self) -> None:
        v, n, m = _check_pattern(self.v, self.n, self.m)
        rows, cols = _check_dense_shape("shape", self.shape)
        _check_shape("shape", rows, cols, v, m)
        check_tensor("column_index", self.column_index, ndim=2, dtypes=(torch.uint8,))
        expect = (rows // v, cols // m * n)
        if tuple(self.column_index.shape) != expect:
            raise ValueError(f"column_index: expected shape {expect}, got {tuple(self.column_index.shape)}")
        if self.column_index.numel():
            if int(self.column_index.max()) >= m:
                raise FormatError(f"column_index: expected values < m={m}, got {int(self.column_index.max())}")
            if n > 1:
                ci = self.column_index.view(expect[0], cols // m, n)  # uint8 compares: no widening copy
                bad = ci[..., 1:] <= ci[..., :-1]
                if bool(bad.any()):
                    i, b, _ = _first_violation(bad.to(torch.int8), 0)
                    raise FormatError(
                        f"column_index: expected strictly ascending (distinct) kept columns inside each block, "
                        f"row block {i} column block {b} has {ci[i, b].tolist()}"
                    )
        NMWeight(self.values, self.positions, 2, 4, (rows, cols // m * n))
        object.__setattr__(self, "shape", (rows, cols))

    @property
    def dtype(self) -> torch.dtype:
        return self.values.dtype

    @property
    def density(self) -> float:
        return self.n / self.m / 2

    @property
    def inner(self) -> NMWeight:
        """The 2:4 matrix of kept columns ``[rows, cols·n/m]``."""
        return NMWeight(self.values, self.positions, 2, 4, (self.shape[0], self.shape[1] // self.m * self.n))

    @property
    def nbytes(self) -> int:
        """Values + 2:4 metadata + column indices (``ceil(log2 m)`` bits each)."""
        bits = max(1, math.ceil(math.log2(self.m)))
        return self.inner.nbytes + math.ceil(self.column_index.numel() * bits / 8)

    def to_dense(self) -> torch.Tensor:
        rows, cols = self.shape
        v, n, m = self.v, self.n, self.m
        kept = self.inner.to_dense().view(rows // v, v, cols // m, n)
        out = torch.zeros(rows // v, v, cols // m, m, dtype=self.values.dtype, device=self.values.device)
        idx = self.column_index.to(torch.int64).view(rows // v, 1, cols // m, n).expand(-1, v, -1, -1)
        out.scatter_(-1, idx, kept)
        return out.view(rows, cols)

    def __repr__(self) -> str:
        return f"VenomWeight(v={self.v}, {self.n} of {self.m} columns, 2:4 inside, shape={self.shape}, nbytes={self.nbytes})"


def _check_pattern(v: object, n: object, m: object) -> tuple[int, int, int]:
    v = check_int("v", v, lo=1)
    n = check_int("n", n, lo=1)
    m = check_int("m", m, lo=2, hi=255)
    if n > m:
        raise ValueError(f"n: expected kept columns n <= m, got n={n}, m={m}")
    return v, n, m


def _check_shape(name: str, rows: int, cols: int, v: int, m: int) -> None:
    if rows % v:
        raise ValueError(f"{name}: expected rows to be a multiple of v={v}, got {rows}")
    if cols % m:
        raise ValueError(f"{name}: expected cols to be a multiple of m={m}, got {cols}")


def compress_venom(dense: torch.Tensor, v: int = 64, n: int = 4, m: int = 8) -> VenomWeight:
    """Compress a matrix that already follows the V:N:M pattern (``n`` kept columns per ``v×m`` block).

    ``cols/m·n`` must be a multiple of 4 (the kept columns are 2:4 along each row).
    """
    check_tensor("dense", dense, ndim=2, dtypes=FLOAT_DTYPES)
    v, n, m = _check_pattern(v, n, m)
    rows, cols = dense.shape
    _check_shape("dense", rows, cols, v, m)
    if (cols // m * n) % 4:
        raise ValueError(f"n: kept columns per row (cols/m·n = {cols // m * n}) must be a multiple of 4 for 2:4")
    blocks = dense.reshape(rows // v, v, cols // m, m)
    col_used = (blocks != 0).any(1)  # [rb, cb, m]
    counts = col_used.sum(-1)
    if counts.numel() and int(counts.max()) > n:
        i, b = _first_violation(counts, n)
        raise FormatError(
            f"dense: not V:N:M with v={v}, n={n}, m={m}: row block {i} (rows {i * v}..{i * v + v - 1}), column "
            f"block {b} uses {int(counts[i, b])} columns, at most {n} allowed"
        )
    idx = _choose_positions(col_used, n)  # [rb, cb, n]
    width = cols // m * n
    kept = torch.gather(blocks, -1, idx.unsqueeze(1).expand(-1, v, -1, -1)).reshape(rows, width)
    g4 = kept.view(rows, width // 4, 4)
    nz4 = (g4 != 0).sum(-1)
    if nz4.numel() and int(nz4.max()) > 2:
        r, g = _first_violation(nz4, 2)
        raise FormatError(f"dense: kept columns are not 2:4: row {r}, kept group {g} holds {int(nz4[r, g])} nonzeros")
    pos = _choose_positions(g4 != 0, 2)
    values = torch.gather(g4, -1, pos).reshape(rows, width // 2)
    return VenomWeight(
        values.contiguous(), pos.reshape(rows, width // 2).to(torch.uint8).contiguous(),
        idx.reshape(rows // v, width).to(torch.uint8).contiguous(), v, n, m, (rows, cols),
    )


@dataclass(frozen=True, eq=False)
class DenseWeight:
    """A plain dense matrix, wrapped so it has the same ``.nbytes`` / ``.to_dense()`` as the formats."""

    values: torch.Tensor

    def __post_init__(self) -> None:
        check_tensor("values", self.values, ndim=2, dtypes=FLOAT_DTYPES)

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.values.shape)  # type: ignore[return-value]

    @property
    def dtype(self) -> torch.dtype:
        return self.values.dtype

    @property
    def density(self) -> float:
        return 1.0

    @property
    def nbytes(self) -> int:
        return self.values.numel() * self.values.element_size()

    def to_dense(self) -> torch.Tensor:
        return self.values


def as_dense(dense: torch.Tensor) -> DenseWeight:
    """Wrap a dense ``[rows, cols]`` matrix as a :class:`DenseWeight`."""
    return DenseWeight(dense)


@dataclass(frozen=True, eq=False)
class CSRWeight:
    """Compressed sparse rows (unstructured baseline): int32 row pointers and column indices."""

    crow_indices: torch.Tensor
    col_indices: torch.Tensor
    values: torch.Tensor
    shape: tuple[int, int]

    def __post_init__(self) -> None:
        rows, cols = _check_dense_shape("shape", self.shape)
        check_tensor("crow_indices", self.crow_indices, ndim=1, dtypes=(torch.int32,))
        check_tensor("col_indices", self.col_indices, ndim=1, dtypes=(torch.int32,))
        check_tensor("values", self.values, ndim=1, dtypes=FLOAT_DTYPES)
        if self.crow_indices.numel() != rows + 1:
            raise ValueError(f"crow_indices: expected {rows + 1} entries (rows + 1), got {self.crow_indices.numel()}")
        nnz = self.values.numel()
        if self.col_indices.numel() != nnz:
            raise ValueError(
                f"col_indices/values: expected one column index per value, got {self.col_indices.numel()} "
                f"and {nnz}"
            )
        crow = self.crow_indices.to(torch.int64)
        if int(crow[0]) != 0 or int(crow[-1]) != nnz:
            raise FormatError(
                f"crow_indices: expected to start at 0 and end at len(values)={nnz}, got "
                f"{int(crow[0])} … {int(crow[-1])}"
            )
        counts = crow[1:] - crow[:-1]
        if counts.numel() and int(counts.min()) < 0:
            r = int((counts < 0).nonzero()[0])
            raise FormatError(
                f"crow_indices: expected non-decreasing row pointers, got {int(crow[r])} then {int(crow[r + 1])} "
                f"(row {r})"
            )
        if nnz:
            col = self.col_indices.to(torch.int64)
            lo, hi = int(col.min()), int(col.max())
            if lo < 0 or hi >= cols:
                raise ValueError(f"col_indices: expected values in [0, {cols}), got range [{lo}, {hi}]")
            row_of = torch.repeat_interleave(torch.arange(rows, device=col.device), counts.to(col.device))
            bad = (row_of[1:] == row_of[:-1]) & (col[1:] <= col[:-1])
            if bool(bad.any()):
                i = int(bad.nonzero()[0])
                raise FormatError(
                    f"col_indices: expected strictly increasing (distinct) columns inside each row, row "
                    f"{int(row_of[i])} has column {int(col[i])} then {int(col[i + 1])}"
                )
        object.__setattr__(self, "shape", (rows, cols))

    @property
    def dtype(self) -> torch.dtype:
        return self.values.dtype

    @property
    def density(self) -> float:
        rows, cols = self.shape
        return self.values.numel() / max(1, rows * cols)

    @property
    def nbytes(self) -> int:
        return (self.values.numel() * self.values.element_size()
                + 4 * self.col_indices.numel() + 4 * self.crow_indices.numel())

    def to_dense(self) -> torch.Tensor:
        rows, cols = self.shape
        out = torch.zeros(rows, cols, dtype=self.values.dtype, device=self.values.device)
        counts = (self.crow_indices[1:] - self.crow_indices[:-1]).to(torch.int64)
        row_ids = torch.repeat_interleave(torch.arange(rows, device=out.device), counts)
        out[row_ids, self.col_indices.to(torch.int64)] = self.values
        return out


def to_csr(dense: torch.Tensor) -> CSRWeight:
    """Compress the nonzeros of a dense ``[rows, cols]`` matrix into CSR (int32 indices)."""
    check_tensor("dense", dense, ndim=2, dtypes=FLOAT_DTYPES)
    rows, cols = dense.shape
    nz = dense != 0
    counts = nz.sum(1)
    crow = torch.zeros(rows + 1, dtype=torch.int64, device=dense.device)
    crow[1:] = torch.cumsum(counts, 0)
    r, c = nz.nonzero(as_tuple=True)
    return CSRWeight(crow.to(torch.int32), c.to(torch.int32), dense[r, c].contiguous(), (rows, cols))
