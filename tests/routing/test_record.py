"""record_routing: equals the router math done by hand, keeps the model's outputs, works on HF MoEs."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from samoyeds_lab.moe import MoEBlock, TinyMoEConfig, TinyMoEForCausalLM
from samoyeds_lab.routing import RoutingTrace, record_routing, routing_points

transformers = pytest.importorskip("transformers")

from samoyeds_lab.moe.hf import load_hf_moe, swap_moe_blocks  # noqa: E402

# fp32 throughout: recorded values come from the same kernels as the hand computation, up to summation order
TOL = dict(rtol=1e-5, atol=1e-6)


def tiny_model(style="mixtral", seed=0, **kw) -> TinyMoEForCausalLM:
    torch.manual_seed(seed)
    cfg = dict(hidden=32, intermediate=48, layers=3, heads=2, num_experts=5, top_k=2, max_seq=32, router_style=style)
    cfg.update(kw)
    model = TinyMoEForCausalLM(TinyMoEConfig(**cfg)).eval()
    with torch.no_grad():  # larger gate weights so that routing is far from ties
        for _, block in model.moe_blocks():
            block.router.gate.weight.mul_(25)
    return model


def ids(B, S, vocab=256, seed=0):
    return torch.randint(0, vocab, (B, S), generator=torch.Generator().manual_seed(seed))


@torch.no_grad()
def hand_routing(model: TinyMoEForCausalLM, input_ids: torch.Tensor, norm: bool):
    """Run the tiny model layer by layer and route every MoE input by hand: softmax, top-k, renormalise."""
    h = model.embed_tokens(input_ids)
    out = []
    for layer in model.layers:
        h = h + layer.self_attn(layer.input_layernorm(h))
        x = layer.post_attention_layernorm(h)
        flat = x.reshape(-1, x.shape[-1])  # row-major: token t = b·S + s
        z = flat @ layer.mlp.router.gate.weight.T
        w, e = torch.softmax(z, -1).topk(layer.mlp.router.top_k, dim=-1)
        out.append((z, e, w / w.sum(-1, keepdim=True) if norm else w))
        h = h + layer.mlp(x)
    return out


@pytest.mark.parametrize("style,norm", [("mixtral", True), ("qwen", False)])
@pytest.mark.parametrize("B,S", [(1, 1), (3, 7)])
def test_tiny_model_matches_hand_routing(style, norm, B, S):
    model = tiny_model(style, seed=B * S)
    x = ids(B, S, seed=S)
    expected_logits = model(x)
    trace, out = record_routing(model, x, return_output=True)
    assert torch.equal(out, expected_logits)  # hooks do not change the outputs
    assert torch.equal(model(x), expected_logits)  # and are gone afterwards
    assert trace.layer_names == ("layers.0.mlp", "layers.1.mlp", "layers.2.mlp")
    assert trace.num_experts == 5 and trace.top_k == 2 and trace.num_tokens == B * S
    assert torch.equal(trace.token_ids, x.reshape(-1))
    assert trace.sequence_lengths.tolist() == [S] * B
    assert trace.meta == {"model": "TinyMoEForCausalLM", "batch_shape": [B, S]}
    for l, (z, e, w) in enumerate(hand_routing(model, x, norm)):
        assert torch.equal(trace.topk_ids[l], e)
        torch.testing.assert_close(trace.weights[l], w, **TOL)
        torch.testing.assert_close(trace.logits[l], z, **TOL)


def test_rows_are_flattened_in_order():
    model = tiny_model(seed=3)
    x = ids(3, 6, seed=4)
    whole = record_routing(model, x)
    for b in range(3):  # row b of the batch is tokens b·S … b·S+S-1 of the trace
        row = record_routing(model, x[b])
        assert torch.equal(whole.topk_ids[:, 6 * b: 6 * (b + 1)], row.topk_ids)
        torch.testing.assert_close(whole.weights[:, 6 * b: 6 * (b + 1)], row.weights, **TOL)


def test_options_mode_and_save(tmp_path):
    model = tiny_model(seed=5).train()
    x = ids(2, 9, seed=1)
    t16 = record_routing(model, x, logits_dtype=torch.float16, meta={"source": "unit test", "model": "tiny"})
    assert model.training  # restored
    assert t16.logits.dtype == torch.float16
    assert t16.meta == {"model": "tiny", "batch_shape": [2, 9], "source": "unit test"}
    assert record_routing(model, x, logits_dtype=None).logits is None
    back = RoutingTrace.load(t16.save(tmp_path / "t.npz"))
    assert torch.equal(back.topk_ids, t16.topk_ids) and torch.equal(back.logits, t16.logits)


def test_backends_record_the_same_routing():
    model = tiny_model(seed=6)
    x = ids(2, 11, seed=2)
    base = record_routing(model, x)
    model.set_backend("dense")
    other = record_routing(model, x)
    assert torch.equal(base.topk_ids, other.topk_ids)


class Twice(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(10, 8)
        self.moe = MoEBlock(8, 16, 4, 2)

    def forward(self, input_ids):
        return self.moe(self.moe(self.emb(input_ids)))


@pytest.mark.parametrize("model,x,kw,exc,match", [
    (nn.Linear(3, 3), torch.zeros(1, 2, dtype=torch.int64), {}, ValueError, r"model: expected an MoE model .* found no router in Linear"),
    ("model", torch.zeros(1, 2, dtype=torch.int64), {}, TypeError, r"model: expected a torch.nn.Module, got str"),
    (None, torch.zeros(1, 2), {}, TypeError, r"input_ids: expected dtype .* got torch.float32"),
    (None, torch.zeros(1, 2, 2, dtype=torch.int64), {}, ValueError, r"input_ids: expected a non-empty \[S\] or \[B, S\] tensor, got shape \(1, 2, 2\)"),
    (None, torch.zeros(0, 3, dtype=torch.int64), {}, ValueError, r"input_ids: expected a non-empty"),
    (None, torch.zeros(1, 2, dtype=torch.int64), {"logits_dtype": torch.int8}, TypeError, r"logits_dtype: expected torch.float16, torch.float32 or None"),
    (None, torch.zeros(1, 2, dtype=torch.int64), {"meta": {"x": object()}}, TypeError, r"meta: expected JSON-serialisable"),
    (Twice(), torch.zeros(1, 2, dtype=torch.int64), {}, ValueError, r"expected the router of 'moe' to run exactly once per forward, it ran 2 times"),
])
def test_bad_inputs(model, x, kw, exc, match):
    model = tiny_model() if model is None else model
    with pytest.raises(exc, match=match):
        record_routing(model, x, **kw)


# ------------------------------------------------------------------------------------ Hugging Face
HF_COMMON = dict(vocab_size=61, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                 max_position_embeddings=64, tie_word_embeddings=False, initializer_range=0.5)


def hf_config(arch):
    """(config, routing rule applied to the kept probabilities) per architecture."""
    if arch == "mixtral":
        return transformers.MixtralConfig(**HF_COMMON, intermediate_size=16, num_local_experts=6, num_experts_per_tok=2), "renorm"
    if arch == "qwen2_moe":
        return transformers.Qwen2MoeConfig(**HF_COMMON, intermediate_size=24, moe_intermediate_size=16,
                                           shared_expert_intermediate_size=32, num_experts=7, num_experts_per_tok=3,
                                           norm_topk_prob=False), "none"
    if arch == "qwen3_moe":
        return transformers.Qwen3MoeConfig(**HF_COMMON, intermediate_size=24, moe_intermediate_size=16, num_experts=5,
                                           num_experts_per_tok=2, norm_topk_prob=True, head_dim=8), "renorm"
    return transformers.DeepseekV2Config(**{**HF_COMMON, "num_key_value_heads": 4, "num_hidden_layers": 3}, intermediate_size=24, moe_intermediate_size=16,
                                         n_routed_experts=8, num_experts_per_tok=3, n_shared_experts=1, kv_lora_rank=8,
                                         q_lora_rank=None, qk_nope_head_dim=8, qk_rope_head_dim=8, v_head_dim=8,
                                         routed_scaling_factor=1.5, first_k_dense_replace=1), "scale1.5"


@pytest.mark.parametrize("arch", ["mixtral", "qwen2_moe", "deepseek_v2"])
def test_hf_model_matches_hand_routing(arch):
    config, rule = hf_config(arch)
    torch.manual_seed(11)
    model = transformers.AutoModelForCausalLM.from_config(config).eval()
    x = ids(2, 9, vocab=61, seed=7)
    points = routing_points(model)
    gate_inputs = {}
    handles = [m.register_forward_pre_hook(lambda mod, args, name=name: gate_inputs.__setitem__(name, args[0].detach()))
               for name, m, _ in points]
    with torch.no_grad():
        expected = model(input_ids=x).logits
    for h in handles:
        h.remove()
    trace, out = record_routing(model, x, return_output=True)
    assert torch.equal(out.logits, expected)
    names = [f"model.layers.{i}.mlp" for i in range(config.num_hidden_layers)][1 if arch == "deepseek_v2" else 0:]
    assert list(trace.layer_names) == names
    for l, (name, gate, _) in enumerate(points):
        flat = gate_inputs[name].reshape(-1, config.hidden_size).float()
        z = flat @ gate.weight.float().T
        w, e = torch.softmax(z, -1).topk(config.num_experts_per_tok, dim=-1)
        w = w / w.sum(-1, keepdim=True) if rule == "renorm" else w * 1.5 if rule == "scale1.5" else w
        assert torch.equal(trace.topk_ids[l], e), name
        torch.testing.assert_close(trace.weights[l], w, **TOL)
        torch.testing.assert_close(trace.logits[l], z, **TOL)
    assert trace.meta["model"] == type(model).__name__ and trace.meta["batch_shape"] == [2, 9]


def test_hf_checkpoint_and_swapped_blocks(tmp_path):
    """load_hf_moe'd model; after swap_moe_blocks the routing recorded from the MoEBlocks is the same."""
    config, _ = hf_config("qwen2_moe")
    torch.manual_seed(12)
    transformers.AutoModelForCausalLM.from_config(config).save_pretrained(tmp_path / "ckpt")
    model = load_hf_moe(tmp_path / "ckpt")
    x = ids(2, 8, vocab=61, seed=3)
    before = record_routing(model, x)
    assert before.meta["name_or_path"]
    swap_moe_blocks(model, backend="reference")
    assert all(isinstance(model.get_submodule(name), MoEBlock) for name, _, _ in routing_points(model))
    after = record_routing(model, x)
    assert after.layer_names == before.layer_names
    assert torch.equal(after.topk_ids, before.topk_ids)
    torch.testing.assert_close(after.weights, before.weights, **TOL)


# ------------------------------------------------------------------- generic fallbacks (no adapter)
class OldStyleSparseMoeBlock(nn.Module):
    """transformers 4.x shape: ``gate`` is an nn.Linear, routing done in the block's forward."""

    def __init__(self, hidden, experts, top_k, norm_topk_prob):
        super().__init__()
        self.top_k, self.norm_topk_prob = top_k, norm_topk_prob
        self.gate = nn.Linear(hidden, experts, bias=False)
        self.experts = nn.ModuleList(nn.Linear(hidden, hidden) for _ in range(experts))

    def forward(self, h):
        flat = h.reshape(-1, h.shape[-1])
        p = torch.softmax(self.gate(flat).float(), -1)
        w, e = p.topk(self.top_k, -1)
        if self.norm_topk_prob:
            w = w / w.sum(-1, keepdim=True)
        y = torch.zeros_like(flat)
        for j in range(self.top_k):
            for ex in range(len(self.experts)):
                sel = e[:, j] == ex
                y[sel] += w[sel, j, None] * self.experts[ex](flat[sel])
        return y.reshape(h.shape), (e, w)


class OldStyleModel(nn.Module):
    def __init__(self, norm):
        super().__init__()
        self.emb = nn.Embedding(20, 12)
        self.blocks = nn.ModuleList(OldStyleSparseMoeBlock(12, 5, 2, norm) for _ in range(2))
        self.seen = []

    def forward(self, input_ids):
        h = self.emb(input_ids)
        self.seen = []
        for b in self.blocks:
            y, r = b(h)
            self.seen.append(r)
            h = h + y
        return h


@pytest.mark.parametrize("norm", [True, False])
def test_linear_gate_blocks(norm):
    torch.manual_seed(1)
    model = OldStyleModel(norm)
    x = ids(2, 5, vocab=20, seed=1)
    trace, out = record_routing(model, x, return_output=True)
    assert trace.layer_names == ("blocks.0", "blocks.1")
    for l, (e, w) in enumerate(model.seen):
        assert torch.equal(trace.topk_ids[l], e)
        torch.testing.assert_close(trace.weights[l], w, **TOL)
    assert torch.equal(out, model(x))


def test_transformers_router_found_by_class_name():
    """A transformers block outside a supported model (no config.model_type): found by its router's class name."""
    config, _ = hf_config("mixtral")
    torch.manual_seed(2)
    block = transformers.models.mixtral.modeling_mixtral.MixtralSparseMoeBlock(config)
    with torch.no_grad():  # a bare block is not initialised by transformers (torch.empty parameters)
        for p in block.parameters():
            p.normal_(0.0, 0.5)

    class Wrapper(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(61, config.hidden_size)
            self.moe = block

        def forward(self, input_ids):
            return self.moe(self.emb(input_ids))

    model = Wrapper()
    x = ids(1, 6, vocab=61)
    trace = record_routing(model, x)
    assert trace.layer_names == ("moe",)
    z = model.emb(x).reshape(-1, config.hidden_size) @ block.gate.weight.T
    w, e = torch.softmax(z, -1).topk(2, -1)
    assert torch.equal(trace.topk_ids[0], e)
    torch.testing.assert_close(trace.weights[0], w / w.sum(-1, keepdim=True), **TOL)
