"""A tiny byte-level MoE decoder (Mixtral-shaped) that trains on a laptop CPU, plus its save/load.

Architecture (pre-norm, no biases)::

    h₀ = Embed(input_ids)                                         [B, S, H]
    for each layer ℓ:
        h ← h + Attn(RMSNorm(h))      causal multi-head self-attention with RoPE
        h ← h + MoE(RMSNorm(h))       MoEBlock: top-k router + SwiGLU experts
    logits = LMHead(RMSNorm(h))                                   [B, S, V]

RoPE rotates query/key pairs ``(q_i, q_{i+d/2})`` by ``θ_i·pos`` with ``θ_i = rope_theta^(-2i/d)``
(the Llama/Mixtral "rotate half" convention). Module names follow Hugging Face Mixtral
(``layers.{i}.self_attn.q_proj``, ``layers.{i}.mlp`` = the MoE block, …). The default config has ≈3.5 M
parameters: 4 layers × (65 k attention + 8 experts × 98 k) + 2 × 32 k embeddings.

The MoE blocks run the ``"grouped"`` backend by default (``TinyMoEConfig.backend``): one sort of the
routed (token, expert) pairs, three matmuls per expert on contiguous segments, one scatter — no per-token
Python loop, which is what makes CPU training at ~10 k tokens/s possible.
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .._checks import FLOAT_DTYPES, INT_DTYPES, check_alloc, check_float, check_int, check_path, check_tensor
from .._checkpoint import read_config, read_state, write_checkpoint
from ..errors import CorruptFileError
from .block import BACKENDS, MoEBlock
from .router import ROUTER_STYLES

#: ``model_type`` written to ``config.json``.
MODEL_TYPE = "samoyeds_tiny_moe"
#: Version of the ``config.json`` schema.
FORMAT_VERSION = 1
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"


@dataclass
class TinyMoEConfig:
    """Hyper-parameters of :class:`TinyMoEForCausalLM` (validated on construction).

    Attributes
    ----------
    vocab_size : int
        256: one token per byte.
    hidden, intermediate : int
        Model width ``H`` and per-expert SwiGLU width ``I``.
    layers, heads : int
        Decoder layers; attention heads (``H`` divisible by ``heads``, head size even for RoPE).
    num_experts, top_k : int
        Experts per MoE block and experts per token.
    max_seq : int
        Longest sequence (RoPE tables are precomputed to this length).
    router_style : str
        ``"mixtral"``, ``"qwen"`` or ``"deepseek"``.
    rope_theta : float
        RoPE base.
    norm_eps : float
        RMSNorm epsilon.
    shared_intermediate : int
        Width of a shared expert per block (0 = none).
    backend : str
        MoE backend at construction (``"grouped"``; ``"dense"`` also accepted; ``"samoyeds"`` only after
        :meth:`TinyMoEForCausalLM.sparsify`, so not here).
    """

    vocab_size: int = 256
    hidden: int = 128
    intermediate: int = 256
    layers: int = 4
    heads: int = 4
    num_experts: int = 8
    top_k: int = 2
    max_seq: int = 256
    router_style: str = "mixtral"
    rope_theta: float = 10000.0
    norm_eps: float = 1e-5
    shared_intermediate: int = 0
    backend: str = "grouped"

    def __post_init__(self) -> None:
        for name in ("vocab_size", "hidden", "intermediate", "layers", "heads", "num_experts", "top_k", "max_seq"):
            setattr(self, name, check_int(name, getattr(self, name), lo=1))
        self.shared_intermediate = check_int("shared_intermediate", self.shared_intermediate, lo=0)
        if self.top_k > self.num_experts:
            raise ValueError(f"top_k: expected an int <= num_experts={self.num_experts}, got {self.top_k}")
        if self.hidden % self.heads:
            raise ValueError(f"heads: expected a divisor of hidden={self.hidden}, got {self.heads}")
        if (self.hidden // self.heads) % 2:
            raise ValueError(
                f"heads: expected an even head size hidden/heads for RoPE, got {self.hidden}/{self.heads} = "
                f"{self.hidden // self.heads}"
            )
        if not isinstance(self.router_style, str) or self.router_style not in ROUTER_STYLES:
            raise ValueError(
                f"router_style: expected one of {', '.join(map(repr, ROUTER_STYLES))}, got {self.router_style!r}"
            )
        for name in ("rope_theta", "norm_eps"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
                raise ValueError(f"{name}: expected a positive finite float, got {v!r}")
            setattr(self, name, float(v))
        if self.backend not in ("dense", "grouped"):
            raise ValueError(
                f"backend: expected 'grouped' or 'dense' at construction ('samoyeds' needs sparsify() first), "
                f"got {self.backend!r}"
            )

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict of every field."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TinyMoEConfig":
        """Build from :meth:`to_dict` output; unknown keys or bad values raise ``ValueError``/``TypeError``
        naming the key (missing keys take their defaults)."""
        if not isinstance(d, dict):
            raise TypeError(f"d: expected a dict of config fields, got {type(d).__name__}")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"{unknown[0]}: not a TinyMoEConfig field (fields: {', '.join(sorted(names))})")
        return cls(**d)

    def num_parameters(self) -> int:
        """Parameter count of the model this config builds."""
        H, I, E, V = self.hidden, self.intermediate, self.num_experts, self.vocab_size
        shared = 3 * H * self.shared_intermediate
        per_layer = 4 * H * H + E * H + 3 * E * H * I + shared + 2 * H
        return self.layers * per_layer + 2 * V * H + H


def rope_tables(seq: int, head_dim: int, theta: float = 10000.0) -> tuple[torch.Tensor, torch.Tensor]:
    """``cos, sin`` of shape ``[seq, head_dim]`` with angle ``pos · theta^(-2i/d)`` for ``i < d/2``, repeated
    for both halves (fp32)."""
    inv = theta ** (-torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)
    ang = torch.arange(seq, dtype=torch.float64)[:, None] * inv[None, :]
    ang = torch.cat([ang, ang], dim=-1)
    return ang.cos().float(), ang.sin().float()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """``x·cos + rotate_half(x)·sin`` with ``rotate_half([a, b]) = [-b, a]`` on the last dimension."""
    half = x.shape[-1] // 2
    rot = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return x * cos + rot * sin


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention with RoPE: ``softmax(QKᵀ/√d + causal mask) V`` then ``o_proj``."""

    def __init__(self, config: TinyMoEConfig) -> None:
        super().__init__()
        H = config.hidden
        self.heads = config.heads
        self.head_dim = H // config.heads
        self.q_proj = nn.Linear(H, H, bias=False)
        self.k_proj = nn.Linear(H, H, bias=False)
        self.v_proj = nn.Linear(H, H, bias=False)
        self.o_proj = nn.Linear(H, H, bias=False)
        cos, sin = rope_tables(config.max_seq, self.head_dim, config.rope_theta)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, S, H = x.shape
        q = self.q_proj(x).view(B, S, self.heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(B, S, self.heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(B, S, self.heads, self.head_dim).transpose(1, 2)
        cos, sin = self.rope_cos[:S].to(x.dtype), self.rope_sin[:S].to(x.dtype)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        o = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.o_proj(o.transpose(1, 2).reshape(B, S, H))


class TinyMoEDecoderLayer(nn.Module):
    """``h ← h + self_attn(input_layernorm(h)); h ← h + mlp(post_attention_layernorm(h))``."""

    def __init__(self, config: TinyMoEConfig) -> None:
        super().__init__()
        self.input_layernorm = nn.RMSNorm(config.hidden, eps=config.norm_eps)
        self.self_attn = CausalSelfAttention(config)
        self.post_attention_layernorm = nn.RMSNorm(config.hidden, eps=config.norm_eps)
        self.mlp = MoEBlock(
            config.hidden, config.intermediate, config.num_experts, config.top_k,
            router_style=config.router_style, shared_intermediate=config.shared_intermediate,
            backend=config.backend,
        )

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        h = h + self.self_attn(self.input_layernorm(h))
        return h + self.mlp(self.post_attention_layernorm(h))


class TinyMoEForCausalLM(nn.Module):
    """Byte-level MoE causal language model (see the module docstring for the architecture).

    Parameters
    ----------
    config : TinyMoEConfig

    Notes
    -----
    Initialisation: ``N(0, 0.02)`` for embeddings and linear layers, ``N(0, 0.02/√(2·layers))`` for the
    residual output projections (``o_proj``, expert ``w_down``, shared ``down_proj``), RMSNorm weights 1.
    """

    def __init__(self, config: TinyMoEConfig) -> None:
        super().__init__()
        if not isinstance(config, TinyMoEConfig):
            raise TypeError(f"config: expected a TinyMoEConfig, got {type(config).__name__}")
        check_alloc("config", (config.num_parameters(),), torch.float32, what="parameter vector")
        self.config = config
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden)
        self.layers = nn.ModuleList(TinyMoEDecoderLayer(config) for _ in range(config.layers))
        self.norm = nn.RMSNorm(config.hidden, eps=config.norm_eps)
        self.lm_head = nn.Linear(config.hidden, config.vocab_size, bias=False)
        self.init_weights()

    @torch.no_grad()
    def init_weights(self, std: float = 0.02) -> None:
        """Re-initialise every parameter (see the class notes); drops compressed expert operands."""
        std = check_float("std", std, lo=0.0)
        resid = std / math.sqrt(2 * self.config.layers)
        for name, p in self.named_parameters():
            if name.endswith("layernorm.weight") or name == "norm.weight":
                p.fill_(1.0)
            elif name.endswith(("o_proj.weight", "w_down", "down_proj.weight")):
                p.normal_(0.0, resid)
            else:
                p.normal_(0.0, std)
        for _, block in self.moe_blocks():
            block.experts.clear_compressed()
            if block.backend == "samoyeds":
                block.backend = "grouped"

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        """``input_ids [B, S]`` (int, values in ``[0, vocab_size)``, ``S <= max_seq``) → logits ``[B, S, V]``
        (the parameters' dtype). Each MoE block keeps its router decision in ``last_router_output``."""
        check_tensor("input_ids", input_ids, ndim=2, dtypes=INT_DTYPES)
        B, S = input_ids.shape
        if S > self.config.max_seq:
            raise ValueError(
                f"input_ids: expected at most max_seq={self.config.max_seq} positions, got shape {(B, S)}"
            )
        if input_ids.numel():
            lo, hi = int(input_ids.min()), int(input_ids.max())
            if lo < 0 or hi >= self.config.vocab_size:
                raise ValueError(
                    f"input_ids: expected token ids in [0, {self.config.vocab_size}), got values in [{lo}, {hi}]"
                )
        h = self.embed_tokens(input_ids.long())
        for layer in self.layers:
            h = layer(h)
        return self.lm_head(self.norm(h))

    # ------------------------------------------------------------------ MoE helpers
    def moe_blocks(self) -> list[tuple[str, MoEBlock]]:
        """``[(qualified name, MoEBlock), …]`` in layer order, e.g. ``("layers.0.mlp", block)``."""
        return [(name, m) for name, m in self.named_modules() if isinstance(m, MoEBlock)]

    def router_logits(self) -> list[torch.Tensor]:
        """The fp32 ``[B·S, E]`` router logits of every block at the last forward (autograd-attached), for
        :func:`load_balancing_loss`."""
        out = []
        for name, block in self.moe_blocks():
            if block.last_router_output is None:
                raise ValueError(f"{name}: no router output yet, run forward(input_ids) first")
            out.append(block.last_router_output.logits)
        return out

    def set_backend(self, backend: str) -> None:
        """Set every MoE block's backend (``"samoyeds"`` only after :meth:`sparsify`)."""
        if backend not in BACKENDS:
            raise ValueError(f"backend: expected one of {', '.join(map(repr, BACKENDS))}, got {backend!r}")
        for _, block in self.moe_blocks():
            block.backend = backend

    def sparsify(
        self, pattern: str = "samoyeds", method: str = "magnitude", *, joint: bool = True, **pattern_kwargs: Any
    ) -> "TinyMoEForCausalLM":
        """:meth:`MoEBlock.sparsify` on every block with calibration-free scores (``method="magnitude"``).

        Wanda needs each block's own inputs: call ``block.sparsify(pattern, method="wanda", acts=X_block)``
        per block instead (``X_block`` = the ``[tokens, H]`` input of that block, e.g. captured with a
        forward pre-hook), or :func:`samoyeds_lab.moe.accuracy.prune_model`. ``joint`` (keyword, default
        ``True``): gate and up share one Samoyeds row selection. For ``"samoyeds"``, a row holds ``K / V``
        windows (``hidden / vector`` for gate/up, ``intermediate / vector`` for down). Returns ``self``.
        """
        for _, block in self.moe_blocks():
            block.sparsify(pattern, method, joint=joint, **pattern_kwargs)
        return self

    def live_neurons(self, vector: int | None = None) -> dict[str, Any]:
        """Per MoE block, :meth:`MoEBlock.live_neurons`: the fraction of SwiGLU neurons whose gate and up
        rows both keep weights, per window and overall (``{block name: LiveNeurons}``, in layer order)."""
        return {name: block.live_neurons(vector) for name, block in self.moe_blocks()}

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    # ------------------------------------------------------------------ save / load
    def save_pretrained(self, directory: str | os.PathLike) -> Path:
        """Write ``config.json`` and ``model.safetensors`` (all parameters, their dtype) into ``directory``.

        Compressed expert operands are not saved: the pruned dense weights are, and ``sparsify`` on the
        loaded model rebuilds the same operands. Returns the directory.
        """
        out = check_path("directory", directory, kind="dir", must_exist=False)
        if out.exists() and not out.is_dir():
            raise ValueError(f"directory: expected a directory (new or existing) to write into, got a file {out}")
        dtypes = sorted({str(v.dtype).replace("torch.", "") for v in self.state_dict().values()})
        cfg = {"model_type": MODEL_TYPE, "format_version": FORMAT_VERSION,
               "torch_dtype": dtypes[0] if len(dtypes) == 1 else dtypes, **self.config.to_dict()}
        return write_checkpoint(directory, self, cfg, config_name=CONFIG_NAME, weights_name=WEIGHTS_NAME,
                                model_type=MODEL_TYPE)

    @classmethod
    def from_pretrained(
        cls, directory: str | os.PathLike, *, map_location: str | torch.device = "cpu"
    ) -> "TinyMoEForCausalLM":
        """Load a directory written by :meth:`save_pretrained`, validating both files.

        Raises
        ------
        FileNotFoundError
            ``config.json`` or ``model.safetensors`` is missing (the path is named).
        CorruptFileError
            Unreadable JSON, a bad config field, wrong ``model_type``/``format_version``, unreadable
            safetensors, or missing / unexpected / mis-shaped / non-finite tensors (file and tensor named).
        """
        check_path("directory", directory, kind="dir", must_exist=False)
        if isinstance(map_location, str):
            try:
                torch.device(map_location)
            except (RuntimeError, ValueError) as exc:
                raise ValueError(f"map_location: expected a device such as 'cpu' or 'cuda:0', got "
                                 f"{map_location!r}") from exc
        elif not isinstance(map_location, torch.device):
            raise TypeError(f"map_location: expected a str or torch.device, got {type(map_location).__name__}")
        raw, cfg_path, w_path = read_config(directory, config_name=CONFIG_NAME, weights_name=WEIGHTS_NAME,
                                            model_type=MODEL_TYPE, format_version=FORMAT_VERSION,
                                            writer="save_pretrained")
        raw.pop("torch_dtype", None)
        missing = [f.name for f in dataclasses.fields(TinyMoEConfig) if f.name not in raw]
        if missing:  # save_pretrained writes every field; a default would silently change the model
            raise CorruptFileError(
                f"{cfg_path}: field {missing[0]!r}: missing (save_pretrained writes every TinyMoEConfig field"
                + (f"; also missing: {', '.join(missing[1:])}" if len(missing) > 1 else "") + ")"
            )
        try:
            config = TinyMoEConfig.from_dict(raw)
        except (TypeError, ValueError) as exc:
            raise CorruptFileError(f"{cfg_path}: bad config: {exc}") from exc
        model = cls(config)
        try:
            state = read_state(w_path, cfg_path, model.state_dict(), dtypes=FLOAT_DTYPES, device=map_location)
        except CorruptFileError as exc:
            if "expected shape" not in str(exc):
                raise
            sizes = ", ".join(f"{k}={raw[k]}" for k in ("vocab_size", "hidden", "intermediate", "layers",
                                                         "num_experts", "shared_intermediate"))
            raise CorruptFileError(f"{exc} (the shapes config.json gives: {sizes}; do the config and the weights "
                                   f"belong together?)") from exc
        dtypes = {v.dtype for v in state.values()}
        if len(dtypes) == 1:
            model = model.to(device=map_location, dtype=dtypes.pop())
        else:
            model = model.to(device=map_location)
        model.load_state_dict(state, strict=True)
        return model


def load_balancing_loss(
    router_logits: Sequence[torch.Tensor], top_k: int, num_experts: int | None = None
) -> torch.Tensor:
    """Switch/Mixtral auxiliary load-balancing loss over the router logits of all layers.

    With all layers' logits stacked into ``N`` rows, ``p = softmax(z)`` and ``S_n`` the top-k set of row ``n``::

        f_e = (1/N) Σₙ [e ∈ S_n]          fraction of rows routed to e (summed over the k choices)
        P_e = (1/N) Σₙ p_{n,e}            mean router probability of e
        L   = E · Σₑ f_e · P_e

    This is ``transformers``' ``load_balancing_loss_func`` (no attention mask): ``L = k`` for perfectly
    uniform routing, up to ``E·k`` when every row sends everything to the same experts. Scale it by a
    coefficient (Mixtral uses 0.02) and add it to the LM loss; it is differentiable through ``P``.

    Parameters
    ----------
    router_logits : sequence of torch.Tensor
        One ``[tokens, E]`` float tensor per layer (e.g. :meth:`TinyMoEForCausalLM.router_logits`).
    top_k : int
        Experts per token.
    num_experts : int, optional
        ``E``; defaults to the logits' last dimension (checked if given).

    Returns
    -------
    torch.Tensor
        fp32 scalar.
    """
    if isinstance(router_logits, torch.Tensor) or not isinstance(router_logits, (list, tuple)) or not router_logits:
        raise TypeError(
            "router_logits: expected a non-empty list/tuple of [tokens, E] tensors, got "
            f"{type(router_logits).__name__}"
            + (" (empty)" if isinstance(router_logits, (list, tuple)) else "")
        )
    E = None
    for i, z in enumerate(router_logits):
        check_tensor(f"router_logits[{i}]", z, ndim=2, dtypes=FLOAT_DTYPES, finite=True)
        if E is None:
            E = z.shape[1]
        elif z.shape[1] != E:
            raise ValueError(
                f"router_logits[{i}]: expected {E} experts like router_logits[0], got shape {tuple(z.shape)}"
            )
    assert E is not None
    if num_experts is not None:
        num_experts = check_int("num_experts", num_experts, lo=1)
        if num_experts != E:
            raise ValueError(f"num_experts: expected the logits' last dimension {E}, got {num_experts}")
    top_k = check_int("top_k", top_k, lo=1, hi=E)
    z = torch.cat([t.float() for t in router_logits], dim=0)
    if z.shape[0] == 0:
        raise ValueError("router_logits: expected at least one token row, got 0")
    p = torch.softmax(z, dim=-1)
    sel = torch.topk(p, top_k, dim=-1).indices
    f = torch.zeros(E, dtype=torch.float32, device=z.device).scatter_add_(
        0, sel.reshape(-1), torch.ones(sel.numel(), dtype=torch.float32, device=z.device)
    ) / z.shape[0]
    P = p.mean(dim=0)
    return E * torch.sum(f * P)
