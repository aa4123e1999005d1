"""The MoNDE and Samoyeds + offloaded ways of Lab 08 (serve_more_ways and its parts): the MoNDE model against
layer_cost step by step, the compressed offload against the dense one (same hits, bytes scaled), the byte model
against real compressed operands, the hybrid measurement against the one-device forward, and the
bring-your-own-model helpers on a tiny random Hugging Face checkpoint."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from samoyeds_lab.bench.byo import ENV_VAR, byo_model_path, byo_trace
from samoyeds_lab.bench.end_to_end import (
    CompressedOffloadWay,
    MondeWay,
    MoreWays,
    byo_offload_costs,
    compressed_expert_bytes,
    hf_expert_shape,
    hot_slots,
    measure_monde,
    modelled_monde_time,
    offload_policy_sweep,
    serve_more_ways,
    serve_three_ways,
)
from samoyeds_lab.moe import TinyMoEConfig, TinyMoEForCausalLM
from samoyeds_lab.offload.cost import layer_cost


def random_trace(L=3, T=50, E=8, k=2, seed=0) -> np.ndarray:
    g = np.random.default_rng(seed)
    return np.stack([np.stack([g.choice(E, k, replace=False) for _ in range(T)]) for _ in range(L)]).astype(np.int64)


# ------------------------------------------------------------------------------------------- pieces
def test_hot_slots_ties_and_order():
    pop = np.array([[3, 1, 3, 0], [3, 2, 0, 5]])
    np.testing.assert_array_equal(hot_slots(pop, 3), [[True, False, True, False], [False, False, False, True]])
    # ties to the smaller flat slot id: slots 0, 2 and 4 all have 3; with 4 slots, 4 joins
    assert hot_slots(pop, 4).reshape(-1).nonzero()[0].tolist() == [0, 2, 4, 7]
    assert not hot_slots(pop, 0).any() and hot_slots(pop, 8).all()
    with pytest.raises(ValueError, match="capacity"):
        hot_slots(pop, 9)
    with pytest.raises(ValueError, match="popularity"):
        hot_slots(np.array([1, 2]), 1)


def test_compressed_bytes_match_real_operands():
    cb = compressed_expert_bytes("Mixtral-8x7B")
    assert cb["dense"] == 3 * 4096 * 14336 * 2 and cb["vector"] == 128
    assert 3.4 < cb["ratio"] < 3.6  # 25% of the values + 2:4 metadata + row indices: ≈28% of the bytes
    # the byte model counts what the compressed operands of a real pruned expert hold
    from samoyeds_lab.moe.experts import SwiGLUExperts

    torch.manual_seed(0)
    ex = SwiGLUExperts(2, 128, 256).half()
    ex.sparsify("samoyeds", vector=128)
    real = sum(ex.compressed[p][0].nbytes for p in ("gate", "up", "down"))
    assert compressed_expert_bytes((128, 256), index_bits=1)["compressed"] == real  # packed 1-bit row indices
    assert 0 < compressed_expert_bytes((128, 256))["compressed"] - real < 0.01 * real  # uint8 indices, as read
    assert compressed_expert_bytes((64, 32))["vector"] == 32  # small models: the largest window that fits
    with pytest.raises(ValueError, match="shape"):
        compressed_expert_bytes((40, 72))


def test_monde_model_is_layer_cost_step_by_step():
    ids = random_trace(L=2, T=13, E=8, seed=4)
    hot = np.zeros((2, 8), bool)
    hot[0, [1, 5]] = True
    hot[1, 3] = True
    for bt in (1, 4):
        got = modelled_monde_time(ids, 8, hot, batch_tokens=bt)
        P, d = 3.0 * 4096 * 14336, 4096
        total = 0.0
        for li in range(2):
            for s0 in range(0, 13, bt):
                n = np.bincount(ids[li, s0:s0 + bt].reshape(-1), minlength=8)
                total += layer_cost(n, P, "h100_sxm", "cxl_ndp_monde", d_model=d, on_gpu=hot[li],
                                    resident=hot[li], concurrent=True).latency
        assert got["ms_per_token"] == pytest.approx(total / 13 * 1e3, rel=1e-12)
        assert got["gpu_ms"] + got["near_ms"] >= got["ms_per_token"] > 0
    # every expert hot: the all-resident time; none hot: every access near data
    all_hot = modelled_monde_time(ids, 8, np.ones((2, 8), bool))
    assert all_hot["ms_per_token"] == pytest.approx(all_hot["resident_ms"]) and all_hot["near_share"] == 0
    assert modelled_monde_time(ids, 8, np.zeros((2, 8), bool))["near_share"] == 1
    with pytest.raises(ValueError, match="hot"):
        modelled_monde_time(ids, 8, np.ones((3, 8), bool))
    with pytest.raises(ValueError, match="topk_ids"):
        modelled_monde_time(ids, 4, np.ones((2, 4), bool))


def test_compressed_offload_same_hits_bytes_scaled():
    traces = {"a": random_trace(T=40, seed=1)}
    cb = compressed_expert_bytes()
    kw = dict(capacity=6, policies=("lru", "belady"))
    dense = offload_policy_sweep(traces, 8, **kw)
    comp = offload_policy_sweep(traces, 8, expert_bytes=cb["compressed"], **kw)
    for p in ("lru", "belady"):
        assert comp.policies[p].hit_rate == dense.policies[p].hit_rate
        assert comp.policies[p].demand_loads == dense.policies[p].demand_loads
        assert comp.policies[p].stall_ms == pytest.approx(dense.policies[p].stall_ms / cb["ratio"], rel=1e-12)
    assert comp.policies["lru"].ms_per_token < dense.policies["lru"].ms_per_token
    with pytest.raises(ValueError, match="expert_bytes"):
        offload_policy_sweep(traces, 8, expert_bytes=0, **kw)


def test_measure_monde_equals_one_device_and_times():
    torch.manual_seed(0)
    cfg = TinyMoEConfig(hidden=32, intermediate=64, layers=2, heads=2, num_experts=4, top_k=2, max_seq=32)
    model = TinyMoEForCausalLM(cfg).eval()
    x = torch.randint(0, 256, (1, 19))
    hot = np.array([[True, False, False, True], [False, True, False, False]])
    m = measure_monde(model, x, hot, repeat=2)
    assert m["tokens"] == 19 and m["max_abs_diff"] < 1e-5
    assert all(m[k] > 0 for k in ("hybrid_ms", "fast_ms", "near_ms", "resident_ms"))
    with pytest.raises(ValueError, match="hot"):
        measure_monde(model, x, hot[:1])
    with pytest.raises(TypeError, match="model"):
        measure_monde(object(), x, hot)


# ------------------------------------------------------------------------------------------- end to end
@pytest.fixture(scope="module")
def result():
    return serve_three_ways(eval_tokens=256, calib_tokens=512, time_tokens=64, repeat=1, trace_tokens=300,
                            threads=1, seed=0)


@pytest.fixture(scope="module")
def more(result):
    return serve_more_ways(result, repeat=1)


def test_more_ways(result, more):
    assert isinstance(more, MoreWays)
    mo, so = more.monde, more.samoyeds_offloaded
    assert isinstance(mo, MondeWay) and isinstance(so, CompressedOffloadWay)
    cap = result.offload.capacity
    # the hot set is the static policy's: `capacity` experts, the most used in the train-split profile
    assert int(mo.hot.sum()) == cap
    np.testing.assert_array_equal(mo.hot, hot_slots(result.replay["popularity"], cap))
    assert mo.measured["max_abs_diff"] < 1e-4 and mo.measured["source"].startswith("measured, ")
    assert mo.model["source"].startswith("model: ") and 0 < mo.model["near_share"] < 1
    # MoNDE models between the all-resident time and the offloaded way at one token per step
    off = result.way("offloaded").model_ms_per_token
    assert result.way("dense").model_ms_per_token < mo.model["ms_per_token"] < off
    # compressed misses: the same hit rates, fewer bytes per miss, in ~28% of the offloaded way's GPU bytes
    best = so.choice.policies[so.choice.best]
    assert so.choice.capacity == cap and best.ms_per_token < off
    for p, pr in so.choice.policies.items():
        assert pr.hit_rate == result.offload.policies[p].hit_rate
    assert so.memory_fraction == pytest.approx(result.way("samoyeds").memory_fraction * cap / mo.hot.size, rel=1e-3)
    rows = more.modelled_rows(result)
    assert [r["way"] for r in rows] == ["dense", "samoyeds", "offloaded", "monde", "samoyeds_offloaded"]
    assert all(r["source"].startswith("model: ") for r in rows)
    with pytest.raises(TypeError, match="result"):
        serve_more_ways("result")
    with pytest.raises(TypeError, match="result"):
        more.modelled_rows(None)


# ------------------------------------------------------------------------------------------- bring your own model
def test_byo_model_path(monkeypatch, tmp_path):
    monkeypatch.delenv(ENV_VAR, raising=False)
    assert byo_model_path(None) is None
    monkeypatch.setenv(ENV_VAR, "")
    assert byo_model_path() is None
    monkeypatch.setenv(ENV_VAR, str(tmp_path))
    assert byo_model_path() == tmp_path
    assert byo_model_path("/x") == type(tmp_path)("/x")  # an explicit path wins over the environment
    with pytest.raises(TypeError, match="path"):
        byo_model_path(3)


@pytest.fixture(scope="module")
def hf_checkpoint(tmp_path_factory):
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    cfg = transformers.MixtralConfig(vocab_size=300, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                     num_key_value_heads=2, max_position_embeddings=512, intermediate_size=32,
                                     num_local_experts=6, num_experts_per_tok=2, tie_word_embeddings=False)
    root = tmp_path_factory.mktemp("byo") / "tiny-mixtral"
    transformers.AutoModelForCausalLM.from_config(cfg).save_pretrained(root)
    return root


def test_byo_trace_and_costs(hf_checkpoint):
    model, trace, how = byo_trace(hf_checkpoint, tokens=64)
    assert (trace.num_layers, trace.num_tokens, trace.top_k, trace.num_experts) == (2, 64, 2, 6)
    assert "modulo the vocabulary (300)" in how
    assert hf_expert_shape(model) == (64, 32)
    c = byo_offload_costs(trace, (64, 32), capacity=3)
    assert (c["capacity"], c["num_slots"], c["tokens"]) == (3, 12, 32)
    assert c["expert_mb"] == pytest.approx(3 * 64 * 32 * 2 / 1e6)
    assert c["offload"]["belady"] <= min(c["offload"][p] for p in ("lru", "lfu"))
    assert c["resident_ms"] < c["offload"][c["best"]] and c["samoyeds_offload_ms"] < c["offload"][c["best"]]
    with pytest.raises(TypeError, match="trace"):
        byo_offload_costs("trace", (64, 32))
    with pytest.raises(ValueError, match="capacity"):
        byo_offload_costs(trace, (64, 32), capacity=13)
    with pytest.raises(TypeError, match="model"):
        hf_expert_shape(object())
    with pytest.raises(ValueError, match="domain"):
        byo_trace(hf_checkpoint, domain="fr")
    with pytest.raises(FileNotFoundError, match="path"):
        byo_trace(hf_checkpoint / "missing")


# ------------------------------------------------------------------------------------------- figures
# NOTE: the figures of these ways are tested here, on the module's served result, rather than in tests/viz
# (building a result takes seconds on a 2-core machine).
def test_five_ways_model_figure(result, more):
    from samoyeds_lab.viz.end_to_end import five_ways_model_figure

    d = five_ways_model_figure(result, more).to_dict()
    (bar,) = d["data"]
    rows = more.modelled_rows(result)
    assert list(bar["y"]) == pytest.approx([r["ms_per_token"] for r in rows])
    assert len(bar["x"]) == 5 and len(set(bar["marker"]["color"])) == 5
    ya = d["layout"]["yaxis"]
    assert ya["type"] == "log" and "model" in ya["title"]["text"]
    lo, hi = ya["range"]  # every bar and its label inside the axis
    assert 10 ** lo < min(bar["y"]) and max(bar["y"]) * 2 < 10 ** hi
    assert "Model:" in d["layout"]["title"]["text"] and "Mixtral-8x7B" in d["layout"]["title"]["text"]
    assert all("mem" in t for t in bar["text"])
    with pytest.raises(TypeError, match="more"):
        five_ways_model_figure(result, None)
    with pytest.raises(TypeError, match="result"):
        five_ways_model_figure(None, more)


def test_monde_measured_figure(more):
    from samoyeds_lab.viz.end_to_end import monde_measured_figure

    d = monde_measured_figure(more).to_dict()
    (bar,) = d["data"]
    m = more.monde.measured
    assert list(bar["y"]) == pytest.approx([m["resident_ms"], m["hybrid_ms"], m["fast_ms"], m["near_ms"]])
    assert "Measured here" in d["layout"]["title"]["text"] and d["layout"]["yaxis"].get("type") != "log"
    assert d["layout"]["yaxis"]["range"][1] > max(bar["y"])
    with pytest.raises(TypeError, match="more"):
        monde_measured_figure(result)
