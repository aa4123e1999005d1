"""Mask builders: exact pattern structure, highest scores kept (vs brute-force loops), ties, shapes."""

from __future__ import annotations

import hypothesis.strategies as st
import pytest
import torch
from hypothesis import given, settings

from samoyeds_lab.prune import masks as masks_mod
from samoyeds_lab.prune import nm_mask, samoyeds_mask, top_n_mask, unstructured_mask, venom_mask

from .reference import continuous, nm_ref, samoyeds_ref, tie_heavy, top_n, unstructured_ref, venom_ref

DTYPES = [torch.float16, torch.bfloat16, torch.float32]
NM_PATTERNS = [(1, 2), (2, 4), (1, 4), (3, 4), (4, 8), (2, 8), (5, 16), (15, 16)]


def scores_of(kind: str, shape, seed: int, dtype=torch.float32) -> torch.Tensor:
    return tie_heavy(shape, seed, dtype=dtype) if kind == "ties" else continuous(shape, seed, dtype)


def assert_24(mask: torch.Tensor) -> None:
    """Every group of 4 along the last dim holds exactly 2 kept (or 0 where the row segment is dropped)."""
    counts = mask.reshape(*mask.shape[:-1], -1, 4).sum(-1)
    assert bool(((counts == 2) | (counts == 0)).all())


# ---------------------------------------------------------------------------------------------- top_n_mask
@settings(max_examples=60, deadline=None)
@given(m=st.integers(1, 20), data=st.data(), groups=st.integers(1, 6), kind=st.sampled_from(["ties", "cont"]),
       seed=st.integers(0, 2**16))
def test_top_n_mask_matches_reference(m, data, groups, kind, seed):
    # m > 16 exercises the stable-sort path, m <= 16 the pairwise-rank path
    n = data.draw(st.integers(0, m))
    s = scores_of(kind, (groups, m), seed)
    got = top_n_mask(s, n)
    for gi in range(groups):
        assert set(got[gi].nonzero().flatten().tolist()) == top_n(s[gi].tolist(), n)


# ---------------------------------------------------------------------------------------------- N:M
@settings(max_examples=60, deadline=None)
@given(rows=st.integers(1, 7), groups=st.integers(1, 5), pattern=st.sampled_from(NM_PATTERNS),
       kind=st.sampled_from(["ties", "cont"]), seed=st.integers(0, 2**16))
def test_nm_mask_matches_reference(rows, groups, pattern, kind, seed):
    n, m = pattern
    s = scores_of(kind, (rows, groups * m), seed)
    assert torch.equal(nm_mask(s, n, m), nm_ref(s, n, m))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("rows", [1, 19, 99])
@pytest.mark.parametrize("n,m", [(2, 4), (1, 2), (3, 8), (8, 16)])
def test_nm_mask_structure(rows, n, m, dtype):
    cols = m * 7
    s = continuous((rows, cols), seed=rows, dtype=dtype)
    mask = nm_mask(s, n, m)
    assert mask.dtype == torch.bool and mask.shape == s.shape
    g_mask = mask.view(rows, -1, m)
    assert bool((g_mask.sum(-1) == n).all())
    # every kept score >= every dropped score of the same group
    g = s.float().view(rows, -1, m)
    kept_min = torch.where(g_mask, g, torch.inf).amin(-1)
    dropped_max = torch.where(g_mask, -torch.inf, g).amax(-1)
    assert bool((kept_min >= dropped_max).all())


def test_nm_mask_ties_lower_index_wins():
    s = torch.tensor([[1.0, 1.0, 1.0, 1.0, 0.0, 2.0, 2.0, 2.0]])
    assert nm_mask(s, 2, 4).tolist() == [[True, True, False, False, False, True, True, False]]


def test_nm_mask_stack_and_1d():
    s = continuous((3, 5, 16), seed=1)
    stacked = nm_mask(s, 2, 4)
    for e in range(3):
        assert torch.equal(stacked[e], nm_mask(s[e], 2, 4))
    assert torch.equal(nm_mask(s[0, 0], 2, 4), stacked[0, 0])


def test_nm_mask_empty():
    assert nm_mask(torch.zeros(0, 8), 2, 4).shape == (0, 8)


# ---------------------------------------------------------------------------------------------- Samoyeds
@settings(max_examples=60, deadline=None)
@given(groups=st.integers(1, 4), windows=st.integers(1, 3), pattern=st.sampled_from([(1, 2), (1, 3), (2, 4), (3, 4)]),
       vector=st.sampled_from([4, 8, 16]), kind=st.sampled_from(["ties", "cont"]), seed=st.integers(0, 2**16))
def test_samoyeds_mask_matches_reference(groups, windows, pattern, vector, kind, seed):
    n, m = pattern
    s = scores_of(kind, (groups * m, windows * vector), seed)
    assert torch.equal(samoyeds_mask(s, n, m, vector), samoyeds_ref(s, n, m, vector))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("rows,n,m,vector", [(2, 1, 2, 128), (38, 1, 2, 32), (198, 1, 2, 64), (99, 1, 3, 4),
                                             (96, 2, 4, 16), (64, 3, 4, 128)])
def test_samoyeds_mask_structure(rows, n, m, vector, dtype):
    cols = vector * 3
    s = continuous((rows, cols), seed=rows, dtype=dtype)
    mask = samoyeds_mask(s, n, m, vector)
    assert mask.shape == s.shape and mask.dtype == torch.bool
    per_window = mask.view(rows // m, m, cols // vector, vector).sum(-1)  # [groups, m, windows]
    # a kept row segment holds vector/2 elements, a dropped one none; exactly n kept rows per group
    assert bool(((per_window == vector // 2) | (per_window == 0)).all())
    assert bool(((per_window == vector // 2).sum(1) == n).all())
    assert_24(mask)
    assert mask.sum().item() == rows * cols * n // m // 2


def test_samoyeds_row_score_is_post_24_sum():
    # window of 4: row 0 has the larger raw sum (4 > 3) but row 1 keeps more after 2:4 (3 > 2)
    s = torch.tensor([[1.0, 1.0, 1.0, 1.0], [3.0, 0.0, 0.0, 0.0]])
    assert samoyeds_mask(s, 1, 2, 4).tolist() == [[False] * 4, [True, True, False, False]]


def test_samoyeds_ties_lower_row_wins():
    s = torch.ones(4, 8)
    mask = samoyeds_mask(s, 1, 2, 4)
    expect = torch.tensor([[1, 1, 0, 0, 1, 1, 0, 0], [0] * 8] * 2, dtype=torch.bool)
    assert torch.equal(mask, expect)


def test_samoyeds_stack():
    s = continuous((3, 8, 32), seed=2)
    stacked = samoyeds_mask(s, 1, 2, 8)
    for e in range(3):
        assert torch.equal(stacked[e], samoyeds_mask(s[e], 1, 2, 8))


# ---------------------------------------------------------------------------------------------- VENOM
@settings(max_examples=60, deadline=None)
@given(rblocks=st.integers(1, 3), cblocks=st.integers(1, 4), pattern=st.sampled_from([(1, 4, 8), (2, 2, 8), (4, 4, 8),
       (2, 4, 4), (3, 8, 16), (2, 2, 4)]), kind=st.sampled_from(["ties", "cont"]), seed=st.integers(0, 2**16))
def test_venom_mask_matches_reference(rblocks, cblocks, pattern, kind, seed):
    v, n, m = pattern
    cblocks = cblocks * 2 if (cblocks * n) % 4 else cblocks  # kept width must be a multiple of 4
    s = scores_of(kind, (rblocks * v, cblocks * m), seed)
    assert torch.equal(venom_mask(s, v, n, m), venom_ref(s, v, n, m))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("rows,v,n,m", [(1, 1, 4, 8), (19, 1, 2, 8), (64, 64, 4, 8), (96, 32, 2, 8), (48, 16, 8, 16)])
def test_venom_mask_structure(rows, v, n, m, dtype):
    cols = m * 8
    s = continuous((rows, cols), seed=rows, dtype=dtype)
    mask = venom_mask(s, v, n, m)
    blocks = mask.view(rows // v, v, cols // m, m)
    cols_used = blocks.any(1).sum(-1)  # columns used per block, all v rows share them
    assert bool((cols_used <= n).all())
    assert bool((mask.sum(1) == cols // m * n // 2).all())  # 2 of every 4 kept columns per row
    # the kept columns are the n best column sums of each block (continuous scores: no ties), and
    # every row is exactly 2:4 over them
    sums = s.float().view(rows // v, v, cols // m, m).sum(1)
    chosen = torch.zeros_like(sums, dtype=torch.bool).scatter_(-1, sums.topk(n, -1).indices, True)
    chosen = chosen.unsqueeze(1).expand_as(blocks)
    assert not bool((blocks & ~chosen).any())
    kept = blocks[chosen].view(rows, -1)
    assert bool((kept.view(rows, -1, 4).sum(-1) == 2).all())


def test_venom_default_is_paper_64_2_8():
    s = continuous((64, 64), seed=0)
    mask = venom_mask(s)
    assert mask.float().mean().item() == 0.25
    assert bool((mask.view(64, 8, 8).sum(-1) == 2).all())  # 2 of every 8 per row


# ---------------------------------------------------------------------------------------------- unstructured
@settings(max_examples=60, deadline=None)
@given(rows=st.integers(1, 9), cols=st.integers(1, 9), density=st.floats(0.0, 1.0),
       kind=st.sampled_from(["ties", "cont"]), seed=st.integers(0, 2**16))
def test_unstructured_mask_matches_reference(rows, cols, density, kind, seed):
    s = scores_of(kind, (rows, cols), seed)
    assert torch.equal(unstructured_mask(s, density), unstructured_ref(s, density))


@pytest.mark.parametrize("density,expect", [(0.0, 0), (1.0, 99 * 16), (0.5, 99 * 8), (0.25, 396), (1 / 3, 528)])
def test_unstructured_mask_count(density, expect):
    s = tie_heavy((99, 16), seed=3, levels=2)  # half the scores tie with the threshold
    assert unstructured_mask(s, density).sum().item() == expect


# ---------------------------------------------------------------------------------------------- block processing
@pytest.mark.parametrize("block_elems", [1, 37, 256])
def test_row_blocks_do_not_change_masks(monkeypatch, block_elems):
    s = continuous((24, 64), seed=5)
    expect = [nm_mask(s, 2, 4), samoyeds_mask(s, 1, 3, 16), venom_mask(s, 8, 2, 8)]
    monkeypatch.setattr(masks_mod, "_BLOCK_ELEMS", block_elems)
    got = [nm_mask(s, 2, 4), samoyeds_mask(s, 1, 3, 16), venom_mask(s, 8, 2, 8)]
    for g, e in zip(got, expect):
        assert torch.equal(g, e)


# ---------------------------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    "call,exc,words",
    [
        (lambda: nm_mask(torch.rand(4, 10), 2, 4), ValueError, ["scores", "m=4", "10"]),
        (lambda: nm_mask(torch.rand(4, 8), 4, 4), ValueError, ["n", "n < m"]),
        (lambda: nm_mask(torch.rand(4, 32), 2, 32), ValueError, ["m", "<= 16"]),
        (lambda: nm_mask(torch.rand(4, 8), 2.0, 4), TypeError, ["n", "int"]),
        (lambda: nm_mask(torch.ones(4, 8, dtype=torch.int32), 2, 4), TypeError, ["scores", "int32"]),
        (lambda: nm_mask([[1.0, 2.0]], 1, 2), TypeError, ["scores", "Tensor"]),
        (lambda: nm_mask(torch.tensor(1.0), 1, 2), ValueError, ["scores", "1-D"]),
        (lambda: nm_mask(torch.tensor([[1.0, float("nan")]]), 1, 2), ValueError, ["scores", "NaN"]),
        (lambda: samoyeds_mask(torch.rand(3, 128)), ValueError, ["scores", "rows", "m=2", "3"]),
        (lambda: samoyeds_mask(torch.rand(4, 100)), ValueError, ["scores", "cols", "vector=128", "100"]),
        (lambda: samoyeds_mask(torch.rand(4, 12), vector=6), ValueError, ["vector", "multiple of 4"]),
        (lambda: samoyeds_mask(torch.rand(4, 128), n=2, m=2), ValueError, ["n", "n < m"]),
        (lambda: samoyeds_mask(torch.rand(128)), ValueError, ["scores", "2-D"]),
        (lambda: venom_mask(torch.rand(63, 64)), ValueError, ["scores", "rows", "v=64", "63"]),
        (lambda: venom_mask(torch.rand(64, 60)), ValueError, ["scores", "cols", "m=8", "60"]),
        (lambda: venom_mask(torch.rand(64, 8), n=2), ValueError, ["scores", "multiple of 4"]),
        (lambda: venom_mask(torch.rand(64, 64), n=9), ValueError, ["n", "<= m"]),
        (lambda: unstructured_mask(torch.rand(4, 4), -0.1), ValueError, ["density", "[0, 1]"]),
        (lambda: unstructured_mask(torch.rand(4, 4), 1.5), ValueError, ["density", "1.5"]),
        (lambda: unstructured_mask(torch.rand(4, 4), float("nan")), ValueError, ["density"]),
        (lambda: unstructured_mask(torch.rand(4, 4), "0.5"), TypeError, ["density", "str"]),
        (lambda: unstructured_mask(torch.rand(4, 4), True), TypeError, ["density", "bool"]),
    ],
)
def test_bad_input(call, exc, words):
    with pytest.raises(exc) as info:
        call()
    for word in words:
        assert word in str(info.value)


@pytest.mark.parametrize("density", [0.0, 1e-4, 0.1, 0.5, 0.97, 1.0])
@pytest.mark.parametrize("kind", ["ties", "cont"])
def test_unstructured_sampled_selection(monkeypatch, density, kind):
    # force the sampled-band path of the k-th largest on a small input; it must give the exact answer
    s = scores_of(kind, (64, 100), seed=9)
    expect = unstructured_ref(s, density)
    monkeypatch.setattr(masks_mod, "_SELECT_DIRECT", 10)
    monkeypatch.setattr(masks_mod, "_SELECT_SAMPLE", 64)
    assert torch.equal(unstructured_mask(s, density), expect)
    # a sample that misses the answer entirely falls back to the full selection
    monkeypatch.setattr(masks_mod, "_SELECT_SAMPLE", 1)
    assert torch.equal(unstructured_mask(s, density), expect)
