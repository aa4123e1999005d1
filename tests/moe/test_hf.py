"""Hugging Face adapters: load_hf_moe, hf_moe_layers, hf_router_spec, swap_moe_blocks.

Every supported architecture is built as a tiny random transformers model (hidden 64, 2 layers, 4–8
experts, 61-token vocabulary), saved with ``save_pretrained`` into a temporary directory and loaded back
with :func:`load_hf_moe`. References, defined here: transformers' own forward on the same weights, and on
expert weights pruned in place with :func:`samoyeds_lab.prune.prune_mask`.

Tolerances (fp32 logits of magnitude ~1–10): unpruned swap 1e-3 (the contract), pruned swap vs pruned HF
1e-3; bf16 load + swap 0.1 (bf16 rounding of ~2-digit logits through two layers). Each comparison also
checks the MoE blocks matter (changing them moves the logits by far more than the tolerance).
"""

from __future__ import annotations

import json
import socket
from types import SimpleNamespace

import pytest
import torch
from torch import nn

transformers = pytest.importorskip("transformers")

from samoyeds_lab.errors import CorruptFileError  # noqa: E402
from samoyeds_lab.moe.block import MoEBlock  # noqa: E402
from samoyeds_lab.moe.hf import (  # noqa: E402
    SUPPORTED_MODEL_TYPES,
    HFRouterSpec,
    hf_moe_layers,
    hf_router_spec,
    load_hf_moe,
    swap_moe_blocks,
)
from samoyeds_lab.prune import prune_mask, prune_masks_joint  # noqa: E402

VOCAB = 61
TOL = 1e-3
COMMON = dict(
    vocab_size=VOCAB, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
    max_position_embeddings=64, tie_word_embeddings=False, initializer_range=0.2,
    bos_token_id=1, eos_token_id=2, pad_token_id=0,
)


def _config(arch: str):
    """A tiny random config per architecture (moe intermediate 32, so Samoyeds vector=32 fits)."""
    if arch == "mixtral":
        return transformers.MixtralConfig(**COMMON, intermediate_size=32, num_local_experts=6, num_experts_per_tok=2)
    if arch == "qwen2_moe":  # shared expert + sigmoid shared gate, un-normalised top-k
        return transformers.Qwen2MoeConfig(
            **COMMON, intermediate_size=48, moe_intermediate_size=32, shared_expert_intermediate_size=64,
            num_experts=6, num_experts_per_tok=2, norm_topk_prob=False,
        )
    if arch == "qwen3_moe":  # normalised top-3 of 8; layer 0 dense (mlp_only_layers)
        return transformers.Qwen3MoeConfig(
            **COMMON, intermediate_size=48, moe_intermediate_size=32, num_experts=8, num_experts_per_tok=3,
            norm_topk_prob=True, head_dim=16, mlp_only_layers=[0],
        )
    if arch == "olmoe":
        return transformers.OlmoeConfig(**COMMON, intermediate_size=32, num_experts=5, num_experts_per_tok=2)
    deepseek = dict(
        COMMON, num_key_value_heads=4, intermediate_size=48, moe_intermediate_size=32, n_routed_experts=8,
        num_experts_per_tok=3, n_shared_experts=1, kv_lora_rank=16, q_lora_rank=None, qk_nope_head_dim=8,
        qk_rope_head_dim=8, v_head_dim=16, routed_scaling_factor=1.5, num_hidden_layers=3, first_k_dense_replace=1,
    )
    if arch == "deepseek_v2":  # greedy top-k, scaled weights, shared expert, first layer dense
        return transformers.DeepseekV2Config(**deepseek)
    if arch == "deepseek_v2_group":  # group-limited greedy: 4 groups of 2, top-2 groups eligible
        return transformers.DeepseekV2Config(**deepseek, topk_method="group_limited_greedy", n_group=4, topk_group=2)
    raise AssertionError(arch)


ARCHS = ["mixtral", "qwen2_moe", "qwen3_moe", "olmoe", "deepseek_v2", "deepseek_v2_group"]
# architecture -> (router style, norm_topk, routed_scaling_factor, MoE layer names)
EXPECTED = {
    "mixtral": ("mixtral", True, 1.0, ["model.layers.0.mlp", "model.layers.1.mlp"]),
    "qwen2_moe": ("qwen", False, 1.0, ["model.layers.0.mlp", "model.layers.1.mlp"]),
    "qwen3_moe": ("qwen", True, 1.0, ["model.layers.1.mlp"]),
    "olmoe": ("qwen", False, 1.0, ["model.layers.0.mlp", "model.layers.1.mlp"]),
    "deepseek_v2": ("deepseek", False, 1.5, ["model.layers.1.mlp", "model.layers.2.mlp"]),
    "deepseek_v2_group": ("deepseek", False, 1.5, ["model.layers.1.mlp", "model.layers.2.mlp"]),
}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny matmuls: one intra-op thread is ~3x faster than the default on a busy 2-core machine."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """arch -> directory of a saved tiny random checkpoint (built once per module)."""
    root = tmp_path_factory.mktemp("hf")
    out = {}
    for i, arch in enumerate(ARCHS):
        torch.manual_seed(100 + i)
        model = transformers.AutoModelForCausalLM.from_config(_config(arch))
        model.save_pretrained(root / arch)
        out[arch] = root / arch
    return out


def _ids(seed: int = 0, batch: int = 2, seq: int = 13) -> torch.Tensor:
    return torch.randint(0, VOCAB, (batch, seq), generator=torch.Generator().manual_seed(seed))


@torch.no_grad()
def _logits(model: nn.Module, ids: torch.Tensor) -> torch.Tensor:
    return model(input_ids=ids).logits.float()


def _maxdiff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a - b).abs().max().item()


@torch.no_grad()
def _prune_hf_experts(model: nn.Module, pattern: str, joint: bool = False, **kw) -> None:
    """Reference: prune transformers' fused expert weights in place, per expert and projection (``joint``:
    gate and up rows of an expert through prune_masks_joint, as the swap's default does)."""
    for _, block in hf_moe_layers(model):
        gate_up, down = block.experts.gate_up_proj, block.experts.down_proj
        inter = down.shape[-1]
        for e in range(gate_up.shape[0]):
            gate, up = gate_up[e, :inter], gate_up[e, inter:]  # gate rows, then up rows
            if joint:
                masks = prune_masks_joint([gate, up], pattern, **kw)
            else:
                masks = [prune_mask(w, pattern, **kw) for w in (gate, up)]
            for w, mk in zip((gate, up), masks):
                w.masked_fill_(~mk, 0.0)
            down[e].masked_fill_(~prune_mask(down[e], pattern, **kw), 0.0)


# ----------------------------------------------------------------------------------------------- loading
def test_supported_types_cover_the_archs():
    assert set(SUPPORTED_MODEL_TYPES) == {"mixtral", "qwen2_moe", "qwen3_moe", "olmoe", "deepseek_v2"}


@pytest.mark.parametrize("arch", ARCHS)
def test_load_finds_blocks_and_routing(checkpoints, arch):
    model = load_hf_moe(checkpoints[arch])
    assert not model.training and model.dtype == torch.float32
    style, norm, scale, names = EXPECTED[arch]
    assert [n for n, _ in hf_moe_layers(model)] == names
    specs = hf_router_spec(model)
    assert [s.name for s in specs] == names
    for s in specs:
        assert isinstance(s, HFRouterSpec)
        assert (s.style, s.norm_topk, s.routed_scaling_factor) == (style, norm, scale)
        assert (s.n_group, s.topk_group) == ((4, 2) if arch == "deepseek_v2_group" else (None, None))


def test_load_never_touches_the_network(checkpoints, monkeypatch):
    def refuse(*a, **k):
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    model = load_hf_moe(str(checkpoints["olmoe"]))  # str paths too
    assert len(hf_moe_layers(model)) == 2


def _copy(src, dst):
    dst.mkdir()
    for f in src.iterdir():
        (dst / f.name).write_bytes(f.read_bytes())
    return dst


def _truncate_file(f):
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])


def _truncate(d):
    _truncate_file(d / "model.safetensors")


def _garbage(d):
    (d / "model.safetensors").write_bytes(bytes(range(256)) * 8)


def _drop_tensor(d):
    from safetensors.torch import load_file, save_file

    sd = load_file(d / "model.safetensors")
    del sd["model.norm.weight"]
    save_file(sd, d / "model.safetensors", metadata={"format": "pt"})


def _bad_shard_index(d):
    (d / "model.safetensors").rename(d / "part-1.safetensors")
    index = {"weight_map": {"lm_head.weight": "part-2.safetensors"}}
    (d / "model.safetensors.index.json").write_text(json.dumps(index))


def _set_config(**kv):
    def edit(d):
        cfg = json.loads((d / "config.json").read_text())
        cfg.update(kv)
        (d / "config.json").write_text(json.dumps(cfg))
    return edit


# (case id, edit of a copied olmoe checkpoint, expected exception, text the message must contain)
LOAD_ERRORS = [
    ("no-config", lambda d: (d / "config.json").unlink(), FileNotFoundError, "config.json"),
    ("config-not-json", lambda d: (d / "config.json").write_text("{oops"), CorruptFileError, "config.json"),
    ("config-list", lambda d: (d / "config.json").write_text("[1, 2]"), CorruptFileError, "config.json"),
    ("unsupported", _set_config(model_type="llama"), ValueError, "'llama'"),
    ("no-model-type", _set_config(model_type=None), ValueError, "config.json"),
    ("no-weights", lambda d: (d / "model.safetensors").unlink(), FileNotFoundError, "model.safetensors"),
    ("truncated", _truncate, CorruptFileError, "model.safetensors"),
    ("garbage", _garbage, CorruptFileError, "model.safetensors"),
    ("missing-tensor", _drop_tensor, CorruptFileError, "model.norm.weight"),
    ("missing-shard", _bad_shard_index, FileNotFoundError, "part-2.safetensors"),
    ("bad-index", lambda d: (d / "model.safetensors.index.json").write_text("{}"), CorruptFileError, "weight_map"),
    ("shape-mismatch", _set_config(hidden_size=32), CorruptFileError, "model.safetensors"),
]


@pytest.mark.parametrize("case,edit,exc,text", LOAD_ERRORS, ids=[c[0] for c in LOAD_ERRORS])
def test_load_errors_name_the_file(checkpoints, tmp_path, case, edit, exc, text):
    d = _copy(checkpoints["olmoe"], tmp_path / case)
    edit(d)
    with pytest.raises(exc) as info:
        load_hf_moe(d)
    assert text in str(info.value)


def test_sharded_checkpoint_and_corrupt_shard(tmp_path):
    torch.manual_seed(7)
    model = transformers.AutoModelForCausalLM.from_config(_config("olmoe")).eval()
    model.save_pretrained(tmp_path / "ckpt", max_shard_size="40KB")
    shards = sorted((tmp_path / "ckpt").glob("model-*.safetensors"))
    assert len(shards) > 1
    ids = _ids(8)
    assert _maxdiff(_logits(load_hf_moe(tmp_path / "ckpt"), ids), _logits(model, ids)) == 0.0
    _truncate_file(shards[-1])
    with pytest.raises(CorruptFileError, match=shards[-1].name):
        load_hf_moe(tmp_path / "ckpt")


def test_load_bad_arguments(tmp_path):
    with pytest.raises(TypeError, match="path"):
        load_hf_moe(3)
    with pytest.raises(FileNotFoundError, match="nowhere"):
        load_hf_moe(tmp_path / "nowhere")
    (tmp_path / "f.txt").write_text("x")
    with pytest.raises(NotADirectoryError, match="f.txt"):
        load_hf_moe(tmp_path / "f.txt")
    with pytest.raises(TypeError, match="dtype"):
        load_hf_moe(tmp_path, dtype=torch.int8)


# ----------------------------------------------------------------------------------------------- swapping
@pytest.mark.parametrize("arch", ARCHS)
def test_swap_keeps_logits(checkpoints, arch):
    """reference / dense / grouped backends on unpruned weights: logits within 1e-3 of transformers'."""
    ids = _ids(1)
    model = load_hf_moe(checkpoints[arch])
    want = _logits(model, ids)
    hooks = [b.register_forward_hook(lambda m, i, o: o * 0.5) for _, b in hf_moe_layers(model)]
    assert _maxdiff(_logits(model, ids), want) > 100 * TOL  # the MoE blocks matter at this tolerance
    for h in hooks:
        h.remove()
    style, norm, scale, names = EXPECTED[arch]
    assert swap_moe_blocks(model) is model
    layers = hf_moe_layers(model)
    assert [n for n, _ in layers] == names
    for _, block in layers:
        assert isinstance(block, MoEBlock) and block.backend == "grouped" and not block.is_sparsified
        assert (block.router.style, block.router.norm_topk, block.router.routed_scaling_factor) == (style, norm, scale)
        assert (block.shared is not None) == arch.startswith(("qwen2", "deepseek"))
        assert (block.shared_expert_gate is not None) == (arch == "qwen2_moe")
    assert _maxdiff(_logits(model, ids), want) <= TOL
    for backend in ("dense", "grouped"):  # swapping again only switches the backend
        swap_moe_blocks(model, backend=backend)
        assert all(b.backend == backend for _, b in hf_moe_layers(model))
        assert _maxdiff(_logits(model, ids), want) <= TOL


@pytest.mark.parametrize("arch", ARCHS)
def test_router_spec_reads_the_same_routing_before_and_after_swap(checkpoints, arch):
    ids = _ids(2)
    model = load_hf_moe(checkpoints[arch])

    def record(m):
        seen = {}
        specs = hf_router_spec(m)
        hooks = [s.gate.register_forward_hook(lambda mod, i, out, s=s: seen.__setitem__(s.name, s.read(out)))
                 for s in specs]
        _logits(m, ids)
        for h in hooks:
            h.remove()
        return specs, seen

    specs, before = record(model)
    for s in specs:
        r = before[s.name]
        assert r.logits.shape == (ids.numel(), s.num_experts) and r.topk_ids.shape == (ids.numel(), s.top_k)
        assert r.logits.dtype == torch.float32 and r.topk_ids.dtype == torch.int64
        assert bool((r.topk_weights[:, :-1] >= r.topk_weights[:, 1:]).all())  # first choice in column 0
        again = s.route(r.logits)  # the documented math reproduces transformers' decision
        assert torch.equal(again.topk_ids, r.topk_ids)
        torch.testing.assert_close(again.topk_weights, r.topk_weights, atol=1e-6, rtol=1e-6)
        if arch == "deepseek_v2_group":  # all choices inside the top-2 of 4 groups (of 2 experts)
            probs = r.logits.softmax(-1).view(-1, 4, 2).amax(-1)
            top_groups = probs.topk(2, dim=-1).indices
            assert bool((r.topk_ids[..., None] // 2 == top_groups[:, None, :]).any(-1).all())
    swap_moe_blocks(model)
    specs_after, after = record(model)
    assert [s.gate for s in specs_after] == [b.router for _, b in hf_moe_layers(model)]
    for s in specs:
        torch.testing.assert_close(after[s.name].logits, before[s.name].logits, atol=1e-5, rtol=1e-5)
        assert torch.equal(after[s.name].topk_ids, before[s.name].topk_ids)
        torch.testing.assert_close(after[s.name].topk_weights, before[s.name].topk_weights, atol=1e-6, rtol=1e-6)


# (pattern, pattern kwargs, backend)
PRUNED = [("2:4", {}, "grouped"), ("samoyeds", {"vector": 32}, "samoyeds")]


@pytest.mark.parametrize("arch", ARCHS[:-1])  # group-limited routing does not change pruning
@pytest.mark.parametrize("pattern,kw,backend", PRUNED, ids=[p[0] for p in PRUNED])
@pytest.mark.parametrize("joint", [True, False], ids=["joint", "independent"])
def test_swap_pruned_matches_pruned_hf(checkpoints, arch, pattern, kw, backend, joint):
    ids = _ids(3)
    ours = swap_moe_blocks(load_hf_moe(checkpoints[arch]), backend=backend, pattern=pattern, joint=joint, **kw)
    ref = load_hf_moe(checkpoints[arch])
    dense = _logits(ref, ids)
    _prune_hf_experts(ref, pattern, joint=joint, **kw)
    want = _logits(ref, ids)
    assert _maxdiff(want, dense) > 100 * TOL  # pruning changes the model
    for _, block in hf_moe_layers(ours):
        assert block.is_sparsified and block.backend == backend
    assert _maxdiff(_logits(ours, ids), want) <= TOL
    if backend == "samoyeds":  # same pruned weights on the plain backend
        swap_moe_blocks(ours, backend="dense")
        assert _maxdiff(_logits(ours, ids), want) <= TOL


def test_wanda_calibration_from_token_ids_equals_recorded_inputs(checkpoints):
    calib = _ids(4, batch=3, seq=17)
    a = swap_moe_blocks(load_hf_moe(checkpoints["qwen2_moe"]), "grouped", "2:4", "wanda", acts=calib)
    b = load_hf_moe(checkpoints["qwen2_moe"])
    inputs = {}
    hooks = [m.register_forward_pre_hook(lambda mod, args, n=n: inputs.__setitem__(n, args[0].reshape(-1, 64)))
             for n, m in hf_moe_layers(b)]
    _logits(b, calib)
    for h in hooks:
        h.remove()
    swap_moe_blocks(b, "samoyeds", "2:4", "wanda", acts=inputs)
    c = swap_moe_blocks(load_hf_moe(checkpoints["qwen2_moe"]), "grouped", "2:4")
    ids = _ids(5)
    assert _maxdiff(_logits(a, ids), _logits(b, ids)) <= TOL
    wa = [blk.experts.w_gate for _, blk in hf_moe_layers(a)]
    wc = [blk.experts.w_gate for _, blk in hf_moe_layers(c)]
    assert any(not torch.equal(x != 0, y != 0) for x, y in zip(wa, wc))  # Wanda kept other weights


def test_bf16_swap(checkpoints):
    ids = _ids(6)
    model = load_hf_moe(checkpoints["mixtral"], dtype=torch.bfloat16)
    assert model.dtype == torch.bfloat16
    want = _logits(model, ids)
    swap_moe_blocks(model, backend="dense")
    assert all(b.experts.w_gate.dtype == torch.bfloat16 for _, b in hf_moe_layers(model))
    assert _maxdiff(_logits(model, ids), want) <= 0.1


# (case id, swap kwargs, expected exception, text the message must contain)
SWAP_ERRORS = [
    ("backend", dict(backend="fast"), ValueError, "backend"),
    ("samoyeds-needs-pattern", dict(backend="samoyeds"), ValueError, "pattern"),
    ("reference-is-unpruned", dict(backend="reference", pattern="2:4"), ValueError, "reference"),
    ("kwargs-without-pattern", dict(vector=32), TypeError, "vector"),
    ("method-without-pattern", dict(method="wanda"), TypeError, "wanda"),
    ("bad-pattern", dict(backend="grouped", pattern="3/4"), ValueError, "pattern"),
    ("bad-pattern-kw", dict(backend="grouped", pattern="2:4", vector=32), TypeError, "vector"),
    ("method", dict(backend="grouped", pattern="2:4", method="random"), ValueError, "method"),
    ("wanda-needs-acts", dict(backend="grouped", pattern="2:4", method="wanda"), ValueError, "acts"),
    ("acts-float", dict(backend="grouped", pattern="2:4", method="wanda", acts=torch.ones(3, 64)), ValueError, "acts"),
    ("acts-list", dict(backend="grouped", pattern="2:4", method="wanda", acts=[1]), TypeError, "acts"),
    ("acts-dict", dict(backend="grouped", pattern="2:4", method="wanda", acts={"x": torch.ones(3, 64)}), ValueError,
     "model.layers.0.mlp"),
    ("shape", dict(backend="samoyeds", pattern="samoyeds"), ValueError, "vector"),  # H=64, I=32 < vector=128
]


@pytest.mark.parametrize("case,kwargs,exc,text", SWAP_ERRORS, ids=[c[0] for c in SWAP_ERRORS])
def test_swap_errors_leave_the_model_unchanged(checkpoints, case, kwargs, exc, text):
    model = load_hf_moe(checkpoints["olmoe"])
    with pytest.raises(exc) as info:
        swap_moe_blocks(model, **kwargs)
    assert text in str(info.value)
    assert not any(isinstance(b, MoEBlock) for _, b in hf_moe_layers(model))


def test_swap_rejects_other_models_and_repruned_reference(checkpoints):
    with pytest.raises(TypeError, match="model"):
        swap_moe_blocks("mixtral")
    fake = nn.Linear(2, 2)
    fake.config = SimpleNamespace(model_type="llama")
    for fn in (swap_moe_blocks, hf_moe_layers, hf_router_spec):
        with pytest.raises(ValueError, match="'llama'"):
            fn(fake)
    model = swap_moe_blocks(load_hf_moe(checkpoints["olmoe"]), "grouped", "2:4")
    with pytest.raises(ValueError, match="sparsified"):
        swap_moe_blocks(model, "reference")
    with pytest.raises(TypeError, match="output"):
        hf_router_spec(model)[0].read(torch.zeros(3))
