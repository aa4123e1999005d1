"""serve_three_ways and its parts: the modelled times against the roofline computed by hand, the offload policy
sweep against single simulator runs, memory against the model's own byte counts, and argument errors."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from samoyeds_lab.bench.end_to_end import (
    BOUND_POLICY,
    OFFLOAD_POLICIES,
    WAYS,
    EndToEndResult,
    expert_call_times,
    expert_step_counts,
    gpu_section,
    measure_time_per_token,
    modelled_expert_time,
    offload_budget_curve,
    offload_policy_sweep,
    recorded_accuracy,
    samoyeds_cpu_path,
    serve_three_ways,
    train_popularity,
)
from samoyeds_lab.bench.roofline import roofline, speedup_ceiling
from samoyeds_lab.moe import TinyMoEConfig, TinyMoEForCausalLM
from samoyeds_lab.offload.simulate import offload_latency, simulate_offload

MIX_D, MIX_F = 4096, 14336
S_MIX = 3 * MIX_D * MIX_F * 2


# ------------------------------------------------------------------------------------------- references
def expert_time_ref(n: int, op: str) -> float:
    """One SwiGLU expert at Mixtral shapes on n tokens: gate + up (f×d) and down (d×f)."""
    return 2 * roofline(op, MIX_F, MIX_D, n, "h100_sxm").time_s + roofline(op, MIX_D, MIX_F, n, "h100_sxm").time_s


def random_trace(L=3, T=97, k=2, E=8, seed=0):
    g = np.random.default_rng(seed)
    return np.stack([np.stack([g.choice(E, k, replace=False) for _ in range(T)]) for _ in range(L)]).astype(np.int64)


# ------------------------------------------------------------------------------------------- the time model
@pytest.mark.parametrize("op", ["dense", "spmm", "ssmm"])
def test_modelled_expert_time_by_hand(op):
    # one layer, E=4; tokens 0 → {0, 1}, 1 → {1, 2}
    topk = np.array([[[0, 1], [1, 2]]])
    # batch 1: four accesses of one token each
    assert modelled_expert_time(topk, 4, op=op) == pytest.approx(4 * expert_time_ref(1, op), rel=1e-12)
    # batch 2: experts 0 and 2 on one token, expert 1 on two
    want = 2 * expert_time_ref(1, op) + expert_time_ref(2, op)
    assert modelled_expert_time(topk, 4, op=op, batch_tokens=2) == pytest.approx(want, rel=1e-12)


def test_expert_step_counts():
    topk = np.array([[[0, 1], [1, 2], [3, 0]]])
    assert expert_step_counts(topk, 4).tolist() == [1, 1, 1, 1, 1, 1]
    assert sorted(expert_step_counts(topk, 4, batch_tokens=3).tolist()) == [1, 1, 2, 2]


def test_samoyeds_decode_ratio_is_the_byte_ceiling():
    topk = random_trace()
    ratio = modelled_expert_time(topk, 8, op="dense") / modelled_expert_time(topk, 8, op="ssmm")
    # at one token per expert the three GEMMs are memory-bound: the ratio is the per-matrix ceiling
    assert ratio == pytest.approx(speedup_ceiling("ssmm", MIX_F, MIX_D, 1), rel=0.01)
    assert 3.3 < ratio < 3.7


def test_model_shape_argument():
    topk = random_trace(L=1, T=5)
    by_name = modelled_expert_time(topk, 8, shape="Mixtral-8x7B")
    assert modelled_expert_time(topk, 8, shape=(4096, 14336)) == by_name
    with pytest.raises(ValueError, match="shape"):
        modelled_expert_time(topk, 8, shape="GPT-5")
    with pytest.raises(TypeError, match="shape"):
        modelled_expert_time(topk, 8, shape=4096)
    with pytest.raises(ValueError, match="topk_ids"):
        modelled_expert_time(np.zeros((2, 3)), 8)


# ------------------------------------------------------------------------------------------- offload sweep
@pytest.fixture(scope="module")
def replay():
    traces = {"a": random_trace(T=61, seed=1), "b": random_trace(T=40, seed=2)}
    g = np.random.default_rng(3)
    preds = {}
    for d, t in traces.items():
        noisy = np.where(g.random(t.shape) < 0.7, t, g.integers(0, 8, t.shape))
        nl = noisy.copy()
        nl[0] = -1
        preds[d] = {"sida": noisy, "next_layer": nl}
    pop = np.arange(24, dtype=float).reshape(3, 8)
    return {"traces": traces, "predictions": preds, "popularity": pop, "num_experts": 8}


def test_policy_sweep_sums_single_runs(replay):
    c = offload_policy_sweep(replay["traces"], 8, capacity=6, predictions=replay["predictions"],
                             popularity=replay["popularity"])
    assert set(c.policies) == set(OFFLOAD_POLICIES) | {BOUND_POLICY}
    assert c.tokens == 101 and c.num_slots == 24 and c.capacity == 6
    for pol in ("lru", "sida", "static"):
        total = stall = 0.0
        loads = 0
        for d, t in replay["traces"].items():
            kw = {"predicted": replay["predictions"][d][pol]} if pol == "sida" else {}
            if pol == "static":
                kw["popularity"] = replay["popularity"]
            st = simulate_offload(t, 8, policy=pol, capacity=6, expert_bytes=S_MIX, **kw)
            lat = offload_latency(st, profile_gpu="h100_sxm", expert_flops=6.0 * MIX_D * MIX_F)
            total += lat.total_s
            stall += lat.stall_s
            loads += st.demand_loads
        r = c.policies[pol]
        assert r.ms_per_token == pytest.approx(total / 101 * 1e3, rel=1e-12)
        assert r.stall_ms == pytest.approx(stall / 101 * 1e3, rel=1e-12)
        assert r.demand_loads == loads
        assert r.ms_per_token == pytest.approx(r.compute_ms + r.stall_ms + r.prefetch_exposed_ms, rel=1e-12)
    best = min(OFFLOAD_POLICIES, key=lambda p: c.policies[p].ms_per_token)
    assert c.best == best == c.ranking()[0]
    assert c.policies["belady"].demand_loads <= c.policies["lru"].demand_loads
    assert c.bound is c.policies["belady"]


def test_policy_sweep_all_resident_matches_dense_time_model(replay):
    # with every expert resident, the offload model's compute is the dense roofline (up to activation bytes)
    c = offload_policy_sweep(replay["traces"], 8, capacity=24, policies=["lru"])
    dense = sum(modelled_expert_time(t, 8) for t in replay["traces"].values()) / 101 * 1e3
    assert c.policies["lru"].compute_ms == pytest.approx(dense, rel=0.01)
    # only cold misses: each (layer, expert) a domain touches is loaded once
    cold = sum(len(np.unique(t[l])) for t in replay["traces"].values() for l in range(3))
    assert c.policies["lru"].demand_loads == cold


def test_budget_curve(replay):
    curve = offload_budget_curve(replay, [1, 12, 24])
    assert list(curve) == [1, 12, 24]
    times = [curve[k].policies["belady"].ms_per_token for k in (1, 12, 24)]
    assert times[0] >= times[1] >= times[2]
    with pytest.raises(ValueError, match="replay"):
        offload_budget_curve({"traces": {}}, [1])
    with pytest.raises(ValueError, match="capacities"):
        offload_budget_curve(replay, [])
    with pytest.raises(ValueError, match="capacities"):
        offload_budget_curve(replay, [0])


@pytest.mark.parametrize("kwargs, match", [
    (dict(traces={}), "traces"),
    (dict(traces={"a": np.zeros((2, 3, 2), np.int64), "b": np.zeros((3, 3, 2), np.int64)}), "same layers"),
    (dict(capacity=0), "capacity"),
    (dict(policies=["fifo"]), "policies"),
    (dict(policies=["belady"]), "non-oracle"),
    (dict(policies="lru"), "policies"),
    (dict(policies=["sida"], predictions=None), "predictions"),
    (dict(policies=["next_layer"], predictions={"a": {}}), "predictions"),
])
def test_policy_sweep_errors(kwargs, match):
    args = dict(traces={"a": random_trace(T=5)}, capacity=4, policies=["lru"])
    args.update(kwargs)
    traces = args.pop("traces")
    with pytest.raises(ValueError, match=match):
        offload_policy_sweep(traces, 8, **args)


# ------------------------------------------------------------------------------------------- small helpers
@pytest.fixture(scope="module")
def small_model():
    torch.manual_seed(0)
    cfg = TinyMoEConfig(hidden=32, intermediate=64, layers=2, heads=2, num_experts=4, top_k=2, max_seq=32)
    return TinyMoEForCausalLM(cfg).eval()


def test_measure_time_restores_backend(small_model):
    x = torch.randint(0, 256, (2, 19))
    t = measure_time_per_token(small_model, x, backend="dense", repeat=2, warmup=0)
    assert t > 0 and all(b.backend == "grouped" for _, b in small_model.moe_blocks())
    with pytest.raises(ValueError, match="backend"):
        measure_time_per_token(small_model, x, backend="fast")
    with pytest.raises(ValueError, match="input_ids"):
        measure_time_per_token(small_model, x[0], backend="grouped")
    with pytest.raises(ValueError, match="repeat"):
        measure_time_per_token(small_model, x, backend="grouped", repeat=0)


def test_train_popularity_counts_every_slot(small_model):
    w = torch.randint(0, 256, (3, 19))
    pop = train_popularity(small_model, w, batch=2)
    assert pop.shape == (2, 4) and (pop.sum(1) == 3 * 19 * 2).all()
    with pytest.raises(ValueError, match="windows"):
        train_popularity(small_model, torch.zeros(0, 5, dtype=torch.long))


def test_recorded_accuracy():
    sweep = {"created_utc": "2026-01-02T00:00:00", "records": [
        {"label": "dense", "heldout_ppl": {"overall": 4.0}, "recovered_ppl": {"overall": 3.9},
         "recovery": {"steps": 7}, "eval_tokens": {"overall": 1000}}]}
    r = recorded_accuracy(sweep, "dense")
    assert r["ppl"] == 4.0 and r["recovered_ppl"] == 3.9
    assert "recorded 2026-01-02" in r["source"] and "7 fine-tune steps" in r["source"] and "1,000" in r["source"]
    assert recorded_accuracy(sweep, "2:4 · wanda") is None
    with pytest.raises(ValueError, match="sweep"):
        recorded_accuracy([], "dense")


def test_samoyeds_cpu_path_names_what_runs(monkeypatch):
    from samoyeds_lab.kernels import cpu as ck

    path = ck.cpu_path()
    want = f"CPU kernels ({path.isa})" if path.isa != "none" else "dense tiles ("
    assert samoyeds_cpu_path().startswith(want)
    monkeypatch.setenv("SAMOYEDS_LAB_CPU_ISA", "none")
    assert samoyeds_cpu_path() == "dense tiles (forced by SAMOYEDS_LAB_CPU_ISA=none: dense tiles only)"


@pytest.mark.parametrize("isa", [None, "none"])
def test_expert_call_times(monkeypatch, isa):
    """One expert GEMM timed alone: the ssmm call, the bare kernel (when there is one) and dense F.linear."""
    from samoyeds_lab.prune import sparsify

    if isa is not None:
        monkeypatch.setenv("SAMOYEDS_LAB_CPU_ISA", isa)
    g = torch.Generator().manual_seed(0)
    w = torch.randn(96, 256, generator=g)
    op = sparsify(w, "samoyeds", n=1, m=2, vector=128)
    x = torch.randn(19, 256, generator=g)
    out = expert_call_times(op, x, (1, 19), repeat=2)
    assert (out["rows"], out["cols"], out["dtype"]) == (96, 256, "float32")
    assert out["dense_bytes"] == 96 * 256 * 4 and out["compressed_bytes"] == op.nbytes
    assert out["path"] == samoyeds_cpu_path()
    assert [c["tokens"] for c in out["calls"]] == [1, 19]
    for c in out["calls"]:
        assert c["samoyeds_us"] > 0 and c["dense_us"] > 0
        assert (c["kernel_us"] is None) == (isa == "none" or out["path"].startswith("dense tiles"))
    with pytest.raises(ValueError, match="tokens"):
        expert_call_times(op, x, (20,))
    with pytest.raises(ValueError, match="columns"):
        expert_call_times(op, x[:, :128], (1,))
    with pytest.raises(ValueError, match="x"):
        expert_call_times(op, x[0], (1,))


def test_gpu_section_states_when_nothing_is_recorded():
    g = gpu_section([])
    assert g["records"] == [] and g["devices"] == []
    assert "No GPU kernel results have been recorded yet" in g["text"]
    assert g["kernels_available"] is False  # no GPU on the CI machine
    assert "backend" in g["banner"]


def test_gpu_section_lists_devices_and_dates():
    from samoyeds_lab.bench.kernels import make_record
    from samoyeds_lab.offload.hardware import load_profile

    rec = make_record(device="TEST-DEVICE", driver="0", versions={}, op="ssmm", model="Mixtral-8x7B", m=14336,
                      k=4096, tokens=16, dtype="float16", ms=1.0, baseline="torch_dense", baseline_ms=2.0,
                      profile=load_profile("h100_sxm"), date="2026-01-02")
    g = gpu_section([rec])
    assert g["devices"] == [("TEST-DEVICE", "2026-01-02")]
    assert "TEST-DEVICE (2026-01-02)" in g["text"]


# ------------------------------------------------------------------------------------------- end to end
@pytest.fixture(scope="module")
def result():
    return serve_three_ways(eval_tokens=256, calib_tokens=512, time_tokens=64, repeat=1, trace_tokens=300,
                            threads=1, seed=0)


def test_result_structure(result):
    assert isinstance(result, EndToEndResult)
    assert tuple(w.way for w in result.ways) == WAYS
    assert [result.way(w).way for w in WAYS] == list(WAYS)
    with pytest.raises(ValueError, match="name"):
        result.way("quantised")
    assert result.trace_is_shipped_checkpoint
    assert set(result.replay) >= {"traces", "predictions", "popularity", "num_experts"}
    assert all(t.shape == (4, 300, 2) for t in result.replay["traces"].values())
    rows = result.table_rows()
    assert len(rows) == 3 and rows[2]["cpu_ms_per_token"] is None
    # on a CPU: one expert of the served (pruned) model timed alone, at 1 token and at its mean tokens per expert
    calls = result.expert_calls
    assert (calls["rows"], calls["cols"], calls["dtype"]) == (256, 128, "float32")
    assert calls["forward_tokens"] == 64 and calls["tokens_per_expert"] == pytest.approx(64 * 2 / 8)
    assert [c["tokens"] for c in calls["calls"]] == [1, 16]
    assert 0.25 < calls["compressed_bytes"] / calls["dense_bytes"] < 0.28  # fp32 values: 25% + metadata


def test_accuracy(result):
    dense, sam, off = (result.way(w) for w in WAYS)
    assert set(dense.ppl) == {"en", "de", "code", "overall"}
    assert off.ppl == dense.ppl and "= dense" in off.ppl_source
    assert sam.ppl["overall"] > dense.ppl["overall"] > 1
    assert "samoyeds backend" in sam.ppl_source and "live" in dense.ppl_source
    assert result.backend_max_abs_diff < 1e-3
    # the recorded numbers are the sweep file's
    from samoyeds_lab.moe.accuracy import load_sweep

    recs = {r["label"]: r for r in load_sweep(Path(__file__).resolve().parents[2] / "data" / "accuracy" / "tiny_moe_sparsity.json")["records"]}
    assert dense.recorded_ppl == recs["dense"]["heldout_ppl"]["overall"]
    # the Samoyeds way prunes as the study's best recorded configuration: V = 32, OBS, joint gate/up rows
    assert sam.recorded_ppl == recs["Samoyeds V=32 · obs"]["heldout_ppl"]["overall"]
    assert sam.recorded_recovered_ppl == recs["Samoyeds V=32 · obs"]["recovered_ppl"]["overall"]
    assert sam.recorded_source.startswith("recorded ")


def test_memory(result):
    dense, sam, off = (result.way(w) for w in WAYS)
    assert dense.expert_bytes == 4 * 8 * 3 * 128 * 256 * 2 == dense.dense_expert_bytes
    assert 0.27 < sam.memory_fraction < 0.30
    cap = result.offload.capacity
    assert cap == round(32 * sam.expert_bytes / dense.expert_bytes)  # the same GPU bytes as Samoyeds
    per = dense.expert_bytes // 32
    if result.offload.best == "sida":
        assert off.expert_bytes > cap * per
    else:
        assert off.expert_bytes == cap * per


def test_time(result):
    dense, sam, off = (result.way(w) for w in WAYS)
    assert dense.measured_ms_per_token > 0 and sam.measured_ms_per_token > 0
    assert off.measured_ms_per_token is None and "not measured" in off.measured_source
    assert "2-core CPU" in dense.measured_source or "-core CPU" in dense.measured_source
    assert sam.measured_source.endswith(f"samoyeds backend ({samoyeds_cpu_path()})")
    ids = np.concatenate(list(result.replay["traces"].values()), axis=1)
    assert dense.model_ms_per_token == pytest.approx(modelled_expert_time(ids, 8) / ids.shape[1] * 1e3, rel=1e-12)
    assert sam.model_ms_per_token == pytest.approx(
        modelled_expert_time(ids, 8, op="ssmm") / ids.shape[1] * 1e3, rel=1e-12)
    assert off.model_ms_per_token == result.offload.policies[result.offload.best].ms_per_token
    assert all(w.model_source.startswith("model:") for w in result.ways)
    best = result.offload.policies[result.offload.best].ms_per_token
    assert all(best <= result.offload.policies[p].ms_per_token for p in OFFLOAD_POLICIES)
    assert math.isfinite(result.offload.bound.ms_per_token)


@pytest.mark.parametrize("kwargs, exc, match", [
    (dict(eval_tokens=0), ValueError, "eval_tokens"),
    (dict(device="tpu"), ValueError, "device"),
    (dict(domains=["fr"]), ValueError, "domains"),
    (dict(shape="GPT-5"), ValueError, "shape"),
    (dict(method="sgd"), ValueError, "method"),
    (dict(vector=96), ValueError, "vector"),
])
def test_serve_errors(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        serve_three_ways(**kwargs)
