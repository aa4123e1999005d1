"""The sparse MoE block: router → routed SwiGLU experts (pluggable backend) [+ shared expert].

For tokens ``x_t`` (any leading shape, flattened to ``[T, H]``)::

    ids, w = Router(x)                                        top-k experts and mixing weights
    y_t    = Σⱼ w_{t,j} · expert_{ids[t,j]}(x_t)              routed part (backend: dense/grouped/samoyeds)
           + g_t · shared(x_t)                                shared expert, if shared_intermediate > 0
    g_t    = sigmoid(x_t · w_sᵀ) if shared_gate else 1        (Qwen2-MoE gates its shared expert)

Backends (see :mod:`samoyeds_lab.moe.experts`): ``"dense"`` (Hugging Face loop), ``"grouped"`` (one sort,
segment matmuls; the CPU/training default of :class:`~samoyeds_lab.moe.TinyMoEForCausalLM`), and
``"samoyeds"`` (compressed weights × selected tokens; only after :meth:`MoEBlock.sparsify`).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .._checks import FLOAT_DTYPES, check_int, check_tensor
from .experts import SwiGLUExperts, SwiGLUMLP
from .router import Router, RouterOutput

#: Execution backends of :class:`MoEBlock`.
BACKENDS = ("dense", "grouped", "samoyeds")


def _check_backend(backend: object) -> str:
    if not isinstance(backend, str):
        raise TypeError(f"backend: expected one of {', '.join(map(repr, BACKENDS))}, got {type(backend).__name__}")
    if backend not in BACKENDS:
        raise ValueError(f"backend: expected one of {', '.join(map(repr, BACKENDS))}, got {backend!r}")
    return backend


class MoEBlock(nn.Module):
    """A sparse Mixture-of-Experts SwiGLU block with a selectable execution backend.

    ``y_t = Σⱼ w_{t,j} · E_{ids[t,j]}(x_t) + g_t · S(x_t)`` with ``(ids, w) = router(x_t)``,
    ``E_e(x) = W_down[e] (silu(W_gate[e] x) ⊙ W_up[e] x)``, ``S`` the optional shared SwiGLU MLP and
    ``g_t = sigmoid(shared_expert_gate(x_t))`` when ``shared_gate`` (else 1).

    Parameters
    ----------
    hidden, intermediate : int
        ``H`` and the per-expert ``I``.
    num_experts, top_k : int
        ``E`` and ``k`` (``1 <= k <= E``).
    router_style : str
        ``"mixtral"`` (default), ``"qwen"`` or ``"deepseek"`` (see :class:`Router`).
    norm_topk : bool, optional
        Renormalise the top-k weights (default per style).
    shared_intermediate : int
        Width of a shared (always-on) expert; 0 (default) = none.
    shared_gate : bool
        Gate the shared expert with ``sigmoid(Linear(H, 1))`` (Qwen2-MoE); needs ``shared_intermediate > 0``.
    backend : str
        ``"dense"`` (default), ``"grouped"`` or ``"samoyeds"`` (rejected until :meth:`sparsify`).
        Settable later: ``block.backend = "grouped"``.
    pad_to : int
        Kernel tile height the ``"samoyeds"`` backend pads every expert's token segment to (default 64).
    **router_kwargs
        ``routed_scaling_factor``, ``n_group``, ``topk_group`` for ``router_style="deepseek"``.

    Attributes
    ----------
    router : Router
    experts : SwiGLUExperts
    shared : SwiGLUMLP or None
    shared_expert_gate : nn.Linear(H, 1) or None
    last_router_output : RouterOutput or None
        The router's decision at the last forward (logits still attached to autograd); its rows follow
        ``x.reshape(-1, H)``, i.e. row-major over the leading dimensions (``b·S + s`` for ``[B, S, H]``).
    """

    def __init__(
        self,
        hidden: int,
        intermediate: int,
        num_experts: int,
        top_k: int,
        *,
        router_style: str = "mixtral",
        norm_topk: bool | None = None,
        shared_intermediate: int = 0,
        shared_gate: bool = False,
        backend: str = "dense",
        pad_to: int = 64,
        **router_kwargs: Any,
    ) -> None:
        super().__init__()
        self.hidden = check_int("hidden", hidden, lo=1)
        self.intermediate = check_int("intermediate", intermediate, lo=1)
        self.num_experts = check_int("num_experts", num_experts, lo=1)
        self.top_k = check_int("top_k", top_k, lo=1, hi=self.num_experts)
        self.shared_intermediate = check_int("shared_intermediate", shared_intermediate, lo=0)
        if not isinstance(shared_gate, bool):
            raise TypeError(f"shared_gate: expected a bool, got {type(shared_gate).__name__}")
        if shared_gate and self.shared_intermediate == 0:
            raise ValueError("shared_gate: True needs a shared expert, expected shared_intermediate > 0, got 0")
        self.pad_to = check_int("pad_to", pad_to, lo=1)
        self.router = Router(self.hidden, self.num_experts, self.top_k, style=router_style, norm_topk=norm_topk,
                             **router_kwargs)
        self.experts = SwiGLUExperts(self.num_experts, self.hidden, self.intermediate)
        self.shared = SwiGLUMLP(self.hidden, self.shared_intermediate) if self.shared_intermediate else None
        self.shared_expert_gate = nn.Linear(self.hidden, 1, bias=False) if shared_gate else None
        self.last_router_output: RouterOutput | None = None
        self._backend = "dense"
        self.backend = backend

    # ------------------------------------------------------------------ backend
    @property
    def backend(self) -> str:
        """The execution backend: ``"dense"``, ``"grouped"`` or ``"samoyeds"`` (after :meth:`sparsify`)."""
        return self._backend

    @backend.setter
    def backend(self, value: str) -> None:
        value = _check_backend(value)
        if value == "samoyeds" and self.experts.compressed is None:
            raise ValueError(
                "backend: 'samoyeds' needs compressed expert weights; call block.sparsify(pattern=...) first "
                "(e.g. 'samoyeds' or '2:4')"
            )
        self._backend = value

    @property
    def is_sparsified(self) -> bool:
        """Whether :meth:`sparsify` produced compressed operands (and they are present)."""
        return self.experts.compressed is not None

    # ------------------------------------------------------------------ forward
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x [..., H] → y [..., H]`` (same dtype); stores :attr:`last_router_output`."""
        check_tensor("x", x, dtypes=FLOAT_DTYPES)
        if x.ndim < 1 or x.shape[-1] != self.hidden:
            raise ValueError(f"x: expected shape [..., {self.hidden}] (hidden={self.hidden}), got {tuple(x.shape)}")
        shape = x.shape
        flat = x.reshape(-1, self.hidden)
        r = self.router(flat)
        self.last_router_output = r
        if self._backend == "samoyeds":
            y = self.experts.forward_samoyeds(flat, r.topk_ids, r.topk_weights, pad_to=self.pad_to)
        elif self._backend == "grouped":
            y = self.experts.forward_grouped(flat, r.topk_ids, r.topk_weights)
        else:
            y = self.experts.forward_dense(flat, r.topk_ids, r.topk_weights)
        if self.shared is not None:
            s = self.shared(flat)
            if self.shared_expert_gate is not None:
                s = torch.sigmoid(self.shared_expert_gate(flat)) * s
            y = y + s
        return y.reshape(shape)

    # ------------------------------------------------------------------ sparsify
    @torch.no_grad()
    def sparsify(
        self,
        pattern: str = "samoyeds",
        method: str = "magnitude",
        acts: torch.Tensor | None = None,
        *,
        joint: bool = True,
        **pattern_kwargs: Any,
    ) -> "MoEBlock":
        """Prune and compress every routed expert's gate/up/down weights (shared expert and router stay dense).

        Keeps the compressed operands (``block.experts.compressed``) and writes the pruned values
        ``W ⊙ mask`` back into the dense parameters, so ``"dense"``, ``"grouped"`` and ``"samoyeds"`` all
        compute on the same pruned weights. Afterwards ``block.backend = "samoyeds"`` is allowed.

        Parameters
        ----------
        pattern : str
            ``"samoyeds"`` (default; keywords ``n=1, m=2, vector=128``: ``H`` and ``I`` must be multiples of
            ``vector``), ``"2:4"``-like N:M, ``"venom"``, ``"unstructured"``, ``"dense"`` — see
            :func:`samoyeds_lab.prune.parse_pattern`. A Samoyeds row holds ``K / V`` windows: ``H / vector``
            for gate/up, ``I / vector`` for down (``vector=128`` on ``H = 128`` is ONE window per row, so a
            dropped row segment is a dropped neuron; Mixtral's ``K = 4096`` has 32).
        method : str
            ``"magnitude"`` (default), ``"wanda"`` or ``"obs"`` (second-order, SparseGPT-style).
        acts : torch.Tensor, optional
            ``[tokens, H]`` calibration inputs of this block (required for ``"wanda"`` and ``"obs"``). They are routed by
            this block's router; expert ``e`` is scored on the tokens routed to it (magnitude if none were).
        joint : bool
            Keyword only. Gate and up of every expert share one Samoyeds row selection (default ``True``;
            see :meth:`SwiGLUExperts.sparsify`); ``False`` prunes them independently. Down keeps its own.
        **pattern_kwargs
            The pattern's keywords (``vector=32``, ``n``, ``m``, …).

        Returns
        -------
        MoEBlock
            ``self``, for chaining. :meth:`live_neurons` reports how many SwiGLU neurons survived.
        """
        per_expert = None
        if acts is not None:
            check_tensor("acts", acts, ndim=2, dtypes=FLOAT_DTYPES)
            if acts.shape[1] != self.hidden:
                raise ValueError(
                    f"acts: expected shape [tokens, {self.hidden}] (hidden={self.hidden}), got {tuple(acts.shape)}"
                )
            a = acts.to(self.router.gate.weight.dtype)
            ids = self.router(a).topk_ids
            per_expert = [a[(ids == e).any(1)] for e in range(self.num_experts)]
        self.experts.sparsify(pattern, method, per_expert, joint=joint, **pattern_kwargs)
        return self

    def live_neurons(self, vector: int | None = None):
        """:meth:`SwiGLUExperts.live_neurons` of the routed experts (the shared expert is never pruned)."""
        return self.experts.live_neurons(vector)

    def extra_repr(self) -> str:
        s = f"backend={self._backend!r}"
        if self.shared is not None:
            gated = self.shared_expert_gate is not None
            s += f", shared_intermediate={self.shared_intermediate}, shared_gate={gated}"
        return s
