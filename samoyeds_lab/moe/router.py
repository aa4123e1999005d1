"""Top-k routers: which ``k`` of ``E`` experts every token visits, and with what weight.

All three styles start from the same gate logits and the same softmax; they differ in what happens to
the ``k`` kept probabilities::

    z = x Wᵍᵀ                       [T, E]   (gate = nn.Linear(H, E, bias=False), computed in x's dtype)
    p = softmax(z)                   [T, E]   (fp32)
    ids, w = topk(p, k)              [T, k]   (descending: column 0 is the first choice)

    "mixtral"  : w ← w / Σⱼ wⱼ                      (norm_topk defaults to True)
    "qwen"     : w unchanged                         (norm_topk defaults to False; Qwen2-MoE / OLMoE;
                                                      Qwen3-MoE configs set norm_topk_prob=True)
    "deepseek" : w ← routed_scaling_factor · w       (norm_topk defaults to False; DeepSeek-V2, with
                                                      optional group-limited top-k)

Renormalising over the kept experts is order-preserving, so every style picks the same experts for the
same logits; only the mixing weights differ.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .._checks import FLOAT_DTYPES, INT_DTYPES, check_float, check_int, check_tensor

#: Router styles and the default of ``norm_topk`` for each.
ROUTER_STYLES: dict[str, bool] = {"mixtral": True, "qwen": False, "deepseek": False}


@dataclass(frozen=True, eq=False)
class RouterOutput:
    """What a router decided for ``T`` tokens.

    Attributes
    ----------
    logits : torch.Tensor
        fp32 ``[T, E]`` gate logits ``z = x Wᵍᵀ`` (still attached to the autograd graph, so an auxiliary
        loss such as :func:`load_balancing_loss` can train the gate).
    topk_ids : torch.Tensor
        int64 ``[T, k]`` chosen experts, first choice in column 0 (descending probability).
    topk_weights : torch.Tensor
        fp32 ``[T, k]`` mixing weights of the chosen experts (after the style's renormalisation/scaling).
    """

    logits: torch.Tensor
    topk_ids: torch.Tensor
    topk_weights: torch.Tensor

    def __post_init__(self) -> None:
        # shapes and kinds only (no data-dependent checks: this runs at every forward)
        check_tensor("logits", self.logits, ndim=2, dtypes=FLOAT_DTYPES)
        check_tensor("topk_ids", self.topk_ids, ndim=2, dtypes=INT_DTYPES)
        check_tensor("topk_weights", self.topk_weights, ndim=2, dtypes=FLOAT_DTYPES)
        T = self.logits.shape[0]
        if self.topk_ids.shape[0] != T or self.topk_weights.shape != self.topk_ids.shape:
            raise ValueError(
                f"topk_ids, topk_weights: expected shape [{T}, k] like logits {tuple(self.logits.shape)}, got "
                f"{tuple(self.topk_ids.shape)} and {tuple(self.topk_weights.shape)}"
            )
        if self.topk_ids.shape[1] > self.logits.shape[1]:
            raise ValueError(
                f"topk_ids: expected k <= E={self.logits.shape[1]} choices per token, got {self.topk_ids.shape[1]}"
            )

    @property
    def num_tokens(self) -> int:
        return int(self.topk_ids.shape[0])

    @property
    def top_k(self) -> int:
        return int(self.topk_ids.shape[1])

    @property
    def num_experts(self) -> int:
        return int(self.logits.shape[1])

    def probs(self) -> torch.Tensor:
        """fp32 ``[T, E]`` softmax of the logits, ``p = softmax(z)``."""
        return torch.softmax(self.logits.float(), dim=-1)

    def detach(self) -> "RouterOutput":
        """The same decision with every tensor detached from autograd."""
        return RouterOutput(self.logits.detach(), self.topk_ids.detach(), self.topk_weights.detach())

    def __repr__(self) -> str:
        return f"RouterOutput(tokens={self.num_tokens}, experts={self.num_experts}, k={self.top_k})"


def _check_style(style: object) -> str:
    if not isinstance(style, str):
        raise TypeError(f"style: expected one of {', '.join(map(repr, ROUTER_STYLES))}, got {type(style).__name__}")
    key = style.strip().lower()
    if key not in ROUTER_STYLES:
        raise ValueError(f"style: expected one of {', '.join(map(repr, ROUTER_STYLES))}, got {style!r}")
    return key


def check_router_options(
    style: object,
    norm_topk: object,
    routed_scaling_factor: object,
    n_group: object,
    topk_group: object,
    *,
    num_experts: int,
    top_k: int,
) -> tuple[str, bool, float, int | None, int | None]:
    """One rule for the routing options of :func:`route`, :class:`Router` and ``HFRouterSpec`` (internal).

    Returns ``(style, norm_topk, routed_scaling_factor, n_group, topk_group)`` with ``norm_topk`` resolved
    from the style's default. ``routed_scaling_factor`` must be finite and > 0; it and ``n_group`` /
    ``topk_group`` are DeepSeek-V2 options, refused (not ignored) with another style.
    """
    style = _check_style(style)
    if norm_topk is not None and not isinstance(norm_topk, bool):
        raise TypeError(f"norm_topk: expected a bool or None, got {type(norm_topk).__name__}")
    norm = ROUTER_STYLES[style] if norm_topk is None else norm_topk
    scale = check_float("routed_scaling_factor", routed_scaling_factor, lo=0.0, lo_open=True)
    if style != "deepseek":
        for name, v, default in (("routed_scaling_factor", scale, 1.0), ("n_group", n_group, None),
                                 ("topk_group", topk_group, None)):
            if v != default:
                raise ValueError(
                    f"{name}: expected {default} unless style='deepseek' (a DeepSeek-V2 option), got {v!r} "
                    f"with style {style!r}"
                )
    if n_group is not None or topk_group is not None:
        if n_group is None or topk_group is None:
            raise ValueError(
                f"n_group, topk_group: give both or neither, got n_group={n_group}, topk_group={topk_group}"
            )
        n_group = check_int("n_group", n_group, lo=1, hi=num_experts)
        topk_group = check_int("topk_group", topk_group, lo=1, hi=n_group)
        if num_experts % n_group:
            raise ValueError(f"n_group: expected a divisor of num_experts={num_experts}, got {n_group}")
        if (num_experts // n_group) * topk_group < top_k:
            raise ValueError(
                f"top_k: expected at most topk_group·E/n_group = {(num_experts // n_group) * topk_group} "
                f"eligible experts, got {top_k}"
            )
    return style, norm, scale, n_group, topk_group


def route(
    logits: torch.Tensor,
    top_k: int,
    *,
    style: str = "mixtral",
    norm_topk: bool | None = None,
    routed_scaling_factor: float = 1.0,
    n_group: int | None = None,
    topk_group: int | None = None,
) -> RouterOutput:
    """Turn gate logits into a :class:`RouterOutput` (the math of :class:`Router` without the gate).

    ``p = softmax(z)`` in fp32; ``ids, w = topk(p, k)`` (descending); then ``w ← w / Σⱼ wⱼ`` if
    ``norm_topk`` (default per ``style``: see the module docstring), and ``w ← routed_scaling_factor · w``.
    With ``n_group``/``topk_group`` (DeepSeek-V2's group-limited greedy), experts are split into
    ``n_group`` equal groups, only the ``topk_group`` groups with the largest single probability stay
    eligible, and the top-k is taken among their experts.

    Parameters
    ----------
    logits : torch.Tensor
        ``[T, E]`` float gate logits.
    top_k : int
        ``1 <= top_k <= E``.
    style, norm_topk, routed_scaling_factor, n_group, topk_group
        As for :class:`Router`.
    """
    check_tensor("logits", logits, ndim=2, dtypes=FLOAT_DTYPES)
    if logits.numel() and logits.device.type != "meta" and not bool(torch.isfinite(logits).all()):
        bad = int((~torch.isfinite(logits)).sum())
        raise ValueError(
            f"logits: expected finite gate logits, got {bad} NaN/inf of {logits.numel()} (NaN or inf logits would "
            f"pick arbitrary experts with NaN weights; an fp16 gate that overflows is recomputed in fp32 by Router)"
        )
    num_experts = logits.shape[1]
    top_k = check_int("top_k", top_k, lo=1, hi=num_experts)
    style, norm_topk, routed_scaling_factor, n_group, topk_group = check_router_options(
        style, norm_topk, routed_scaling_factor, n_group, topk_group, num_experts=num_experts, top_k=top_k)
    z = logits.float()
    probs = torch.softmax(z, dim=-1)
    scores = probs
    if n_group is not None:
        per = num_experts // n_group
        group_best = probs.view(-1, n_group, per).amax(-1)
        keep = torch.zeros_like(group_best, dtype=torch.bool)
        keep.scatter_(1, torch.topk(group_best, topk_group, dim=-1).indices, True)
        scores = probs.masked_fill(~keep.repeat_interleave(per, dim=1), 0.0)
    weights, ids = torch.topk(scores, top_k, dim=-1, sorted=True)
    if norm_topk:
        weights = weights / weights.sum(dim=-1, keepdim=True).clamp_min(1e-20)
    if routed_scaling_factor != 1.0:
        weights = weights * routed_scaling_factor
    return RouterOutput(z, ids, weights)


class Router(nn.Module):
    """A linear top-k router ``x → (logits, topk_ids, topk_weights)``.

    ``z = x Wᵍᵀ`` with ``gate = nn.Linear(hidden, num_experts, bias=False)``; then :func:`route`:
    ``p = softmax(z)``, ``ids, w = topk(p, k)``, and per ``style``

    - ``"mixtral"``: ``w ← w / Σⱼ wⱼ`` (``norm_topk`` default ``True``);
    - ``"qwen"``: ``w`` as is (``norm_topk`` default ``False``; Qwen2-MoE, OLMoE; pass ``norm_topk=True``
      for Qwen3-MoE);
    - ``"deepseek"``: ``w ← routed_scaling_factor · w`` (``norm_topk`` default ``False``), optionally with
      group-limited top-k (``n_group``, ``topk_group``).

    Parameters
    ----------
    hidden, num_experts, top_k : int
        Sizes; ``1 <= top_k <= num_experts``.
    style : str
        ``"mixtral"`` (default), ``"qwen"`` or ``"deepseek"``.
    norm_topk : bool, optional
        Renormalise the kept weights to sum to one (default per style).
    routed_scaling_factor : float
        Multiplies the kept weights (DeepSeek; default 1.0, only accepted with ``style="deepseek"``).
    n_group, topk_group : int, optional
        DeepSeek-V2 group-limited greedy top-k (``style="deepseek"`` only).
    """

    def __init__(
        self,
        hidden: int,
        num_experts: int,
        top_k: int,
        *,
        style: str = "mixtral",
        norm_topk: bool | None = None,
        routed_scaling_factor: float = 1.0,
        n_group: int | None = None,
        topk_group: int | None = None,
    ) -> None:
        super().__init__()
        self.hidden = check_int("hidden", hidden, lo=1)
        self.num_experts = check_int("num_experts", num_experts, lo=1)
        self.top_k = check_int("top_k", top_k, lo=1, hi=self.num_experts)
        (self.style, self.norm_topk, self.routed_scaling_factor, self.n_group,
         self.topk_group) = check_router_options(style, norm_topk, routed_scaling_factor, n_group, topk_group,
                                                 num_experts=self.num_experts, top_k=self.top_k)
        self.gate = nn.Linear(self.hidden, self.num_experts, bias=False)

    def forward(self, x: torch.Tensor) -> RouterOutput:
        """Route ``x [T, hidden]`` (fp16/bf16/fp32, the gate's dtype) → :class:`RouterOutput`."""
        check_tensor("x", x, ndim=2, dtypes=FLOAT_DTYPES)
        if x.shape[1] != self.hidden:
            raise ValueError(
                f"x: expected shape [tokens, {self.hidden}] (hidden={self.hidden}), got {tuple(x.shape)}"
            )
        logits = F.linear(x, self.gate.weight.to(x.dtype))
        if x.dtype != torch.float32 and x.device.type != "meta" and not bool(torch.isfinite(logits).all()) and bool(torch.isfinite(x).all()):
            # NOTE: an fp16 gate can overflow to inf on finite inputs; the fp32 gate picks the right experts
            logits = F.linear(x.float(), self.gate.weight.float())
        return route(
            logits, self.top_k, style=self.style, norm_topk=self.norm_topk,
            routed_scaling_factor=self.routed_scaling_factor, n_group=self.n_group, topk_group=self.topk_group,
        )

    def extra_repr(self) -> str:
        s = (f"hidden={self.hidden}, num_experts={self.num_experts}, top_k={self.top_k}, style={self.style!r}, "
             f"norm_topk={self.norm_topk}")
        if self.style == "deepseek":
            s += f", routed_scaling_factor={self.routed_scaling_factor}"
            if self.n_group is not None:
                s += f", n_group={self.n_group}, topk_group={self.topk_group}"
        return s
