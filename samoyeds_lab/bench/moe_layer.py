r"""One MoE block taken apart: the steps of a forward pass, what each backend moves and computes, and the
modelled time of a whole layer on a GPU profile (Lab 04).

Step by step (:func:`decompose_block`), with the same :class:`~samoyeds_lab.formats.TokenSelection` and
kernel calls the ``"samoyeds"`` backend is built from, but with the kernels' fused epilogues::

    z   = x W_gᵀ                              router logits                 [T, E]
    ids, w = route(z)                         top-k experts and weights    [T, k]
    sel = TokenSelection.from_topk(ids, E, pad_to=64)                      per-expert token lists, padded
    for every expert e with tokens, P_e = sel.padded_tokens_of(e)          (SENTINEL-padded to 64·⌈n_e/64⌉):
        u_e = ssmm(Up_e,   x, P_e)                                 gather inside the kernel   [|P_e|, I]
        h_e = ssmm(Gate_e, x, P_e, epilogue="silu_mul", up=u_e)    silu(x W_gateᵀ) ⊙ u, fused  [|P_e|, I]
        ssmm(Down_e, h_e, None, epilogue="scatter_add", out=y,
             scatter_idx=P_e, scale=w[P_e])                        y[t] += w_{t,j} · (h W_downᵀ)[p]
    y  += g · shared(x)                                            (models with a shared expert)

Cost model (:func:`layer_costs`): bytes and FLOPs of one layer for a given number of tokens per expert
``n_e`` (``b`` bytes per element; ``p_e = pad_to·⌈n_e/pad_to⌉``; sums over experts with ``n_e > 0``):

============  =============================================================================================
backend       what it reads/writes
============  =============================================================================================
``dense``     Hugging Face loop: per expert ``torch.where`` over the ``[k, T]`` slice of the one-hot mask,
              gather ``x[tok]``, ``gate``/``up`` GEMMs on dense weights, ``silu``, ``⊙``, ``down``,
              ``· w``, ``index_add_``. Every intermediate goes through memory.
``grouped``   one sort of the ``T·k`` (token, expert) pairs, one gather, the same per-expert GEMMs and
              element-wise passes, one weighted ``index_add_``. Same bytes and FLOPs as ``dense`` on the
              weights and activations, far fewer launches and no per-expert mask scans.
``samoyeds``  the sort, then three grouped kernel launches: ``up`` and ``gate`` read the compressed weights
              (values + 2:4 metadata + row indices, :func:`samoyeds_lab.bench.roofline.op_bytes`) and gather
              the ``n_e`` real rows of ``x`` themselves (token ids in shared memory); ``gate`` applies
              ``silu(·)⊙up`` in its epilogue; ``down`` scales by the routing weight and adds into the
              output rows in its epilogue. Tiles are ``p_e`` rows tall: the padded rows are computed and
              written (their inputs are zeros, nothing is gathered or scattered for them).
============  =============================================================================================

``flops`` is the useful dense-equivalent work ``2·3·H·I·Σn_e`` (the same for every backend);
``executed_flops`` what the backend multiplies: ``flops`` for dense/grouped, ``2·3·H·I·d·Σp_e`` for Samoyeds
(``d = n/M · ½ = 25%`` of the weights kept, but on padded tiles). Router and shared expert are the same
for all backends and left out of :func:`layer_costs`.

Layer time (:func:`layer_time`): a *model*, not a measurement — the roofline ceiling
(:func:`samoyeds_lab.bench.roofline.roofline`) of every expert's three products on its real tokens::

    T_op = Σ_{e: n_e>0} [ 2·R_op(I, H, n_e) + R_op(H, I, n_e) ]  (+ the shared expert on all T tokens)

with ``op`` ``"dense"``, ``"spmm"`` (2:4) or ``"ssmm"`` (Samoyeds); the shared expert is dense for
``"dense"``, 2:4 for ``"spmm"`` and Samoyeds-format without token selection for ``"ssmm"`` (the paper runs
shared experts weight-sparse only). ``padded=True`` charges ``p_e`` instead of ``n_e`` tokens.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

import numpy as np
import torch

from .._checks import FLOAT_DTYPES, check_int, check_tensor
from ..formats import SENTINEL, TokenSelection
from ..moe.block import MoEBlock

__all__ = [
    "MoEShape", "MOE_SHAPES", "COST_BACKENDS", "TIME_OPS", "DTYPE_BYTES",
    "ExpertStep", "BlockAnatomy", "capture_block_input", "decompose_block", "backend_outputs",
    "samoyeds_grouped_forward",
    "LayerCost", "layer_costs", "tile_rows", "padded_fraction", "uniform_routing_counts", "routing_counts",
    "LayerTime", "layer_time", "layer_time_sweep", "recorded_layer_time", "time_cpu",
]

#: Backends of :func:`layer_costs` (those of :class:`~samoyeds_lab.moe.MoEBlock`).
COST_BACKENDS = ("dense", "grouped", "samoyeds")
#: Ops of :func:`layer_time` (those of :mod:`samoyeds_lab.bench.roofline`).
TIME_OPS = ("dense", "spmm", "ssmm")
#: Bytes per element of the dtypes the cost model takes.
DTYPE_BYTES = {"float16": 2, "bfloat16": 2, "float32": 4}


@dataclass(frozen=True)
class MoEShape:
    """One MoE layer's sizes: ``d_model`` (H), routed ``d_ffn`` (I), ``num_experts`` (E), ``top_k`` (k) and
    the total intermediate width of its shared expert(s) (``shared_ffn``, 0 = none)."""

    name: str
    d_model: int
    d_ffn: int
    num_experts: int
    top_k: int
    shared_ffn: int = 0

    def __post_init__(self) -> None:
        for f in ("d_model", "d_ffn", "num_experts", "top_k"):
            check_int(f, getattr(self, f), lo=1)
        check_int("top_k", self.top_k, hi=self.num_experts)
        check_int("shared_ffn", self.shared_ffn, lo=0)


#: MoE layers of the models in :data:`samoyeds_lab.bench.kernels.MODEL_SHAPES` (same ``d_model``/``d_ffn``),
#: with their expert count, top-k and shared-expert width, transcribed from the published Hugging Face
#: ``config.json`` files (``num_local_experts``/``num_experts``, ``num_experts_per_tok``,
#: ``shared_expert_intermediate_size`` or ``n_shared_experts · moe_intermediate_size``); model hubs are not
#: reachable from this project's machines, so they could not be re-read here.
MOE_SHAPES: dict[str, MoEShape] = {
    "Mixtral-8x7B": MoEShape("Mixtral-8x7B", 4096, 14336, 8, 2),
    "Mixtral-8x22B": MoEShape("Mixtral-8x22B", 6144, 16384, 8, 2),
    "Qwen2-MoE-57B-A14B": MoEShape("Qwen2-MoE-57B-A14B", 3584, 2560, 64, 8, 20480),
    "DeepSeek-MoE-16B": MoEShape("DeepSeek-MoE-16B", 2048, 1408, 64, 6, 2816),
    "OpenMoE-8B": MoEShape("OpenMoE-8B", 2048, 8192, 32, 2),
    "MiniCPM-MoE-8x2B": MoEShape("MiniCPM-MoE-8x2B", 2304, 5760, 8, 2),
}


def _shape(shape: object) -> MoEShape:
    if isinstance(shape, MoEShape):
        return shape
    if isinstance(shape, str):
        if shape not in MOE_SHAPES:
            raise ValueError(f"shape: expected one of {tuple(MOE_SHAPES)} or a MoEShape, got {shape!r}")
        return MOE_SHAPES[shape]
    raise TypeError(f"shape: expected a model name or a MoEShape, got {type(shape).__name__}")


def _dtype_bytes(dtype: object) -> int:
    name = str(dtype).replace("torch.", "") if isinstance(dtype, torch.dtype) else dtype
    name = {"fp16": "float16", "bf16": "bfloat16", "fp32": "float32"}.get(name, name)  # type: ignore[arg-type]
    if name not in DTYPE_BYTES:
        raise ValueError(f"dtype: expected one of {tuple(DTYPE_BYTES)}, got {dtype!r}")
    return DTYPE_BYTES[name]


def _counts(counts: object, name: str = "counts") -> np.ndarray:
    if isinstance(counts, torch.Tensor):
        counts = counts.detach().cpu().numpy()
    if isinstance(counts, (list, tuple)):
        counts = np.asarray(counts)
    if not isinstance(counts, np.ndarray) or counts.ndim != 1 or counts.size == 0 or counts.dtype.kind not in "iu":
        got = type(counts).__name__ + (f" {counts.dtype} {counts.shape}" if isinstance(counts, np.ndarray) else "")
        raise ValueError(f"{name}: expected a non-empty 1-D integer array of tokens per expert, got {got}")
    if (counts < 0).any():
        raise ValueError(f"{name}: expected non-negative token counts, got {counts.min()}")
    return counts.astype(np.int64)


# ---------------------------------------------------------------------------------------------- anatomy
@dataclass(frozen=True, eq=False)
class ExpertStep:
    """What one expert did in :func:`decompose_block`.

    Attributes
    ----------
    expert : int
    token_ids : torch.Tensor
        int64 ``[n]`` its real tokens (ascending).
    weights : torch.Tensor
        ``[n]`` their routing weights ``w_{t,j}``.
    padded_token_ids : torch.Tensor
        int32 ``[p]`` the tile-padded list the kernels gathered with (tail = SENTINEL).
    up, h : torch.Tensor
        ``[p, I]`` ``x W_upᵀ`` and ``silu(x W_gateᵀ) ⊙ up`` (rows of SENTINEL positions are 0).
    contribution : torch.Tensor
        ``[n, H]`` ``w_{t,j} · (h W_downᵀ)`` of the real rows: what the scatter epilogue added.
    """

    expert: int
    token_ids: torch.Tensor
    weights: torch.Tensor
    padded_token_ids: torch.Tensor
    up: torch.Tensor
    h: torch.Tensor
    contribution: torch.Tensor

    @property
    def num_tokens(self) -> int:
        return int(self.token_ids.numel())

    @property
    def padded_rows(self) -> int:
        return int(self.padded_token_ids.numel())


@dataclass(frozen=True, eq=False)
class BlockAnatomy:
    """Every intermediate of one MoE block forward (see the module docstring).

    Attributes
    ----------
    x : torch.Tensor
        ``[T, H]`` the block's input rows.
    logits, probs : torch.Tensor
        ``[T, E]`` router logits and their softmax (fp32).
    topk_ids, topk_weights : torch.Tensor
        ``[T, k]``.
    selection : TokenSelection
        The per-expert token lists (``pad_to`` of the block unless overridden).
    steps : tuple[ExpertStep, ...]
        One per expert with at least one token, in expert order.
    routed, shared, output : torch.Tensor
        ``[T, H]`` the routed experts' sum, the (gated) shared expert's output (zeros if none) and
        ``routed + shared``.
    """

    x: torch.Tensor
    logits: torch.Tensor
    probs: torch.Tensor
    topk_ids: torch.Tensor
    topk_weights: torch.Tensor
    selection: TokenSelection
    steps: tuple[ExpertStep, ...]
    routed: torch.Tensor
    shared: torch.Tensor
    output: torch.Tensor

    def step(self, expert: int) -> ExpertStep | None:
        """The :class:`ExpertStep` of ``expert`` (None if it got no token)."""
        e = check_int("expert", expert, lo=0, hi=self.selection.num_experts - 1)
        return next((s for s in self.steps if s.expert == e), None)


def _check_block(block: object) -> MoEBlock:
    if not isinstance(block, MoEBlock):
        raise TypeError(f"block: expected a MoEBlock, got {type(block).__name__}")
    return block


def _check_x(block: MoEBlock, x: object) -> torch.Tensor:
    check_tensor("x", x, dtypes=FLOAT_DTYPES)
    if x.ndim < 1 or x.shape[-1] != block.hidden:
        raise ValueError(f"x: expected shape [..., {block.hidden}] (hidden={block.hidden}), got {tuple(x.shape)}")
    return x.reshape(-1, block.hidden)


@torch.no_grad()
def capture_block_input(model: torch.nn.Module, input_ids: torch.Tensor, layer: int) -> torch.Tensor:
    """The ``[tokens, H]`` input of MoE block ``layer`` of ``model`` (a forward pre-hook, one forward pass).

    ``model`` has ``moe_blocks()`` (e.g. :class:`~samoyeds_lab.moe.TinyMoEForCausalLM`); ``input_ids`` is
    ``[S]`` or ``[B, S]``; rows follow ``input_ids.reshape(-1)``.
    """
    blocks = getattr(model, "moe_blocks", None)
    if blocks is None:
        raise TypeError(f"model: expected a model with moe_blocks() (TinyMoEForCausalLM), got {type(model).__name__}")
    blocks = blocks()
    layer = check_int("layer", layer, lo=0, hi=len(blocks) - 1)
    check_tensor("input_ids", input_ids)
    ids = input_ids.unsqueeze(0) if input_ids.ndim == 1 else input_ids
    seen: list[torch.Tensor] = []
    handle = blocks[layer][1].register_forward_pre_hook(lambda _m, args: seen.append(args[0].detach().clone()))
    try:
        model(ids)
    finally:
        handle.remove()
    return seen[0].reshape(-1, seen[0].shape[-1])


@torch.no_grad()
def decompose_block(block: MoEBlock, x: torch.Tensor, *, pad_to: int | None = None,
                    backend: str = "auto") -> BlockAnatomy:
    """Run ``block`` on ``x`` step by step with the Samoyeds kernels' calls and fused epilogues.

    Parameters
    ----------
    block : MoEBlock
        A block after :meth:`~samoyeds_lab.moe.MoEBlock.sparsify` (its compressed operands are used).
    x : torch.Tensor
        ``[..., H]`` input.
    pad_to : int, optional
        Token tile height (default ``block.pad_to``, 64).
    backend : str
        ``samoyeds_lab.kernels`` backend: ``"auto"`` (CUDA kernels on an SM80+ GPU for CUDA tensors,
        else the CPU reference), ``"reference"`` or ``"cupy"``.

    Returns
    -------
    BlockAnatomy
        Its ``output`` equals ``block(x)`` (any backend) up to rounding.

    Raises
    ------
    ValueError
        ``block`` has no compressed operands (call ``sparsify`` first), bad ``x`` or ``pad_to``.
    """
    from .. import kernels

    block = _check_block(block)
    flat = _check_x(block, x)
    pad_to = block.pad_to if pad_to is None else check_int("pad_to", pad_to, lo=1)
    experts = block.experts
    if experts.compressed is None:
        raise ValueError("block: expected a sparsified block (call block.sparsify(...) first), it has no "
                         "compressed expert weights")
    experts._check_compressed()
    r = block.router(flat)
    logits = r.logits.detach()
    ids, w = r.topk_ids, r.topk_weights
    sel = TokenSelection.from_topk(ids, block.num_experts, pad_to=pad_to)
    flat_w = w.reshape(-1)
    routed = torch.zeros_like(flat)
    steps = []
    bounds = sel.padded_offsets.tolist()
    for e in range(block.num_experts):
        if int(sel.counts[e]) == 0:
            continue
        ptok = sel.padded_token_ids[bounds[e]: bounds[e + 1]].to(flat.device)
        pslot = sel.padded_slot_ids[bounds[e]: bounds[e + 1]].to(torch.int64).to(flat.device)
        scale = torch.where(pslot != SENTINEL, flat_w[pslot.clamp(min=0)].float(), torch.zeros((), device=flat.device))
        up = kernels.ssmm(experts.compressed["up"][e], flat, ptok, backend=backend)
        h = kernels.ssmm(experts.compressed["gate"][e], flat, ptok, epilogue="silu_mul", up=up, backend=backend)
        before = routed.clone()
        kernels.ssmm(experts.compressed["down"][e], h, None, epilogue="scatter_add", out=routed,
                     scatter_idx=ptok, scale=scale, backend=backend)
        tok = sel.tokens_of(e).to(flat.device)
        steps.append(ExpertStep(expert=e, token_ids=tok, weights=flat_w[sel.slots_of(e).to(flat.device)].detach(),
                                padded_token_ids=ptok, up=up, h=h, contribution=(routed - before)[tok]))
    shared = torch.zeros_like(flat)
    if block.shared is not None:
        shared = block.shared(flat)
        if block.shared_expert_gate is not None:
            shared = torch.sigmoid(block.shared_expert_gate(flat)) * shared
    return BlockAnatomy(x=flat, logits=logits, probs=torch.softmax(logits.float(), -1), topk_ids=ids,
                        topk_weights=w.detach(), selection=sel, steps=tuple(steps), routed=routed, shared=shared,
                        output=routed + shared)


@torch.no_grad()
def backend_outputs(block: MoEBlock, x: torch.Tensor,
                    backends: Sequence[str] = COST_BACKENDS) -> dict[str, torch.Tensor]:
    """``{backend: block(x)}`` for every backend (``x`` flattened to ``[T, H]``); the block's backend is restored."""
    from ..moe.block import BACKENDS

    block = _check_block(block)
    flat = _check_x(block, x)
    for b in backends:
        if b not in BACKENDS:
            raise ValueError(f"backends: expected names from {BACKENDS}, got {b!r}")
    before = block.backend
    try:
        out = {}
        for b in backends:
            block.backend = b
            out[b] = block(flat)
    finally:
        block.backend = before
    return out


def time_cpu(fn, *, repeat: int = 5, warmup: int = 1) -> float:
    """Median wall seconds of ``fn()`` over ``repeat`` calls after ``warmup`` (``torch.no_grad``)."""
    import time

    repeat = check_int("repeat", repeat, lo=1)
    warmup = check_int("warmup", warmup, lo=0)
    if not callable(fn):
        raise TypeError(f"fn: expected a callable, got {type(fn).__name__}")
    times = []
    with torch.no_grad():
        for i in range(warmup + repeat):
            t0 = time.perf_counter()
            fn()
            if i >= warmup:
                times.append(time.perf_counter() - t0)
    return float(np.median(times))


# ---------------------------------------------------------------------------------------------- costs
def _samoyeds_weight_bytes(m: int, k: int, b: int) -> int:
    """Compressed Samoyeds operand of an ``m × k`` weight with ``b``-byte values: values + 2:4 metadata (2 bits
    per kept value) + row indices (``ROW_INDEX_BITS`` each), as :func:`samoyeds_lab.bench.roofline.op_bytes`."""
    from .roofline import ROW_INDEX_BITS, SAMOYEDS_PATTERN

    n, mm, v = SAMOYEDS_PATTERN
    if m % mm or k % v:
        raise ValueError(f"d_model, d_ffn: expected multiples of V={v} and M={mm} for the Samoyeds format, got "
                         f"a {m}×{k} weight")
    crows = m // mm * n
    kept = crows * k // 2
    return kept * b + math.ceil(kept * 2 / 8) + math.ceil((k // v) * crows * ROW_INDEX_BITS / 8)


def tile_rows(counts: object, pad_to: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """``(real, padding)`` rows of every expert's tiles: ``real = n_e``, ``padding = pad_to·⌈n_e/pad_to⌉ − n_e``."""
    c = _counts(counts)
    pad_to = check_int("pad_to", pad_to, lo=1)
    padded = -(-c // pad_to) * pad_to
    return c, padded - c


def padded_fraction(counts: object, pad_to: int = 64) -> float:
    """Share of computed tile rows that are padding, ``Σ padding / Σ (n_e + padding)`` (0 with no token)."""
    real, pad = tile_rows(counts, pad_to)
    total = int(real.sum() + pad.sum())
    return float(pad.sum() / total) if total else 0.0


@dataclass(frozen=True)
class LayerCost:
    """Bytes and FLOPs of one MoE layer's routed experts on one backend (see the module docstring).

    Attributes
    ----------
    backend : str
    weight_bytes : int
        Expert weights read (dense, or compressed with metadata and row indices).
    activation_bytes : int
        Hidden-state rows read and output rows written (gather, GEMM inputs, scatter / index_add).
    intermediate_bytes : int
        ``[n, I]`` intermediates written and read back (gate, up, silu, product).
    index_bytes : int
        Routing bookkeeping: mask scans (dense), the sort, token ids read by kernels.
    flops, executed_flops : float
        Useful dense-equivalent FLOPs; FLOPs the backend actually multiplies (padding included).
    launches : int
        Kernel launches of an idealised GPU implementation (dense: 8 per busy expert + 1 mask; grouped:
        5 per busy expert + 4; samoyeds: 1 sort + 3 grouped launches).
    padded_rows : int
        Token rows the backend computes (``Σ p_e`` for Samoyeds, ``Σ n_e`` otherwise).
    """

    backend: str
    weight_bytes: int
    activation_bytes: int
    intermediate_bytes: int
    index_bytes: int
    flops: float
    executed_flops: float
    launches: int
    padded_rows: int

    @property
    def bytes(self) -> int:
        return self.weight_bytes + self.activation_bytes + self.intermediate_bytes + self.index_bytes


def layer_costs(
    counts: object,
    d_model: int,
    d_ffn: int,
    *,
    backends: Sequence[str] = COST_BACKENDS,
    dtype: object = "float16",
    pad_to: int = 64,
    top_k: int | None = None,
) -> dict[str, LayerCost]:
    """:class:`LayerCost` of every backend for ``counts[e]`` tokens per expert (module docstring formulas).

    Parameters
    ----------
    counts : array_like of int, shape (E,)
        Tokens routed to each expert (``Σ counts = T·k``).
    d_model, d_ffn : int
        ``H`` and ``I`` (Samoyeds needs multiples of 128 and of 2; 2:4 metadata of ``H`` and ``I``).
    backends : sequence of str
        From :data:`COST_BACKENDS`.
    dtype : str
        ``"float16"``, ``"bfloat16"`` or ``"float32"``.
    pad_to : int
        Samoyeds token tile height.
    top_k : int, optional
        ``k`` (to size the dense path's mask scan ``[k, T]`` per expert); default 2.
    """
    c = _counts(counts)
    H = check_int("d_model", d_model, lo=1)
    I = check_int("d_ffn", d_ffn, lo=1)
    pad_to = check_int("pad_to", pad_to, lo=1)
    k = 2 if top_k is None else check_int("top_k", top_k, lo=1, hi=c.size)
    b = _dtype_bytes(dtype)
    for be in backends:
        if be not in COST_BACKENDS:
            raise ValueError(f"backends: expected names from {COST_BACKENDS}, got {be!r}")
    busy = c[c > 0]
    n = int(busy.sum())
    tokens = n // k
    p = int((-(-busy // pad_to) * pad_to).sum())
    useful = 2.0 * 3 * H * I * n
    # one pass of every per-token tensor of the dense SwiGLU pipeline (shared by dense and grouped)
    acts = b * (2 * n * H          # gather: read x rows, write the gathered copy
                + 2 * n * H        # gate and up GEMMs read the gathered rows
                + n * H            # down GEMM writes its output
                + 2 * n * H        # · w: read, write
                + 3 * n * H)       # index_add_: read the source, read + write the output rows
    # gate and up written (2), silu reads gate and writes (2), ⊙ reads both and writes h (3), down reads h (1)
    inter = b * n * I * (2 + 2 + 3 + 1)
    out: dict[str, LayerCost] = {}
    for be in backends:
        if be == "dense":
            out[be] = LayerCost(be, 3 * H * I * b * busy.size, acts, inter,
                                index_bytes=busy.size * k * tokens * 8 + 2 * n * 8, flops=useful,
                                executed_flops=useful, launches=8 * busy.size + 1, padded_rows=n)
        elif be == "grouped":
            out[be] = LayerCost(be, 3 * H * I * b * busy.size, acts, inter,
                                index_bytes=n * (8 + 4 + 4) + n * 4 * 2, flops=useful, executed_flops=useful,
                                launches=5 * busy.size + 4, padded_rows=n)
        else:
            w_gate_up, w_down = _samoyeds_weight_bytes(I, H, b), _samoyeds_weight_bytes(H, I, b)
            from .roofline import SAMOYEDS_PATTERN

            sn, sm, _ = SAMOYEDS_PATTERN
            density = sn / sm / 2
            out[be] = LayerCost(
                be, (2 * w_gate_up + w_down) * busy.size,
                activation_bytes=b * (2 * n * H        # up and gate gather the real rows of x themselves
                                      + 2 * n * H),    # scatter epilogue: read + write the output rows
                intermediate_bytes=b * (p * I          # up written (padded tile)
                                        + p * I        # gate's epilogue reads up
                                        + p * I        # … writes h
                                        + p * I),      # down reads h
                index_bytes=n * (8 + 4 + 4) + 4 * p * 3 + 4 * p,  # sort; token ids per launch; scales
                flops=useful, executed_flops=2.0 * 3 * H * I * density * p, launches=4, padded_rows=p)
    return out


# ---------------------------------------------------------------------------------------------- routing samples
def uniform_routing_counts(num_tokens: int, num_experts: int, top_k: int, *, seed: int = 0) -> np.ndarray:
    """Tokens per expert when every token picks ``top_k`` distinct experts uniformly at random (seeded)."""
    T = check_int("num_tokens", num_tokens, lo=0)
    E = check_int("num_experts", num_experts, lo=1)
    k = check_int("top_k", top_k, lo=1, hi=E)
    g = torch.Generator().manual_seed(check_int("seed", seed, lo=0))
    if T == 0:
        return np.zeros(E, np.int64)
    ids = torch.rand(T, E, generator=g).topk(k, dim=1).indices
    return torch.bincount(ids.reshape(-1), minlength=E).numpy().astype(np.int64)


def routing_counts(shape: object, batch_tokens: int, *, trace=None, layer: int = 0, batch_index: int = 0,
                   seed: int = 0) -> tuple[np.ndarray, str]:
    """Tokens per expert for one batch of ``batch_tokens`` tokens of a layer of ``shape``, and where they come from.

    When ``trace`` (a :class:`~samoyeds_lab.routing.RoutingTrace`) has the shape's ``E`` and ``k`` and enough
    tokens, the batch ``batch_index`` of its layer ``layer`` is used (real routing of the tiny model);
    otherwise uniform random routing (:func:`uniform_routing_counts`).

    Returns
    -------
    (counts, source) : (np.ndarray int64 [E], str)
    """
    s = _shape(shape)
    B = check_int("batch_tokens", batch_tokens, lo=1)
    bi = check_int("batch_index", batch_index, lo=0)
    if (trace is not None and trace.num_experts == s.num_experts and trace.top_k == s.top_k
            and (bi + 1) * B <= trace.num_tokens):
        layer = check_int("layer", layer, lo=0, hi=trace.num_layers - 1)
        ids = trace.topk_ids[layer, bi * B: (bi + 1) * B]
        counts = torch.bincount(ids.reshape(-1).long(), minlength=s.num_experts).numpy().astype(np.int64)
        return counts, f"tiny-model routing (layer {layer}, tokens {bi * B}–{(bi + 1) * B - 1})"
    return (uniform_routing_counts(B, s.num_experts, s.top_k, seed=seed + bi),
            f"uniform random routing ({s.num_experts} experts, top-{s.top_k}, seed {seed + bi})")


# ---------------------------------------------------------------------------------------------- layer time
@functools.lru_cache(maxsize=65536)
def _ceiling(op: str, m: int, k: int, n: int, profile: str, dtype: str) -> tuple[float, str]:
    from .roofline import roofline

    pt = roofline(op, m, k, n, profile, dtype)
    return pt.time_s, pt.bound


@dataclass(frozen=True)
class LayerTime:
    """Modelled time of one MoE layer (roofline ceilings on a GPU profile; a model, not a measurement).

    Attributes
    ----------
    op, profile, shape : str
    counts : np.ndarray
        int64 ``[E]`` tokens per expert used.
    per_expert_s : np.ndarray
        float64 ``[E]`` ``2·R(I, H, n_e) + R(H, I, n_e)`` (0 for idle experts).
    memory_bound : np.ndarray
        bool ``[E]`` whether the expert's gate/up product is memory-bound.
    shared_s : float
        The shared expert on all tokens (0 if none).
    padded : bool
        Whether the token counts were padded up to the tile.
    """

    op: str
    profile: str
    shape: str
    counts: np.ndarray
    per_expert_s: np.ndarray
    memory_bound: np.ndarray
    shared_s: float
    padded: bool

    @property
    def total_s(self) -> float:
        return float(self.per_expert_s.sum() + self.shared_s)

    @property
    def total_us(self) -> float:
        return self.total_s * 1e6


def layer_time(counts: object, shape: object, op: str = "dense", profile: str = "h100_sxm", *,
               dtype: str = "float16", num_tokens: int | None = None, padded: bool = False,
               pad_to: int = 64) -> LayerTime:
    """Modelled time of one layer of ``shape`` with ``counts[e]`` tokens per expert (module docstring formula).

    Parameters
    ----------
    counts : array_like of int, shape (E,)
    shape : str or MoEShape
        A key of :data:`MOE_SHAPES`.
    op : str
        ``"dense"``, ``"spmm"`` (2:4) or ``"ssmm"`` (Samoyeds).
    profile : str
        GPU profile of ``data/hardware`` (``"h100_sxm"``, ``"h200"``, ``"a100_sxm"``…).
    num_tokens : int, optional
        Tokens of the batch, for the shared expert (default ``Σ counts / k``).
    padded : bool
        Charge ``pad_to·⌈n_e/pad_to⌉`` tokens per busy expert (only meaningful for ``"ssmm"``).
    """
    s = _shape(shape)
    c = _counts(counts)
    if c.size != s.num_experts:
        raise ValueError(f"counts: expected {s.num_experts} entries (experts of {s.name}), got {c.size}")
    if op not in TIME_OPS:
        raise ValueError(f"op: expected one of {TIME_OPS}, got {op!r}")
    if not isinstance(profile, str):
        raise TypeError(f"profile: expected a GPU profile name such as 'h100_sxm', got {type(profile).__name__}")
    if not isinstance(padded, bool):
        raise TypeError(f"padded: expected a bool, got {type(padded).__name__}")
    pad_to = check_int("pad_to", pad_to, lo=1)
    T = int(c.sum()) // s.top_k if num_tokens is None else check_int("num_tokens", num_tokens, lo=0)
    n_eff = -(-c // pad_to) * pad_to if padded else c
    per = np.zeros(c.size)
    mem = np.zeros(c.size, bool)
    for e, n in enumerate(n_eff.tolist()):
        if n == 0:
            continue
        t_gu, bound = _ceiling(op, s.d_ffn, s.d_model, n, profile, dtype)
        t_d, _ = _ceiling(op, s.d_model, s.d_ffn, n, profile, dtype)
        per[e] = 2 * t_gu + t_d
        mem[e] = bound == "memory"
    shared = 0.0
    if s.shared_ffn and T:
        t_gu, _ = _ceiling(op, s.shared_ffn, s.d_model, T, profile, dtype)
        t_d, _ = _ceiling(op, s.d_model, s.shared_ffn, T, profile, dtype)
        shared = 2 * t_gu + t_d
    return LayerTime(op=op, profile=profile, shape=s.name, counts=c, per_expert_s=per, memory_bound=mem,
                     shared_s=shared, padded=padded)


def layer_time_sweep(shape: object, batch_tokens: Iterable[int], profile: str = "h100_sxm", *,
                     ops: Sequence[str] = TIME_OPS, trace=None, layer: int = 0, seed: int = 0,
                     dtype: str = "float16") -> dict:
    """:func:`layer_time` of every op for one batch of each size in ``batch_tokens``.

    Returns
    -------
    dict
        ``{"batch_tokens": [...], "sources": [...], "counts": [np.ndarray…], op: [LayerTime…] for op in ops}``.
    """
    s = _shape(shape)
    batches = [check_int("batch_tokens", b, lo=1) for b in batch_tokens]
    if not batches:
        raise ValueError("batch_tokens: expected at least one batch size, got an empty sequence")
    out: dict = {"shape": s.name, "profile": profile, "batch_tokens": batches, "sources": [], "counts": []}
    for op in ops:
        if op not in TIME_OPS:
            raise ValueError(f"ops: expected names from {TIME_OPS}, got {op!r}")
        out[op] = []
    for B in batches:
        c, src = routing_counts(s, B, trace=trace, layer=layer, seed=seed)
        out["sources"].append(src)
        out["counts"].append(c)
        for op in ops:
            out[op].append(layer_time(c, s, op, profile, dtype=dtype, num_tokens=B))
    return out


#: Kernel-record ops (:mod:`samoyeds_lab.bench.kernels`) standing for the ops of :func:`layer_time`.
_RECORD_OP = {"dense": "dense_mm", "spmm": "spmm_24", "ssmm": "ssmm"}


def recorded_layer_time(records: Sequence[Mapping], counts: object, shape: object, op: str,
                        dtype: str = "float16") -> float | None:
    """A layer's expert time from *recorded* GPU kernel runs: ``Σ_e [2·ms(I, H, n_e) + ms(H, I, n_e)]`` in seconds.

    Looks up, for every busy expert, the record of ``op`` (``dense`` → ``dense_mm``, ``spmm`` → ``spmm_24``,
    ``ssmm``) with the same ``m``, ``k``, ``tokens`` and ``dtype`` (the median ``ms`` when a device recorded
    several). Returns None when any needed record is missing (nothing is interpolated or invented).
    """
    if op not in _RECORD_OP:
        raise ValueError(f"op: expected one of {tuple(_RECORD_OP)}, got {op!r}")
    s = _shape(shape)
    c = _counts(counts)
    if not isinstance(records, (list, tuple)):
        raise TypeError(f"records: expected a list of kernel bench records, got {type(records).__name__}")
    table: dict[tuple[int, int, int], list[float]] = {}
    for r in records:
        if r.get("op") == _RECORD_OP[op] and r.get("dtype") == dtype:
            table.setdefault((int(r["m"]), int(r["k"]), int(r["tokens"])), []).append(float(r["ms"]))
    total = 0.0
    for n in c[c > 0].tolist():
        gu, d = table.get((s.d_ffn, s.d_model, n)), table.get((s.d_model, s.d_ffn, n))
        if not gu or not d:
            return None
        total += 2 * float(np.median(gu)) + float(np.median(d))
    return total * 1e-3


@torch.no_grad()
def samoyeds_grouped_forward(block: MoEBlock, x: torch.Tensor, *, pad_to: int | None = None,
                             backend: str = "auto") -> torch.Tensor:
    """The routed part of ``block(x)`` with three grouped launches over all experts (``ssmm_grouped``).

    ``up = ssmm_grouped(Up, x, sel)``; ``h = ssmm_grouped(Gate, x, sel, epilogue="silu_mul", up=up)``;
    ``ssmm_grouped(Down, h, sel, gather=False, epilogue="scatter_add", out=y, routing_weights=w)``.
    Equals :attr:`BlockAnatomy.routed` up to rounding. Needs a sparsified block.
    """
    from .. import kernels

    block = _check_block(block)
    flat = _check_x(block, x)
    pad_to = block.pad_to if pad_to is None else check_int("pad_to", pad_to, lo=1)
    ex = block.experts
    if ex.compressed is None:
        raise ValueError("block: expected a sparsified block (call block.sparsify(...) first), it has no "
                         "compressed expert weights")
    ex._check_compressed()
    r = block.router(flat)
    sel = TokenSelection.from_topk(r.topk_ids, block.num_experts, pad_to=pad_to)
    up = kernels.ssmm_grouped(ex.compressed["up"], flat, sel, backend=backend)
    h = kernels.ssmm_grouped(ex.compressed["gate"], flat, sel, epilogue="silu_mul", up=up, backend=backend)
    out = torch.zeros_like(flat)
    return kernels.ssmm_grouped(ex.compressed["down"], h, sel, gather=False, epilogue="scatter_add", out=out,
                                routing_weights=r.topk_weights, backend=backend)
