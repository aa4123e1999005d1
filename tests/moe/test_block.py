"""MoEBlock backends (dense / grouped / samoyeds) against a plain per-token loop, on the same pruned weights."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from samoyeds_lab.formats import CSRWeight, NMWeight, SamoyedsWeight
from samoyeds_lab.moe import MoEBlock, SwiGLUExperts


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # NOTE: these tensors are tiny; intra-op threads only add synchronisation (10x slower on a loaded 2-core box).
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)

#: Tolerances of a backend vs the fp64 loop reference (outputs are O(0.1–1)).
TOL = {torch.float32: dict(atol=1e-5, rtol=1e-5), torch.bfloat16: dict(atol=3e-2, rtol=3e-2),
       torch.float16: dict(atol=5e-3, rtol=5e-3)}
#: Tolerances between two backends in the same low precision (they round intermediates differently).
TOL_PAIR = {torch.float32: dict(atol=1e-5, rtol=1e-5), torch.bfloat16: dict(atol=3e-2, rtol=3e-2),
            torch.float16: dict(atol=5e-3, rtol=5e-3)}


def loop_reference(block: MoEBlock, x: torch.Tensor) -> torch.Tensor:
    """fp64, one token and one choice at a time, using the routing the block recorded at its last call."""
    r = block.last_router_output.detach()
    xs = x.reshape(-1, block.hidden).double()
    ex = block.experts
    wg, wu, wd = ex.w_gate.detach().double(), ex.w_up.detach().double(), ex.w_down.detach().double()
    out = torch.zeros_like(xs)
    for t in range(xs.shape[0]):
        for j in range(r.topk_ids.shape[1]):
            e = int(r.topk_ids[t, j])
            h = F.silu(wg[e] @ xs[t]) * (wu[e] @ xs[t])
            out[t] += float(r.topk_weights[t, j]) * (wd[e] @ h)
        if block.shared is not None:
            s = block.shared
            h = F.silu(s.gate_proj.weight.detach().double() @ xs[t]) * (s.up_proj.weight.detach().double() @ xs[t])
            y = s.down_proj.weight.detach().double() @ h
            if block.shared_expert_gate is not None:
                y = torch.sigmoid(block.shared_expert_gate.weight.detach().double() @ xs[t]) * y
            out[t] += y
    return out.reshape(x.shape)


def make_block(shared: str, seed: int = 0, **kw) -> MoEBlock:
    torch.manual_seed(seed)
    opts = {"none": {}, "shared": dict(shared_intermediate=48),
            "gated": dict(shared_intermediate=48, shared_gate=True)}[shared]
    return MoEBlock(64, 128, 8, 2, **opts, **kw)


@pytest.mark.parametrize("tokens", [1, 19, 99])
@pytest.mark.parametrize("shared", ["none", "shared", "gated"])
@pytest.mark.parametrize("backend", ["dense", "grouped"])
def test_backend_equals_per_token_loop_fp32(backend, shared, tokens):
    block = make_block(shared, backend=backend)
    x = torch.randn(tokens, 64)
    y = block(x)
    assert y.shape == x.shape and y.dtype == x.dtype
    torch.testing.assert_close(y.double(), loop_reference(block, x), **TOL[torch.float32])


def test_experts_with_zero_tokens():
    block = make_block("none", backend="grouped")
    with torch.no_grad():  # positive inputs: experts 3..7 get negative logits and are never chosen
        block.router.gate.weight[:3] = torch.rand(3, 64) + 0.1
        block.router.gate.weight[3:] = -1.0
    x = torch.rand(19, 64) + 0.1
    ys = {}
    for backend in ("dense", "grouped"):
        block.backend = backend
        ys[backend] = block(x)
    assert set(block.last_router_output.topk_ids.unique().tolist()) <= {0, 1, 2}
    ref = loop_reference(block, x)
    for backend, y in ys.items():
        torch.testing.assert_close(y.double(), ref, **TOL[torch.float32], msg=backend)
    block.sparsify("2:4")
    block.backend = "samoyeds"
    torch.testing.assert_close(block(x).double(), loop_reference(block, x), **TOL[torch.float32])


def test_explicit_routing_on_the_experts_module():
    torch.manual_seed(0)
    ex = SwiGLUExperts(5, 16, 24)
    x = torch.randn(7, 16)
    ids = torch.tensor([[4, 0], [4, 2], [0, 4], [2, 0], [4, 0], [0, 2], [2, 4]])  # experts 1, 3 idle
    w = torch.rand(7, 2)
    ref = torch.zeros(7, 16, dtype=torch.float64)
    for t in range(7):
        for j in range(2):
            ref[t] += float(w[t, j]) * ex.expert_forward(int(ids[t, j]), x[t:t + 1]).double()[0]
    for backend in ("dense", "grouped"):
        torch.testing.assert_close(ex(x, ids, w, backend=backend).double(), ref, **TOL[torch.float32])
    with pytest.raises(ValueError, match="backend"):
        ex(x, ids, w, backend="samoyeds")
    with pytest.raises(ValueError, match="topk_ids"):
        ex(x, ids[:5], w, backend="grouped")
    with pytest.raises(ValueError, match="expert"):
        ex.expert_forward(5, x)


@pytest.mark.parametrize("pattern,kwargs,fmt,density", [("2:4", {}, NMWeight, 0.5),
                                                         ("samoyeds", dict(vector=32), SamoyedsWeight, 0.25),
                                                         ("unstructured", dict(density=0.3), CSRWeight, 0.3)])
@pytest.mark.parametrize("shared", ["none", "gated"])
@pytest.mark.parametrize("shape", [(1, 64), (19, 64), (9, 11, 64)])  # 1, 19, 99 tokens; leading dims kept
def test_sparsify_then_all_backends_agree_fp32(pattern, kwargs, fmt, density, shared, shape):
    block = make_block(shared, seed=shape[0])
    before = {k: v.detach().clone() for k, v in block.experts.weights().items()}
    assert block.sparsify(pattern, **kwargs) is block and block.is_sparsified
    for name, w in block.experts.weights().items():
        ops = block.experts.compressed[name]
        assert len(ops) == 8 and all(isinstance(op, fmt) for op in ops)
        for e, op in enumerate(ops):
            assert torch.equal(op.to_dense(), w[e].detach())
        kept = w.detach() != 0
        assert abs(kept.float().mean().item() - density) < 0.01
        assert torch.equal(w.detach()[kept], before[name][kept])  # pruning only zeroes values
    x = torch.randn(shape)
    ys = {}
    for backend in ("dense", "grouped", "samoyeds"):
        block.backend = backend
        ys[backend] = block(x)
        assert ys[backend].shape == x.shape
    ref = loop_reference(block, x)
    for backend, y in ys.items():
        torch.testing.assert_close(y.double(), ref, **TOL[torch.float32], msg=backend)
    assert block.experts.compressed_nbytes > 0


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("tokens", [1, 99])
def test_low_precision_backends_agree(dtype, tokens):
    block = make_block("shared", seed=tokens)
    block.sparsify("samoyeds", vector=32)
    block.to(dtype)  # .to() also converts the compressed operands
    assert block.experts.compressed["gate"][0].dtype == dtype
    x = torch.randn(tokens, 64).to(dtype)
    ys = {}
    for backend in ("dense", "grouped", "samoyeds"):
        block.backend = backend
        ys[backend] = block(x)
        assert ys[backend].dtype == dtype
    ref = loop_reference(block, x)  # fp64 math on the (rounded) low-precision weights
    for backend, y in ys.items():
        torch.testing.assert_close(y.double(), ref, **TOL[dtype], msg=backend)
    torch.testing.assert_close(ys["grouped"], ys["samoyeds"], **TOL_PAIR[dtype])
    torch.testing.assert_close(ys["grouped"], ys["dense"], **TOL_PAIR[dtype])


@pytest.mark.parametrize("pad_to", [1, 16, 64])
def test_samoyeds_padding_does_not_change_the_result(pad_to):
    block = make_block("none", pad_to=pad_to).sparsify("samoyeds", vector=32)
    x = torch.randn(19, 64)
    block.backend = "grouped"
    ref = block(x)
    block.backend = "samoyeds"
    torch.testing.assert_close(block(x), ref, **TOL[torch.float32])


def test_samoyeds_backend_needs_sparsify_and_detects_stale_weights():
    with pytest.raises(ValueError, match=r"backend.*sparsify"):
        make_block("none", backend="samoyeds")
    block = make_block("none")
    with pytest.raises(ValueError, match=r"backend.*sparsify"):
        block.backend = "samoyeds"
    with pytest.raises(ValueError, match="backend.*'cuda'"):
        block.backend = "cuda"
    with pytest.raises(TypeError, match="backend"):
        block.backend = None
    assert block.backend == "dense"
    block.sparsify("2:4")
    block.backend = "samoyeds"
    x = torch.randn(5, 64)
    block(x)
    with torch.no_grad():
        block.experts.w_up.mul_(2.0)  # e.g. an optimizer step after sparsify
    with pytest.raises(ValueError, match="stale"):
        block(x)
    block.sparsify("2:4")
    block(x)


def test_wanda_sparsify_uses_routed_calibration_inputs():
    block = make_block("none")
    acts = torch.randn(99, 64) * torch.linspace(0.1, 3.0, 64)  # uneven column norms change the choice
    with pytest.raises(ValueError, match="acts"):
        block.sparsify("2:4", method="wanda")
    mag = make_block("none").sparsify("2:4")
    block.sparsify("2:4", method="wanda", acts=acts)
    assert not torch.equal(block.experts.w_gate != 0, mag.experts.w_gate != 0)
    block.backend = "samoyeds"
    block.backend = "grouped"
    with pytest.raises(ValueError, match="acts"):
        block.sparsify("2:4", acts=torch.randn(5, 63))
    with pytest.raises(ValueError, match="vector"):
        make_block("none").sparsify("samoyeds", vector=48)  # 64 is not a multiple of 48
    with pytest.raises(ValueError, match="pattern"):
        make_block("none").sparsify("3x4")


def test_grouped_gradients_equal_dense_gradients():
    grads = {}
    x0 = torch.randn(19, 64)
    for backend in ("dense", "grouped"):
        block = make_block("gated", backend=backend)
        x = x0.clone().requires_grad_(True)
        y = block(x)
        (y.square().sum() + block.last_router_output.logits.sum()).backward()
        grads[backend] = [x.grad] + [p.grad for p in block.parameters()]
    for a, b in zip(grads["dense"], grads["grouped"]):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


BAD = [
    (dict(hidden=64, intermediate=128, num_experts=8, top_k=9), ValueError, "top_k"),
    (dict(hidden=64, intermediate=128, num_experts=8, top_k=2, router_style="gshard"), ValueError, "style"),
    (dict(hidden=64, intermediate=128, num_experts=8, top_k=2, shared_gate=True), ValueError, "shared_gate"),
    (dict(hidden=64, intermediate=0, num_experts=8, top_k=2), ValueError, "intermediate"),
    (dict(hidden=64, intermediate=128, num_experts=8, top_k=2, backend="fast"), ValueError, "backend"),
    (dict(hidden=64, intermediate=128, num_experts=8, top_k=2, shared_intermediate=-1), ValueError,
     "shared_intermediate"),
]


@pytest.mark.parametrize("kwargs,exc,word", BAD)
def test_bad_constructor_arguments(kwargs, exc, word):
    with pytest.raises(exc, match=word):
        MoEBlock(**kwargs)


def test_bad_forward_input_names_x():
    block = make_block("none")
    with pytest.raises(ValueError, match=r"x: expected shape \[..., 64\]"):
        block(torch.randn(3, 65))
    with pytest.raises(TypeError, match="x"):
        block(torch.ones(3, 64, dtype=torch.int64))
