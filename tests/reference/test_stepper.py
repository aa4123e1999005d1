"""The stepped SSMM (reference.stepper): every k-step of the tiled emulator, checked against the products.

The last step's output must be bit-identical to ``tiled_ssmm(..., out_dtype=float32)`` (same additions in
the same order) on any data, and to the pure-torch ``ssmm`` when every sum is exact (integer entries).
Each step is checked against a from-scratch computation of what the kernel holds at that point.
"""

from __future__ import annotations

import pytest
import torch

from samoyeds_lab.formats import SENTINEL, TokenSelection, compress_nm, compress_samoyeds
from samoyeds_lab.reference import ssmm
from samoyeds_lab.reference.stepper import KStep, example_ssmm, gather_plan, ssmm_steps
from samoyeds_lab.reference.tiled import tiled_ssmm

from ..formats.helpers import random_24_rows, random_samoyeds
from .test_tiled import integer_valued, token_ids

DTYPES = [torch.float16, torch.bfloat16]


def expected_acc(weight, x, idx, step: KStep) -> torch.Tensor:
    """What compressed row c's accumulator holds after ``step``: its window's columns up to this k-step."""
    inner = weight.inner.to_dense().float() if hasattr(weight, "inner") else weight.to_dense().float()
    vector = getattr(weight, "vector", None)
    k0 = step.window * vector if vector else 0
    xs = torch.zeros(step.slots.numel(), x.shape[1])
    ids = idx[step.slots].long()
    ok = ids != SENTINEL
    xs[ok] = x[ids[ok]].float()
    return inner[step.crows][:, k0: step.cols[1]] @ xs[:, k0: step.cols[1]].T


@pytest.mark.parametrize("dtype", DTYPES)
def test_example_is_exact_against_the_reference(dtype):
    w, x, idx = example_ssmm(dtype=dtype)
    assert w.shape == (8, 192) and w.vector == 64 and int(idx[-1]) == SENTINEL
    steps = ssmm_steps(w, x, idx)
    assert len(steps) == 6 and [s.flush for s in steps] == [False, True] * 3
    assert torch.equal(steps[-1].out, ssmm(w, x, idx, out_dtype=torch.float32))
    assert (steps[-1].out[-1] == 0).all()  # the SENTINEL slot


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("rows,cols,vector,count", [(8, 96, 32, 5), (8, 192, 64, 7), (38, 128, 32, 70),
                                                    (300, 64, 32, 3)])
def test_steps_follow_the_kernel(dtype, rows, cols, vector, count):
    dense = random_samoyeds(rows, cols, 1, 2, vector, torch.float32, seed=rows + count)
    w = compress_samoyeds(integer_valued(dense, seed=count).to(dtype), 1, 2, vector)
    x = torch.randint(-2, 3, (11, cols)).to(dtype)
    idx = token_ids(count, 11, seed=count)
    steps = ssmm_steps(w, x, idx)
    ksteps = cols // 32
    assert len(steps) == ksteps * ((rows // 2 + 127) // 128) * ((count + 63) // 64)
    dense_rows = w.dense_rows()
    for s in steps:
        assert s.window == s.kstep // (vector // 32) and s.cols == (32 * s.kstep, 32 * s.kstep + 32)
        assert s.flush == ((s.kstep + 1) % (vector // 32) == 0)
        assert torch.equal(s.dense_row, dense_rows[s.window, s.crows])
        assert torch.equal(s.dense_row, s.row_group * s.group + s.row_in_group)
        assert set(s.row_in_group.tolist()) <= {0, 1} and s.row_group == 2
        assert torch.equal(s.acc, expected_acc(w, x, idx, s)), s.index
        bn = s.block[1]
        want = torch.full((64,), SENTINEL, dtype=torch.int64)
        part = idx[bn * 64: bn * 64 + 64].long()
        want[: part.numel()] = part
        assert torch.equal(s.b_tokens, want)  # the ids are the B load addresses
    assert torch.equal(steps[-1].out, ssmm(w, x, idx, out_dtype=torch.float32))


def test_output_grows_only_at_flushes_into_the_named_rows():
    w, x, idx = example_ssmm(seed=3)
    steps = ssmm_steps(w, x, idx)
    prev = torch.zeros_like(steps[0].out)
    for s in steps:
        changed = (s.out != prev).any(0).nonzero().flatten()
        if not s.flush:
            assert changed.numel() == 0
        else:
            assert set(changed.tolist()) <= set(s.dense_row.tolist())
            assert torch.equal(s.out[s.slots][:, s.dense_row] - prev[s.slots][:, s.dense_row], s.acc.T)
        prev = s.out


@pytest.mark.parametrize("dtype", DTYPES)
def test_random_data_bit_identical_to_tiled(dtype):
    dense = random_samoyeds(40, 128, 1, 2, 64, dtype, seed=1)
    w = compress_samoyeds(dense, 1, 2, 64)
    x = torch.randn(9, 128).to(dtype)
    idx = token_ids(13, 9, seed=2)
    assert torch.equal(ssmm_steps(w, x, idx)[-1].out, tiled_ssmm(w, x, idx, out_dtype=torch.float32))


def test_plain_24_has_one_window():
    w = compress_nm(integer_valued(random_24_rows(20, 96, torch.Generator().manual_seed(0)), 1).half(), 2, 4)
    x = torch.randint(-2, 3, (5, 96)).half()
    idx = torch.tensor([4, 0, SENTINEL, 2])
    steps = ssmm_steps(w, x, idx)
    assert [s.flush for s in steps] == [False, False, True] and all(s.window == 0 for s in steps)
    assert torch.equal(steps[0].dense_row, torch.arange(20))
    assert torch.equal(steps[-1].out, ssmm(w, x, idx, out_dtype=torch.float32))


def test_empty_selection_has_no_steps():
    w, x, _ = example_ssmm()
    assert ssmm_steps(w, x, torch.zeros(0, dtype=torch.int64)) == []


def test_step_errors():
    w, x, idx = example_ssmm()
    with pytest.raises(TypeError, match="weight"):
        ssmm_steps(w.to_dense(), x, idx)
    with pytest.raises(TypeError, match="x: mma.sp takes A and B of the same type"):
        ssmm_steps(w, x.bfloat16(), idx)
    with pytest.raises(ValueError, match="x: expected shape"):
        ssmm_steps(w, x[:, :64], idx)
    with pytest.raises(ValueError, match="token_idx"):
        ssmm_steps(w, x, torch.tensor([99]))
    big = compress_samoyeds(random_samoyeds(4096, 4096, 1, 2, 128, torch.float16, seed=0), 1, 2, 128)
    with pytest.raises(ValueError, match="weight: too large"):
        ssmm_steps(big, torch.zeros(64, 4096, dtype=torch.float16), torch.arange(64))
    with pytest.raises(ValueError, match="weight: the tiled Samoyeds path needs vector"):
        ssmm_steps(compress_samoyeds(random_samoyeds(8, 64, 1, 2, 16, torch.float16, seed=0), 1, 2, 16), x[:, :64],
                   idx)


def test_example_errors():
    for kw, exc, name in [(dict(rows=7), ValueError, "rows"), (dict(vector=48), ValueError, "vector"),
                          (dict(cols=16), ValueError, "cols"), (dict(seed=-1), ValueError, "seed"),
                          (dict(dtype=torch.float32), TypeError, "dtype"), 
                          (dict(num_tokens=1.5), TypeError, "num_tokens")]:
        with pytest.raises(exc, match=name):
            example_ssmm(**kw)


# ---------------------------------------------------------------------------------------------- gather
def test_gather_plan_from_a_selection():
    topk = torch.tensor([[0, 2], [1, 2], [0, 1], [2, 0], [1, 2]])
    sel = TokenSelection.from_topk(topk, 3, pad_to=8)
    x = torch.randn(5, 70)
    for e in range(3):
        plan = gather_plan(sel, 5, 70, expert=e)
        ids = sel.padded_tokens_of(e).long()
        assert torch.equal(plan.token_ids[: ids.numel()], ids) and plan.token_ids.numel() == 64
        assert len(plan.loads) == 3 and [ld.cols for ld in plan.loads] == [(0, 32), (32, 64), (64, 70)]
        for ld in plan.loads:
            assert torch.equal(ld.fused_rows, plan.token_ids[ld.slots])  # the ids are the addresses
            assert torch.equal(ld.separate_rows, ld.slots)  # the copy is read contiguously
        want = torch.zeros(64, 70)
        ok = plan.token_ids != SENTINEL
        want[ok] = x[plan.token_ids[ok]]
        xg, b = plan.separate_b(x)
        assert torch.equal(plan.fused_b(x), want) and torch.equal(b, want) and torch.equal(xg, want)
        real, listed = int(sel.counts[e]), ids.numel()
        assert plan.fused_bytes == {"ids": 4 * listed, "x_read": real * 140, "copy_written": 0, "copy_read": 0,
                                    "total": 4 * listed + real * 140}
        assert plan.separate_bytes["total"] - plan.fused_bytes["total"] == 2 * listed * 140


def test_gather_plan_errors():
    sel = TokenSelection.from_topk(torch.tensor([[0], [1]]), 2)
    with pytest.raises(ValueError, match="expert"):
        gather_plan(sel, 2, 32)
    with pytest.raises(ValueError, match="num_tokens"):
        gather_plan(sel, 3, 32, expert=0)
    with pytest.raises(ValueError, match="expert"):
        gather_plan(torch.tensor([0]), 2, 32, expert=0)
    with pytest.raises(TypeError, match="token_idx"):
        gather_plan([0, 1], 2, 32)
    with pytest.raises(ValueError, match="token_idx"):
        gather_plan(torch.tensor([5]), 2, 32)
    with pytest.raises(ValueError, match="cols"):
        gather_plan(torch.tensor([0]), 2, 0)
    with pytest.raises(ValueError, match="x: expected shape"):
        gather_plan(torch.tensor([0]), 2, 32).fused_b(torch.zeros(3, 32))
