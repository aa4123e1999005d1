"""Record a :class:`~samoyeds_lab.routing.RoutingTrace` from one forward pass of an MoE model.

:func:`record_routing` runs ``model(input_ids)`` once with forward hooks on the routers and collects
what each router decided. It finds the routers by walking ``model.named_modules()`` (registration
order, which is layer order in every supported model). For a Hugging Face model whose
``config.model_type`` is one of :data:`samoyeds_lab.moe.hf.SUPPORTED_MODEL_TYPES`, the routers are the
ones :func:`samoyeds_lab.moe.hf.hf_router_spec` names (before or after ``swap_moe_blocks``); otherwise
they are found by type and class name:

* samoyeds_lab :class:`~samoyeds_lab.moe.MoEBlock` (the tiny model, or HF blocks swapped by
  ``swap_moe_blocks``): a hook on ``block.router`` reads its :class:`~samoyeds_lab.moe.RouterOutput`
  (``topk_ids``, ``topk_weights``, ``logits``) — exactly the values the block then uses.
* Hugging Face transformers >= 5 routers (``MixtralTopKRouter``, ``Qwen2MoeTopKRouter``,
  ``Qwen3MoeTopKRouter``, ``OlmoeTopKRouter``, ``DeepseekV2TopkRouter``, … found by the class name
  ending in ``TopKRouter``, case-insensitive): their forward returns ``(router_logits, weights, ids)``,
  the exact weights and ids the experts then apply, so nothing is recomputed.
* Hugging Face transformers 4.x sparse-MoE blocks (class name containing ``SparseMoeBlock``) whose
  ``gate`` is an ``nn.Linear``: the hook sees the logits ``z`` and recomputes the block's routing,
  ``p = softmax(z)`` (fp32), ``w, ids = topk(p, block.top_k)``, ``w ← w / Σ w`` when the block's
  ``norm_topk_prob`` is true (Mixtral blocks, which always renormalise, have no such attribute).

Hooks only read, so the model's outputs are unchanged. The layer name is the MoE block's qualified
name (``"layers.0.mlp"``, ``"model.layers.3.mlp"``).
"""

from __future__ import annotations

import re
from typing import Any, Callable, Mapping

import torch
from torch import nn

from .._checks import FLOAT_DTYPES, INT_DTYPES, check_bool, check_tensor
from ..moe import MoEBlock, RouterOutput
from ..moe import hf as _hf
from .trace import RoutingTrace

_HF_ROUTER = re.compile(r"top_?k_?router$", re.IGNORECASE)

# A reader turns (hooked module, its output) into (logits [T, E], ids [T, k], weights [T, k]).
Reader = Callable[[nn.Module, Any], "tuple[torch.Tensor, torch.Tensor, torch.Tensor]"]


def _read_router_output(module: nn.Module, out: Any):
    if not isinstance(out, RouterOutput):
        raise TypeError(f"{type(module).__name__}: expected the router to return a RouterOutput, "
                        f"got {type(out).__name__}")
    return out.logits, out.topk_ids, out.topk_weights


def _read_hf_router(module: nn.Module, out: Any):
    if not (isinstance(out, (tuple, list)) and len(out) == 3 and all(isinstance(t, torch.Tensor) for t in out)):
        raise TypeError(f"{type(module).__name__}: expected (router_logits, weights, ids) from a transformers "
                        f"TopKRouter, got {type(out).__name__}")
    logits, weights, ids = out
    num_experts = logits.shape[-1]
    logits = logits.reshape(-1, num_experts)
    if weights.shape != ids.shape or weights.shape[0] != logits.shape[0]:
        raise ValueError(f"{type(module).__name__}: expected weights and ids of shape [tokens, k] with "
                         f"tokens={logits.shape[0]}, got {tuple(weights.shape)} and {tuple(ids.shape)}")
    return logits, ids, weights


def _linear_gate_reader(block: nn.Module) -> Reader:
    top_k = int(block.top_k)
    norm = bool(getattr(block, "norm_topk_prob", True))

    def read(module: nn.Module, out: Any):
        logits = out.reshape(-1, out.shape[-1])
        probs = torch.softmax(logits.float(), dim=-1)
        weights, ids = torch.topk(probs, top_k, dim=-1)
        if norm:
            weights = weights / weights.sum(dim=-1, keepdim=True)
        return logits, ids, weights

    return read


def routing_points(model: nn.Module) -> list[tuple[str, nn.Module, Reader]]:
    """``[(layer name, module to hook, reader), …]`` for every router of ``model``, in module order.

    See the module docstring for what is recognised. Raises ``ValueError`` when there is none.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model: expected a torch.nn.Module, got {type(model).__name__}")
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    if isinstance(model_type, str) and model_type in _hf.SUPPORTED_MODEL_TYPES:
        # The HF adapters know each supported architecture's blocks and routers (also after a swap).
        def hf_reader(spec: "_hf.HFRouterSpec") -> Reader:
            return lambda module, out: _read_router_output(module, spec.read(out))
        return [(spec.name, spec.gate, hf_reader(spec)) for spec in _hf.hf_router_spec(model)]
    points: list[tuple[str, nn.Module, Reader]] = []
    inside_block: set[int] = set()
    for name, module in model.named_modules():
        if id(module) in inside_block:
            continue
        if isinstance(module, MoEBlock):
            inside_block.update(id(m) for m in module.modules())
            points.append((name or type(module).__name__, module.router, _read_router_output))
        elif _HF_ROUTER.search(type(module).__name__):
            parent = name.rsplit(".", 1)[0] if "." in name else (name or type(module).__name__)
            points.append((parent, module, _read_hf_router))
        elif ("sparsemoeblock" in type(module).__name__.lower() and isinstance(getattr(module, "gate", None), nn.Linear)
              and isinstance(getattr(module, "top_k", None), int)):
            points.append((name or type(module).__name__, module.gate, _linear_gate_reader(module)))
    if not points:
        raise ValueError(f"model: expected an MoE model (samoyeds_lab MoEBlocks or Hugging Face sparse-MoE routers), "
                         f"found no router in {type(model).__name__}")
    return points


@torch.no_grad()
def record_routing(
    model: nn.Module,
    input_ids: torch.Tensor,
    *,
    logits_dtype: torch.dtype | None = torch.float32,
    meta: Mapping[str, Any] | None = None,
    return_output: bool = False,
):
    """Run ``model(input_ids)`` once and return the routing decisions of every MoE layer.

    Parameters
    ----------
    model : torch.nn.Module
        A :class:`~samoyeds_lab.moe.TinyMoEForCausalLM`, a Hugging Face MoE causal LM (as loaded by
        ``samoyeds_lab.moe.hf.load_hf_moe``, with or without swapped blocks), or any module containing
        routers recognised by :func:`routing_points`. Run in eval mode (no router jitter) under
        ``torch.no_grad``; its training flag is restored afterwards.
    input_ids : torch.Tensor
        Integer ``[S]`` or ``[B, S]`` token ids. Tokens are flattened row-major: trace token
        ``t = b·S + s`` — the order in which MoE blocks flatten ``[B, S, H]`` to ``[B·S, H]`` — and the
        trace's ``sequence_lengths`` is ``[S] * B`` so locality never pairs the end of one row with the
        start of the next.
    logits_dtype : torch.dtype or None
        Keep the router logits in ``torch.float32`` (default) or ``torch.float16``; ``None`` drops them.
    meta : mapping, optional
        JSON-serialisable entries merged over the defaults ``{"model": class name, "batch_shape": [B, S],
        "name_or_path": HF config's name, if any}``.
    return_output : bool
        Also return the model's output (``(trace, output)``), identical to an unhooked eval forward.

    Returns
    -------
    RoutingTrace or (RoutingTrace, output)

    Raises
    ------
    TypeError, ValueError
        Bad ``input_ids``/``logits_dtype``, no router found, a router called other than exactly once, or
        routers that disagree on the number of tokens or experts.
    """
    check_tensor("input_ids", input_ids, dtypes=INT_DTYPES)
    if input_ids.ndim == 1:
        input_ids = input_ids.unsqueeze(0)
    if input_ids.ndim != 2 or input_ids.numel() == 0:
        raise ValueError(f"input_ids: expected a non-empty [S] or [B, S] tensor, got shape {tuple(input_ids.shape)}")
    if logits_dtype is not None and logits_dtype not in (torch.float16, torch.float32):
        raise TypeError(f"logits_dtype: expected torch.float16, torch.float32 or None, got {logits_dtype}")
    if meta is not None and not isinstance(meta, Mapping):
        raise TypeError(f"meta: expected a dict, got {type(meta).__name__}")
    return_output = check_bool("return_output", return_output)
    points = routing_points(model)
    B, S = input_ids.shape

    records: dict[int, list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]] = {i: [] for i in range(len(points))}

    def make_hook(i: int, reader: Reader):
        def hook(module: nn.Module, args: Any, out: Any) -> None:
            logits, ids, weights = reader(module, out)
            records[i].append((logits.detach().float().cpu(), ids.detach().cpu(), weights.detach().float().cpu()))
        return hook

    was_training = model.training
    handles = [module.register_forward_hook(make_hook(i, reader)) for i, (_, module, reader) in enumerate(points)]
    try:
        model.eval()
        output = model(input_ids)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)

    names, all_ids, all_w, all_logits = [], [], [], []
    for i, (name, _, _) in enumerate(points):
        if len(records[i]) != 1:
            raise ValueError(f"model: expected the router of {name!r} to run exactly once per forward, "
                             f"it ran {len(records[i])} times")
        logits, ids, weights = records[i][0]
        check_tensor(f"{name} ids", ids, ndim=2, dtypes=INT_DTYPES)
        check_tensor(f"{name} weights", weights, ndim=2, dtypes=FLOAT_DTYPES)
        if ids.shape[0] != B * S or logits.shape[0] != B * S:
            raise ValueError(f"model: expected {B * S} routed tokens (B·S) in {name!r}, got {ids.shape[0]}")
        names.append(name)
        all_ids.append(ids)
        all_w.append(weights)
        all_logits.append(logits)
    experts = {int(lg.shape[-1]) for lg in all_logits}
    if len(experts) != 1:
        raise ValueError(f"model: expected every MoE layer to have the same number of experts, got {sorted(experts)}")
    info: dict[str, Any] = {"model": type(model).__name__, "batch_shape": [B, S]}
    name_or_path = getattr(getattr(model, "config", None), "_name_or_path", None)
    if isinstance(name_or_path, str) and name_or_path:
        info["name_or_path"] = name_or_path
    info.update(meta or {})
    trace = RoutingTrace.from_layers(
        all_ids, all_w, input_ids.reshape(-1), names, experts.pop(),
        logits=None if logits_dtype is None else [lg.to(logits_dtype) for lg in all_logits],
        sequence_lengths=torch.full((B,), S, dtype=torch.int64), meta=info,
    )
    return (trace, output) if return_output else trace
