"""Routing analytics: hand-made traces with known answers, and brute-force loop references."""

from __future__ import annotations

import math
from itertools import product

import hypothesis.strategies as st
import pytest
import torch
from hypothesis import given, settings

from samoyeds_lab.routing import (
    RoutingTrace,
    coactivation,
    expert_counts,
    expert_frequency,
    imbalance,
    repetition_rate,
    temporal_locality,
    tokens_per_expert,
    transition_matrix,
)

from .helpers import hand_trace, random_trace

# float64 results of small integer ratios: exact up to rounding
TOL = dict(rtol=0, atol=1e-12)


# ------------------------------------------------------------------------------ loop references
def ref_overlap(trace, l, depth, pairs):
    sets = [set(trace.topk_ids[l, t, :depth].tolist()) for t in range(trace.num_tokens)]
    return sum(bool(sets[a] & sets[b]) for a, b in pairs) / len(pairs)


def ref_random_baseline(trace, l, depth):
    """P(intersect) for two tokens drawn independently (with replacement) from the trace's tokens."""
    T = trace.num_tokens
    return ref_overlap(trace, l, depth, list(product(range(T), range(T))))


def consecutive_pairs(trace):
    pairs, start = [], 0
    for n in trace.sequence_lengths.tolist():
        pairs += [(t, t + 1) for t in range(start, start + n - 1)]
        start += n
    return pairs


# --------------------------------------------------------------------------------- hand answers
def test_frequency_and_counts_by_hand():
    tr = hand_trace()
    assert expert_counts(tr).tolist() == [[3, 3, 3, 3], [3, 4, 3, 2]]
    assert expert_counts(tr, choice=0).tolist() == [[2, 1, 1, 2], [0, 4, 2, 0]]
    torch.testing.assert_close(expert_frequency(tr)[1], torch.tensor([3, 4, 3, 2], dtype=torch.float64) / 12, **TOL)
    torch.testing.assert_close(expert_frequency(tr, choice=1)[0], torch.tensor([1, 2, 2, 1], dtype=torch.float64) / 6, **TOL)
    # weighted: expert 0 of layer 0 gets 0.7 (t0) + 0.7 (t1) + 0.3 (t2) of a total mass 6·1.0
    wf = expert_frequency(tr, weighted=True)
    assert wf[0, 0].item() == pytest.approx(1.7 / 6, abs=1e-6)
    torch.testing.assert_close(wf.sum(1), torch.ones(2, dtype=torch.float64))


def test_imbalance_by_hand():
    im = imbalance(hand_trace())
    torch.testing.assert_close(im.max_over_mean, torch.tensor([1.0, 4 / 3], dtype=torch.float64), **TOL)
    torch.testing.assert_close(im.cv, torch.tensor([0.0, math.sqrt(0.5) / 3], dtype=torch.float64), **TOL)
    p = [3 / 12, 4 / 12, 3 / 12, 2 / 12]
    ent1 = -sum(x * math.log2(x) for x in p)
    torch.testing.assert_close(im.entropy, torch.tensor([2.0, ent1], dtype=torch.float64), **TOL)
    torch.testing.assert_close(im.normalized_entropy, torch.tensor([1.0, ent1 / 2], dtype=torch.float64), **TOL)


def test_imbalance_extremes_and_zero_entropy():
    # every token picks expert 2 first, expert 0 second: two experts take all
    ids = torch.tensor([[[2, 0]] * 5])
    tr = RoutingTrace(ids, torch.ones(1, 5, 2), torch.zeros(5, dtype=torch.int64), ("a",), 6)
    im = imbalance(tr)
    assert im.max_over_mean.item() == pytest.approx(3.0)  # 5 / (10 / 6)
    assert im.entropy.item() == pytest.approx(1.0)
    k1 = RoutingTrace(ids[..., :1], torch.ones(1, 5, 1), torch.zeros(5, dtype=torch.int64), ("a",), 6)
    assert imbalance(k1).entropy.item() == 0.0 and imbalance(k1).max_over_mean.item() == pytest.approx(6.0)


def test_temporal_locality_by_hand():
    loc = temporal_locality(hand_trace())
    # layer 0 first choices 0 0 1 3 3 2: repeats at (0,1) and (3,4) of 5 pairs
    assert loc.first[0].item() == pytest.approx(2 / 5)
    assert loc.first[1].item() == pytest.approx(4 / 5)  # 1 1 1 1 2 2: three 1-1 repeats, one 2-2
    # layer 0 top-2 sets {01}{02}{01}{23}{13}{23}: all pairs share an expert except (t2, t3)
    assert loc.first_or_second[0].item() == pytest.approx(4 / 5)
    # random baselines from the measured distributions: Σ p1² and 1 − P(disjoint sets)
    assert loc.first_random[0].item() == pytest.approx(10 / 36)
    assert loc.first_or_second_random[0].item() == pytest.approx(26 / 36)
    assert loc.first_uniform == pytest.approx(1 / 4)
    assert loc.first_or_second_uniform == pytest.approx(1 - 1 / 6)
    assert loc.num_pairs == 5


def test_temporal_locality_respects_sequences():
    loc = temporal_locality(hand_trace(sequence_lengths=torch.tensor([3, 3])))
    assert loc.num_pairs == 4
    assert loc.first[0].item() == pytest.approx(2 / 4)  # pair (t2, t3) is not consecutive any more
    with pytest.raises(ValueError, match="at least one pair"):
        temporal_locality(hand_trace(sequence_lengths=torch.ones(6, dtype=torch.int64)))


def test_mixtral_uniform_baselines():
    """The Mixtral paper's random baselines for 8 experts, top-2: 12.5 % and 46 %."""
    loc = temporal_locality(random_trace(1, 9, 2, 8, 1))
    assert loc.first_uniform == pytest.approx(0.125)
    assert loc.first_or_second_uniform == pytest.approx(13 / 28)  # 0.464
    assert temporal_locality(random_trace(1, 9, 1, 8, 1)).first_or_second is None


def test_transition_and_coactivation_by_hand():
    tr = hand_trace()
    n = transition_matrix(tr, 0, normalize=False)
    expect = torch.zeros(4, 4, dtype=torch.int64)
    for i, j in [(0, 1), (0, 1), (1, 1), (3, 1), (3, 2), (2, 2)]:
        expect[i, j] += 1
    assert torch.equal(n, expect)
    p = transition_matrix(tr, "layers.0.mlp")
    torch.testing.assert_close(p, torch.tensor([[0, 1, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, .5, .5, 0]],
                                               dtype=torch.float64), **TOL)
    C = coactivation(tr, 0)
    assert C.tolist() == [[3, 2, 1, 0], [2, 3, 0, 1], [1, 0, 3, 2], [0, 1, 2, 3]]
    torch.testing.assert_close(coactivation(tr, -2, normalize=True), C.double() / 6, **TOL)


def test_tokens_per_expert_by_hand():
    tr = hand_trace()
    tpe = tokens_per_expert(tr, 3)
    assert tpe.counts.shape == (2, 2, 4) and tpe.dropped_tokens == 0
    assert tpe.counts[0].tolist() == [[3, 2, 1, 0], [0, 1, 2, 3]]
    assert tpe.padded_fraction(4)[0].item() == pytest.approx(0.5)  # 12 real rows in 24 padded rows
    assert tpe.padded_fraction(1).tolist() == [0.0, 0.0]
    assert tpe.idle_fraction()[0].item() == pytest.approx(2 / 8)
    assert tpe.histogram(0).tolist() == [2, 2, 2, 2]
    assert int(tpe.histogram().sum()) == 16
    four = tokens_per_expert(tr, 4)
    assert four.counts[0].tolist() == [[3, 2, 2, 1]] and four.dropped_tokens == 2


# ------------------------------------------------------------------------------ loop references
@settings(max_examples=25, deadline=None)
@given(layers=st.integers(2, 3), tokens=st.sampled_from([2, 7, 19]), experts=st.sampled_from([3, 5, 9]),
       k=st.integers(1, 3), skew=st.sampled_from([0.0, 1.5]), seed=st.integers(0, 2**16))
def test_matches_loops(layers, tokens, experts, k, skew, seed):
    k = min(k, experts)
    seq = [tokens] if seed % 2 else [1, tokens - 1] if tokens > 2 else [tokens]
    tr = random_trace(layers, tokens, k, experts, seed, skew=skew, seq=seq)
    pairs = consecutive_pairs(tr)
    for depth in range(1, k + 1):
        if not pairs:
            break
        rate, base, uni = repetition_rate(tr, depth)
        for l in range(layers):
            assert rate[l].item() == pytest.approx(ref_overlap(tr, l, depth, pairs), abs=1e-12)
            assert base[l].item() == pytest.approx(ref_random_baseline(tr, l, depth), abs=1e-12)
        # uniform baseline = the same brute force over all possible sets
        assert uni == pytest.approx(1 - math.comb(experts - depth, depth) / math.comb(experts, depth))
    for l in range(layers):
        ids = tr.topk_ids[l].tolist()
        C = coactivation(tr, l)
        for i, j in product(range(experts), repeat=2):
            assert C[i, j].item() == sum(i in row and j in row for row in ids)
        if l + 1 < layers:
            n = transition_matrix(tr, l, normalize=False)
            nxt = tr.topk_ids[l + 1, :, 0].tolist()
            for i, j in product(range(experts), repeat=2):
                assert n[i, j].item() == sum(ids[t][0] == i and nxt[t] == j for t in range(tokens))
    for b in (1, tokens // 2 or 1, tokens):
        tpe = tokens_per_expert(tr, b)
        assert tpe.counts.sum(-1).unique().tolist() == [b * k]
        assert tpe.dropped_tokens == tokens % b
    torch.testing.assert_close(expert_frequency(tr).sum(1), torch.ones(layers, dtype=torch.float64))


# ------------------------------------------------------------------------------------ bad inputs
@pytest.mark.parametrize("call,exc,match", [
    (lambda tr: expert_frequency("x"), TypeError, r"trace: expected a RoutingTrace, got str"),
    (lambda tr: expert_counts(tr, choice=2), ValueError, r"choice: expected an int <= 1, got 2"),
    (lambda tr: repetition_rate(tr, 3), ValueError, r"depth: expected an int <= 2, got 3"),
    (lambda tr: transition_matrix(tr, 1), ValueError, r"layer: expected a layer with a next layer"),
    (lambda tr: transition_matrix(tr, 2), ValueError, r"layer: expected an int <= 1, got 2"),
    (lambda tr: coactivation(tr, "nope"), ValueError, r"layer: expected one of \['layers.0.mlp', 'layers.1.mlp'\], got 'nope'"),
    (lambda tr: coactivation(tr, 0.5), TypeError, r"layer: expected an int, got float"),
    (lambda tr: tokens_per_expert(tr, 7), ValueError, r"batch_tokens: expected an int <= 6, got 7"),
    (lambda tr: tokens_per_expert(tr, 0), ValueError, r"batch_tokens: expected an int >= 1, got 0"),
    (lambda tr: tokens_per_expert(tr, 2).padded_fraction(0), ValueError, r"pad_to: expected an int >= 1, got 0"),
])
def test_bad_inputs(call, exc, match):
    with pytest.raises(exc, match=match):
        call(hand_trace())
