"""TinyMoEForCausalLM: shapes, causality, backends, save/load round trip and its errors, aux loss."""

from __future__ import annotations

import json

import pytest
import torch

from samoyeds_lab.errors import CorruptFileError
from samoyeds_lab.moe import MoEBlock, TinyMoEConfig, TinyMoEForCausalLM, load_balancing_loss


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # NOTE: these tensors are tiny; intra-op threads only add synchronisation (10x slower on a loaded 2-core box).
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)

SMALL = dict(hidden=32, intermediate=64, layers=2, heads=2, num_experts=4, top_k=2, max_seq=40)


def small_model(seed: int = 0, **kw) -> TinyMoEForCausalLM:
    torch.manual_seed(seed)
    return TinyMoEForCausalLM(TinyMoEConfig(**{**SMALL, **kw}))


@pytest.mark.parametrize("batch,seq", [(1, 1), (2, 19), (3, 40)])
def test_forward_shapes_and_router_outputs(batch, seq):
    model = small_model()
    ids = torch.randint(0, 256, (batch, seq))
    logits = model(ids)
    assert logits.shape == (batch, seq, 256) and logits.dtype == torch.float32
    assert bool(torch.isfinite(logits).all())
    blocks = model.moe_blocks()
    assert [n for n, _ in blocks] == ["layers.0.mlp", "layers.1.mlp"]
    assert all(isinstance(b, MoEBlock) and b.backend == "grouped" for _, b in blocks)
    z = model.router_logits()
    assert len(z) == 2 and all(t.shape == (batch * seq, 4) for t in z)


def test_default_config_size():
    cfg = TinyMoEConfig()
    assert cfg.num_parameters() == 3_478_656
    assert TinyMoEForCausalLM(TinyMoEConfig(**SMALL)).num_parameters() == TinyMoEConfig(**SMALL).num_parameters()


def test_causal_later_tokens_do_not_change_earlier_logits():
    model = small_model(1)
    ids = torch.randint(0, 256, (2, 23))
    a = model(ids)
    ids2 = ids.clone()
    ids2[:, 11:] = (ids2[:, 11:] + 7) % 256
    b = model(ids2)
    torch.testing.assert_close(a[:, :11], b[:, :11], atol=1e-5, rtol=1e-5)
    assert not torch.allclose(a[:, 11:], b[:, 11:])
    # a prefix alone gives the same logits as inside the longer sequence
    torch.testing.assert_close(model(ids[:, :11]), a[:, :11], atol=1e-5, rtol=1e-5)


def test_backends_agree_and_sparsified_model_runs_samoyeds():
    model = small_model(2, hidden=64, intermediate=128, heads=4)
    ids = torch.randint(0, 256, (2, 19))
    ref = model(ids)
    model.set_backend("dense")
    torch.testing.assert_close(model(ids), ref, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="sparsify"):
        model.set_backend("samoyeds")
    model.sparsify("samoyeds", vector=32)
    model.set_backend("grouped")
    pruned = model(ids)
    model.set_backend("samoyeds")
    torch.testing.assert_close(model(ids), pruned, atol=1e-5, rtol=1e-5)


def test_training_step_reduces_loss():
    model = small_model(3)
    ids = torch.randint(0, 256, (4, 24))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(8):
        logits = model(ids[:, :-1])
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, 256), ids[:, 1:].reshape(-1))
        aux = load_balancing_loss(model.router_logits(), top_k=2)
        (loss + 0.02 * aux).backward()
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    assert all(p.grad is None for p in model.parameters())


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_save_load_round_trip_is_bit_exact(tmp_path, dtype):
    model = small_model(4).to(dtype)
    out = model.save_pretrained(tmp_path / "ckpt")
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors"]
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["model_type"] == "samoyeds_tiny_moe" and cfg["format_version"] == 1 and cfg["hidden"] == 32
    loaded = TinyMoEForCausalLM.from_pretrained(out)
    assert loaded.config == model.config
    sa, sb = model.state_dict(), loaded.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert sa[k].dtype == sb[k].dtype == dtype and torch.equal(sa[k], sb[k]), k
    ids = torch.randint(0, 256, (2, 19))
    assert torch.equal(model(ids), loaded(ids))


def _saved(tmp_path):
    d = small_model(5).save_pretrained(tmp_path / "m")
    return d


def test_missing_files_are_named(tmp_path):
    d = _saved(tmp_path)
    (d / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        TinyMoEForCausalLM.from_pretrained(d)
    d = _saved(tmp_path)
    (d / "config.json").unlink()
    with pytest.raises(FileNotFoundError, match="config.json"):
        TinyMoEForCausalLM.from_pretrained(d)
    with pytest.raises(OSError, match="config.json"):
        TinyMoEForCausalLM.from_pretrained(tmp_path / "nowhere")


CORRUPTIONS = [
    # (what to do to the saved directory, file the error must name, another word it must contain)
    ("garbage_weights", "model.safetensors", "safetensors"),
    ("truncated_weights", "model.safetensors", "safetensors"),
    ("bad_json", "config.json", "JSON"),
    ("json_list", "config.json", "object"),
    ("bad_heads", "config.json", "heads"),
    ("unknown_field", "config.json", "dropout"),
    ("wrong_model_type", "config.json", "model_type"),
    ("wrong_version", "config.json", "format_version"),
    ("shape_mismatch", "model.safetensors", "shape"),
    ("missing_tensor", "model.safetensors", "missing tensor"),
    ("nan_tensor", "model.safetensors", "non-finite"),
]


@pytest.mark.parametrize("how,fname,word", CORRUPTIONS)
def test_corrupt_files_are_named(tmp_path, how, fname, word):
    from safetensors.torch import load_file, save_file

    d = _saved(tmp_path)
    w, c = d / "model.safetensors", d / "config.json"
    cfg = json.loads(c.read_text())
    if how == "garbage_weights":
        w.write_bytes(b"\x00\x01not a safetensors file" * 5)
    elif how == "truncated_weights":
        w.write_bytes(w.read_bytes()[:1000])
    elif how == "bad_json":
        c.write_text("{hidden: 32,")
    elif how == "json_list":
        c.write_text("[1, 2]")
    elif how == "bad_heads":
        c.write_text(json.dumps({**cfg, "heads": 3}))
    elif how == "unknown_field":
        c.write_text(json.dumps({**cfg, "dropout": 0.1}))
    elif how == "wrong_model_type":
        c.write_text(json.dumps({**cfg, "model_type": "mixtral"}))
    elif how == "wrong_version":
        c.write_text(json.dumps({**cfg, "format_version": 99}))
    elif how == "shape_mismatch":
        c.write_text(json.dumps({**cfg, "intermediate": 32}))
    elif how in ("missing_tensor", "nan_tensor"):
        sd = load_file(str(w))
        if how == "missing_tensor":
            del sd["layers.1.mlp.router.gate.weight"]
        else:
            sd["norm.weight"][3] = float("nan")
        save_file(sd, str(w))
    with pytest.raises(CorruptFileError) as info:
        TinyMoEForCausalLM.from_pretrained(d)
    msg = str(info.value)
    assert fname in msg and word in msg, msg
    assert isinstance(info.value, ValueError)


BAD_CONFIG = [
    (dict(top_k=9), ValueError, "top_k"),
    (dict(heads=3), ValueError, "heads"),
    (dict(hidden=36, heads=4), ValueError, "heads"),  # head size 9 is odd: no RoPE pairs
    (dict(router_style="switch"), ValueError, "router_style"),
    (dict(rope_theta=-1.0), ValueError, "rope_theta"),
    (dict(layers=0), ValueError, "layers"),
    (dict(vocab_size=2.5), TypeError, "vocab_size"),
    (dict(backend="samoyeds"), ValueError, "backend"),
]


@pytest.mark.parametrize("kwargs,exc,word", BAD_CONFIG)
def test_bad_config_names_the_field(kwargs, exc, word):
    with pytest.raises(exc, match=word):
        TinyMoEConfig(**kwargs)


def test_config_dict_round_trip():
    cfg = TinyMoEConfig(**SMALL, router_style="qwen", shared_intermediate=16)
    assert TinyMoEConfig.from_dict(cfg.to_dict()) == cfg
    assert TinyMoEConfig.from_dict({"hidden": 64}).hidden == 64
    with pytest.raises(ValueError, match="nope"):
        TinyMoEConfig.from_dict({"nope": 1})
    with pytest.raises(TypeError, match="dict"):
        TinyMoEConfig.from_dict([("hidden", 64)])
    with pytest.raises(TypeError, match="config"):
        TinyMoEForCausalLM(cfg.to_dict())


def test_bad_input_ids():
    model = small_model()
    with pytest.raises(ValueError, match="max_seq=40"):
        model(torch.zeros(1, 41, dtype=torch.int64))
    with pytest.raises(ValueError, match=r"input_ids.*\[0, 256\)"):
        model(torch.tensor([[1, 256]]))
    with pytest.raises(TypeError, match="input_ids"):
        model(torch.zeros(1, 4))
    with pytest.raises(ValueError, match="input_ids"):
        model(torch.zeros(4, dtype=torch.int64))


def test_load_balancing_loss_hand_example():
    # 2 layers x 2 tokens, E=2, k=1. p rows: [.75,.25], [.25,.75] | [.75,.25], [.75,.25]
    # f = fraction routed = [3/4, 1/4]; P = mean p = [.625, .375]; L = E · Σ f·P = 2 · (.46875 + .09375) = 1.125
    a, b = [3.0, 1.0], [1.0, 3.0]
    z = [torch.log(torch.tensor([a, b])), torch.log(torch.tensor([a, a]))]
    torch.testing.assert_close(load_balancing_loss(z, top_k=1), torch.tensor(1.125))
    # uniform routing gives exactly k
    torch.testing.assert_close(load_balancing_loss([torch.zeros(6, 4)], top_k=2, num_experts=4), torch.tensor(2.0))
    # every row on experts {0, 1} with p = [.5, .5, 0, 0]: f = [1, 1, 0, 0], P = [.5, .5, 0, 0], L = 4 · (.5 + .5) = 4
    z = torch.tensor([[20.0, 20.0, -20.0, -20.0]]).repeat(5, 1)
    torch.testing.assert_close(load_balancing_loss([z], top_k=2), torch.tensor(4.0), atol=1e-6, rtol=1e-6)


def test_load_balancing_loss_matches_transformers_and_has_gradient():
    from transformers.models.mixtral.modeling_mixtral import load_balancing_loss_func

    torch.manual_seed(0)
    z = [torch.randn(19, 8, requires_grad=True) for _ in range(3)]
    ours = load_balancing_loss(z, top_k=2)
    theirs = load_balancing_loss_func(tuple(z), num_experts=8, top_k=2)
    torch.testing.assert_close(ours, theirs.float(), atol=1e-6, rtol=1e-6)
    ours.backward()
    assert all(t.grad is not None and bool(t.grad.abs().sum() > 0) for t in z)


@pytest.mark.parametrize("args,exc,word", [
    (([], 2), TypeError, "router_logits"),
    ((torch.zeros(3, 4), 2), TypeError, "router_logits"),
    (([torch.zeros(3, 4), torch.zeros(3, 5)], 2), ValueError, r"router_logits\[1\]"),
    (([torch.zeros(3, 4)], 5), ValueError, "top_k"),
    (([torch.zeros(3)], 1), ValueError, r"router_logits\[0\]"),
])
def test_load_balancing_loss_bad_inputs(args, exc, word):
    with pytest.raises(exc, match=word):
        load_balancing_loss(*args)
    with pytest.raises(ValueError, match="num_experts"):
        load_balancing_loss([torch.zeros(3, 4)], 2, num_experts=5)
