"""Mixture-of-Experts layers: top-k routers, SwiGLU experts, an MoE block with pluggable execution
backends (``"dense"`` / ``"grouped"`` / ``"samoyeds"``) and a tiny byte-level MoE language model.

::

    block = MoEBlock(hidden=64, intermediate=128, num_experts=8, top_k=2, backend="grouped")
    y = block(x)                                   # x [..., 64] → y [..., 64]
    block.sparsify("samoyeds", vector=32)          # prune + compress every expert (magnitude or Wanda)
    block.backend = "samoyeds"                     # compressed weights × selected tokens (ssmm)

    model = TinyMoEForCausalLM(TinyMoEConfig())    # ≈3.5 M parameters, 4 layers × 8 experts, bytes in
    logits = model(input_ids)                      # [B, S] → [B, S, 256]
    aux = load_balancing_loss(model.router_logits(), top_k=2)
"""

from .block import BACKENDS, MoEBlock
from .experts import SwiGLUExperts, SwiGLUMLP
from .model import TinyMoEConfig, TinyMoEForCausalLM, load_balancing_loss
from .router import ROUTER_STYLES, Router, RouterOutput, route

# hf.py imports transformers / safetensors only when one of its functions is called
from .hf import (  # noqa: E402
    SUPPORTED_MODEL_TYPES,
    SWAP_BACKENDS,
    HFRouterSpec,
    hf_moe_layers,
    hf_router_spec,
    load_hf_moe,
    swap_moe_blocks,
)

__all__ = [
    "Router", "RouterOutput", "route", "ROUTER_STYLES",
    "SwiGLUExperts", "SwiGLUMLP",
    "MoEBlock", "BACKENDS",
    "TinyMoEConfig", "TinyMoEForCausalLM", "load_balancing_loss",
    "load_hf_moe", "swap_moe_blocks", "hf_moe_layers", "hf_router_spec", "HFRouterSpec",
    "SUPPORTED_MODEL_TYPES", "SWAP_BACKENDS",
]
