"""CPU references spmm / ssmm against an fp64 loop over every format, awkward sizes, bad ids."""

from __future__ import annotations

import pytest
import torch

from samoyeds_lab.formats import SENTINEL, TokenSelection, as_dense, compress_nm, compress_samoyeds, compress_venom, to_csr
from samoyeds_lab.reference import spmm, ssmm

from ..formats.helpers import random_samoyeds, random_venom

TOL = {torch.float16: dict(atol=2e-2, rtol=2e-2), torch.bfloat16: dict(atol=1e-1, rtol=5e-2), torch.float32: dict(atol=1e-4, rtol=1e-4)}


def loop_ssmm(w: torch.Tensor, x: torch.Tensor, idx: list[int]) -> torch.Tensor:
    out = torch.zeros(len(idx), w.shape[0], dtype=torch.float64)
    for i, t in enumerate(idx):
        if t != SENTINEL:
            out[i] = w.double() @ x[t].double()
    return out


def all_formats(rows, cols, dtype):
    d_sam = random_samoyeds(rows, cols, 1, 2, 32, dtype, seed=1)
    d_venom = random_venom(rows, cols, 2, 4, 8, dtype, seed=2)
    return {
        "samoyeds": (compress_samoyeds(d_sam, 1, 2, 32), d_sam),
        "2:4": (compress_nm(d_sam), d_sam),
        "venom": (compress_venom(d_venom, 2, 4, 8), d_venom),
        "csr": (to_csr(d_venom), d_venom),
        "dense": (as_dense(d_venom), d_venom),
        "tensor": (d_venom, d_venom),
    }


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
@pytest.mark.parametrize("tokens", [0, 1, 19])
def test_ssmm_every_format(dtype, tokens):
    x = torch.randn(23, 64).to(dtype)
    idx = [3, 0, SENTINEL, 22][: max(tokens, 0)] + list(range(max(0, tokens - 4)))
    token_idx = torch.tensor(idx, dtype=torch.int32)
    for name, (w, dense) in all_formats(38, 64, dtype).items():
        y = ssmm(w, x, token_idx)
        assert y.shape == (len(idx), 38) and y.dtype == dtype, name
        torch.testing.assert_close(y.double(), loop_ssmm(dense, x, idx), **TOL[dtype], msg=name)
        if SENTINEL in idx:
            assert bool((y[idx.index(SENTINEL)] == 0).all())


def test_spmm_equals_ssmm_over_all_tokens():
    x = torch.randn(19, 64, dtype=torch.float16)
    for name, (w, _) in all_formats(38, 64, torch.float16).items():
        assert torch.equal(spmm(w, x), ssmm(w, x, torch.arange(19))), name
    assert spmm(w, x, out_dtype=torch.float32).dtype == torch.float32


def test_ssmm_with_token_selection_segments():
    topk = torch.tensor([[0, 1], [1, 2], [0, 2], [2, 1]])
    sel = TokenSelection.from_topk(topk, 3, pad_to=4)
    x = torch.randn(4, 64)
    w = compress_nm(random_samoyeds(8, 64, 1, 2, 32, torch.float32))
    for e in range(3):
        y = ssmm(w, x, sel.padded_tokens_of(e))
        real = sel.tokens_of(e)
        torch.testing.assert_close(y[: real.numel()], x[real] @ w.to_dense().T)
        assert bool((y[real.numel():] == 0).all())


def test_empty_selection():
    y = ssmm(torch.randn(5, 8), torch.randn(3, 8), torch.zeros(0, dtype=torch.int64))
    assert y.shape == (0, 5)


@pytest.mark.parametrize("ids,match", [([0, 3], r"got 3 at position 1"), ([-2], r"got -2 at position 0")])
def test_out_of_range_ids(ids, match):
    with pytest.raises(ValueError, match="token_idx: expected ids in " + r"\[0, 3\).*" + match):
        ssmm(torch.randn(5, 8), torch.randn(3, 8), torch.tensor(ids))


@pytest.mark.parametrize("call,exc,match", [
    (lambda: ssmm(torch.randn(5, 8), torch.randn(3, 7), torch.tensor([0])), ValueError, r"x: expected shape \[tokens, 8\]"),
    (lambda: ssmm(torch.randn(5, 8), torch.randn(3, 8), torch.tensor([0.0])), TypeError, "token_idx: expected dtype"),
    (lambda: ssmm(torch.randn(5, 8), torch.randn(3, 8), torch.tensor([[0]])), ValueError, "token_idx: expected a 1-D"),
    (lambda: spmm("w", torch.randn(3, 8)), TypeError, "weight: expected a 2-D tensor or one of"),
    (lambda: spmm(torch.randn(5, 8), torch.randn(3, 8).int()), TypeError, "x: expected dtype"),
])
def test_bad_input(call, exc, match):
    with pytest.raises(exc, match=match):
        call()
