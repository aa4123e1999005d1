"""The Switch-like preset of Lab 06 (many small experts, top-1) and SiDA's hash-routing latency."""

import numpy as np
import pytest

from samoyeds_lab.offload.simulate import offload_latency, simulate_offload
from samoyeds_lab.offload.sweep import (
    MIXTRAL_EXPERT,
    SWITCH_BASE_EXPERT,
    hash_policy_latency,
    policy_latencies,
    switch_like_trace,
)


def test_switch_expert_has_switch_base_parameter_count():
    assert SWITCH_BASE_EXPERT.params == 2 * 768 * 3072
    assert SWITCH_BASE_EXPERT.nbytes == 2 * 2 * 768 * 3072


@pytest.mark.parametrize("L,E,T", [(1, 1, 1), (2, 7, 19), (6, 128, 989)])
def test_trace_shape_range_and_determinism(L, E, T):
    a = switch_like_trace(L, E, T, vocab=max(E, 64), seed=3)
    assert a.shape == (L, T, 1) and a.dtype == np.int64
    assert a.min() >= 0 and a.max() < E
    np.testing.assert_array_equal(a, switch_like_trace(L, E, T, vocab=max(E, 64), seed=3))


def test_token_share_one_is_pure_token_routing_and_uniform_tokens_balance_experts():
    a = switch_like_trace(2, 16, 20000, vocab=256, token_share=1.0, seed=0)
    b = switch_like_trace(2, 16, 20000, vocab=256, token_share=1.0, seed=0, zipf=1.2)
    # the same token id always meets the same expert in a layer: re-drawing with another seed permutes usage
    # but popularity is flat for uniform tokens and skewed under a Zipf law
    flat = np.bincount(a[0, :, 0], minlength=16) / 20000
    skew = np.bincount(b[0, :, 0], minlength=16) / 20000
    assert flat.max() < 1.5 / 16 and skew.max() > 2.0 / 16
    c = switch_like_trace(2, 16, 50, vocab=256, token_share=0.0, seed=1)
    assert not np.array_equal(c, switch_like_trace(2, 16, 50, vocab=256, token_share=1.0, seed=1))


def test_bad_arguments():
    with pytest.raises(ValueError, match="vocab"):
        switch_like_trace(2, 16, 10, vocab=8)
    with pytest.raises(ValueError, match="token_share"):
        switch_like_trace(token_share=1.5)
    with pytest.raises(ValueError, match="zipf"):
        switch_like_trace(zipf=-1.0)
    with pytest.raises(TypeError, match="expert: expected an ExpertShape"):
        hash_policy_latency(np.zeros((1, 3, 1), int), 4, 2, expert="x")
    with pytest.raises(ValueError, match="link_gbs"):
        hash_policy_latency(np.zeros((1, 3, 1), int), 4, 2, link_gbs=0)


def test_hash_latency_is_the_sida_replay_of_the_predicted_routing():
    pred = switch_like_trace(3, 16, 200, vocab=64, seed=2)
    st, lat = hash_policy_latency(pred, 16, 8, profile_gpu="a100_sxm", expert=SWITCH_BASE_EXPERT)
    assert st.demand_loads == 0 and st.hit_rate == 1.0 and lat.stall_s == 0.0
    ref = simulate_offload(pred, 16, policy="sida", capacity=8, expert_bytes=SWITCH_BASE_EXPERT.nbytes,
                           predicted=pred)
    lt = offload_latency(ref, profile_gpu="a100_sxm", expert_flops=SWITCH_BASE_EXPERT.flops_per_token)
    assert lat.total_s == pytest.approx(lt.total_s)
    # with a perfect predictor, SiDA-as-prefetch and SiDA-as-routing are the same replay
    same = policy_latencies(pred, 16, 8, profile_gpu="a100_sxm", expert=SWITCH_BASE_EXPERT,
                            predictions={"sida": pred}, policies=("sida",))["sida"][1]
    assert same.total_s == pytest.approx(lat.total_s)


def test_more_bandwidth_never_slower():
    pred = switch_like_trace(2, 32, 300, vocab=64, seed=4)
    t = [hash_policy_latency(pred, 32, 6, profile_gpu="a100_sxm", link_gbs=b, expert=MIXTRAL_EXPERT)[1].total_s
         for b in (8, 32, 450)]
    assert t[0] > t[1] > t[2]
