"""SiDA's serving mode (hash routing): the predictor's top-k replaces the routers inside ``hash_routing``."""

import math

import numpy as np
import pytest
import torch

from samoyeds_lab.moe import TinyMoEForCausalLM
from samoyeds_lab.moe.model import TinyMoEConfig
from samoyeds_lab.offload.hash_routing import hash_routing, hash_routing_eval, hash_routing_moves
from samoyeds_lab.offload.predictor import SiDAPredictor, predictor_hit_rate


def _pair(seed=0, experts=6, k=2, layers=3):
    torch.manual_seed(seed)
    cfg = TinyMoEConfig(hidden=32, intermediate=32, layers=layers, heads=2, num_experts=experts, top_k=k,
                        max_seq=48)
    model = TinyMoEForCausalLM(cfg).eval()
    pred = SiDAPredictor.from_tiny_model(model, hidden=16).eval()
    # NOTE: a random predictor's logits are small; scale the heads so its top-k differs from the router's
    with torch.no_grad():
        for h in pred.heads:
            h.weight.mul_(20)
    return model, pred


def _reference_forward(model, x, logits):
    """The tiny model's forward written out, each MoE layer mixing the top-k of ``logits[l]`` (softmax,
    renormalised over the k chosen: the mixtral rule)."""
    h = model.embed_tokens(x)
    for li, layer in enumerate(model.layers):
        h = h + layer.self_attn(layer.input_layernorm(h))
        flat = layer.post_attention_layernorm(h).reshape(-1, h.shape[-1])
        p = torch.softmax(logits[li].reshape(flat.shape[0], -1).float(), -1)
        w, ids = torch.topk(p, layer.mlp.top_k, -1)
        w = w / w.sum(-1, keepdim=True)
        y = torch.zeros_like(flat)
        for t in range(flat.shape[0]):
            for j in range(ids.shape[1]):
                e = layer.mlp.experts
                i = int(ids[t, j])
                xt = flat[t]
                y[t] += w[t, j] * (e.w_down[i] @ (torch.nn.functional.silu(e.w_gate[i] @ xt) * (e.w_up[i] @ xt)))
        h = h + y.reshape(h.shape)
    return model.lm_head(model.norm(h))


@pytest.mark.parametrize("B,S", [(1, 1), (2, 19), (3, 47)])
@torch.no_grad()
def test_predicted_experts_are_computed_and_routers_not_run(B, S):
    model, pred = _pair()
    x = torch.randint(0, 256, (B, S))
    base = model(x)
    gate_calls = []
    hooks = [b.router.gate.register_forward_hook(lambda *a: gate_calls.append(1)) for _, b in model.moe_blocks()]
    with hash_routing(model, pred) as st:
        out = model(x)
    for h in hooks:
        h.remove()
    assert gate_calls == [] and st.forwards == 1
    z = pred(x)
    assert torch.equal(st.last_topk_ids, torch.topk(z, 2, -1).indices.reshape(3, B * S, 2))
    torch.testing.assert_close(out, _reference_forward(model, x, z), rtol=1e-4, atol=1e-4)
    # restored: the routers decide again, bit for bit, and no instance override is left behind
    assert all("forward" not in b.router.__dict__ for _, b in model.moe_blocks())
    assert torch.equal(model(x), base)


@torch.no_grad()
def test_hash_routing_changes_output_when_predictions_differ():
    model, pred = _pair(seed=1)
    x = torch.randint(0, 256, (2, 40))
    base = model(x)
    router_ids = torch.stack([b.last_router_output.topk_ids for _, b in model.moe_blocks()])
    with hash_routing(model, pred) as st:
        out = model(x)
    assert not torch.equal(st.last_topk_ids, router_ids)
    assert not torch.allclose(out, base)


@torch.no_grad()
def test_router_weights_mode_mixes_with_the_gate_at_the_predicted_ids():
    model, pred = _pair(seed=2)
    x = torch.randint(0, 256, (2, 11))
    seen = []
    hooks = [b.router.register_forward_pre_hook(lambda m, a: seen.append(a[0])) for _, b in model.moe_blocks()]
    with hash_routing(model, pred, weights="router") as st:
        model(x)
    for h in hooks:
        h.remove()
    for li, (_, b) in enumerate(model.moe_blocks()):
        ro = b.last_router_output
        assert torch.equal(ro.topk_ids, st.last_topk_ids[li])
        p = torch.softmax(b.router.gate(seen[li]).float(), -1).gather(1, ro.topk_ids)
        torch.testing.assert_close(ro.topk_weights, p / p.sum(-1, keepdim=True))


def test_restored_after_an_error_and_outside_a_model_forward():
    model, pred = _pair()
    block = model.moe_blocks()[0][1]
    with pytest.raises(RuntimeError, match="outside a model forward"):
        with hash_routing(model, pred):
            block(torch.randn(4, 32))
    assert "forward" not in block.router.__dict__
    assert block(torch.randn(4, 32)).shape == (4, 32)


def test_bad_arguments():
    model, pred = _pair()
    with pytest.raises(TypeError, match="model: expected a TinyMoEForCausalLM"):
        with hash_routing(object(), pred):
            pass
    with pytest.raises(TypeError, match="predictor: expected a SiDAPredictor"):
        with hash_routing(model, "p"):
            pass
    other, _ = _pair(layers=2)
    with pytest.raises(ValueError, match="predictor: expected one head per MoE layer"):
        with hash_routing(other, pred):
            pass
    with pytest.raises(ValueError, match="weights: expected one of"):
        with hash_routing(model, pred, weights="gate"):
            pass
    with pytest.raises(TypeError, match="windows: expected an int tensor"):
        hash_routing_eval(model, pred, torch.zeros(2, 5))
    with pytest.raises(ValueError, match="windows: expected shape"):
        hash_routing_eval(model, pred, torch.zeros(2, 1, dtype=torch.long))
    with pytest.raises(ValueError, match="hash_topk: expected the shape"):
        hash_routing_moves(np.zeros((2, 5, 2), int), np.zeros((2, 4, 2), int), 6, 3)


def test_eval_perplexity_and_hit_rate_match_direct_computation():
    model, pred = _pair(seed=3)
    torch.manual_seed(5)
    w = torch.randint(0, 256, (3, 30))
    ev = hash_routing_eval(model, pred, w, batch=2)
    assert ev.tokens == 3 * 29
    with torch.no_grad():
        out = model(w[:, :-1])
        ids = torch.stack([b.last_router_output.topk_ids for _, b in model.moe_blocks()])
        nll = torch.nn.functional.cross_entropy(out.reshape(-1, 256), w[:, 1:].reshape(-1))
        z = pred(w[:, :-1])
        pids = torch.topk(z, 2, -1).indices.reshape(3, -1, 2)
        ref = _reference_forward(model, w[:, :-1], z)
        nll_h = torch.nn.functional.cross_entropy(ref.reshape(-1, 256), w[:, 1:].reshape(-1))
    assert math.isclose(ev.ppl_router, math.exp(float(nll)), rel_tol=1e-5)
    assert math.isclose(ev.ppl_hash, math.exp(float(nll_h)), rel_tol=1e-4)
    np.testing.assert_array_equal(ev.router_topk, ids.numpy())
    np.testing.assert_array_equal(ev.hash_topk, pids.numpy())
    np.testing.assert_allclose(ev.hit_rate, predictor_hit_rate(pids, ids))
    assert 0 <= ev.hit_rate.min() < 1


def test_moves_hash_mode_never_misses_and_equals_prefetch_with_a_perfect_predictor():
    rng = np.random.default_rng(0)
    r = np.stack([np.stack([rng.choice(8, 2, replace=False) for _ in range(50)]) for _ in range(3)])
    h = r.copy()
    h[:, ::3] = (h[:, ::3] + 3) % 8  # a third of the tokens mispredicted (still distinct per token)
    mv = hash_routing_moves(r, h, 8, 6)
    assert mv["hash"].demand_loads == 0 and mv["hash"].hit_rate == 1.0
    assert mv["prefetch"].demand_loads > 0 and mv["demand"].prefetches == 0
    perfect = hash_routing_moves(r, r, 8, 6)
    assert perfect["prefetch"].prefetches == perfect["hash"].prefetches
    assert perfect["prefetch"].demand_loads == 0
