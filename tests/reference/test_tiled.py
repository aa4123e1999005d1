"""Tiled SpMM / SSMM on the mma.sp emulator against the pure-torch references, on awkward shapes.

Tolerances: with integer-valued weights and activations every fp32 partial sum is exact, so the fp32
results must be ``torch.equal``. With random normal data the tiled path sums in another order (per
k-step, per Samoyeds window) than one fp32 matmul: fp32 results agree to ``rtol=1e-5, atol=1e-4``; after
rounding to the input dtype they may differ by one unit in the last place (fp16 ``2^-10``, bf16 ``2^-7``
relative).
"""

from __future__ import annotations

import pytest
import torch

import samoyeds_lab.reference.tiled as tiled_mod
from samoyeds_lab.formats import SENTINEL, compress_nm, compress_samoyeds
from samoyeds_lab.formats.sptc import mma_metadata
from samoyeds_lab.reference import spmm, ssmm
from samoyeds_lab.reference.tiled import tiled_spmm, tiled_ssmm

from ..formats.helpers import random_24_rows, random_samoyeds

DTYPES = [torch.float16, torch.bfloat16]
FP32_TOL = dict(rtol=1e-5, atol=1e-4)
OUT_TOL = {torch.float16: dict(rtol=2e-3, atol=2e-3), torch.bfloat16: dict(rtol=1.6e-2, atol=1.6e-2)}


def token_ids(count: int, num_tokens: int, seed: int) -> torch.Tensor:
    """``count`` ids in [0, num_tokens) with duplicates and every third one SENTINEL."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, num_tokens, (count,), generator=g)
    ids[::3] = SENTINEL
    return ids.to(torch.int32)


def integer_valued(t: torch.Tensor, seed: int) -> torch.Tensor:
    """Same sparsity pattern as ``t``, values replaced by small nonzero integers."""
    g = torch.Generator().manual_seed(seed)
    ints = torch.randint(1, 4, t.shape, generator=g) * (torch.randint(0, 2, t.shape, generator=g) * 2 - 1)
    return torch.where(t != 0, ints.to(t.dtype), torch.zeros((), dtype=t.dtype))


NM_SHAPES = [(16, 32), (19, 100), (48, 96), (64, 256), (1, 4)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("rows,cols", NM_SHAPES)
@pytest.mark.parametrize("tokens", [0, 1, 19])
def test_tiled_spmm_nm(dtype, rows, cols, tokens):
    g = torch.Generator().manual_seed(rows + cols + tokens)
    w = compress_nm(random_24_rows(rows, cols, g, fill=0.8).to(dtype))
    x = torch.randn(tokens, cols, generator=g).to(dtype)
    y = tiled_spmm(w, x)
    assert y.dtype == dtype and tuple(y.shape) == (tokens, rows)
    torch.testing.assert_close(
        tiled_spmm(w, x, out_dtype=torch.float32), spmm(w, x, out_dtype=torch.float32), **FP32_TOL
    )
    torch.testing.assert_close(y, spmm(w, x), **OUT_TOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("rows,cols", [(19, 100), (64, 256)])
@pytest.mark.parametrize("count", [0, 1, 19])
def test_tiled_ssmm_nm_exact(dtype, rows, cols, count):
    g = torch.Generator().manual_seed(rows * cols + count)
    dense = integer_valued(random_24_rows(rows, cols, g, fill=0.9), seed=count).to(dtype)
    w = compress_nm(dense)
    x = integer_valued(torch.randn(23, cols, generator=g), seed=count + 1).to(dtype)
    ids = token_ids(count, 23, seed=count)
    y = tiled_ssmm(w, x, ids, out_dtype=torch.float32)
    assert tuple(y.shape) == (count, rows)
    assert torch.equal(y, ssmm(w, x, ids, out_dtype=torch.float32))
    if count:
        assert (y[ids == SENTINEL] == 0).all()


SAMOYEDS_CASES = [  # rows, cols, n, m, vector
    (64, 256, 1, 2, 128),
    (48, 96, 1, 2, 32),
    (38, 128, 1, 2, 64),  # 19 compressed rows: M tail inside a tile
    (64, 128, 2, 4, 32),
    (36, 64, 1, 3, 32),  # 12 compressed rows, 1 of 3 rows kept
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("rows,cols,n,m,vector", SAMOYEDS_CASES)
@pytest.mark.parametrize("count", [0, 1, 19])
def test_tiled_ssmm_samoyeds(dtype, rows, cols, n, m, vector, count):
    dense = random_samoyeds(rows, cols, n, m, vector, dtype, seed=rows + count, fill=0.8)
    w = compress_samoyeds(dense, n, m, vector)
    g = torch.Generator().manual_seed(count)
    x = torch.randn(29, cols, generator=g).to(dtype)
    ids = token_ids(count, 29, seed=count + rows)
    y = tiled_ssmm(w, x, ids)
    assert y.dtype == dtype and tuple(y.shape) == (count, rows)
    torch.testing.assert_close(
        tiled_ssmm(w, x, ids, out_dtype=torch.float32), ssmm(w, x, ids, out_dtype=torch.float32), **FP32_TOL
    )
    torch.testing.assert_close(y, ssmm(w, x, ids), **OUT_TOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("rows,cols,n,m,vector", SAMOYEDS_CASES[:3])
def test_tiled_ssmm_samoyeds_exact(dtype, rows, cols, n, m, vector):
    dense = integer_valued(random_samoyeds(rows, cols, n, m, vector, torch.float32, seed=5), seed=6).to(dtype)
    w = compress_samoyeds(dense, n, m, vector)
    x = integer_valued(torch.randn(40, cols, generator=torch.Generator().manual_seed(1)), seed=7).to(dtype)
    ids = token_ids(19, 40, seed=2)
    assert torch.equal(tiled_ssmm(w, x, ids, out_dtype=torch.float32), ssmm(w, x, ids, out_dtype=torch.float32))
    # also the whole batch through tiled_spmm (more than one 64-token block)
    x_all = x.repeat(2, 1)[:70]
    assert torch.equal(tiled_spmm(w, x_all, out_dtype=torch.float32), spmm(w, x_all, out_dtype=torch.float32))


def test_wrong_interleave_is_detected(monkeypatch):
    """Swapping the row g / g+8 halves of every metadata register must break the tiled result."""
    dense = integer_valued(random_samoyeds(64, 128, 1, 2, 32, torch.float32, seed=9), seed=10).half()
    w = compress_samoyeds(dense, 1, 2, 32)
    x = integer_valued(torch.randn(8, 128, generator=torch.Generator().manual_seed(3)), seed=11).half()
    ids = torch.arange(8)
    ref = ssmm(w, x, ids, out_dtype=torch.float32)
    assert torch.equal(tiled_ssmm(w, x, ids, out_dtype=torch.float32), ref)

    def swapped(logical):
        regs = mma_metadata(logical).to(torch.int64)
        return (((regs & 0xFFFF) << 16) | (regs >> 16)).to(torch.uint32)

    monkeypatch.setattr(tiled_mod, "mma_metadata", swapped)
    assert not torch.equal(tiled_ssmm(w, x, ids, out_dtype=torch.float32), ref)


def test_errors():
    dense = random_samoyeds(8, 64, 1, 2, 16, torch.float16, seed=0)
    w16 = compress_samoyeds(dense, 1, 2, 16)
    x = torch.randn(3, 64).half()
    with pytest.raises(ValueError, match="vector % 32"):
        tiled_ssmm(w16, x, torch.arange(3))
    w = compress_nm(dense)
    with pytest.raises(TypeError, match="same type"):
        tiled_ssmm(w, x.to(torch.bfloat16), torch.arange(3))
    with pytest.raises(TypeError, match="x"):
        tiled_spmm(compress_nm(dense.float()), x.float())
    with pytest.raises(ValueError, match="2:4"):
        tiled_spmm(compress_nm(torch.zeros(4, 8).half(), 1, 4), torch.zeros(2, 8).half())
    with pytest.raises(TypeError, match="weight"):
        tiled_ssmm(dense, x, torch.arange(3))
    with pytest.raises(ValueError, match="x"):
        tiled_ssmm(w, x[:, :32], torch.arange(3))
    with pytest.raises(ValueError, match="token_idx"):
        tiled_ssmm(w, x, torch.tensor([0, 3]))
