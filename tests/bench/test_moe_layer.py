"""bench.moe_layer: the step-by-step block forward against every MoEBlock backend and an fp64 per-token loop; the
cost model against hand counts; the layer-time model against bench.roofline and bench.end_to_end."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from samoyeds_lab.bench.end_to_end import modelled_expert_time
from samoyeds_lab.bench.roofline import roofline
from samoyeds_lab.formats import SENTINEL
from samoyeds_lab.moe import MoEBlock, TinyMoEConfig, TinyMoEForCausalLM
from samoyeds_lab.bench.moe_layer import (
    MOE_SHAPES,
    TIME_OPS,
    MoEShape,
    backend_outputs,
    capture_block_input,
    decompose_block,
    layer_costs,
    layer_time,
    layer_time_sweep,
    padded_fraction,
    recorded_layer_time,
    routing_counts,
    samoyeds_grouped_forward,
    tile_rows,
    time_cpu,
    uniform_routing_counts,
)
from samoyeds_lab.routing import RoutingTrace


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def make_block(shared: str = "none", seed: int = 0, E: int = 8, k: int = 2) -> MoEBlock:
    torch.manual_seed(seed)
    opts = {"none": {}, "gated": dict(shared_intermediate=128, shared_gate=True)}[shared]
    return MoEBlock(128, 256, E, k, **opts).sparsify("samoyeds")


def loop_reference(block: MoEBlock, x: torch.Tensor) -> torch.Tensor:
    """fp64, one token and one choice at a time, with the block's own routing."""
    r = block.router(x).detach()
    ex = block.experts
    wg, wu, wd = ex.w_gate.detach().double(), ex.w_up.detach().double(), ex.w_down.detach().double()
    xs = x.double()
    out = torch.zeros_like(xs)
    for t in range(xs.shape[0]):
        for j in range(r.topk_ids.shape[1]):
            e = int(r.topk_ids[t, j])
            out[t] += float(r.topk_weights[t, j]) * (wd[e] @ (F.silu(wg[e] @ xs[t]) * (wu[e] @ xs[t])))
        if block.shared is not None:
            s = block.shared
            y = s.down_proj.weight.double() @ (F.silu(s.gate_proj.weight.double() @ xs[t])
                                               * (s.up_proj.weight.double() @ xs[t]))
            out[t] += torch.sigmoid(block.shared_expert_gate.weight.double() @ xs[t]) * y
    return out


# ---------------------------------------------------------------------------------------------- anatomy
@pytest.mark.parametrize("tokens", [1, 19, 99])
@pytest.mark.parametrize("shared", ["none", "gated"])
@pytest.mark.parametrize("pad_to", [None, 1, 7])
def test_decompose_equals_every_backend_and_the_loop(tokens, shared, pad_to):
    block = make_block(shared, seed=tokens)
    x = torch.randn(tokens, 128)
    a = decompose_block(block, x, pad_to=pad_to)
    ref = loop_reference(block, x)
    torch.testing.assert_close(a.output.double(), ref, atol=1e-5, rtol=1e-5)
    for name, y in backend_outputs(block, x).items():
        torch.testing.assert_close(y, a.output, atol=1e-5, rtol=1e-5, msg=name)
    torch.testing.assert_close(samoyeds_grouped_forward(block, x, pad_to=pad_to), a.routed, atol=1e-5, rtol=1e-5)
    assert block.backend == "dense"  # restored
    sel = a.selection
    assert sel.pad_to == (64 if pad_to is None else pad_to)
    assert [s.expert for s in a.steps] == [e for e in range(8) if int(sel.counts[e]) > 0]
    total = torch.zeros_like(x)
    for s in a.steps:
        assert s.num_tokens == int(sel.counts[s.expert]) and s.padded_rows % sel.pad_to == 0
        real = s.padded_token_ids != SENTINEL
        assert torch.equal(s.padded_token_ids[real].long(), s.token_ids)
        assert bool((s.h[~real] == 0).all()) and s.up.shape == (s.padded_rows, 256)
        # weights are the router's: w[t, j] with ids[t, j] == expert
        rows, cols = (a.topk_ids == s.expert).nonzero(as_tuple=True)
        torch.testing.assert_close(s.weights, a.topk_weights[rows, cols])
        total.index_add_(0, s.token_ids, s.contribution)
    torch.testing.assert_close(total, a.routed, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(a.probs, torch.softmax(a.logits, -1))
    assert a.step(next(iter(range(8)))) is None or a.step(0).expert == 0
    if shared == "none":
        assert bool((a.shared == 0).all())
    else:
        assert float(a.shared.abs().max()) > 0


def test_decompose_leading_shape_and_errors():
    block = make_block()
    x = torch.randn(2, 5, 128)
    a = decompose_block(block, x)
    assert a.output.shape == (10, 128)
    torch.testing.assert_close(a.output, block(x).reshape(10, 128), atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="sparsified"):
        decompose_block(MoEBlock(128, 256, 4, 2), torch.randn(3, 128))
    with pytest.raises(ValueError, match="sparsified"):
        samoyeds_grouped_forward(MoEBlock(128, 256, 4, 2), torch.randn(3, 128))
    with pytest.raises(TypeError, match="block"):
        decompose_block(torch.nn.Linear(2, 2), torch.randn(3, 2))
    with pytest.raises(ValueError, match=r"x: expected shape \[\.\.\., 128\]"):
        decompose_block(block, torch.randn(3, 64))
    with pytest.raises(TypeError, match="x"):
        decompose_block(block, torch.zeros(3, 128, dtype=torch.int64))
    with pytest.raises(ValueError, match="pad_to"):
        decompose_block(block, torch.randn(3, 128), pad_to=0)
    with pytest.raises(ValueError, match="backends"):
        backend_outputs(block, torch.randn(3, 128), backends=("fast",))
    with pytest.raises(ValueError, match="expert"):
        decompose_block(block, torch.randn(3, 128)).step(8)


def test_capture_block_input_is_the_blocks_input():
    torch.manual_seed(0)
    model = TinyMoEForCausalLM(TinyMoEConfig()).eval()
    ids = torch.randint(0, 256, (2, 13))
    seen = []
    h = model.moe_blocks()[2][1].register_forward_hook(lambda m, args, out: seen.append(args[0].detach()))
    model(ids)
    h.remove()
    x = capture_block_input(model, ids, 2)
    assert x.shape == (26, model.config.hidden)
    torch.testing.assert_close(x, seen[0].reshape(26, -1))
    torch.testing.assert_close(capture_block_input(model, ids[0], 2), seen[0][0])
    with pytest.raises(ValueError, match="layer"):
        capture_block_input(model, ids, 4)
    with pytest.raises(TypeError, match="model"):
        capture_block_input(torch.nn.Linear(2, 2), ids, 0)


def test_time_cpu():
    calls = []
    t = time_cpu(lambda: calls.append(1), repeat=3, warmup=2)
    assert len(calls) == 5 and t >= 0
    with pytest.raises(TypeError, match="fn"):
        time_cpu(3)
    with pytest.raises(ValueError, match="repeat"):
        time_cpu(lambda: None, repeat=0)


# ---------------------------------------------------------------------------------------------- padding, costs
def test_tile_rows_and_padded_fraction():
    real, pad = tile_rows([0, 1, 64, 65, 130], 64)
    assert real.tolist() == [0, 1, 64, 65, 130] and pad.tolist() == [0, 63, 0, 63, 62]
    assert padded_fraction([0, 1, 64, 65, 130], 64) == pytest.approx(188 / (260 + 188))
    assert padded_fraction([0, 0], 64) == 0.0
    assert padded_fraction(torch.tensor([3, 5]), 1) == 0.0
    with pytest.raises(ValueError, match="counts"):
        tile_rows([1.5, 2.0])
    with pytest.raises(ValueError, match="counts"):
        tile_rows([-1, 2])
    with pytest.raises(ValueError, match="counts"):
        tile_rows([])
    with pytest.raises(ValueError, match="pad_to"):
        tile_rows([1], 0)


def test_layer_costs_by_hand():
    H, I, b = 128, 256, 2
    counts = [3, 0, 70, 1]  # T·k = 74 with k = 2 → T = 37; busy experts 3; p = 64 + 128 + 64 = 256
    c = layer_costs(counts, H, I, top_k=2)
    n, busy, p = 74, 3, 256
    for be in ("dense", "grouped"):
        assert c[be].weight_bytes == busy * 3 * H * I * b
        assert c[be].activation_bytes == b * 10 * n * H
        assert c[be].intermediate_bytes == b * 8 * n * I
        assert c[be].flops == c[be].executed_flops == 6.0 * H * I * n
        assert c[be].padded_rows == n
    assert c["dense"].launches == 8 * busy + 1 and c["grouped"].launches == 5 * busy + 4
    assert c["dense"].index_bytes > c["grouped"].index_bytes
    s = c["samoyeds"]
    # compressed weight, m×k: (m/2)·(k/2) values + 2 bits each + (k/128)·(m/2) uint8 row indices
    def comp(m, k):
        kept = m // 2 * k // 2
        return kept * b + kept * 2 // 8 + (k // 128) * (m // 2)
    assert s.weight_bytes == busy * (2 * comp(I, H) + comp(H, I))
    assert s.weight_bytes / c["dense"].weight_bytes == pytest.approx(0.2828, abs=2e-3)
    assert roofline("ssmm", I, H, 1).weight_bytes == comp(I, H)  # same operand as the roofline
    assert s.activation_bytes == b * 4 * n * H and s.intermediate_bytes == b * 4 * p * I
    assert s.executed_flops == pytest.approx(6.0 * H * I * 0.25 * p) and s.flops == 6.0 * H * I * n
    assert s.launches == 4 and s.padded_rows == p
    assert s.bytes == s.weight_bytes + s.activation_bytes + s.intermediate_bytes + s.index_bytes
    c32 = layer_costs(counts, H, I, dtype="float32", backends=("grouped",))
    assert list(c32) == ["grouped"] and c32["grouped"].weight_bytes == 2 * c["grouped"].weight_bytes
    with pytest.raises(ValueError, match="backends"):
        layer_costs(counts, H, I, backends=("spmm",))
    with pytest.raises(ValueError, match="dtype"):
        layer_costs(counts, H, I, dtype="int8")
    with pytest.raises(ValueError, match="d_model, d_ffn"):
        layer_costs(counts, 100, I)


# ---------------------------------------------------------------------------------------------- routing
def test_uniform_routing_counts():
    c = uniform_routing_counts(999, 64, 8, seed=3)
    assert c.shape == (64,) and c.sum() == 999 * 8 and c.max() <= 999
    assert np.array_equal(c, uniform_routing_counts(999, 64, 8, seed=3))
    assert not np.array_equal(c, uniform_routing_counts(999, 64, 8, seed=4))
    assert uniform_routing_counts(0, 8, 2).sum() == 0
    assert uniform_routing_counts(5, 4, 4).tolist() == [5, 5, 5, 5]
    with pytest.raises(ValueError, match="top_k"):
        uniform_routing_counts(5, 4, 5)


def _trace(L=2, T=128, E=8, k=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.stack([torch.stack([torch.randperm(E, generator=g)[:k] for _ in range(T)]) for _ in range(L)])
    return RoutingTrace(topk_ids=ids, weights=torch.full((L, T, k), 1.0 / k),
                        token_ids=torch.randint(0, 256, (T,), generator=g),
                        layer_names=tuple(f"layers.{i}.mlp" for i in range(L)), num_experts=E)


def test_routing_counts_uses_the_trace_when_it_fits():
    tr = _trace()
    c, src = routing_counts("Mixtral-8x7B", 16, trace=tr, layer=1, batch_index=2)
    want = torch.bincount(tr.topk_ids[1, 32:48].reshape(-1), minlength=8).numpy()
    assert np.array_equal(c, want) and "tiny-model routing (layer 1, tokens 32–47)" in src
    c, src = routing_counts("Qwen2-MoE-57B-A14B", 16, trace=tr)  # 64 experts: the trace does not fit
    assert c.shape == (64,) and c.sum() == 16 * 8 and src.startswith("uniform random routing")
    c, src = routing_counts("Mixtral-8x7B", 256, trace=tr)  # more tokens than the trace has
    assert c.sum() == 512 and src.startswith("uniform")
    with pytest.raises(ValueError, match="shape"):
        routing_counts("GPT-5", 4)
    with pytest.raises(TypeError, match="shape"):
        routing_counts(8, 4)
    with pytest.raises(ValueError, match="layer"):
        routing_counts("Mixtral-8x7B", 4, trace=tr, layer=2)


# ---------------------------------------------------------------------------------------------- time
def test_layer_time_matches_roofline_and_end_to_end_model():
    tr = _trace(L=1, T=64)
    for op in TIME_OPS:
        for B in (1, 8, 64):
            c = torch.bincount(tr.topk_ids[0, :B].reshape(-1), minlength=8).numpy()
            t = layer_time(c, "Mixtral-8x7B", op, "h200", num_tokens=B)
            want = modelled_expert_time(tr.topk_ids[:, :B].numpy(), 8, op=op, shape="Mixtral-8x7B", profile="h200",
                                        batch_tokens=B)
            assert t.total_s == pytest.approx(want, rel=1e-12)
            e = int(np.argmax(c))
            by_hand = 2 * roofline(op, 14336, 4096, int(c[e]), "h200").time_s + roofline(op, 4096, 14336, int(c[e]),
                                                                                         "h200").time_s
            assert t.per_expert_s[e] == pytest.approx(by_hand)
            assert (t.per_expert_s[c == 0] == 0).all() and t.shared_s == 0
    d = layer_time([1, 1, 0, 0, 0, 0, 0, 0], "Mixtral-8x7B", "dense").total_s
    s = layer_time([1, 1, 0, 0, 0, 0, 0, 0], "Mixtral-8x7B", "ssmm").total_s
    assert 3.3 < d / s < 3.7  # decode: the byte ratio


def test_layer_time_shared_padded_and_errors():
    q = MOE_SHAPES["Qwen2-MoE-57B-A14B"]
    c = uniform_routing_counts(16, q.num_experts, q.top_k)
    t = layer_time(c, q, "spmm", num_tokens=16)
    want = 2 * roofline("spmm", 20480, 3584, 16).time_s + roofline("spmm", 3584, 20480, 16).time_s
    assert t.shared_s == pytest.approx(want) and t.total_s == pytest.approx(t.per_expert_s.sum() + want)
    assert layer_time(c, q, "spmm").shared_s == pytest.approx(want)  # T defaults to Σcounts / k
    p = layer_time([1, 0, 0, 0, 0, 0, 0, 1], "Mixtral-8x7B", "ssmm", padded=True)
    r = layer_time([64, 0, 0, 0, 0, 0, 0, 64], "Mixtral-8x7B", "ssmm")
    assert p.total_s == pytest.approx(r.total_s) and p.padded
    assert layer_time([1] * 8, "Mixtral-8x7B", "ssmm").memory_bound.all()
    assert not layer_time([4096] * 8, "Mixtral-8x7B", "ssmm").memory_bound.any()
    with pytest.raises(ValueError, match="counts: expected 8"):
        layer_time([1, 1], "Mixtral-8x7B")
    with pytest.raises(ValueError, match="op"):
        layer_time([1] * 8, "Mixtral-8x7B", "csr")
    with pytest.raises(TypeError, match="padded"):
        layer_time([1] * 8, "Mixtral-8x7B", padded=1)
    with pytest.raises(TypeError, match="profile"):
        layer_time([1] * 8, "Mixtral-8x7B", profile=None)
    with pytest.raises(ValueError, match="top_k"):
        MoEShape("bad", 128, 256, 4, 5)


def test_layer_time_sweep():
    tr = _trace(T=256)
    sw = layer_time_sweep("Mixtral-8x7B", [1, 4, 64], "a100_sxm", trace=tr, layer=1)
    assert sw["batch_tokens"] == [1, 4, 64] and len(sw["counts"]) == 3
    assert all(src.startswith("tiny-model") for src in sw["sources"])
    for op in TIME_OPS:
        assert [t.op for t in sw[op]] == [op] * 3
        assert sw[op][0].total_s <= sw[op][2].total_s
    assert sw["dense"][2].total_s > sw["spmm"][2].total_s > sw["ssmm"][2].total_s
    with pytest.raises(ValueError, match="batch_tokens"):
        layer_time_sweep("Mixtral-8x7B", [])
    with pytest.raises(ValueError, match="ops"):
        layer_time_sweep("Mixtral-8x7B", [1], ops=("nope",))


def test_recorded_layer_time_sums_records_and_never_invents():
    counts = [2, 0, 0, 0, 0, 0, 0, 1]

    def rec(op, m, k, n, ms):
        return {"op": op, "m": m, "k": k, "tokens": n, "dtype": "float16", "ms": ms}

    recs = [rec("ssmm", 14336, 4096, n, 0.1 * n) for n in (1, 2)] + [rec("ssmm", 4096, 14336, n, 0.05 * n) for n in (1, 2)]
    recs.append(rec("ssmm", 14336, 4096, 1, 0.3))  # a second device: the median of 0.1 and 0.3 is used
    got = recorded_layer_time(recs, counts, "Mixtral-8x7B", "ssmm")
    want = (2 * 0.2 + 0.1) + (2 * 0.2 + 0.05)
    assert got == pytest.approx(want * 1e-3)
    assert recorded_layer_time(recs, [3, 0, 0, 0, 0, 0, 0, 1], "Mixtral-8x7B", "ssmm") is None  # n = 3 missing
    assert recorded_layer_time(recs, counts, "Mixtral-8x7B", "dense") is None
    assert recorded_layer_time([], counts, "Mixtral-8x7B", "spmm") is None
    with pytest.raises(ValueError, match="op"):
        recorded_layer_time(recs, counts, "Mixtral-8x7B", "dense_mm")
    with pytest.raises(TypeError, match="records"):
        recorded_layer_time(None, counts, "Mixtral-8x7B", "ssmm")
