"""TokenSelection: grouping by expert, offsets, sentinel padding, validation."""

from __future__ import annotations

import hypothesis.strategies as st
import pytest
import torch
from hypothesis import given, settings

from samoyeds_lab.formats import SENTINEL, TokenSelection


def reference_grouping(topk_ids: torch.Tensor, num_experts: int):
    """Per-expert (token, slot) lists by a plain loop — the spec."""
    tokens, k = topk_ids.shape
    per = {e: [] for e in range(num_experts)}
    for t in range(tokens):
        for j in range(k):
            per[int(topk_ids[t, j])].append((t, t * k + j))
    return {e: sorted(v) for e, v in per.items()}


def test_small_example_from_docstring():
    sel = TokenSelection.from_topk(torch.tensor([[0, 2], [0, 1], [1, 2]]), 3, pad_to=4)
    assert sel.token_ids.tolist() == [0, 1, 1, 2, 0, 2]
    assert sel.offsets.tolist() == [0, 2, 4, 6]
    assert sel.slot_ids.tolist() == [0, 2, 3, 4, 1, 5]
    assert sel.padded_offsets.tolist() == [0, 4, 8, 12]
    assert sel.padded_token_ids.tolist() == [0, 1, -1, -1, 1, 2, -1, -1, 0, 2, -1, -1]
    assert sel.tokens_of(2).tolist() == [0, 2]


@settings(max_examples=60, deadline=None)
@given(tokens=st.integers(0, 70), experts=st.integers(1, 16), k=st.integers(1, 4), pad=st.sampled_from([1, 8, 64]),
       seed=st.integers(0, 2**16), dtype=st.sampled_from([torch.int32, torch.int64, torch.uint8]))
def test_matches_loop_reference(tokens, experts, k, pad, seed, dtype):
    k = min(k, experts)
    g = torch.Generator().manual_seed(seed)
    topk = torch.stack([torch.randperm(experts, generator=g)[:k] for _ in range(tokens)]) if tokens else torch.zeros(0, k, dtype=torch.int64)
    sel = TokenSelection.from_topk(topk.to(dtype), experts, pad_to=pad)
    ref = reference_grouping(topk, experts)
    assert sel.counts.tolist() == [len(ref[e]) for e in range(experts)]
    for e in range(experts):
        assert sel.tokens_of(e).tolist() == [t for t, _ in ref[e]]
        assert sel.slots_of(e).tolist() == [s for _, s in ref[e]]
        seg = sel.padded_tokens_of(e)
        assert seg.numel() % pad == 0 and seg.numel() - len(ref[e]) < pad
        assert seg[: len(ref[e])].tolist() == [t for t, _ in ref[e]]
        assert bool((seg[len(ref[e]):] == SENTINEL).all())
    assert sel.token_ids.dtype == torch.int32 and sel.offsets.dtype == torch.int64
    assert int(sel.offsets[-1]) == tokens * k


def test_padding_overhead():
    sel = TokenSelection.from_topk(torch.tensor([[0], [0], [1]]), 2, pad_to=64)
    assert sel.padding_overhead == pytest.approx(128 / 3 - 1)


@pytest.mark.parametrize("args,exc,match", [
    ((torch.tensor([[0, 5]]), 4), ValueError, r"expert ids in \[0, 4\), got 5 for token 0 \(choice 1\)"),
    ((torch.tensor([[1, 0], [-1, 2]]), 4), ValueError, r"got -1 for token 1"),
    ((torch.tensor([[1, 1]]), 4), ValueError, "distinct experts per token, token 0"),
    ((torch.tensor([[0.0, 1.0]]), 4), TypeError, "topk_ids: expected dtype"),
    ((torch.zeros(2, 2, 2, dtype=torch.int64), 4), ValueError, r"shape \[tokens, k\]"),
    ((torch.tensor([[0]]), 0), ValueError, "num_experts: expected an int >= 1"),
])
def test_bad_input(args, exc, match):
    with pytest.raises(exc, match=match):
        TokenSelection.from_topk(*args)


def test_bad_pad_and_expert_query():
    with pytest.raises(ValueError, match="pad_to"):
        TokenSelection.from_topk(torch.tensor([[0]]), 2, pad_to=0)
    sel = TokenSelection.from_topk(torch.tensor([[0]]), 2)
    with pytest.raises(ValueError, match="expert: expected an int <= 1"):
        sel.tokens_of(2)
