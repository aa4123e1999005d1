"""SwiGLU experts stored as stacked weights, and the three ways of running them on routed tokens.

Expert ``e`` is a SwiGLU MLP with the formats' convention (row = output feature)::

    y = W_down[e] · ( silu(W_gate[e] · x) ⊙ (W_up[e] · x) )      W_gate, W_up : [I, H],  W_down : [H, I]

and an MoE layer mixes the ``k`` experts a router picked for token ``t`` (:class:`~samoyeds_lab.moe.Router`)::

    y_t = Σⱼ w_{t,j} · expert_{ids[t,j]}(x_t)

Execution paths (all give the same numbers up to rounding; :class:`~samoyeds_lab.moe.MoEBlock` picks one):

``"dense"``
    :meth:`SwiGLUExperts.forward_dense`: the Hugging Face loop: for each expert, ``torch.where`` over the
    one-hot expert mask finds its (token, choice) pairs, gathers, runs the expert, ``index_add_`` back.
``"grouped"``
    :meth:`SwiGLUExperts.forward_grouped`: one :class:`~samoyeds_lab.formats.TokenSelection` sort of the
    ``T·k`` pairs by expert, one gather of ``x`` into expert order, three matmuls per expert on its
    contiguous segment, one weighted ``index_add_`` scatter. No per-token Python; the only loop is over
    experts. This is the fastest CPU path and the training default.
``"samoyeds"``
    :meth:`SwiGLUExperts.forward_samoyeds`: the Samoyeds data flow: compressed weights (any format of
    :mod:`samoyeds_lab.formats`, made by :meth:`SwiGLUExperts.sparsify`) times the *selected* tokens of
    every expert, ``ssmm(W, x, token_idx)``, over kernel-tile-padded segments (SENTINEL rows are zero).
    Uses ``samoyeds_lab.kernels.ssmm`` when the kernels package provides one, else
    :func:`samoyeds_lab.reference.ssmm`.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from .._checks import (
    FLOAT_DTYPES,
    INT_DTYPES,
    check_alloc,
    check_bool,
    check_choice,
    check_ids,
    check_int,
    check_positive_int,
    check_tensor,
)
from ..formats import SENTINEL, TokenSelection
from ..prune import LiveNeurons
from ..prune import sparsify as _sparsify_weight

#: Names of the three projections, in the order (gate, up, down).
PROJECTIONS = ("gate", "up", "down")


def _ssmm_impl() -> Callable[..., torch.Tensor]:
    """The ``ssmm(weight, x, token_idx)`` to use: ``samoyeds_lab.kernels.ssmm`` if present, else the reference."""
    from .. import kernels

    fn = getattr(kernels, "ssmm", None)
    if fn is None:
        from ..reference import ssmm as fn
    return fn


def _check_x(x: object, hidden: int, dtype: torch.dtype, *, ndim: int | None = 2) -> torch.Tensor:
    """``x`` is a ``[tokens, hidden]`` (``[..., hidden]`` with ``ndim=None``) tensor in the parameters' dtype."""
    check_tensor("x", x, ndim=ndim, dtypes=FLOAT_DTYPES)
    assert isinstance(x, torch.Tensor)
    if x.ndim == 0 or x.shape[-1] != hidden:
        lead = "tokens" if ndim == 2 else "..."
        raise ValueError(f"x: expected shape [{lead}, {hidden}] (hidden={hidden}), got {tuple(x.shape)}")
    if x.dtype != dtype:
        raise TypeError(
            f"x: expected dtype {str(dtype).replace('torch.', '')} (the experts' parameters; convert x or the "
            f"module with .to()), got {str(x.dtype).replace('torch.', '')}"
        )
    return x


def _check_routing(x: torch.Tensor, topk_ids: torch.Tensor, topk_weights: torch.Tensor, hidden: int,
                   num_experts: int, dtype: torch.dtype) -> None:
    """One check for every expert backend (dense, grouped, samoyeds, the hybrid executor): the same bad input,
    the same error. ``x`` must be finite: a NaN/inf activation would spread to every expert it is routed to."""
    _check_x(x, hidden, dtype)
    check_tensor("x", x, finite=True)
    check_tensor("topk_ids", topk_ids, ndim=2, dtypes=INT_DTYPES)
    check_tensor("topk_weights", topk_weights, ndim=2, dtypes=FLOAT_DTYPES)
    if topk_ids.shape[0] != x.shape[0] or topk_weights.shape != topk_ids.shape:
        raise ValueError(
            f"topk_ids, topk_weights: expected shape [{x.shape[0]}, k] for {x.shape[0]} tokens, got "
            f"{tuple(topk_ids.shape)} and {tuple(topk_weights.shape)}"
        )
    if topk_ids.device.type != "meta":
        check_ids("topk_ids", topk_ids, num=num_experts, distinct_rows=True)
    check_tensor("topk_weights", topk_weights, finite=True)


def _swiglu(x: torch.Tensor, w_gate: torch.Tensor, w_up: torch.Tensor, w_down: torch.Tensor) -> torch.Tensor:
    """``(silu(x W_gateᵀ) ⊙ (x W_upᵀ)) W_downᵀ`` for ``x [n, H]``, ``W_gate, W_up [I, H]``, ``W_down [H, I]``.
    """
    return (F.silu(x @ w_gate.T) * (x @ w_up.T)) @ w_down.T


class SwiGLUMLP(nn.Module):
    """A dense SwiGLU MLP (the shared expert): ``down(silu(gate(x)) ⊙ up(x))``.

    Submodules ``gate_proj``, ``up_proj`` (``Linear(hidden, intermediate)``) and ``down_proj``
    (``Linear(intermediate, hidden)``), no biases, named as in Hugging Face Llama/Qwen2-MoE.
    """

    def __init__(self, hidden: int, intermediate: int) -> None:
        super().__init__()
        self.hidden = check_int("hidden", hidden, lo=1)
        self.intermediate = check_int("intermediate", intermediate, lo=1)
        self.gate_proj = nn.Linear(self.hidden, self.intermediate, bias=False)
        self.up_proj = nn.Linear(self.hidden, self.intermediate, bias=False)
        self.down_proj = nn.Linear(self.intermediate, self.hidden, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[..., hidden] → [..., hidden]``."""
        _check_x(x, self.hidden, self.gate_proj.weight.dtype, ndim=None)
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class SwiGLUExperts(nn.Module):
    """``E`` SwiGLU experts as three stacked parameters.

    Parameters
    ----------
    num_experts, hidden, intermediate : int
        ``E``, ``H``, ``I``.

    Attributes
    ----------
    w_gate, w_up : nn.Parameter
        ``[E, I, H]``.
    w_down : nn.Parameter
        ``[E, H, I]``.
    compressed : dict[str, list] or None
        After :meth:`sparsify`: ``{"gate": [op_0 … op_{E-1}], "up": […], "down": […]}``, one compressed
        operand (``SamoyedsWeight``, ``NMWeight``, …) per expert and projection; ``None`` before.
    pattern : tuple[str, dict] or None
        After :meth:`sparsify`: ``(pattern, pattern_kwargs)``.
    joint : bool or None
        After :meth:`sparsify`: whether gate and up shared one row selection (``True`` only for the
        ``"samoyeds"`` pattern with ``joint=True``).

    Notes
    -----
    Initialisation matches ``nn.Linear``: ``U(-1/√fan_in, 1/√fan_in)`` per projection.
    ``module.to(dtype/device)`` also converts the compressed operands. Any other change of the dense
    parameters after :meth:`sparsify` (an optimizer step, ``load_state_dict``) makes the compressed
    operands stale; :meth:`forward_samoyeds` detects it and asks for ``sparsify`` again.
    """

    def __init__(self, num_experts: int, hidden: int, intermediate: int) -> None:
        super().__init__()
        self.num_experts = check_int("num_experts", num_experts, lo=1)
        self.hidden = check_int("hidden", hidden, lo=1)
        self.intermediate = check_int("intermediate", intermediate, lo=1)
        E, H, I = self.num_experts, self.hidden, self.intermediate
        check_alloc("num_experts, hidden, intermediate", (3, E, I, H), torch.float32, what="expert weight stack")
        self.w_gate = nn.Parameter(torch.empty(E, I, H))
        self.w_up = nn.Parameter(torch.empty(E, I, H))
        self.w_down = nn.Parameter(torch.empty(E, H, I))
        self.compressed: dict[str, list[Any]] | None = None
        self.pattern: tuple[str, dict[str, Any]] | None = None
        self.joint: bool | None = None
        self._stamp: tuple | None = None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """``U(-1/√fan_in, 1/√fan_in)`` like ``nn.Linear`` (fan_in = H for gate/up, I for down); drops
        any compressed operands."""
        with torch.no_grad():
            for w in (self.w_gate, self.w_up, self.w_down):
                bound = 1.0 / math.sqrt(w.shape[-1])
                w.uniform_(-bound, bound)
        self.compressed = None
        self.pattern = None
        self.joint = None
        self._stamp = None

    def weights(self) -> dict[str, nn.Parameter]:
        """``{"gate": w_gate, "up": w_up, "down": w_down}``."""
        return {"gate": self.w_gate, "up": self.w_up, "down": self.w_down}

    # ------------------------------------------------------------------ one expert
    def expert_forward(self, expert: int, x: torch.Tensor) -> torch.Tensor:
        """Expert ``e`` on rows ``x [n, H]``: ``(silu(x W_gate[e]ᵀ) ⊙ (x W_up[e]ᵀ)) W_down[e]ᵀ`` → ``[n, H]``.
        """
        e = check_int("expert", expert, lo=0, hi=self.num_experts - 1)
        _check_x(x, self.hidden, self.w_gate.dtype)
        return _swiglu(x, self.w_gate[e], self.w_up[e], self.w_down[e])

    def _unbound(self) -> tuple[tuple[torch.Tensor, ...], ...]:
        # NOTE: indexing w[e] once per expert would make autograd build E full-size zero gradients per
        # parameter (select_backward); unbind's backward stacks the E slices in one go.
        return self.w_gate.unbind(0), self.w_up.unbind(0), self.w_down.unbind(0)

    # ------------------------------------------------------------------ backends
    def forward(
        self, x: torch.Tensor, topk_ids: torch.Tensor, topk_weights: torch.Tensor, *, backend: str = "grouped"
    ) -> torch.Tensor:
        """``y_t = Σⱼ topk_weights[t,j] · expert_{topk_ids[t,j]}(x_t)`` with the named backend.

        Parameters
        ----------
        x : torch.Tensor
            ``[T, H]`` fp16/bf16/fp32 (the parameters' dtype).
        topk_ids : torch.Tensor
            ``[T, k]`` integer expert ids (distinct per token).
        topk_weights : torch.Tensor
            ``[T, k]`` float mixing weights.
        backend : str
            ``"dense"``, ``"grouped"`` (default) or ``"samoyeds"`` (after :meth:`sparsify`).

        Returns
        -------
        torch.Tensor
            ``[T, H]`` in ``x.dtype``.
        """
        if backend == "grouped":
            return self.forward_grouped(x, topk_ids, topk_weights)
        if backend == "dense":
            return self.forward_dense(x, topk_ids, topk_weights)
        if backend == "samoyeds":
            return self.forward_samoyeds(x, topk_ids, topk_weights)
        raise ValueError(f"backend: expected 'dense', 'grouped' or 'samoyeds', got {backend!r}")

    def forward_dense(self, x: torch.Tensor, topk_ids: torch.Tensor, topk_weights: torch.Tensor) -> torch.Tensor:
        """Hugging Face-style loop over experts with ``torch.where`` on the one-hot expert mask."""
        _check_routing(x, topk_ids, topk_weights, self.hidden, self.num_experts, self.w_gate.dtype)
        out = torch.zeros_like(x)
        mask = F.one_hot(topk_ids.long(), self.num_experts).permute(2, 1, 0)  # [E, k, T]
        hit = mask.sum(dim=(1, 2)).nonzero().flatten().tolist()
        wg, wu, wd = self._unbound()
        for e in hit:
            choice, tok = torch.where(mask[e])
            y = _swiglu(x[tok], wg[e], wu[e], wd[e]) * topk_weights[tok, choice, None].to(x.dtype)
            out.index_add_(0, tok, y)
        return out

    def forward_grouped(
        self,
        x: torch.Tensor,
        topk_ids: torch.Tensor,
        topk_weights: torch.Tensor,
        selection: TokenSelection | None = None,
    ) -> torch.Tensor:
        """Sort by expert once, gather, per-expert matmuls on contiguous segments, weighted scatter.

        ``sel = TokenSelection.from_topk(topk_ids, E, pad_to=1)``; ``xs = x[sel.token_ids]``;
        ``ys[off_e:off_{e+1}] = expert_e(xs[off_e:off_{e+1}])``;
        ``y.index_add_(0, sel.token_ids, ys · w[sel.slot_ids])``. Differentiable in ``x``, the weights
        and ``topk_weights``. Pass a precomputed ``selection`` (any ``pad_to``) to skip the sort.
        """
        _check_routing(x, topk_ids, topk_weights, self.hidden, self.num_experts, self.w_gate.dtype)
        sel = selection if selection is not None else TokenSelection.from_topk(topk_ids, self.num_experts, pad_to=1)
        tok = sel.token_ids.long()
        xs = x.index_select(0, tok)
        bounds = sel.offsets.tolist()
        wg, wu, wd = self._unbound()
        parts = [_swiglu(xs[bounds[e]: bounds[e + 1]], wg[e], wu[e], wd[e])
                 for e in range(self.num_experts) if bounds[e + 1] > bounds[e]]
        out = torch.zeros_like(x)
        if not parts:
            return out
        ys = torch.cat(parts) if len(parts) > 1 else parts[0]
        w = topk_weights.reshape(-1).index_select(0, sel.slot_ids.long()).to(x.dtype)
        return out.index_add_(0, tok, ys * w.unsqueeze(1))

    def forward_samoyeds(
        self, x: torch.Tensor, topk_ids: torch.Tensor, topk_weights: torch.Tensor, *, pad_to: int = 64
    ) -> torch.Tensor:
        """Dual-side sparse path: compressed weights × selected tokens, with the kernels' fused epilogues.

        Per expert ``e`` with token ids ``P_e`` (SENTINEL-padded to a multiple of ``pad_to`` on a GPU, where
        kernel tiles are that tall; unpadded on the CPU, whose kernels take any token count)::

            u = ssmm(Up_e, x, P_e)                                        [|P_e|, I]
            h = ssmm(Gate_e, x, P_e, epilogue="silu_mul", up=u)           silu(x Gateᵀ) ⊙ u   (SENTINEL rows: 0)
            ssmm(Down_e, h, None, epilogue="scatter_add", out=y32,
                 scatter_idx=P_e, scale=w[P_e])                           y[t] += w_{t,j} · (h Downᵀ)[row of (t, j)]

        ``y`` accumulates in fp32 and is returned in ``x.dtype``. An inference path: gradients reach ``x`` and
        ``topk_weights`` (through the reference products, which ``backend="auto"`` uses when a gradient is
        needed) but not the expert parameters (the compressed operands are frozen copies); train with
        ``"grouped"``.

        Raises
        ------
        ValueError
            Before :meth:`sparsify`, or when the dense parameters changed since.
        """
        _check_routing(x, topk_ids, topk_weights, self.hidden, self.num_experts, self.w_gate.dtype)
        pad_to = check_positive_int("pad_to", pad_to)
        self._check_compressed()
        ssmm = _ssmm_impl()
        pad = 1 if x.device.type == "cpu" else pad_to
        sel = TokenSelection.from_topk(topk_ids, self.num_experts, pad_to=pad)
        out = torch.zeros(x.shape, dtype=torch.float32, device=x.device)
        flat_w = topk_weights.reshape(-1)
        bounds = sel.padded_offsets.tolist()
        counts = sel.counts.tolist()
        assert self.compressed is not None
        for e in range(self.num_experts):
            if counts[e] == 0:
                continue
            ptok = sel.padded_token_ids[bounds[e]: bounds[e + 1]]
            pslot = sel.padded_slot_ids[bounds[e]: bounds[e + 1]].long()
            scale = torch.where(pslot >= 0, flat_w[pslot.clamp(min=0)].to(torch.float32),
                                torch.zeros((), device=x.device))
            u = ssmm(self.compressed["up"][e], x, ptok)
            h = ssmm(self.compressed["gate"][e], x, ptok, epilogue="silu_mul", up=u)
            ssmm(self.compressed["down"][e], h, None, epilogue="scatter_add", out=out, scatter_idx=ptok, scale=scale)
        return out.to(x.dtype)

    # ------------------------------------------------------------------ sparsify
    def _param_stamp(self) -> tuple:
        return tuple((p.data_ptr(), p._version, p.dtype, p.device) for p in (self.w_gate, self.w_up, self.w_down))

    def _check_compressed(self) -> None:
        if self.compressed is None:
            raise ValueError(
                "backend: 'samoyeds' runs on compressed expert weights; call sparsify(pattern=...) first "
                "(no compressed operands yet)"
            )
        if self._stamp != self._param_stamp():
            raise ValueError(
                "backend: 'samoyeds' compressed operands are stale, the dense expert weights changed since "
                "sparsify() (optimizer step or load_state_dict); call sparsify(...) again"
            )

    @torch.no_grad()
    def sparsify(
        self,
        pattern: str = "samoyeds",
        method: str = "magnitude",
        acts: list[torch.Tensor | None] | None = None,
        *,
        joint: bool = True,
        **pattern_kwargs: Any,
    ) -> None:
        """Prune + compress every expert's three projections; keep the pruned values in the parameters.

        For every expert ``e`` and projection ``P ∈ {gate, up, down}``:
        ``op = samoyeds_lab.prune.sparsify(W_P[e], pattern, method, acts_P[e], **pattern_kwargs)``, then
        ``W_P[e] ← op.to_dense()`` (= ``W_P[e] ⊙ mask``), so every backend computes on the same pruned weights.
        With ``joint=True`` (the default) and the ``"samoyeds"`` pattern, gate and up are pruned as a pair
        instead (:func:`samoyeds_lab.prune.sparsify_joint`): one row selection per (row group, window) for
        both, so a neuron that keeps its gate row segment keeps its up row segment too; down keeps its own.

        Parameters
        ----------
        pattern, method, **pattern_kwargs
            As for :func:`samoyeds_lab.prune.sparsify` (``"samoyeds"`` needs ``H`` and ``I`` to be multiples
            of ``vector`` and ``H``, ``I`` multiples of ``m``; ``"2:4"`` needs multiples of 4). A Samoyeds row
            holds ``K / V`` windows: ``H / vector`` for gate/up, ``I / vector`` for down. With one window per
            row (``vector = H``) dropping a row segment drops the neuron from gate or up outright.
        acts : list, optional
            Per expert, the ``[tokens_e, H]`` inputs it saw (Wanda calibration), or ``None`` for an expert
            that saw none (it falls back to magnitude scores). Gate/up are scored with ``acts[e]``, down with
            ``silu(acts[e] W_gate'ᵀ) ⊙ (acts[e] W_up'ᵀ)`` on the already-pruned gate/up (Wanda's sequential
            order). Required when ``method`` is ``"wanda"`` or ``"obs"`` (second-order: each projection's
            Hessian is built from the same inputs; OBS also updates the weights it keeps).
        joint : bool
            Keyword only. Share the gate/up row selection (default ``True``; only the ``"samoyeds"`` pattern
            has rows to share, every other pattern is pruned per projection either way). ``False`` prunes gate
            and up independently (the behaviour before joint selection existed). Methods outside
            :data:`samoyeds_lab.prune.JOINT_METHODS` (magnitude, Wanda, OBS) need ``joint=False`` for
            Samoyeds.
        """
        if acts is not None and (not isinstance(acts, (list, tuple)) or len(acts) != self.num_experts):
            raise ValueError(
                f"acts: expected a list of {self.num_experts} per-expert [tokens, {self.hidden}] tensors (or None "
                f"entries), got {type(acts).__name__}"
                + (f" of length {len(acts)}" if isinstance(acts, (list, tuple)) else "")
            )
        from ..prune import JOINT_METHODS, parse_pattern, sparsify_joint
        from ..prune.api import METHODS

        method = check_choice("method", method, METHODS)
        joint = check_bool("joint", joint)
        if method != "magnitude" and acts is None:
            raise ValueError(f"acts: required for method={method!r} (per-expert calibration inputs), got None")
        pair = joint and parse_pattern(pattern, **pattern_kwargs)[0] == "samoyeds"
        if pair and method not in JOINT_METHODS:
            raise ValueError(
                f"joint: gate/up joint row selection scores with {', '.join(map(repr, JOINT_METHODS))}, got "
                f"method={method!r}; pass joint=False to prune gate and up independently with it"
            )
        ops: dict[str, list[Any]] = {p: [] for p in PROJECTIONS}
        new = {p: torch.empty_like(w) for p, w in self.weights().items()}
        for e in range(self.num_experts):
            a = None if acts is None else acts[e]
            if a is not None:
                check_tensor(f"acts[{e}]", a, ndim=2, dtypes=FLOAT_DTYPES)
                if a.shape[1] != self.hidden:
                    raise ValueError(
                        f"acts[{e}]: expected shape [tokens, {self.hidden}] (the inputs expert {e} saw), got "
                        f"{tuple(a.shape)}"
                    )
                if a.shape[0] == 0:
                    a = None
            m = method if a is not None else "magnitude"
            a_m = None if m == "magnitude" else a  # Wanda and OBS score on the inputs
            if pair:
                gu = sparsify_joint([self.w_gate[e], self.w_up[e]], pattern, m, a_m, **pattern_kwargs)
            else:
                gu = [_sparsify_weight(self.weights()[p][e], pattern, m, a_m, **pattern_kwargs) for p in ("gate", "up")]
            for p, op in zip(("gate", "up"), gu):
                ops[p].append(op)
                new[p][e] = op.to_dense().to(new[p].dtype)
            h = None
            if a is not None:
                a32 = a.to(torch.float32)
                h = (F.silu(a32 @ new["gate"][e].float().T) * (a32 @ new["up"][e].float().T)).to(new["down"].dtype)
            op = _sparsify_weight(self.w_down[e], pattern, m, None if m == "magnitude" else h, **pattern_kwargs)
            ops["down"].append(op)
            new["down"][e] = op.to_dense().to(new["down"].dtype)
        for p, w in self.weights().items():
            w.copy_(new[p])
        self.compressed = ops
        self.pattern = (pattern, dict(pattern_kwargs))
        self.joint = pair
        self._stamp = self._param_stamp()

    def live_neurons(self, vector: int | None = None) -> LiveNeurons:
        """Which SwiGLU neurons of all experts still compute something: gate and up rows both non-empty.

        :func:`samoyeds_lab.prune.live_neuron_fraction` on ``(W_gate != 0, W_up != 0)`` over the stack
        ``[E, I, H]`` (every neuron of every expert counts once). Read from the weights, so it works on any
        pruned (or dense) experts; a kept weight that is exactly 0 would count as pruned (a trained fp32
        weight is 0 with negligible probability).

        Parameters
        ----------
        vector : int, optional
            Window width for the per-window fractions (``H / vector`` windows per row); default: the
            ``vector`` of the last :meth:`sparsify` with the ``"samoyeds"`` pattern, else the whole row.

        Returns
        -------
        LiveNeurons
            ``per_window`` ``[H / vector]``, ``overall``, ``paired_per_window``, ``paired``.
        """
        from ..prune import live_neuron_fraction, parse_pattern

        if vector is None and self.pattern is not None:
            kind, p = parse_pattern(self.pattern[0], **self.pattern[1])
            vector = p["vector"] if kind == "samoyeds" else None
        return live_neuron_fraction(self.w_gate.detach() != 0, self.w_up.detach() != 0, vector)

    def clear_compressed(self) -> None:
        """Drop the compressed operands (the pruned dense values stay in the parameters)."""
        self.compressed = None
        self.pattern = None
        self.joint = None
        self._stamp = None

    @property
    def compressed_nbytes(self) -> int:
        """Bytes of all compressed operands (0 before :meth:`sparsify`)."""
        if self.compressed is None:
            return 0
        return sum(op.nbytes for ops in self.compressed.values() for op in ops)

    def _apply(self, fn, recurse=True):  # type: ignore[override]
        # NOTE: .to()/.half()/.cuda() must carry the compressed operands along, or the samoyeds backend
        # would silently compute on the old dtype/device.
        out = super()._apply(fn, recurse)
        if self.compressed is not None:
            import dataclasses

            def move(op: Any) -> Any:
                changes = {f.name: fn(getattr(op, f.name)) for f in dataclasses.fields(op)
                           if isinstance(getattr(op, f.name), torch.Tensor)}
                return dataclasses.replace(op, **changes)

            self.compressed = {p: [move(op) for op in ops] for p, ops in self.compressed.items()}
            self._stamp = self._param_stamp()
        return out

    def extra_repr(self) -> str:
        s = f"num_experts={self.num_experts}, hidden={self.hidden}, intermediate={self.intermediate}"
        if self.pattern is not None:
            s += f", sparsified={self.pattern[0]!r} {self.pattern[1] or ''}".rstrip()
        return s
