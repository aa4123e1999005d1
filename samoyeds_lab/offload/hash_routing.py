r"""SiDA as the paper runs it: the offline-trained predictor *replaces* the routers (hash routing).

Lab 06's default ``"sida"`` policy only *prefetches* the predicted experts while the router still runs and
decides, so a wrong prediction is a miss (a demand load). SiDA-MoE (arXiv:2310.18859) serves differently:
the predictor's top-k (its "hash table", built ahead of inference) *is* the routing — the predicted experts
are the ones computed and the routers are not run. Nothing can miss; the price is fidelity: tokens go to
experts the router would not have picked.

:func:`hash_routing` switches a :class:`~samoyeds_lab.moe.TinyMoEForCausalLM` into that mode inside a
``with`` block, without touching the model code: a forward pre-hook on the model runs the predictor on
the model's ``input_ids`` (``[L, B, S, E]`` predicted router logits), and each MoE block's
``router.forward`` is replaced, on that router instance only, by one that returns

.. math::

    \mathrm{ids}_t = \operatorname{topk}_k \hat z_{l,t}, \qquad
    p_t = \operatorname{softmax}(\hat z_{l,t}), \qquad
    w_{t,j} = p_{t,\mathrm{ids}_{t,j}} \Big/ \sum_{i} p_{t,\mathrm{ids}_{t,i}}

(``weights="predictor"``: the router's own style rule applied to the predicted logits :math:`\hat z`) or,
with ``weights="router"``, the predicted ids mixed with the *router's* probabilities at those ids (an
ablation: the router's gate runs, but only to weigh). Leaving the block restores every router exactly.

:func:`hash_routing_eval` measures the fidelity cost (held-out perplexity, router vs hash routing) and
:func:`hash_routing_moves` the link traffic of the same routing under demand loading, SiDA-as-prefetch
and SiDA-as-routing.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from samoyeds_lab._checks import check_int

from .predictor import SiDAPredictor

__all__ = ["WEIGHT_MODES", "HashRoutingState", "HashRoutingEval", "hash_routing", "hash_routing_eval",
           "hash_routing_moves"]

#: How :func:`hash_routing` mixes the predicted experts.
WEIGHT_MODES = ("predictor", "router")


def _check_pair(model: object, predictor: object) -> list:
    blocks = getattr(model, "moe_blocks", None)
    if not isinstance(model, nn.Module) or not callable(blocks):
        raise TypeError(f"model: expected a TinyMoEForCausalLM (an nn.Module with moe_blocks()), "
                        f"got {type(model).__name__}")
    if not isinstance(predictor, SiDAPredictor):
        raise TypeError(f"predictor: expected a SiDAPredictor, got {type(predictor).__name__}")
    bl = [b for _, b in model.moe_blocks()]
    cfg = predictor.config
    if len(bl) != cfg.num_layers or any(b.num_experts != cfg.num_experts for b in bl):
        raise ValueError(f"predictor: expected one head per MoE layer ({len(bl)} layers × "
                         f"{bl[0].num_experts if bl else 0} experts), got {cfg.num_layers} × {cfg.num_experts}")
    return bl


@dataclass
class HashRoutingState:
    """What :func:`hash_routing` yields: ``forwards`` (model forwards hash-routed so far) and
    ``last_topk_ids`` (int64 ``[L, B·S, k]`` experts computed at the last forward, rows as the blocks' flat
    tokens)."""

    forwards: int = 0
    last_topk_ids: torch.Tensor | None = None
    _logits: torch.Tensor | None = field(default=None, repr=False)
    _ids: list = field(default_factory=list, repr=False)


@contextmanager
def hash_routing(model, predictor: SiDAPredictor, *, weights: str = "predictor"):
    """Inside the block, every forward of ``model`` routes by ``predictor`` (SiDA's serving mode).

    Parameters
    ----------
    model : TinyMoEForCausalLM
        Its MoE blocks' routers are overridden (per instance) and restored on exit, even after an error.
    predictor : SiDAPredictor
        One head per MoE layer, same ``num_experts``.
    weights : {"predictor", "router"}
        Mixing weights from the predicted logits (the router is not run) or from the router's gate at the
        predicted ids.

    Yields
    ------
    HashRoutingState

    Examples
    --------
    >>> with hash_routing(model, predictor) as st:   # doctest: +SKIP
    ...     logits = model(input_ids)                # routers not run; st.last_topk_ids = what was computed
    """
    blocks = _check_pair(model, predictor)
    if not isinstance(weights, str) or weights not in WEIGHT_MODES:
        raise ValueError(f"weights: expected one of {WEIGHT_MODES}, got {weights!r}")
    from ..moe.router import RouterOutput, route

    state = HashRoutingState()

    def pre_hook(_module, args, kwargs):
        ids = args[0] if args else kwargs.get("input_ids")
        was = predictor.training
        predictor.eval()
        try:
            with torch.no_grad():
                state._logits = predictor(ids)
        finally:
            predictor.train(was)
        state._ids = [None] * len(blocks)

    def make_forward(layer: int, router):
        def forward(x: torch.Tensor) -> RouterOutput:
            if state._logits is None:
                raise RuntimeError("hash_routing: a MoE block ran outside a model forward; call model(input_ids)")
            z = state._logits[layer].reshape(-1, state._logits.shape[-1]).to(x.device)
            if z.shape[0] != x.shape[0]:
                raise RuntimeError(f"hash_routing: layer {layer} got {x.shape[0]} tokens, the predictor "
                                   f"predicted {z.shape[0]}")
            ro = route(z, router.top_k, style=router.style, norm_topk=router.norm_topk,
                       routed_scaling_factor=router.routed_scaling_factor, n_group=router.n_group,
                       topk_group=router.topk_group)
            if weights == "router":
                g = router.gate(x.to(router.gate.weight.dtype)).float()
                w = torch.softmax(g, -1).gather(1, ro.topk_ids)
                if router.norm_topk:
                    w = w / w.sum(-1, keepdim=True).clamp_min(1e-20)
                ro = RouterOutput(g, ro.topk_ids, w * router.routed_scaling_factor)
            state._ids[layer] = ro.topk_ids
            if layer == len(blocks) - 1:
                state.forwards += 1
                state.last_topk_ids = torch.stack(state._ids)
            return ro

        return forward

    saved = []
    handle = model.register_forward_pre_hook(pre_hook, with_kwargs=True)
    try:
        for i, b in enumerate(blocks):
            saved.append((b.router, b.router.__dict__.get("forward")))
            b.router.forward = make_forward(i, b.router)
        yield state
    finally:
        handle.remove()
        for router, old in saved:
            if old is None:
                del router.forward
            else:
                router.forward = old
        state._logits = None


@dataclass(frozen=True)
class HashRoutingEval:
    """Result of :func:`hash_routing_eval` (one routing trace's windows).

    Attributes
    ----------
    tokens : int
        Next-byte predictions scored (``windows · (S − 1)``).
    ppl_router, ppl_hash : float
        Held-out perplexity with the routers, and with the predictor's routing (hash routing).
    hit_rate : numpy.ndarray
        float64 ``[layers]``: share of the router's top-k the predictor predicted (the same positions).
    router_topk, hash_topk : numpy.ndarray
        int64 ``[layers, tokens, k]``: experts the router picked / the predictor made the model compute.
    """

    tokens: int
    ppl_router: float
    ppl_hash: float
    hit_rate: np.ndarray
    router_topk: np.ndarray
    hash_topk: np.ndarray

    @property
    def ppl_ratio(self) -> float:
        """``ppl_hash / ppl_router`` (the fidelity cost; 1 = none)."""
        return self.ppl_hash / self.ppl_router


@torch.no_grad()
def hash_routing_eval(model, predictor: SiDAPredictor, windows, *, batch: int = 16,
                      weights: str = "predictor") -> HashRoutingEval:
    r"""Held-out perplexity with the routers and with hash routing, on the same windows.

    Each window ``w`` (int ``[S]``) is scored as ``model(w[:-1])`` against ``w[1:]``;
    ``ppl = exp(Σ NLL / tokens)``.

    Parameters
    ----------
    model, predictor
        As for :func:`hash_routing`.
    windows : torch.Tensor
        int ``[N, S]`` byte windows, ``N >= 1``, ``2 <= S <= max_seq + 1`` (e.g. a routing trace's
        ``token_ids.reshape(-1, 256)``).
    batch : int
        Windows per forward.
    weights : {"predictor", "router"}
    """
    blocks = _check_pair(model, predictor)
    if not isinstance(windows, torch.Tensor) or windows.ndim != 2 or windows.dtype.is_floating_point \
            or windows.dtype == torch.bool:
        raise TypeError(f"windows: expected an int tensor [N, S], got "
                        f"{type(windows).__name__}{tuple(windows.shape) if isinstance(windows, torch.Tensor) else ''}")
    if windows.shape[0] < 1 or windows.shape[1] < 2:
        raise ValueError(f"windows: expected shape [N >= 1, S >= 2], got {tuple(windows.shape)}")
    batch = check_int("batch", batch, lo=1)
    if not isinstance(weights, str) or weights not in WEIGHT_MODES:
        raise ValueError(f"weights: expected one of {WEIGHT_MODES}, got {weights!r}")
    was = model.training
    model.eval()
    nll = {"router": 0.0, "hash": 0.0}
    ids = {"router": [], "hash": []}
    n = 0
    try:
        for i in range(0, windows.shape[0], batch):
            w = windows[i: i + batch].long()
            x, y = w[:, :-1], w[:, 1:].reshape(-1)
            out = model(x)
            nll["router"] += float(F.cross_entropy(out.reshape(-1, out.shape[-1]).float(), y, reduction="sum"))
            ids["router"].append(torch.stack([b.last_router_output.topk_ids for b in blocks]))
            with hash_routing(model, predictor, weights=weights) as st:
                out = model(x)
            nll["hash"] += float(F.cross_entropy(out.reshape(-1, out.shape[-1]).float(), y, reduction="sum"))
            ids["hash"].append(st.last_topk_ids)
            n += y.numel()
    finally:
        model.train(was)
    r = torch.cat(ids["router"], 1).long()
    h = torch.cat(ids["hash"], 1).long()
    hit = (r.unsqueeze(-1) == h.unsqueeze(-2)).any(-1).double().mean((-1, -2)).numpy()
    return HashRoutingEval(tokens=n, ppl_router=math.exp(nll["router"] / n), ppl_hash=math.exp(nll["hash"] / n),
                           hit_rate=hit, router_topk=r.numpy(), hash_topk=h.numpy())


def hash_routing_moves(router_topk, hash_topk, num_experts: int, capacity: int, *, batch_tokens: int = 1,
                       expert_bytes=None) -> dict:
    """Expert loads over the link: demand loading vs SiDA as prefetch vs SiDA as routing, one budget.

    * ``"demand"``: an LRU cache that loads what the router picks when it is asked (``router_topk``).
    * ``"prefetch"``: the router still decides (``router_topk``); the predicted experts (``hash_topk``)
      are prefetched before each step (Lab 06's default ``"sida"`` policy): a wrong prediction costs a
      useless prefetch *and* a demand load.
    * ``"hash"``: SiDA's serving mode — the computed experts *are* the predicted ones (``hash_topk``
      replayed as the trace, prefetched with itself): no demand load can happen.

    Parameters
    ----------
    router_topk, hash_topk : array_like of int, shape (layers, tokens, k)
        E.g. :attr:`HashRoutingEval.router_topk` / ``.hash_topk``.
    num_experts, capacity : int
        Experts per layer; GPU budget in experts over all layers (one global cache).
    batch_tokens : int
    expert_bytes : int, optional
        Bytes per expert (default: count loads).

    Returns
    -------
    dict
        ``name -> OffloadStats`` (``.demand_loads``, ``.prefetches``, ``.bytes_demand + .bytes_prefetched``).
    """
    from .simulate import simulate_offload

    r = np.asarray(router_topk)
    h = np.asarray(hash_topk)
    if r.ndim != 3 or h.shape != r.shape:
        raise ValueError(f"hash_topk: expected the shape of router_topk {r.shape} (layers, tokens, k), got {h.shape}")
    capacity = check_int("capacity", capacity, lo=0)
    kw = dict(capacity=capacity, batch_tokens=batch_tokens, expert_bytes=expert_bytes)
    return {
        "demand": simulate_offload(r, num_experts, policy="lru", **kw),
        "prefetch": simulate_offload(r, num_experts, policy="sida", predicted=h, **kw),
        "hash": simulate_offload(h, num_experts, policy="sida", predicted=h, **kw),
    }
