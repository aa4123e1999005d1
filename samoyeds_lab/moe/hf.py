"""Hugging Face MoE models: load a local checkpoint, find its sparse-MoE blocks, read their routers, and
swap the blocks for :class:`~samoyeds_lab.moe.MoEBlock` s that carry the same weights.

Supported ``model_type`` s (``transformers >= 5``, whose experts are fused 3-D parameters)::

    model_type    block class             router                                    shared expert
    ------------  ----------------------  ----------------------------------------  -----------------------------
    mixtral       MixtralSparseMoeBlock   softmax → top-k → renormalise             —
    qwen2_moe     Qwen2MoeSparseMoeBlock  softmax → top-k (→ renorm. if              Qwen2MoeMLP, gated by
                                          norm_topk_prob)                            sigmoid(shared_expert_gate(x))
    qwen3_moe     Qwen3MoeSparseMoeBlock  as qwen2_moe                              —
    olmoe         OlmoeSparseMoeBlock     as qwen2_moe                              —
    deepseek_v2   DeepseekV2Moe           softmax → [group-limited] top-k           DeepseekV2MLP (n_shared_experts
                                          → × routed_scaling_factor                 · moe_intermediate_size wide)

Every routed expert is SwiGLU, ``E_e(x) = W_down[e] (silu(W_gate[e] x) ⊙ W_up[e] x)``; transformers 5
stores it as ``experts.gate_up_proj [E, 2I, H]`` (gate rows first, then up rows) and
``experts.down_proj [E, H, I]``, which :func:`swap_moe_blocks` splits into ``w_gate = gate_up_proj[:, :I]``,
``w_up = gate_up_proj[:, I:]``, ``w_down = down_proj``. Dense layers (Qwen ``mlp_only_layers``,
DeepSeek ``first_k_dense_replace``) are left alone.

Typical use::

    model = load_hf_moe("checkpoints/qwen3-moe-tiny")          # local files only, never the network
    swap_moe_blocks(model, backend="samoyeds", pattern="samoyeds", vector=32)   # gate/up rows chosen jointly
    for spec in hf_router_spec(model):                           # read routers with forward hooks
        spec.gate.register_forward_hook(lambda m, i, out, s=spec: print(s.name, s.read(out).topk_ids))

Precision notes: the swapped router computes its logits in the activations' dtype (DeepSeek-V2 in
transformers uses fp32) and mixes with fp32 weights cast to the activations' dtype (Qwen/OLMoE in
transformers round the weights to the activations' dtype first); in fp32 the outputs agree to rounding,
in bf16 to bf16 rounding. Mixtral's training-time ``router_jitter_noise`` is not reproduced (inference only).
After a swap, transformers' ``output_router_logits=True`` finds no router to record: read the routers
through :func:`hf_router_spec` (or ``block.last_router_output``) instead.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import torch
from torch import nn

from .._checks import FLOAT_DTYPES, INT_DTYPES, check_bool, check_instance, check_int, check_tensor
from ..errors import CorruptFileError
from ..prune import METHODS, parse_pattern
from .block import MoEBlock
from .router import RouterOutput, check_router_options, route

#: model_type → (module of transformers.models, sparse-MoE block class name, router style).
SUPPORTED_MODEL_TYPES: dict[str, tuple[str, str, str]] = {
    "mixtral": ("mixtral", "MixtralSparseMoeBlock", "mixtral"),
    "qwen2_moe": ("qwen2_moe", "Qwen2MoeSparseMoeBlock", "qwen"),
    "qwen3_moe": ("qwen3_moe", "Qwen3MoeSparseMoeBlock", "qwen"),
    "olmoe": ("olmoe", "OlmoeSparseMoeBlock", "qwen"),
    "deepseek_v2": ("deepseek_v2", "DeepseekV2Moe", "deepseek"),
}

#: Backends accepted by :func:`swap_moe_blocks` (``"reference"`` = ``"grouped"`` on unpruned weights).
SWAP_BACKENDS = ("reference", "dense", "grouped", "samoyeds")

#: Weight files transformers looks for in a checkpoint directory, in its order of preference.
_WEIGHT_INDEXES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")
_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


def _supported() -> str:
    return ", ".join(map(repr, SUPPORTED_MODEL_TYPES))


# ---------------------------------------------------------------------------------------------- loading
@contextlib.contextmanager
def _offline() -> Iterator[None]:
    """Set ``HF_HUB_OFFLINE=1`` and ``TRANSFORMERS_OFFLINE=1`` for the duration, then restore them."""
    keys = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    old = {k: os.environ.get(k) for k in keys}
    os.environ.update({k: "1" for k in keys})
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _read_json(file: Path) -> dict[str, Any]:
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CorruptFileError(f"{file}: expected a JSON object, could not parse it ({e})") from e
    if not isinstance(data, dict):
        raise CorruptFileError(f"{file}: expected a JSON object, got a {type(data).__name__}")
    return data


def _weight_files(root: Path) -> list[Path]:
    """The weight files of a checkpoint directory (shards named by an index, or one file)."""
    for name in _WEIGHT_INDEXES:
        index = root / name
        if index.is_file():
            weight_map = _read_json(index).get("weight_map")
            if not isinstance(weight_map, dict) or not weight_map:
                raise CorruptFileError(f"{index}: expected a non-empty 'weight_map' object, got {weight_map!r:.80}")
            files = [root / str(f) for f in sorted(set(weight_map.values()))]
            for f in files:
                if not f.is_file():
                    raise FileNotFoundError(f"{f}: weight shard named by {index} not found")
            return files
    for name in _WEIGHT_FILES:
        if (root / name).is_file():
            return [root / name]
    raise FileNotFoundError(
        f"path: no weights in {root}; expected one of {', '.join(_WEIGHT_FILES + _WEIGHT_INDEXES)}"
    )


def _check_safetensors(file: Path) -> None:
    """Parse a safetensors header (also catches truncation: the header must cover the whole file)."""
    from safetensors import safe_open

    try:
        with safe_open(str(file), framework="pt") as f:
            f.keys()
    except Exception as e:  # safetensors raises its own SafetensorError (an Exception subclass)
        raise CorruptFileError(f"{file}: not a readable safetensors file ({e})") from e


def load_hf_moe(path: str | os.PathLike, *, dtype: torch.dtype | None = None) -> nn.Module:
    """Load a local Hugging Face MoE causal-LM checkpoint, never touching the network.

    The directory must hold ``config.json`` (``model_type`` one of :data:`SUPPORTED_MODEL_TYPES`) and
    ``model.safetensors`` / ``pytorch_model.bin`` (or a sharded ``*.index.json`` with its shards). Files are
    checked before transformers sees them, then loaded with ``AutoModelForCausalLM.from_pretrained(path,
    local_files_only=True)`` under ``HF_HUB_OFFLINE=1``; a checkpoint that leaves any parameter
    uninitialised (missing or mis-shaped tensor) is rejected instead of silently random.

    Parameters
    ----------
    path : str or os.PathLike
        Checkpoint directory (e.g. written by ``model.save_pretrained(path)``).
    dtype : torch.dtype, optional
        Parameter dtype; default: as stored in the checkpoint (``dtype="auto"``).

    Returns
    -------
    torch.nn.Module
        The transformers ``*ForCausalLM`` model, in eval mode, on the CPU.

    Raises
    ------
    TypeError
        ``path`` is not a str/PathLike or ``dtype`` not a torch floating dtype.
    FileNotFoundError, NotADirectoryError
        No such directory, no ``config.json``, no weight file (the message names the path).
    CorruptFileError
        (a ``ValueError``) unreadable ``config.json`` / index / safetensors file, or weights transformers
        cannot load into the configured model (named, with transformers' reason).
    ValueError
        ``model_type`` in ``config.json`` is not supported (the message names the file).
    """
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path: expected a str or os.PathLike checkpoint directory, got {type(path).__name__}")
    if dtype is not None and not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        raise TypeError(f"dtype: expected a floating torch.dtype or None, got {dtype!r}")
    root = Path(path)
    if not root.exists():
        raise FileNotFoundError(f"path: no such checkpoint directory: {root}")
    if not root.is_dir():
        raise NotADirectoryError(f"path: expected a checkpoint directory, got a file: {root}")
    config_file = root / "config.json"
    if not config_file.is_file():
        raise FileNotFoundError(f"path: {config_file} not found; expected a Hugging Face checkpoint directory")
    model_type = _read_json(config_file).get("model_type")
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise ValueError(f"{config_file}: model_type expected one of {_supported()}, got {model_type!r}")
    files = _weight_files(root)
    for f in files:
        if f.suffix == ".safetensors":
            _check_safetensors(f)

    from transformers import AutoConfig, AutoModelForCausalLM

    with _offline():
        try:
            config = AutoConfig.from_pretrained(root, local_files_only=True, trust_remote_code=False)
        except Exception as e:  # transformers' strict config validation raises several types
            raise CorruptFileError(f"{config_file}: transformers rejected the config ({type(e).__name__}: {e})") from e
        names = ", ".join(str(f) for f in files)
        try:
            model, info = AutoModelForCausalLM.from_pretrained(
                root, config=config, local_files_only=True, trust_remote_code=False,
                dtype=dtype if dtype is not None else "auto",
                output_loading_info=True,
            )
        except Exception as e:  # conversion errors surface as RuntimeError/OSError/ValueError
            raise CorruptFileError(f"{names}: transformers could not load the weights ({type(e).__name__}: {e})") from e
    for kind in ("missing_keys", "mismatched_keys"):
        bad = sorted(str(k) for k in (info.get(kind) or ()))
        if bad:
            more = f" (+{len(bad) - 3} more)" if len(bad) > 3 else ""
            raise CorruptFileError(
                f"{names}: expected every parameter of the {model_type} model, {kind.replace('_', ' ')}: "
                f"{', '.join(bad[:3])}{more}"
            )
    return model.eval()


# ---------------------------------------------------------------------------------------------- finding blocks
def _model_type(model: object) -> str:
    if not isinstance(model, nn.Module):
        raise TypeError(f"model: expected a transformers MoE model (torch.nn.Module), got {type(model).__name__}")
    config = getattr(model, "config", None)
    model_type = getattr(config, "model_type", None)
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise ValueError(f"model: expected config.model_type one of {_supported()}, got {model_type!r}")
    return model_type


def _block_class(model_type: str) -> type:
    module, cls, _ = SUPPORTED_MODEL_TYPES[model_type]
    return getattr(importlib.import_module(f"transformers.models.{module}.modeling_{module}"), cls)


def hf_moe_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The sparse-MoE blocks of a supported Hugging Face model, in module order.

    Returns
    -------
    list of (str, torch.nn.Module)
        ``(qualified name, block)``, e.g. ``("model.layers.0.mlp", MixtralSparseMoeBlock)``; blocks already
        swapped by :func:`swap_moe_blocks` appear as :class:`MoEBlock`. Dense MLP layers are not listed.

    Raises
    ------
    TypeError, ValueError
        ``model`` is not an ``nn.Module`` or its ``config.model_type`` is not supported.
    """
    cls = _block_class(_model_type(model))
    return [(name, m) for name, m in model.named_modules() if isinstance(m, (cls, MoEBlock))]


# ---------------------------------------------------------------------------------------------- routers
@dataclass(frozen=True, eq=False)
class HFRouterSpec:
    """How one MoE layer routes, and how to read its router's forward output.

    Attributes
    ----------
    name : str
        Qualified name of the MoE block (``"model.layers.3.mlp"``).
    gate : torch.nn.Module
        The module to hook: transformers' top-k router (forward returns ``(logits, weights, ids)``) or,
        after a swap, the block's :class:`~samoyeds_lab.moe.Router` (returns a ``RouterOutput``).
    num_experts, top_k : int
    style : str
        ``"mixtral"``, ``"qwen"`` or ``"deepseek"`` (see :func:`samoyeds_lab.moe.router.route`).
    norm_topk : bool
        Whether the kept top-k probabilities are renormalised to sum to one.
    routed_scaling_factor : float
        Multiplies the kept weights (DeepSeek-V2; 1.0 elsewhere).
    n_group, topk_group : int or None
        DeepSeek-V2 group-limited greedy top-k (``None`` = plain greedy top-k).
    """

    name: str
    gate: nn.Module
    num_experts: int
    top_k: int
    style: str
    norm_topk: bool
    routed_scaling_factor: float = 1.0
    n_group: int | None = None
    topk_group: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str):
            raise TypeError(f"name: expected the MoE block's qualified name (a str), got {type(self.name).__name__}")
        check_instance("gate", self.gate, nn.Module, "a torch.nn.Module (the router to hook)")
        num_experts = check_int("num_experts", self.num_experts, lo=1)
        top_k = check_int("top_k", self.top_k, lo=1, hi=num_experts)
        opts = check_router_options(self.style, self.norm_topk, self.routed_scaling_factor, self.n_group,
                                    self.topk_group, num_experts=num_experts, top_k=top_k)
        for field_name, v in zip(("style", "norm_topk", "routed_scaling_factor", "n_group", "topk_group"), opts):
            object.__setattr__(self, field_name, v)  # frozen: store the checked, normalised values
        object.__setattr__(self, "num_experts", num_experts)
        object.__setattr__(self, "top_k", top_k)

    def read(self, output: Any) -> RouterOutput:
        """Turn the gate's forward output (a hook's ``output``) into a detached :class:`RouterOutput`.

        ``logits`` fp32 ``[T, E]``; ``topk_ids`` int64 ``[T, k]`` and ``topk_weights`` fp32 ``[T, k]``
        sorted by descending weight (first choice in column 0; DeepSeek's router leaves them unsorted).
        """
        if isinstance(output, RouterOutput):
            return output.detach()
        if not (isinstance(output, (tuple, list)) and len(output) == 3):
            raise TypeError(
                f"output: expected the router's (logits, weights, ids) tuple or a RouterOutput, "
                f"got {type(output).__name__}"
            )
        for i, what in enumerate(("logits", "weights", "ids")):
            if not isinstance(output[i], torch.Tensor):
                raise TypeError(
                    f"output: expected the router's (logits, weights, ids) tensors, got {what} of type "
                    f"{type(output[i]).__name__}"
                )
        logits, weights, ids = (t.detach() for t in output)
        check_tensor("output[0] (logits)", logits, ndim=2, dtypes=FLOAT_DTYPES, finite=True)
        check_tensor("output[1] (weights)", weights, ndim=2, dtypes=FLOAT_DTYPES, finite=True)
        check_tensor("output[2] (ids)", ids, ndim=2, dtypes=INT_DTYPES)
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= self.num_experts):
            raise ValueError(
                f"output[2] (ids): expected expert ids in [0, {self.num_experts}), got "
                f"[{int(ids.min())}, {int(ids.max())}]"
            )
        weights, order = weights.float().sort(dim=-1, descending=True, stable=True)
        return RouterOutput(logits.float(), ids.long().gather(1, order), weights)

    def route(self, logits: torch.Tensor) -> RouterOutput:
        """This layer's routing math applied to given ``[T, E]`` logits (e.g. a predictor's)."""
        return route(
            logits, self.top_k, style=self.style, norm_topk=self.norm_topk,
            routed_scaling_factor=self.routed_scaling_factor, n_group=self.n_group, topk_group=self.topk_group,
        )


def _hf_routing(model_type: str, name: str, block: nn.Module) -> dict[str, Any]:
    """Routing parameters of a transformers block, read from its router module."""
    gate = block.gate
    style = SUPPORTED_MODEL_TYPES[model_type][2]
    p: dict[str, Any] = {"num_experts": int(gate.num_experts), "top_k": int(gate.top_k), "style": style}
    if style == "mixtral":
        p["norm_topk"] = True
    elif style == "qwen":
        p["norm_topk"] = bool(gate.norm_topk_prob)
    else:
        # NOTE: transformers' DeepseekV2TopkRouter ignores config.norm_topk_prob; so do we, to match it.
        p["norm_topk"] = False
        p["routed_scaling_factor"] = float(gate.routed_scaling_factor)
        if gate.topk_method == "group_limited_greedy":
            p["n_group"], p["topk_group"] = gate.num_group, gate.topk_group
            if p["n_group"] is None or p["topk_group"] is None:
                raise ValueError(
                    f"{name}: topk_method='group_limited_greedy' expects config.n_group and config.topk_group, "
                    f"got n_group={p['n_group']}, topk_group={p['topk_group']}"
                )
        elif gate.topk_method != "greedy":
            raise ValueError(
                f"{name}: config.topk_method expected 'greedy' or 'group_limited_greedy', got {gate.topk_method!r}"
            )
    return p


def hf_router_spec(model: nn.Module) -> list[HFRouterSpec]:
    """Per MoE layer, the router module to hook and the routing it applies.

    Hook ``spec.gate`` with ``register_forward_hook`` and call ``spec.read(output)`` in the hook to get the
    layer's :class:`RouterOutput` (logits, top-k ids, mixing weights) without changing the model's outputs.
    Works before and after :func:`swap_moe_blocks`.

    Returns
    -------
    list of HFRouterSpec
        In the order of :func:`hf_moe_layers`.
    """
    model_type = _model_type(model)
    specs = []
    for name, block in hf_moe_layers(model):
        if isinstance(block, MoEBlock):
            r = block.router
            specs.append(HFRouterSpec(
                name, r, r.num_experts, r.top_k, r.style, r.norm_topk, r.routed_scaling_factor, r.n_group, r.topk_group,
            ))
        else:
            specs.append(HFRouterSpec(name, block.gate, **_hf_routing(model_type, name, block)))
    return specs


# ---------------------------------------------------------------------------------------------- swapping
def _expert_tensors(name: str, experts: nn.Module) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(w_gate [E, I, H], w_up [E, I, H], w_down [E, H, I])`` from transformers' fused experts."""
    gate_up = getattr(experts, "gate_up_proj", None)
    down = getattr(experts, "down_proj", None)
    if not (isinstance(gate_up, torch.Tensor) and isinstance(down, torch.Tensor) and gate_up.ndim == 3):
        raise ValueError(
            f"{name}.experts: expected transformers>=5 fused expert parameters gate_up_proj [E, 2I, H] and "
            f"down_proj [E, H, I], got {type(experts).__name__} without them (upgrade transformers)"
        )
    expected = {"is_transposed": False, "is_concatenated": True, "has_bias": False}
    layout = {a: getattr(experts, a, d) for a, d in expected.items()}
    if layout != expected:
        raise ValueError(
            f"{name}.experts: expected concatenated, untransposed, bias-free gate_up_proj, got {layout}"
        )
    inter = down.shape[-1]
    if gate_up.shape[1] != 2 * inter or down.shape[0] != gate_up.shape[0] or down.shape[1] != gate_up.shape[2]:
        raise ValueError(
            f"{name}.experts: expected gate_up_proj [E, 2I, H] and down_proj [E, H, I], got "
            f"{tuple(gate_up.shape)} and {tuple(down.shape)}"
        )
    return gate_up[:, :inter], gate_up[:, inter:], down


def _linear_weights(name: str, mlp: nn.Module) -> dict[str, torch.Tensor]:
    out = {}
    for proj in ("gate_proj", "up_proj", "down_proj"):
        lin = getattr(mlp, proj)
        if getattr(lin, "bias", None) is not None:
            raise ValueError(f"{name}.{proj}: expected a bias-free Linear (config.mlp_bias=False), got a bias")
        out[proj] = lin.weight
    return out


def _moe_block_from_hf(model: nn.Module, model_type: str, name: str, block: nn.Module) -> MoEBlock:
    """A :class:`MoEBlock` (backend ``"grouped"``) with ``block``'s router, experts and shared expert."""
    act = getattr(model.config, "hidden_act", "silu")
    if act not in ("silu", "swish"):
        raise ValueError(f"model: config.hidden_act expected 'silu' (SwiGLU experts), got {act!r}")
    routing = _hf_routing(model_type, name, block)
    w_gate, w_up, w_down = _expert_tensors(name, block.experts)
    num_experts, inter, hidden = w_gate.shape
    if num_experts != routing["num_experts"]:
        raise ValueError(f"{name}: router has {routing['num_experts']} experts, experts hold {num_experts}")
    state = {"router.gate.weight": block.gate.weight, "experts.w_gate": w_gate, "experts.w_up": w_up,
             "experts.w_down": w_down}
    shared_attr = next((a for a in ("shared_expert", "shared_experts") if getattr(block, a, None) is not None), None)
    shared_gate = getattr(block, "shared_expert_gate", None)
    shared_inter = 0
    if shared_attr is not None:
        lin = _linear_weights(f"{name}.{shared_attr}", getattr(block, shared_attr))
        shared_inter = lin["gate_proj"].shape[0]
        if shared_inter:
            state.update({f"shared.{k}.weight": v for k, v in lin.items()})
    if shared_gate is not None and shared_inter:
        if getattr(shared_gate, "bias", None) is not None:
            raise ValueError(f"{name}.shared_expert_gate: expected a bias-free Linear(H, 1), got a bias")
        state["shared_expert_gate.weight"] = shared_gate.weight
    ref = block.gate.weight
    with torch.device("meta"):
        new = MoEBlock(
            hidden, inter, num_experts, routing["top_k"], router_style=routing["style"], norm_topk=routing["norm_topk"],
            shared_intermediate=shared_inter, shared_gate=shared_gate is not None and shared_inter > 0,
            backend="grouped",
            **{k: v for k, v in routing.items() if k in ("routed_scaling_factor", "n_group", "topk_group")},
        )
    new = new.to_empty(device=ref.device).to(ref.dtype)
    own = dict(new.named_parameters())
    if set(own) != set(state) or list(new.buffers()):
        raise RuntimeError(f"{name}: MoEBlock parameters {sorted(own)} do not match the copied {sorted(state)}")
    with torch.no_grad():
        for key, t in state.items():
            if own[key].shape != t.shape:
                raise ValueError(f"{name}: {key} expected shape {tuple(own[key].shape)}, got {tuple(t.shape)}")
            own[key].copy_(t)
    new.train(block.training)
    return new


def _calibration_inputs(
    model: nn.Module, layers: list[tuple[str, nn.Module]], acts: object
) -> dict[str, torch.Tensor] | None:
    """Per layer name, the ``[tokens, H]`` inputs for Wanda (from a dict, or by running token ids)."""
    if acts is None:
        return None
    names = [n for n, _ in layers]
    if isinstance(acts, dict):
        missing = [n for n in names if n not in acts]
        if missing:
            raise ValueError(f"acts: expected a [tokens, H] tensor for every MoE layer, missing {missing[0]!r}")
        return {n: acts[n] for n in names}
    if not isinstance(acts, torch.Tensor):
        raise TypeError(
            f"acts: expected int64 calibration token ids [batch, seq] or a dict {{layer name: [tokens, H]}}, "
            f"got {type(acts).__name__}"
        )
    if acts.dtype not in INT_DTYPES or acts.ndim not in (1, 2) or acts.numel() == 0:
        raise ValueError(
            f"acts: expected non-empty integer token ids [batch, seq] (or a dict of per-layer [tokens, H] inputs), "
            f"got {acts.dtype} of shape {tuple(acts.shape)}"
        )
    captured: dict[str, torch.Tensor] = {}
    hooks = []
    for n, m in layers:
        def hook(module: nn.Module, args: tuple, n: str = n) -> None:
            x = args[0]
            captured[n] = x.detach().reshape(-1, x.shape[-1])
        hooks.append(m.register_forward_pre_hook(hook))
    try:
        ids = acts.long().reshape(1, -1) if acts.ndim == 1 else acts.long()
        with torch.no_grad():
            model(input_ids=ids.to(next(model.parameters()).device))
    finally:
        for h in hooks:
            h.remove()
    return captured


def swap_moe_blocks(
    model: nn.Module,
    backend: str = "reference",
    pattern: str | None = None,
    method: str = "magnitude",
    acts: torch.Tensor | dict[str, torch.Tensor] | None = None,
    *,
    joint: bool = True,
    **pattern_kwargs: Any,
) -> nn.Module:
    """Replace every sparse-MoE block of a Hugging Face model by a :class:`MoEBlock` with the same weights.

    Per block: ``router.gate.weight ← gate.weight``; ``w_gate, w_up ← gate_up_proj[:, :I], gate_up_proj[:, I:]``;
    ``w_down ← down_proj``; the shared expert (and Qwen2-MoE's sigmoid ``shared_expert_gate``) copied as is;
    router style, ``norm_topk``, ``routed_scaling_factor`` and group-limited top-k read from the HF router.
    With ``pattern``, every routed expert's gate/up/down is then pruned and compressed
    (:meth:`MoEBlock.sparsify`: ``W ← W ⊙ mask`` per expert and projection); the shared expert and the
    router stay dense. Blocks already swapped are re-used (pruned again if ``pattern``, backend set).

    Parameters
    ----------
    model : torch.nn.Module
        A model of :data:`SUPPORTED_MODEL_TYPES` (e.g. from :func:`load_hf_moe`); modified in place.
    backend : str
        ``"reference"`` (default: ``"grouped"`` on unpruned weights), ``"dense"``, ``"grouped"`` or
        ``"samoyeds"`` (compressed weights × selected tokens; needs ``pattern``).
    pattern : str, optional
        Sparsity pattern of the experts (``"samoyeds"``, ``"2:4"``, ``"venom"``, …, see
        :func:`samoyeds_lab.prune.parse_pattern`); ``None`` keeps the weights as they are.
    method : str
        ``"magnitude"`` (default), ``"wanda"`` or ``"obs"`` (second-order; both need ``acts``).
    acts : torch.Tensor or dict, optional
        Wanda calibration: integer token ids ``[batch, seq]`` (the model is run once, before swapping, and
        each MoE block's inputs are recorded, so every layer is calibrated on the unpruned model's
        activations) or ``{layer name: [tokens, H] inputs}``. Each block routes them with its own router
        and scores expert ``e`` on the tokens routed to it (see :meth:`MoEBlock.sparsify`).
    joint : bool
        Keyword only. Gate and up of every expert share one Samoyeds row selection (default ``True``; see
        :meth:`MoEBlock.sparsify`); ``False`` prunes them independently. Down keeps its own.
    **pattern_kwargs
        The pattern's keywords, e.g. ``vector=32`` for ``"samoyeds"`` on small hidden sizes. A Samoyeds row
        holds ``K / V`` windows (``hidden / vector`` for gate/up, ``moe_intermediate / vector`` for down);
        Mixtral's ``K = 4096`` at ``vector=128`` has 32.

    Returns
    -------
    torch.nn.Module
        ``model`` itself. With unpruned weights its logits match the original within 1e-3 (fp32).

    Raises
    ------
    TypeError, ValueError
        Unsupported model, bad backend/pattern/method/acts combination (``"reference"`` with a pattern,
        ``"samoyeds"`` without one, ``"wanda"``/``"obs"`` without ``acts``), non-SwiGLU experts, biased shared
        expert, a model with no sparse-MoE block, or a pattern the expert shapes do not fit.
    """
    model_type = _model_type(model)
    joint = check_bool("joint", joint)
    if not isinstance(backend, str) or backend not in SWAP_BACKENDS:
        raise ValueError(f"backend: expected one of {', '.join(map(repr, SWAP_BACKENDS))}, got {backend!r}")
    if pattern is None:
        if backend == "samoyeds":
            raise ValueError("pattern: backend='samoyeds' runs on compressed experts, expected a pattern such as "
                             "'samoyeds' or '2:4', got None")
        if pattern_kwargs or acts is not None or method != "magnitude" or not joint:
            given = ", ".join(sorted(pattern_kwargs)) or ("acts" if acts is not None else
                                                          f"method={method!r}" if method != "magnitude" else
                                                          "joint=False")
            raise TypeError(f"pattern: {given} given without a pattern, expected pattern='samoyeds', '2:4', …")
    else:
        if backend == "reference":
            raise ValueError(
                f"backend: 'reference' runs the unpruned weights, got pattern={pattern!r}; use backend='grouped', "
                f"'dense' or 'samoyeds' for pruned experts"
            )
        parse_pattern(pattern, **pattern_kwargs)
        if not isinstance(method, str) or method not in METHODS:
            raise ValueError(f"method: expected one of {', '.join(map(repr, METHODS))}, got {method!r}")
        if method != "magnitude" and acts is None:
            raise ValueError(
                f"acts: method={method!r} expects calibration token ids [batch, seq] or per-layer inputs, got None"
            )
    layers = hf_moe_layers(model)
    if not layers:
        raise ValueError(f"model: expected at least one sparse-MoE block in the {model_type} model, found none")
    calib = _calibration_inputs(model, layers, acts) if pattern is not None else None
    run_on = "grouped" if backend == "reference" else backend
    if backend == "reference":
        pruned = [n for n, b in layers if isinstance(b, MoEBlock) and b.experts.pattern is not None]
        if pruned:
            raise ValueError(
                f"backend: 'reference' runs unpruned experts, but {pruned[0]} was sparsified (the pruned values "
                f"replaced its weights); load the model again, or use backend='grouped'"
            )
    for name, block in layers:
        new = block if isinstance(block, MoEBlock) else _moe_block_from_hf(model, model_type, name, block)
        if pattern is not None:
            new.sparsify(pattern, method, None if calib is None else calib[name], joint=joint, **pattern_kwargs)
        new.backend = run_on
        if new is not block:
            model.set_submodule(name, new)
    return model


__all__ = [
    "SUPPORTED_MODEL_TYPES", "SWAP_BACKENDS", "HFRouterSpec", "load_hf_moe", "hf_moe_layers", "hf_router_spec",
    "swap_moe_blocks",
]
