"""Fuzz: bad inputs to the launch plans of ``samoyeds_lab.kernels`` (``ssmm_plan``, ``spmm_plan``,
``dense_mm_plan``): the op's own checks run first, with the op's messages; without CuPy and an SM80+ GPU, a
good input is the op's ``backend="cupy"`` error, naming ``backend``."""

from __future__ import annotations

import pytest
import torch

from samoyeds_lab import kernels as K
from samoyeds_lab.prune import sparsify

from .harness import case, ids, run_case

_g = torch.Generator().manual_seed(1)
R, C, T = 16, 64, 4
W32 = torch.randn(R, C, generator=_g)
W24 = sparsify(W32, "2:4")
WS = sparsify(W32, "samoyeds", vector=32)
X = torch.randn(T, C, generator=_g)
IDX = torch.tensor([0, 1, 3], dtype=torch.int32)
NO_GPU = (K.KernelUnavailableError, ValueError)


def _nan(t):
    t = t.clone()
    t.view(-1)[0] = float("nan")
    return t


CASES = [
    case("kernels.ssmm_plan", "weight None", lambda: K.ssmm_plan(None, X, IDX), TypeError, "weight"),
    case("kernels.ssmm_plan", "x wrong K", lambda: K.ssmm_plan(WS, torch.zeros(T, C - 1), IDX), ValueError, "x"),
    case("kernels.ssmm_plan", "x with a NaN", lambda: K.ssmm_plan(WS, _nan(X), IDX), ValueError, "x"),
    case("kernels.ssmm_plan", "token_idx out of range", lambda: K.ssmm_plan(WS, X, torch.tensor([0, T])), ValueError,
         "token_idx"),
    case("kernels.ssmm_plan", "epilogue 'gelu'", lambda: K.ssmm_plan(WS, X, IDX, epilogue="gelu"), ValueError,
         "epilogue"),
    case("kernels.ssmm_plan", "split_k 0", lambda: K.ssmm_plan(WS, X, IDX, split_k=0), ValueError, "split_k"),
    case("kernels.ssmm_plan", "kernel 'fast'", lambda: K.ssmm_plan(WS, X, IDX, kernel="fast"), ValueError, "kernel"),
    case("kernels.ssmm_plan", "CPU tensors, no GPU", lambda: K.ssmm_plan(WS, X, IDX), NO_GPU, "backend"),
    case("kernels.spmm_plan", "weight a str", lambda: K.spmm_plan("W", X), TypeError, "weight"),
    case("kernels.spmm_plan", "x int dtype", lambda: K.spmm_plan(W24, torch.zeros(T, C, dtype=torch.int32)),
         TypeError, "x"),
    case("kernels.spmm_plan", "split_k 2.5", lambda: K.spmm_plan(W24, X, split_k=2.5), TypeError, "split_k"),
    case("kernels.spmm_plan", "CPU tensors, no GPU", lambda: K.spmm_plan(W24, X), NO_GPU, "backend"),
    case("kernels.dense_mm_plan", "weight int dtype",
         lambda: K.dense_mm_plan(torch.zeros(R, C, dtype=torch.int64), X), TypeError, "weight"),
    case("kernels.dense_mm_plan", "x 1-D", lambda: K.dense_mm_plan(W32, torch.zeros(C)), ValueError, "x"),
    case("kernels.dense_mm_plan", "token_idx negative", lambda: K.dense_mm_plan(W32, X, torch.tensor([-2])),
         ValueError, "token_idx"),
    case("kernels.dense_mm_plan", "CPU tensors, no GPU", lambda: K.dense_mm_plan(W32, X), NO_GPU, "backend"),
]

EXEMPT = {
    "kernels.KernelPlan": "the result type of ssmm_plan / spmm_plan / dense_mm_plan (whose inputs are fuzzed "
                          "here); its run(x) refusals are tested in tests/kernels/test_plan.py",
}


@pytest.mark.parametrize("c", CASES, ids=ids(CASES))
def test_case(c):
    run_case(c)
