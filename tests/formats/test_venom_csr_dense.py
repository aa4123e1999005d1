"""VENOM V:N:M, CSR and dense baselines."""

from __future__ import annotations

import pytest
import torch

from samoyeds_lab.errors import FormatError
from samoyeds_lab.formats import CSRWeight, as_dense, compress_venom, to_csr

from .helpers import random_venom


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
@pytest.mark.parametrize("rows,v,n,m,cols", [(4, 4, 4, 8, 64), (64, 64, 4, 8, 128), (19, 1, 4, 16, 32), (99, 33, 2, 4, 16)])
def test_venom_round_trip(rows, v, n, m, cols, dtype):
    dense = random_venom(rows, cols, v, n, m, dtype, seed=rows)
    w = compress_venom(dense, v, n, m)
    assert w.values.shape == (rows, cols // m * n // 2)
    assert w.column_index.shape == (rows // v, cols // m * n)
    assert torch.equal(w.to_dense(), dense)
    assert w.density == pytest.approx(n / m / 2)


def test_venom_rejects_too_many_columns():
    dense = random_venom(8, 16, 4, 4, 8, torch.float32)
    dense[:4, :8] = 1.0  # all 8 columns of block (0, 0)
    with pytest.raises(FormatError, match="row block 0 .*column block 0 uses 8 columns"):
        compress_venom(dense, 4, 4, 8)


@pytest.mark.parametrize("kwargs,match", [
    (dict(dense=torch.zeros(5, 16), v=4), "rows to be a multiple of v=4"),
    (dict(dense=torch.zeros(4, 12), v=4, m=8), "cols to be a multiple of m=8"),
    (dict(dense=torch.zeros(4, 16), v=4, n=9, m=8), "n <= m"),
    (dict(dense=torch.zeros(4, 16), v=4, n=1, m=8), "multiple of 4"),
])
def test_venom_bad_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        compress_venom(**kwargs)


@pytest.mark.parametrize("rows,cols", [(1, 1), (19, 7), (99, 130)])
def test_csr_round_trip_and_bytes(rows, cols):
    g = torch.Generator().manual_seed(rows)
    dense = torch.randn(rows, cols, generator=g) * (torch.rand(rows, cols, generator=g) < 0.3)
    c = to_csr(dense.half())
    assert torch.equal(c.to_dense(), dense.half())
    nnz = int((dense != 0).sum())
    assert c.nbytes == nnz * 2 + nnz * 4 + (rows + 1) * 4


def test_csr_rejects_out_of_range_columns():
    c = to_csr(torch.eye(4))
    with pytest.raises(ValueError, match="col_indices: expected values in"):
        CSRWeight(c.crow_indices, torch.full_like(c.col_indices, 4), c.values, (4, 4))
    with pytest.raises(ValueError, match="crow_indices: expected 5 entries"):
        CSRWeight(c.crow_indices[:-1], c.col_indices, c.values, (4, 4))


def test_dense_wrapper():
    d = as_dense(torch.ones(3, 5, dtype=torch.bfloat16))
    assert d.nbytes == 30 and d.density == 1.0 and d.shape == (3, 5)
    with pytest.raises(TypeError, match="values: expected dtype"):
        as_dense(torch.ones(3, 5, dtype=torch.int32))
