"""Fuzz: bad inputs to every public entry point of ``samoyeds_lab.moe`` (routers, experts, block, tiny model, HF).

Every case must raise the named error class with a message naming the argument; see
``tests/fuzz/harness.py``. ``moe.train`` (another area) has its own file.
"""

from __future__ import annotations

import functools
import json
import tempfile
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from samoyeds_lab import moe
from samoyeds_lab.errors import CorruptFileError
from samoyeds_lab.moe import (
    HFRouterSpec, MoEBlock, Router, RouterOutput, SwiGLUExperts, SwiGLUMLP, TinyMoEConfig, TinyMoEForCausalLM,
    load_balancing_loss, route,
)

from .harness import case, ids, run_case

E, H, I, T, KK = 4, 32, 32, 5, 2
NAN, INF = float("nan"), float("inf")
_g = torch.Generator().manual_seed(0)
LOGITS = torch.randn(T, E, generator=_g)
X = torch.randn(T, H, generator=_g)
IDS = torch.tensor([[0, 1], [1, 2], [2, 3], [3, 0], [0, 2]])
WTS = torch.full((T, KK), 0.5)
torch.manual_seed(0)
EXPERTS = SwiGLUExperts(E, H, I)
SPARSE = SwiGLUExperts(E, H, I)
SPARSE.sparsify("samoyeds", vector=32)
BLOCK = MoEBlock(H, I, E, KK)
MLP = SwiGLUMLP(H, I)
ROUTER = Router(H, E, KK)
TINY = TinyMoEConfig(hidden=16, intermediate=32, layers=1, heads=2, num_experts=4, top_k=2, max_seq=8)
MODEL = TinyMoEForCausalLM(TINY)


def _with(t: torch.Tensor, i: int, v: float) -> torch.Tensor:
    t = t.clone()
    t.view(-1)[i] = v
    return t


def _route(**kw):
    a = dict(logits=LOGITS, top_k=KK)
    a.update(kw)
    return lambda: route(a.pop("logits"), a.pop("top_k"), **a)


def _experts_fwd(backend, **kw):
    a = dict(x=X, topk_ids=IDS, topk_weights=WTS)
    a.update(kw)
    ex = SPARSE if backend == "samoyeds" else EXPERTS
    return lambda: ex(a["x"], a["topk_ids"], a["topk_weights"], backend=backend)


@functools.lru_cache(maxsize=1)
def _saved_dir() -> Path:
    d = Path(tempfile.mkdtemp(prefix="fuzz_moe_"))
    MODEL.save_pretrained(d / "ok")
    return d


def _edited(name: str, edit) -> Path:
    """A copy of the saved tiny model with ``config.json`` edited by ``edit(dict)`` (or the file replaced)."""
    import shutil

    root = _saved_dir()
    d = root / name
    if not d.exists():
        shutil.copytree(root / "ok", d)
        cfg = d / "config.json"
        if callable(edit):
            raw = json.loads(cfg.read_text())
            edit(raw)
            cfg.write_text(json.dumps(raw))
        else:
            cfg.write_text(edit)
    return d


def _drop(key):
    return lambda raw: raw.pop(key)


def _set(key, v):
    return lambda raw: raw.__setitem__(key, v)


def _load(name, edit):
    return lambda: TinyMoEForCausalLM.from_pretrained(_edited(name, edit))


@functools.lru_cache(maxsize=1)
def _hf_config():
    import transformers

    return transformers.MixtralConfig(
        vocab_size=32, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1,
        max_position_embeddings=16, intermediate_size=32, num_local_experts=4, num_experts_per_tok=2,
        tie_word_embeddings=False)


def _hf_model():
    import transformers

    torch.manual_seed(0)
    return transformers.AutoModelForCausalLM.from_config(_hf_config())


def _swap(**kw):
    return lambda: moe.swap_moe_blocks(_hf_model(), **kw)


def _spec(**kw):
    a = dict(name="layer", gate=nn.Linear(H, E, bias=False), num_experts=E, top_k=KK, style="mixtral",
             norm_topk=True)
    a.update(kw)
    return lambda: HFRouterSpec(**a)


SPEC = HFRouterSpec("layer", nn.Linear(H, E, bias=False), E, KK, "mixtral", True)

CASES = [
    # route
    case("moe.route", "logits None", _route(logits=None), TypeError, "logits"),
    case("moe.route", "logits 1-D", _route(logits=torch.zeros(E)), ValueError, "logits"),
    case("moe.route", "logits int", _route(logits=torch.zeros(T, E, dtype=torch.int64)), TypeError, "logits"),
    case("moe.route", "logits NaN", _route(logits=_with(LOGITS, 0, NAN)), ValueError, "logits"),
    case("moe.route", "logits +inf (fp16 overflow)", _route(logits=_with(LOGITS, 1, INF)), ValueError, "logits"),
    case("moe.route", "logits -inf row", _route(logits=torch.full((1, E), -INF)), ValueError, "logits"),
    case("moe.route", "logits fp16 inf", _route(logits=_with(LOGITS, 1, INF).half()), ValueError, "logits"),
    case("moe.route", "top_k 0", _route(top_k=0), ValueError, "top_k"),
    case("moe.route", "top_k > E", _route(top_k=E + 1), ValueError, "top_k"),
    case("moe.route", "top_k 1.5", _route(top_k=1.5), TypeError, "top_k"),
    case("moe.route", "top_k None", _route(top_k=None), TypeError, "top_k"),
    case("moe.route", "style 'switch'", _route(style="switch"), ValueError, "style"),
    case("moe.route", "style 3", _route(style=3), TypeError, "style"),
    case("moe.route", "norm_topk 'yes'", _route(norm_topk="yes"), TypeError, "norm_topk"),
    case("moe.route", "norm_topk 1", _route(norm_topk=1), TypeError, "norm_topk"),
    case("moe.route", "routed_scaling_factor -1", _route(style="deepseek", routed_scaling_factor=-1.0), ValueError,
         "routed_scaling_factor"),
    case("moe.route", "routed_scaling_factor NaN", _route(style="deepseek", routed_scaling_factor=NAN), ValueError,
         "routed_scaling_factor"),
    case("moe.route", "routed_scaling_factor inf", _route(style="deepseek", routed_scaling_factor=INF), ValueError,
         "routed_scaling_factor"),
    case("moe.route", "routed_scaling_factor 0", _route(style="deepseek", routed_scaling_factor=0.0), ValueError,
         "routed_scaling_factor"),
    case("moe.route", "routed_scaling_factor '2'", _route(style="deepseek", routed_scaling_factor="2"), TypeError,
         "routed_scaling_factor"),
    case("moe.route", "routed_scaling_factor with style mixtral", _route(routed_scaling_factor=2.0), ValueError,
         "routed_scaling_factor"),
    case("moe.route", "n_group without topk_group", _route(style="deepseek", n_group=2), ValueError, "topk_group"),
    case("moe.route", "n_group 3 of 4 experts", _route(style="deepseek", n_group=3, topk_group=1), ValueError,
         "n_group"),
    case("moe.route", "n_group 0", _route(style="deepseek", n_group=0, topk_group=1), ValueError, "n_group"),
    case("moe.route", "topk_group > n_group", _route(style="deepseek", n_group=2, topk_group=3), ValueError,
         "topk_group"),
    case("moe.route", "n_group with style qwen", _route(style="qwen", n_group=2, topk_group=1), ValueError,
         "n_group"),
    # Router
    case("moe.Router", "hidden 0", lambda: Router(0, E, KK), ValueError, "hidden"),
    case("moe.Router", "num_experts -1", lambda: Router(H, -1, 1), ValueError, "num_experts"),
    case("moe.Router", "top_k > num_experts", lambda: Router(H, E, E + 1), ValueError, "top_k"),
    case("moe.Router", "hidden '32'", lambda: Router("32", E, KK), TypeError, "hidden"),
    case("moe.Router", "style None", lambda: Router(H, E, KK, style=None), TypeError, "style"),
    case("moe.Router", "norm_topk 1", lambda: Router(H, E, KK, norm_topk=1), TypeError, "norm_topk"),
    case("moe.Router", "routed_scaling_factor inf", lambda: Router(H, E, KK, style="deepseek",
                                                                   routed_scaling_factor=INF),
         ValueError, "routed_scaling_factor"),
    case("moe.Router", "routed_scaling_factor NaN", lambda: Router(H, E, KK, style="deepseek",
                                                                   routed_scaling_factor=NAN),
         ValueError, "routed_scaling_factor"),
    case("moe.Router", "routed_scaling_factor -2", lambda: Router(H, E, KK, style="deepseek",
                                                                  routed_scaling_factor=-2.0),
         ValueError, "routed_scaling_factor"),
    case("moe.Router", "n_group 3 of 4", lambda: Router(H, E, KK, style="deepseek", n_group=3, topk_group=1),
         ValueError, "n_group"),
    case("moe.Router.forward", "x wrong hidden", lambda: ROUTER(torch.zeros(T, H + 1)), ValueError, "x"),
    case("moe.Router.forward", "x int", lambda: ROUTER(torch.zeros(T, H, dtype=torch.int32)), TypeError, "x"),
    case("moe.Router.forward", "x 3-D", lambda: ROUTER(torch.zeros(1, T, H)), ValueError, "x"),
    case("moe.Router.forward", "x NaN", lambda: ROUTER(_with(X, 3, NAN)), ValueError, "x"),
    case("moe.Router.forward", "x inf", lambda: ROUTER(_with(X, 3, INF)), ValueError, "x"),
    case("moe.Router.forward", "x None", lambda: ROUTER(None), TypeError, "x"),
    # RouterOutput
    case("moe.RouterOutput", "logits None", lambda: RouterOutput(None, IDS, WTS), TypeError, "logits"),
    case("moe.RouterOutput", "topk_ids float", lambda: RouterOutput(LOGITS, IDS.float(), WTS), TypeError,
         "topk_ids"),
    case("moe.RouterOutput", "topk_weights int", lambda: RouterOutput(LOGITS, IDS, IDS), TypeError, "topk_weights"),
    case("moe.RouterOutput", "rows differ", lambda: RouterOutput(LOGITS, IDS[:2], WTS[:2]), ValueError, "topk_ids"),
    case("moe.RouterOutput", "k > E", lambda: RouterOutput(LOGITS, torch.zeros(T, E + 1, dtype=torch.int64),
                                                           torch.zeros(T, E + 1)), ValueError, "topk_ids"),
    # SwiGLUExperts
    case("moe.SwiGLUExperts", "num_experts 0", lambda: SwiGLUExperts(0, H, I), ValueError, "num_experts"),
    case("moe.SwiGLUExperts", "hidden -1", lambda: SwiGLUExperts(E, -1, I), ValueError, "hidden"),
    case("moe.SwiGLUExperts", "intermediate 2.0", lambda: SwiGLUExperts(E, H, 2.0), TypeError, "intermediate"),
    case("moe.SwiGLUExperts", "sizes too large to allocate", lambda: SwiGLUExperts(10**6, 10**6, 10**6), ValueError,
         "num_experts"),
    case("moe.SwiGLUExperts.forward", "backend 'fast'", lambda: EXPERTS(X, IDS, WTS, backend="fast"), ValueError,
         "backend"),
    case("moe.SwiGLUExperts.forward", "backend None", lambda: EXPERTS(X, IDS, WTS, backend=None), ValueError,
         "backend"),
    case("moe.SwiGLUExperts.forward_samoyeds", "before sparsify", lambda: EXPERTS.forward_samoyeds(X, IDS, WTS),
         ValueError, "sparsify"),
    case("moe.SwiGLUExperts.forward_samoyeds", "pad_to 0", lambda: SPARSE.forward_samoyeds(X, IDS, WTS, pad_to=0),
         ValueError, "pad_to"),
    case("moe.SwiGLUExperts.expert_forward", "expert 99", lambda: EXPERTS.expert_forward(99, X), ValueError,
         "expert"),
    case("moe.SwiGLUExperts.expert_forward", "x wrong hidden", lambda: EXPERTS.expert_forward(0, torch.zeros(2, 3)),
         ValueError, "x"),
    case("moe.SwiGLUExperts.expert_forward", "x None", lambda: EXPERTS.expert_forward(0, None), TypeError, "x"),
    case("moe.SwiGLUExperts.sparsify", "pattern 'bogus'", lambda: SwiGLUExperts(E, H, I).sparsify("bogus"),
         ValueError, "pattern"),
    case("moe.SwiGLUExperts.sparsify", "method 'bogus'", lambda: SwiGLUExperts(E, H, I).sparsify("2:4", "bogus"),
         ValueError, "method"),
    case("moe.SwiGLUExperts.sparsify", "acts of the wrong length",
         lambda: SwiGLUExperts(E, H, I).sparsify("2:4", acts=[None]), ValueError, "acts"),
    case("moe.SwiGLUExperts.sparsify", "wanda without acts",
         lambda: SwiGLUExperts(E, H, I).sparsify("2:4", "wanda"), ValueError, "acts"),
    case("moe.SwiGLUExperts.sparsify", "acts[0] wrong hidden",
         lambda: SwiGLUExperts(E, H, I).sparsify("2:4", "wanda", acts=[torch.ones(3, H + 1)] * E), ValueError,
         "acts[0]"),
    # SwiGLUMLP
    case("moe.SwiGLUMLP", "hidden 0", lambda: SwiGLUMLP(0, I), ValueError, "hidden"),
    case("moe.SwiGLUMLP", "intermediate None", lambda: SwiGLUMLP(H, None), TypeError, "intermediate"),
    case("moe.SwiGLUMLP.forward", "x wrong hidden", lambda: MLP(torch.zeros(2, H + 1)), ValueError, "x"),
    case("moe.SwiGLUMLP.forward", "x int", lambda: MLP(torch.zeros(2, H, dtype=torch.int64)), TypeError, "x"),
    case("moe.SwiGLUMLP.forward", "x None", lambda: MLP(None), TypeError, "x"),
    # MoEBlock
    case("moe.MoEBlock", "hidden 0", lambda: MoEBlock(0, I, E, KK), ValueError, "hidden"),
    case("moe.MoEBlock", "top_k > num_experts", lambda: MoEBlock(H, I, E, E + 1), ValueError, "top_k"),
    case("moe.MoEBlock", "backend 'samoyeds' before sparsify", lambda: MoEBlock(H, I, E, KK, backend="samoyeds"),
         ValueError, "backend"),
    case("moe.MoEBlock", "backend 3", lambda: MoEBlock(H, I, E, KK, backend=3), TypeError, "backend"),
    case("moe.MoEBlock", "shared_gate without a shared expert", lambda: MoEBlock(H, I, E, KK, shared_gate=True),
         ValueError, "shared_gate"),
    case("moe.MoEBlock", "shared_gate 1", lambda: MoEBlock(H, I, E, KK, shared_intermediate=8, shared_gate=1),
         TypeError, "shared_gate"),
    case("moe.MoEBlock", "shared_intermediate -1", lambda: MoEBlock(H, I, E, KK, shared_intermediate=-1),
         ValueError, "shared_intermediate"),
    case("moe.MoEBlock", "pad_to 0", lambda: MoEBlock(H, I, E, KK, pad_to=0), ValueError, "pad_to"),
    case("moe.MoEBlock", "unknown router kwarg", lambda: MoEBlock(H, I, E, KK, jitter=0.1), TypeError, "jitter"),
    case("moe.MoEBlock", "routed_scaling_factor NaN", lambda: MoEBlock(H, I, E, KK, router_style="deepseek",
                                                                      routed_scaling_factor=NAN),
         ValueError, "routed_scaling_factor"),
    case("moe.MoEBlock.forward", "x wrong hidden", lambda: BLOCK(torch.zeros(2, 3, H + 1)), ValueError, "x"),
    case("moe.MoEBlock.forward", "x 0-D", lambda: BLOCK(torch.tensor(1.0)), ValueError, "x"),
    case("moe.MoEBlock.forward", "x int", lambda: BLOCK(torch.zeros(2, H, dtype=torch.int64)), TypeError, "x"),
    case("moe.MoEBlock.forward", "x NaN", lambda: BLOCK(_with(X, 0, NAN)), ValueError, "x"),
    case("moe.MoEBlock.forward", "x None", lambda: BLOCK(None), TypeError, "x"),
    case("moe.MoEBlock.sparsify", "acts wrong hidden", lambda: MoEBlock(H, I, E, KK).sparsify(
        "2:4", "wanda", acts=torch.ones(3, H + 1)), ValueError, "acts"),
    case("moe.MoEBlock.sparsify", "acts int", lambda: MoEBlock(H, I, E, KK).sparsify(
        "2:4", "wanda", acts=torch.ones(3, H, dtype=torch.int64)), TypeError, "acts"),
    case("moe.MoEBlock.sparsify", "samoyeds vector 128 > hidden", lambda: MoEBlock(H, I, E, KK).sparsify("samoyeds"),
         ValueError, "vector"),
    # TinyMoEConfig
    case("moe.TinyMoEConfig", "hidden 0", lambda: TinyMoEConfig(hidden=0), ValueError, "hidden"),
    case("moe.TinyMoEConfig", "heads 3 of hidden 128", lambda: TinyMoEConfig(heads=3), ValueError, "heads"),
    case("moe.TinyMoEConfig", "top_k > num_experts", lambda: TinyMoEConfig(top_k=9), ValueError, "top_k"),
    case("moe.TinyMoEConfig", "router_style 'x'", lambda: TinyMoEConfig(router_style="x"), ValueError,
         "router_style"),
    case("moe.TinyMoEConfig", "rope_theta NaN", lambda: TinyMoEConfig(rope_theta=NAN), ValueError, "rope_theta"),
    case("moe.TinyMoEConfig", "norm_eps -1", lambda: TinyMoEConfig(norm_eps=-1.0), ValueError, "norm_eps"),
    case("moe.TinyMoEConfig", "backend 'samoyeds'", lambda: TinyMoEConfig(backend="samoyeds"), ValueError,
         "backend"),
    case("moe.TinyMoEConfig", "vocab_size '256'", lambda: TinyMoEConfig(vocab_size="256"), TypeError, "vocab_size"),
    case("moe.TinyMoEForCausalLM", "config too large to allocate",
         lambda: TinyMoEForCausalLM(TinyMoEConfig(hidden=2**16, intermediate=2**16, num_experts=64, heads=1)),
         ValueError, "config"),
    case("moe.TinyMoEConfig.from_dict", "not a dict", lambda: TinyMoEConfig.from_dict([1]), TypeError, "d"),
    case("moe.TinyMoEConfig.from_dict", "unknown key", lambda: TinyMoEConfig.from_dict({"widht": 3}), ValueError,
         "widht"),
    case("moe.TinyMoEConfig.from_dict", "bad value", lambda: TinyMoEConfig.from_dict({"layers": -1}), ValueError,
         "layers"),
    # TinyMoEForCausalLM
    case("moe.TinyMoEForCausalLM", "config a dict", lambda: TinyMoEForCausalLM({"hidden": 16}), TypeError,
         "config"),
    case("moe.TinyMoEForCausalLM.forward", "input_ids float", lambda: MODEL(torch.zeros(1, 4)), TypeError,
         "input_ids"),
    case("moe.TinyMoEForCausalLM.forward", "input_ids 256", lambda: MODEL(torch.tensor([[1, 256]])), ValueError,
         "input_ids"),
    case("moe.TinyMoEForCausalLM.forward", "input_ids -1", lambda: MODEL(torch.tensor([[-1]])), ValueError,
         "input_ids"),
    case("moe.TinyMoEForCausalLM.forward", "input_ids 1-D", lambda: MODEL(torch.tensor([1, 2])), ValueError,
         "input_ids"),
    case("moe.TinyMoEForCausalLM.forward", "input_ids longer than max_seq", lambda: MODEL(torch.zeros(1, 9).long()),
         ValueError, "max_seq"),
    case("moe.TinyMoEForCausalLM.set_backend", "backend 'fast'", lambda: MODEL.set_backend("fast"), ValueError,
         "backend"),
    case("moe.TinyMoEForCausalLM.set_backend", "backend 'samoyeds' unsparsified",
         lambda: TinyMoEForCausalLM(TINY).set_backend("samoyeds"), ValueError, "backend"),
    case("moe.TinyMoEForCausalLM.init_weights", "std -1", lambda: TinyMoEForCausalLM(TINY).init_weights(-1.0),
         ValueError, "std"),
    case("moe.TinyMoEForCausalLM.init_weights", "std NaN", lambda: TinyMoEForCausalLM(TINY).init_weights(NAN),
         ValueError, "std"),
    case("moe.TinyMoEForCausalLM.router_logits", "before forward", lambda: TinyMoEForCausalLM(TINY).router_logits(),
         ValueError, "forward"),
    case("moe.TinyMoEForCausalLM.sparsify", "pattern 'bogus'", lambda: TinyMoEForCausalLM(TINY).sparsify("bogus"),
         ValueError, "pattern"),
    case("moe.TinyMoEForCausalLM.save_pretrained", "directory None", lambda: MODEL.save_pretrained(None), TypeError,
         "directory"),
    case("moe.TinyMoEForCausalLM.save_pretrained", "directory is a file",
         lambda: MODEL.save_pretrained(_edited("f", "{}") / "config.json"), ValueError, "directory"),
    case("moe.TinyMoEForCausalLM.from_pretrained", "directory missing",
         lambda: TinyMoEForCausalLM.from_pretrained("/nonexistent/tiny"), FileNotFoundError, "/nonexistent/tiny"),
    case("moe.TinyMoEForCausalLM.from_pretrained", "directory None",
         lambda: TinyMoEForCausalLM.from_pretrained(None), TypeError, "directory"),
    case("moe.TinyMoEForCausalLM.from_pretrained", "config.json not JSON", _load("notjson", "{oops"),
         CorruptFileError, "config.json"),
    case("moe.TinyMoEForCausalLM.from_pretrained", "config missing 'hidden'", _load("nohidden", _drop("hidden")),
         CorruptFileError, "hidden"),
    case("moe.TinyMoEForCausalLM.from_pretrained", "config missing 'num_experts'",
         _load("noexperts", _drop("num_experts")), CorruptFileError, "num_experts"),
    case("moe.TinyMoEForCausalLM.from_pretrained", "config hidden a str", _load("strhidden", _set("hidden", "16")),
         CorruptFileError, "hidden"),
    case("moe.TinyMoEForCausalLM.from_pretrained", "config model_type wrong",
         _load("mt", _set("model_type", "llama")), CorruptFileError, "model_type"),
    case("moe.TinyMoEForCausalLM.from_pretrained", "config hidden doubled", _load("h2", _set("hidden", 32)),
         CorruptFileError, "hidden"),
    case("moe.TinyMoEForCausalLM.from_pretrained", "map_location 'tpu'",
         lambda: TinyMoEForCausalLM.from_pretrained(_saved_dir() / "ok", map_location="tpu"), ValueError,
         "map_location"),
    case("moe.TinyMoEForCausalLM.from_pretrained", "map_location 3.5",
         lambda: TinyMoEForCausalLM.from_pretrained(_saved_dir() / "ok", map_location=3.5), TypeError,
         "map_location"),
    # load_balancing_loss
    case("moe.load_balancing_loss", "a tensor, not a list", lambda: load_balancing_loss(LOGITS, 2), TypeError,
         "router_logits"),
    case("moe.load_balancing_loss", "empty list", lambda: load_balancing_loss([], 2), TypeError, "router_logits"),
    case("moe.load_balancing_loss", "experts differ", lambda: load_balancing_loss([LOGITS, torch.zeros(T, E + 1)], 2),
         ValueError, "router_logits[1]"),
    case("moe.load_balancing_loss", "top_k 0", lambda: load_balancing_loss([LOGITS], 0), ValueError, "top_k"),
    case("moe.load_balancing_loss", "num_experts mismatch", lambda: load_balancing_loss([LOGITS], 2, num_experts=9),
         ValueError, "num_experts"),
    case("moe.load_balancing_loss", "NaN logits", lambda: load_balancing_loss([_with(LOGITS, 2, NAN)], 2),
         ValueError, "router_logits[0]"),
    case("moe.load_balancing_loss", "zero rows", lambda: load_balancing_loss([torch.zeros(0, E)], 2), ValueError,
         "router_logits"),
    case("moe.load_balancing_loss", "int logits", lambda: load_balancing_loss([IDS], 1), TypeError,
         "router_logits[0]"),
    # HFRouterSpec
    case("moe.HFRouterSpec", "gate None", _spec(gate=None), TypeError, "gate"),
    case("moe.HFRouterSpec", "top_k > num_experts", _spec(top_k=E + 1), ValueError, "top_k"),
    case("moe.HFRouterSpec", "style 'x'", _spec(style="x"), ValueError, "style"),
    case("moe.HFRouterSpec", "norm_topk 'no'", _spec(norm_topk="no"), TypeError, "norm_topk"),
    case("moe.HFRouterSpec", "routed_scaling_factor NaN", _spec(style="deepseek", routed_scaling_factor=NAN),
         ValueError, "routed_scaling_factor"),
    case("moe.HFRouterSpec", "name 3", _spec(name=3), TypeError, "name"),
    case("moe.HFRouterSpec.read", "output None", lambda: SPEC.read(None), TypeError, "output"),
    case("moe.HFRouterSpec.read", "output of 3 non-tensors", lambda: SPEC.read((1, 2, 3)), TypeError, "output"),
    case("moe.HFRouterSpec.read", "output NaN weights",
         lambda: SPEC.read((LOGITS, _with(WTS, 0, NAN), IDS)), ValueError, "output"),
    case("moe.HFRouterSpec.route", "logits NaN", lambda: SPEC.route(_with(LOGITS, 0, NAN)), ValueError, "logits"),
    # Hugging Face models
    case("moe.hf_moe_layers", "model None", lambda: moe.hf_moe_layers(None), TypeError, "model"),
    case("moe.hf_moe_layers", "model a Linear", lambda: moe.hf_moe_layers(nn.Linear(2, 2)), ValueError, "model"),
    case("moe.hf_router_spec", "model a str", lambda: moe.hf_router_spec("mixtral"), TypeError, "model"),
    case("moe.hf_router_spec", "model a MoEBlock", lambda: moe.hf_router_spec(BLOCK), ValueError, "model"),
    case("moe.load_hf_moe", "path None", lambda: moe.load_hf_moe(None), TypeError, "path"),
    case("moe.load_hf_moe", "path missing", lambda: moe.load_hf_moe("/nonexistent/hf"), FileNotFoundError, "path"),
    case("moe.load_hf_moe", "path a file", lambda: moe.load_hf_moe(_edited("f", "{}") / "config.json"),
         NotADirectoryError, "path"),
    case("moe.load_hf_moe", "dtype int8", lambda: moe.load_hf_moe(_saved_dir() / "ok", dtype=torch.int8), TypeError,
         "dtype"),
    case("moe.load_hf_moe", "model_type not HF MoE", lambda: moe.load_hf_moe(_saved_dir() / "ok"), ValueError,
         "model_type"),
    case("moe.load_hf_moe", "config.json not JSON", lambda: moe.load_hf_moe(_edited("notjson", "{oops")),
         CorruptFileError, "config.json"),
    case("moe.swap_moe_blocks", "model None", lambda: moe.swap_moe_blocks(None), TypeError, "model"),
    case("moe.swap_moe_blocks", "backend 'fast'", _swap(backend="fast"), ValueError, "backend"),
    case("moe.swap_moe_blocks", "samoyeds without pattern", _swap(backend="samoyeds"), ValueError, "pattern"),
    case("moe.swap_moe_blocks", "pattern 'bogus'", _swap(backend="grouped", pattern="bogus"), ValueError, "pattern"),
    case("moe.swap_moe_blocks", "method 'bogus'", _swap(backend="grouped", pattern="2:4", method="bogus"), ValueError,
         "method"),
    case("moe.swap_moe_blocks", "pattern kwargs without pattern", _swap(vector=32), TypeError, "pattern"),
    case("moe.swap_moe_blocks", "acts a list", _swap(backend="grouped", pattern="2:4", method="wanda", acts=[1]),
         TypeError, "acts"),
]
for be in ("dense", "grouped", "samoyeds"):
    CASES += [
        case("moe.SwiGLUExperts.forward", f"{be}: topk_ids out of range", _experts_fwd(be, topk_ids=IDS + 1),
             ValueError, "topk_ids"),
        case("moe.SwiGLUExperts.forward", f"{be}: topk_ids negative", _experts_fwd(be, topk_ids=IDS - 1),
             ValueError, "topk_ids"),
        case("moe.SwiGLUExperts.forward", f"{be}: duplicate ids per token",
             _experts_fwd(be, topk_ids=torch.tensor([[0, 0]] * T)), ValueError, "topk_ids"),
        case("moe.SwiGLUExperts.forward", f"{be}: topk_ids float", _experts_fwd(be, topk_ids=IDS.float()), TypeError,
             "topk_ids"),
        case("moe.SwiGLUExperts.forward", f"{be}: topk_weights NaN", _experts_fwd(be, topk_weights=_with(WTS, 3, NAN)),
             ValueError, "topk_weights"),
        case("moe.SwiGLUExperts.forward", f"{be}: topk_weights inf", _experts_fwd(be, topk_weights=_with(WTS, 3, INF)),
             ValueError, "topk_weights"),
        case("moe.SwiGLUExperts.forward", f"{be}: topk_weights int",
             _experts_fwd(be, topk_weights=torch.ones(T, KK, dtype=torch.int64)), TypeError, "topk_weights"),
        case("moe.SwiGLUExperts.forward", f"{be}: shapes differ", _experts_fwd(be, topk_weights=WTS[:, :1]),
             ValueError, "topk_weights"),
        case("moe.SwiGLUExperts.forward", f"{be}: x wrong hidden", _experts_fwd(be, x=torch.zeros(T, H + 1)),
             ValueError, "x"),
        case("moe.SwiGLUExperts.forward", f"{be}: x fp16 with fp32 experts", _experts_fwd(be, x=X.half()), TypeError,
             "x"),
        case("moe.SwiGLUExperts.forward", f"{be}: x None", _experts_fwd(be, x=None), TypeError, "x"),
        case("moe.SwiGLUExperts.forward", f"{be}: topk_ids a list", _experts_fwd(be, topk_ids=IDS.tolist()),
             TypeError, "topk_ids"),
    ]

EXEMPT: dict[str, str] = {}


#: Bad inputs still not clear (issue 16 is left open for them): each runs, is reported in the suite's summary,
#: and is a strict xfail, so fixing one without moving it out of here fails the suite.
OPEN: set[str] = set()


def _params(cases):
    return [pytest.param(c, marks=pytest.mark.xfail(strict=True, reason="open: not yet a clear error"))
            if c.id in OPEN else c for c in cases]


@pytest.mark.parametrize("c", _params(CASES), ids=ids(CASES))
def test_bad_input(c):
    run_case(c)


# ------------------------------------------------------------------ non-finite logits: documented handling
def test_fp16_router_overflow_still_picks_the_right_expert():
    """An fp16 gate whose logits overflow (|z| > 65504) is recomputed in fp32: the right expert, finite weights."""
    r = Router(4, 4, 1).half()
    with torch.no_grad():
        r.gate.weight.copy_(torch.tensor([[1.0, 1.0, 0, 0], [0, 0, 0, 0], [0, 0, 1.0, 0], [0, 1.0, 0, 0]]))
    x = torch.tensor([[65504.0, 65504.0, 0, 0], [0, 0, 65504.0, 65000.0]]).half()
    assert not bool(torch.isfinite(torch.nn.functional.linear(x, r.gate.weight)).all())  # fp16 overflows
    out = r(x)
    assert out.topk_ids[:, 0].tolist() == [0, 2]  # z = [131008, 0, 0, 65504] and [0, 0, 65504, 65000]
    assert bool(torch.isfinite(out.topk_weights).all()) and bool(torch.isfinite(out.logits).all())
    assert out.logits.dtype == torch.float32


@settings(max_examples=20, deadline=None)
@given(st.integers(0, T * E - 1), st.sampled_from([NAN, INF, -INF]))
def test_any_nonfinite_logit_is_named(i, v):
    with pytest.raises(ValueError, match="logits"):
        route(_with(LOGITS, i, v), KK)


@settings(max_examples=20, deadline=None)
@given(st.floats(allow_nan=True, allow_infinity=True).filter(lambda f: not (f > 0 and f < float("inf"))))
def test_any_nonpositive_or_nonfinite_scaling_factor_is_named(f):
    with pytest.raises(ValueError, match="routed_scaling_factor"):
        route(LOGITS, KK, style="deepseek", routed_scaling_factor=f)


@settings(max_examples=15, deadline=None)
@given(st.lists(st.permutations(range(E)).map(lambda p: p[:KK]), min_size=1, max_size=4),
       st.sampled_from(["dense", "grouped", "samoyeds"]))
def test_valid_random_routing_never_raises(rows, backend):
    ids_ = torch.tensor(rows)
    ex = SPARSE if backend == "samoyeds" else EXPERTS
    y = ex(torch.randn(len(rows), H), ids_, torch.rand(len(rows), KK), backend=backend)
    assert y.shape == (len(rows), H) and bool(torch.isfinite(y).all())
