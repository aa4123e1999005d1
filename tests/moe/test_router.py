"""Router styles against a hand-written NumPy softmax / top-k / renormalisation; bad-input table."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from samoyeds_lab.moe import ROUTER_STYLES, Router, RouterOutput, route


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # NOTE: these tensors are tiny; intra-op threads only add synchronisation (10x slower on a loaded 2-core box).
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)

TOL = {torch.float32: dict(atol=1e-6, rtol=1e-6), torch.bfloat16: dict(atol=1e-6, rtol=1e-6),
       torch.float16: dict(atol=1e-6, rtol=1e-6)}  # same logits in, fp32 math after: only fp32 rounding


def ref_route(z: np.ndarray, k: int, norm: bool, scale: float = 1.0, n_group=None, topk_group=None):
    """fp64 softmax → (group mask) → top-k (descending, lower id first on ties) → renorm → scale."""
    z = z.astype(np.float64)
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    s = p.copy()
    if n_group is not None:
        per = z.shape[1] // n_group
        best = p.reshape(len(p), n_group, per).max(-1)
        for t in range(len(p)):
            keep = np.argsort(-best[t], kind="stable")[:topk_group]
            for g in range(n_group):
                if g not in keep:
                    s[t, g * per:(g + 1) * per] = 0.0
    ids = np.argsort(-s, axis=1, kind="stable")[:, :k]
    w = np.take_along_axis(s, ids, 1)
    if norm:
        w = w / w.sum(1, keepdims=True)
    return ids, w * scale


@pytest.mark.parametrize("tokens", [1, 19, 99])
@pytest.mark.parametrize("style,norm_topk", [("mixtral", None), ("qwen", None), ("qwen", True), ("deepseek", None),
                                             ("mixtral", False)])
def test_router_matches_hand_computed(style, norm_topk, tokens):
    torch.manual_seed(tokens)
    r = Router(13, 7, 3, style=style, norm_topk=norm_topk)
    x = torch.randn(tokens, 13)
    out = r(x)
    assert isinstance(out, RouterOutput)
    assert out.logits.shape == (tokens, 7) and out.logits.dtype == torch.float32
    assert out.topk_ids.shape == (tokens, 3) and out.topk_ids.dtype == torch.int64
    assert out.topk_weights.shape == (tokens, 3) and out.topk_weights.dtype == torch.float32
    z = (x.double() @ r.gate.weight.detach().double().T).numpy()
    np.testing.assert_allclose(out.logits.detach().numpy(), z, atol=1e-5, rtol=1e-5)
    norm = ROUTER_STYLES[style] if norm_topk is None else norm_topk
    ids, w = ref_route(out.logits.detach().numpy(), 3, norm)
    np.testing.assert_array_equal(out.topk_ids.numpy(), ids)
    np.testing.assert_allclose(out.topk_weights.detach().numpy(), w, atol=1e-6, rtol=1e-6)
    if norm:
        np.testing.assert_allclose(out.topk_weights.sum(1).detach().numpy(), 1.0, atol=1e-6)


def test_styles_pick_the_same_experts_and_mixtral_renormalises_qwen():
    torch.manual_seed(0)
    x = torch.randn(19, 16)
    outs = {}
    for style in ROUTER_STYLES:
        torch.manual_seed(1)
        outs[style] = Router(16, 8, 2, style=style)(x)
    assert torch.equal(outs["mixtral"].topk_ids, outs["qwen"].topk_ids)
    assert torch.equal(outs["qwen"].topk_ids, outs["deepseek"].topk_ids)
    q = outs["qwen"].topk_weights
    torch.testing.assert_close(outs["mixtral"].topk_weights, q / q.sum(1, keepdim=True))
    torch.testing.assert_close(outs["deepseek"].topk_weights, q)


def test_deepseek_scaling_and_group_limited():
    torch.manual_seed(3)
    r = Router(12, 8, 2, style="deepseek", routed_scaling_factor=2.5, n_group=4, topk_group=2)
    x = torch.randn(19, 12)
    out = r(x)
    ids, w = ref_route(out.logits.detach().numpy(), 2, False, 2.5, n_group=4, topk_group=2)
    np.testing.assert_array_equal(out.topk_ids.numpy(), ids)
    np.testing.assert_allclose(out.topk_weights.detach().numpy(), w, atol=1e-6, rtol=1e-6)
    # and the pure function on hand logits: groups {0,1} {2,3}; best group is {2,3}, topk_group=1
    z = torch.log(torch.tensor([[0.30, 0.05, 0.35, 0.30]]))
    o = route(z, 2, style="deepseek", n_group=2, topk_group=1)
    assert o.topk_ids.tolist() == [[2, 3]]
    torch.testing.assert_close(o.topk_weights, torch.tensor([[0.35, 0.30]]))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_inputs_give_fp32_outputs(dtype):
    torch.manual_seed(0)
    r = Router(16, 6, 2).to(dtype)
    x = torch.randn(19, 16).to(dtype)
    out = r(x)
    assert out.logits.dtype == torch.float32 and out.topk_weights.dtype == torch.float32
    ids, w = ref_route(out.logits.detach().numpy(), 2, True)
    np.testing.assert_array_equal(out.topk_ids.numpy(), ids)
    np.testing.assert_allclose(out.topk_weights.detach().numpy(), w, **TOL[dtype])


def test_hand_example_mixtral():
    # p = softmax([ln 4, ln 3, ln 2, ln 1]) = [.4, .3, .2, .1]; top-2 = (0, 1) weights (.4, .3) → (4/7, 3/7)
    z = torch.log(torch.tensor([[4.0, 3.0, 2.0, 1.0], [1.0, 2.0, 3.0, 4.0]]))
    o = route(z, 2, style="mixtral")
    assert o.topk_ids.tolist() == [[0, 1], [3, 2]]
    torch.testing.assert_close(o.topk_weights, torch.tensor([[4 / 7, 3 / 7], [4 / 7, 3 / 7]]))
    q = route(z, 2, style="qwen")
    torch.testing.assert_close(q.topk_weights, torch.tensor([[0.4, 0.3], [0.4, 0.3]]))
    torch.testing.assert_close(q.probs(), torch.tensor([[.4, .3, .2, .1], [.1, .2, .3, .4]]))


def test_gradients_reach_the_gate_and_output_is_frozen():
    torch.manual_seed(0)
    r = Router(8, 4, 2, style="qwen")
    out = r(torch.randn(5, 8))
    (out.topk_weights.sum() + out.logits.square().mean()).backward()
    assert r.gate.weight.grad is not None and bool(r.gate.weight.grad.abs().sum() > 0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        out.topk_ids = out.topk_ids  # type: ignore[misc]
    d = out.detach()
    assert not d.logits.requires_grad and d.num_tokens == 5 and d.top_k == 2 and d.num_experts == 4


BAD = [
    # (constructor kwargs, input, error type, words the message must contain)
    (dict(hidden=8, num_experts=4, top_k=2), torch.randn(3, 9), ValueError, ["x", "hidden=8", "(3, 9)"]),
    (dict(hidden=8, num_experts=4, top_k=2), torch.randn(8), ValueError, ["x", "2-D"]),
    (dict(hidden=8, num_experts=4, top_k=2), torch.ones(3, 8, dtype=torch.int64), TypeError, ["x", "dtype"]),
    (dict(hidden=8, num_experts=4, top_k=2), [[0.0] * 8], TypeError, ["x", "list"]),
    (dict(hidden=8, num_experts=4, top_k=5), None, ValueError, ["top_k", "<= 4", "5"]),
    (dict(hidden=8, num_experts=4, top_k=0), None, ValueError, ["top_k", ">= 1"]),
    (dict(hidden=8, num_experts=4, top_k=2, style="switch"), None, ValueError, ["style", "'switch'", "mixtral"]),
    (dict(hidden=8, num_experts=4, top_k=2, style=3), None, TypeError, ["style", "int"]),
    (dict(hidden=8, num_experts=4, top_k=2, norm_topk="yes"), None, TypeError, ["norm_topk", "str"]),
    (dict(hidden=8, num_experts=4, top_k=2, routed_scaling_factor=2.0), None, ValueError, ["style", "deepseek"]),
    (dict(hidden=8, num_experts=4, top_k=2, style="deepseek", routed_scaling_factor=-1.0), None, ValueError,
     ["routed_scaling_factor", "-1.0"]),
    (dict(hidden=8, num_experts=6, top_k=2, style="deepseek", n_group=4, topk_group=2), None, ValueError,
     ["n_group", "divisor", "4"]),
    (dict(hidden=8, num_experts=8, top_k=5, style="deepseek", n_group=4, topk_group=2), None, ValueError,
     ["top_k", "4 eligible"]),
    (dict(hidden=8, num_experts=8, top_k=2, style="deepseek", n_group=4), None, ValueError, ["topk_group"]),
    (dict(hidden=0, num_experts=4, top_k=2), None, ValueError, ["hidden"]),
]


@pytest.mark.parametrize("kwargs,x,exc,words", BAD)
def test_bad_inputs_name_the_argument(kwargs, x, exc, words):
    with pytest.raises(exc) as info:
        r = Router(**kwargs)
        r(x)
    for w in words:
        assert w in str(info.value), (w, str(info.value))


def test_route_bad_logits():
    with pytest.raises(ValueError, match="top_k"):
        route(torch.zeros(2, 3), 4)
    with pytest.raises(ValueError, match="logits"):
        route(torch.zeros(3), 1)


def test_router_output_validates_shapes():
    z = torch.zeros(3, 4)
    with pytest.raises(ValueError, match="topk_ids, topk_weights"):
        RouterOutput(z, torch.zeros(2, 2, dtype=torch.int64), torch.zeros(2, 2))
    with pytest.raises(TypeError, match="topk_ids"):
        RouterOutput(z, torch.zeros(3, 2), torch.zeros(3, 2))
    with pytest.raises(ValueError, match="topk_ids: expected k <= E=4"):
        RouterOutput(z, torch.zeros(3, 5, dtype=torch.int64), torch.zeros(3, 5))
    with pytest.raises(ValueError, match="logits"):
        RouterOutput(torch.zeros(4), torch.zeros(3, 2, dtype=torch.int64), torch.zeros(3, 2))
