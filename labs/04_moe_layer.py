# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %%
# Lab 04 — the MoE layer on sparse kernels. What can this machine run?
import samoyeds_lab as sl

print(sl.device_info().banner())

# %% [markdown]
# # Lab 04 — The MoE layer on sparse kernels
#
# **Goal.** Lab 02 multiplied *one* compressed weight by a list of tokens. A Mixture-of-Experts layer runs
# that product for every expert, on the tokens its router sent there, three times per expert (gate, up,
# down), and glues the results back together. This lab takes one MoE block of the shipped tiny model
# apart, step by step, with exactly the calls the Samoyeds backend is made of; compares the three ways
# `MoEBlock` can run it; counts what each way moves and computes; and asks what the 64-token tile of the
# SSMM kernel and the batch size mean for the time of a real model's layer.
#
# **Plan.** (1) one block, step by step: router → top-k → token lists → gate/up with the fused SiLU
# epilogue → down with the scatter-add epilogue, checked against all three backends · (2) the three
# backends: what each reads and computes, bytes and FLOPs, measured CPU time of the tiny block, and one
# Mixtral-size expert timed on this CPU with a tokens-per-expert slider · (3) tokens per expert and tile
# padding, decode vs prefill · (4) the modelled time of a whole layer at Mixtral and Qwen2-MoE shapes on a
# GPU profile, and where recorded GPU results would go · (5) an interactive panel.
#
# **Honest labels.** Every *time* below is either **measured on this CPU** (labelled with the CPU, the
# date and the threads; the Samoyeds path runs this project's CPU kernels, which compute from the
# compressed operand — not Sparse Tensor Cores) or a **model** (roofline ceilings from datasheet peaks,
# `samoyeds_lab.bench.roofline`). No GPU number is shown that was not recorded on a GPU.

# %%
from pathlib import Path

import os

import numpy as np
import torch
import torch.nn.functional as F

from samoyeds_lab.bench.cpu import make_weights, read_bandwidth
from samoyeds_lab.bench.end_to_end import gpu_section
from samoyeds_lab.bench.kernels import MODEL_SHAPES, load_kernel_records
from samoyeds_lab.formats import SENTINEL
from samoyeds_lab.bench.fusion import FUSION_LABELS, dual_side_savings, fusion_costs
from samoyeds_lab.bench.roofline import DEFAULT_TOKENS, op_bytes, roofline, roofline_sweep
from samoyeds_lab.exercises.moe_layer import check_expert_gather, check_moe_combine
from samoyeds_lab.kernels import cpu as cpu_kernels
from samoyeds_lab.kernels import ssmm
from samoyeds_lab.moe import TinyMoEForCausalLM
from samoyeds_lab.reference.stepper import gather_plan
from samoyeds_lab.bench.moe_layer import (
    MOE_SHAPES,
    TIME_OPS,
    backend_outputs,
    capture_block_input,
    decompose_block,
    layer_costs,
    layer_time,
    layer_time_sweep,
    padded_fraction,
    recorded_layer_time,
    routing_counts,
    samoyeds_grouped_forward,
    time_cpu,
    uniform_routing_counts,
)
from samoyeds_lab.routing import tokens_per_expert
from samoyeds_lab.routing.ship import load_shipped_trace
from samoyeds_lab.viz.moe_layer import (
    OP_LABELS,
    backend_costs_figure,
    cpu_time_figure,
    dispatch_figure,
    layer_time_figure,
    padding_by_model_figure,
    tile_rows_figure,
)
from samoyeds_lab.viz.kernel_steps import fusion_bytes_figure, gather_table
from samoyeds_lab.viz.kernel_panel import CpuExpertPanel, cpu_expert_records, cpu_kernel_reason, crossover_tokens
from samoyeds_lab.viz.kernels import cpu_expert_figure, cpu_label
from samoyeds_lab.viz.moe_layer_panel import MoELayerPanel
from samoyeds_lab.viz.routing import byte_labels

# False: time 256 tokens (one window) with 5 repeats, padding curves from 16 batches per size, the
# Mixtral-size expert at 1, 4 and 32 tokens per expert (3 timed calls each).
# True: time 2048 tokens (8 windows) with 10 repeats, padding curves from every batch of the trace,
# the Mixtral-size expert at every slider count 1 ... 256 with 5 timed calls (about two minutes on 2 CPU cores).
FULL_SIZE = False
TIME_TOKENS, REPEAT = (2048, 10) if FULL_SIZE else (256, 5)
MAX_BATCHES = None if FULL_SIZE else 16
EXPERT_TOKENS = (1, 2, 4, 8, 16, 32, 64, 128, 256) if FULL_SIZE else (1, 4, 32)
EXPERT_REPEAT = 5 if FULL_SIZE else 3
MACHINE = f"{os.cpu_count()}-core CPU"

torch.manual_seed(0)
np.random.seed(0)
torch.set_printoptions(precision=4, sci_mode=False, linewidth=110)
MODEL_DIR = Path(sl.__file__).resolve().parents[1] / "data" / "tiny_moe"
model = TinyMoEForCausalLM.from_pretrained(MODEL_DIR).eval()
cfg = model.config
H, I, E, K = cfg.hidden, cfg.intermediate, cfg.num_experts, cfg.top_k
print(f"tiny MoE: {cfg.layers} MoE layers, E = {E} experts, top-{K}, hidden H = {H}, expert width I = {I}")

# %% [markdown]
# ## 1. One MoE block, step by step
#
# A short piece of real text: the first 50 bytes of the held-out English text the routing traces were
# recorded on (Lab 03). We run the (still dense) model on it once and catch the hidden states `x` entering
# MoE block 1 — and, for the timings of section 2, the input of the same block for `TIME_TOKENS` tokens.

# %%
LAYER = 1
block = model.moe_blocks()[LAYER][1]
trace_en = load_shipped_trace("en")
ids = trace_en.token_ids[:50]
text = bytes(ids.tolist()).decode("utf-8", "replace")
labels = byte_labels(ids)
print(repr(text))
x = capture_block_input(model, ids, LAYER)  # [T, H], a forward pre-hook on the block
xs = capture_block_input(model, trace_en.token_ids[:TIME_TOKENS].view(-1, cfg.max_seq), LAYER)
T = x.shape[0]
print(f"x: {tuple(x.shape)} {x.dtype} — {T} tokens × H = {H}")
print("the router decides as in the shipped trace of this text:",
      bool(torch.equal(block.router(x).topk_ids, trace_en.topk_ids[LAYER, :T])))

# %% [markdown]
# The Samoyeds format keeps 1 of every 2 rows in each 128-wide window of K, and 2:4 inside the kept rows:
# 25% of the weights (Lab 01). `model.sparsify("samoyeds")` prunes every expert's gate, up and down weight
# by magnitude, keeps the compressed operands, and writes the pruned values back into the dense
# parameters — so the `dense`, `grouped` and `samoyeds` backends all compute with **the same pruned
# weights** and must agree to rounding. (What pruning costs in accuracy, and Wanda's fix, is Lab 05.)

# %%
model.sparsify("samoyeds")
op = block.experts.compressed["gate"][0]
dense_bytes = 3 * E * H * I * 4
print(f"layer {LAYER}: {E} experts × (gate, up, down) compressed: {type(op).__name__} n={op.n} of m={op.m} rows per "
      f"V={op.vector} window, 2:4 inside; {block.experts.compressed_nbytes / 1e3:.0f} kB vs {dense_bytes / 1e3:.0f} kB "
      f"dense fp32 ({block.experts.compressed_nbytes / dense_bytes:.1%})")

# %% [markdown]
# **Steps 1–2: router.** `z = x W_gᵀ` (one linear layer, `[T, E]`), `p = softmax(z)`, keep the top `k = 2`
# and renormalise their weights (Mixtral style). The whole decomposition is
# `samoyeds_lab.bench.moe_layer.decompose_block`; its intermediates are printed below.

# %%
a = decompose_block(block, x)
print("token  logits z (e0 … e7)                                      → top-2 (weight)")
for t in range(6):
    z = " ".join(f"{v:+5.2f}" for v in a.logits[t].tolist())
    pick = ", ".join(f"e{int(e)} ({float(w):.2f})" for e, w in zip(a.topk_ids[t], a.topk_weights[t]))
    print(f"{labels[t]!r:6s} {z}  → {pick}")

# %% [markdown]
# **Step 3: token lists.** `TokenSelection.from_topk(ids, E, pad_to=64)` sorts the `T·k` (token, expert)
# pairs by expert once. Expert `e` owns a contiguous segment of token ids; each segment is padded up to a
# multiple of the kernel's 64-token tile with `SENTINEL = -1`, a row id that names no token (the published
# code padded with token 0, whose output a scatter epilogue would then corrupt). Blue cells are the tokens
# each expert will gather, red cells the padding rows its tile computes anyway.
#
# *Predict first:* these 50 tokens bring `50 × 2 = 100` (token, expert) pairs, about 12 per expert. If every
# one of the 8 experts gets at least one token (and none more than 64), how many padding rows do the tiles
# hold in total, and how many per real row? The last printed line and the red cells answer it.

# %%
sel = a.selection
print(f"tokens per expert   {sel.counts.tolist()}   (sum = T·k = {int(sel.counts.sum())})")
print(f"offsets             {sel.offsets.tolist()}")
print(f"padded offsets      {sel.padded_offsets.tolist()}   (multiples of {sel.pad_to})")
print(f"expert 0's tokens   {sel.tokens_of(0).tolist()}")
print(f"tile padding: {sel.padding_overhead:.1f} padding rows per real row")
dispatch_figure(sel, labels).show()

# %% [markdown]
# ### Exercise 1 — one expert's gather list
#
# This list is all an expert's SSMM kernel needs to know about routing. Write
# `my_expert_gather(topk_ids, expert, pad_to)` returning `(tokens, slots)` for one expert: `tokens` are the
# ids `t` of the tokens routed to it (in any of their `k` columns), ascending, and `slots` the matching flat
# positions `t·k + j` in `topk_ids` (`topk_ids[t, j] == expert`: they index the routing weights); both
# padded with `SENTINEL = -1` up to a multiple of `pad_to` — an expert with `n` tokens gets
# `pad_to·⌈n/pad_to⌉` entries, one with no token none at all. `check_expert_gather` compares yours with
# `TokenSelection.from_topk` for every expert of the small example in its docstring and of random
# routings (1–16 experts, tiles of 1 to 64).

# %%
def my_expert_gather(topk_ids: torch.Tensor, expert: int, pad_to: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(tokens, slots) of one expert, ascending, each padded with SENTINEL to a multiple of pad_to."""
    # TODO: slots = (topk_ids.reshape(-1) == expert).nonzero().flatten(); tokens = slots // k;
    #       append (-n) % pad_to copies of SENTINEL to both
    raise NotImplementedError


check_expert_gather(my_expert_gather);

# %% [markdown]
# Stuck? The solution is `samoyeds_lab.exercises.moe_layer.solution_expert_gather` (read it after trying).
# With it, `my_expert_gather(a.topk_ids, e, 64)[0]` is `sel.padded_tokens_of(e)`, the `P_e` of the next
# cells.

# %% [markdown]
# **Steps 4–6: per expert, three sparse products with fused epilogues** (the kernels' calls,
# `samoyeds_lab.kernels.ssmm`; on a CPU they run this project's CPU kernels on the compressed operand
# — the banner's "CPU path" line says which — and on an SM80+ GPU the CUDA SSMM kernel). With `P_e` the padded token list of expert `e`:
#
# ```
# u = ssmm(Up_e,   x, P_e)                                   gathers rows x[P_e] inside the kernel   [|P_e|, I]
# h = ssmm(Gate_e, x, P_e, epilogue="silu_mul", up=u)        silu(x·W_gateᵀ) ⊙ u, no separate pass   [|P_e|, I]
# ssmm(Down_e, h, None, epilogue="scatter_add", out=y,       y[t] += w_{t,j} · (h·W_downᵀ)[row]      in place
#      scatter_idx=P_e, scale=w[P_e])
# ```
#
# The `MoEBlock` `"samoyeds"` backend makes the same three `ssmm` calls but applies SiLU·up and the
# weighted scatter as separate torch ops; here they run as the kernels' epilogues. Below, the busiest
# expert done by hand:

# %%
busiest = max(a.steps, key=lambda s: s.num_tokens)
e = busiest.expert
ptok = sel.padded_tokens_of(e)
real = ptok != SENTINEL
ex = block.experts.compressed
u = ssmm(ex["up"][e], x, ptok)
h = ssmm(ex["gate"][e], x, ptok, epilogue="silu_mul", up=u)
print(f"expert {e}: {busiest.num_tokens} tokens → P_e has {ptok.numel()} rows ({int((~real).sum())} SENTINEL)")
print(f"  u = ssmm(Up_e, x, P_e): {tuple(u.shape)};  h = silu(gate) ⊙ u: {tuple(h.shape)};  "
      f"padding rows of h are zero: {bool((h[~real] == 0).all())}")
scale = torch.zeros(ptok.numel())
pslot = sel.padded_slot_ids[sel.padded_offsets[e]: sel.padded_offsets[e + 1]]  # flat (token·k + j) or SENTINEL
scale[real] = a.topk_weights.reshape(-1)[pslot[real].long()]  # routing weight per real row
y_e = torch.zeros_like(x)
ssmm(ex["down"][e], h, None, epilogue="scatter_add", out=y_e, scatter_idx=ptok, scale=scale)
print(f"  scatter_add touched {int((y_e.abs().sum(1) > 0).sum())} output rows (its {busiest.num_tokens} tokens); "
      f"max |by hand − decompose_block| = {(y_e[busiest.token_ids] - busiest.contribution).abs().max():.2e}")
# the definition, for one token: y_t = Σ_j w_tj · Expert_j(x_t) on the pruned dense weights
t0 = int(busiest.token_ids[0])
y_def = sum(float(w) * block.experts.expert_forward(int(j), x[t0:t0 + 1])[0]
            for j, w in zip(a.topk_ids[t0], a.topk_weights[t0]))
print(f"token {t0} ({labels[t0]!r}): y_t from the definition Σ_j w_tj·Expert_j(x_t) vs decomposition: "
      f"max |diff| = {(y_def - a.output[t0]).abs().max():.2e}")

# %% [markdown]
# **The check.** The step-by-step output must equal `MoEBlock.forward` with every backend on the same
# pruned weights — and the same three products launched once for *all* experts (`ssmm_grouped`, one launch
# per projection: what a GPU implementation does to avoid 3·E small launches):

# %%
outs = backend_outputs(block, x)
for name, y in outs.items():
    print(f"MoEBlock.forward, backend {name!r:11s}: max |diff| vs step by step = {(y - a.output).abs().max():.2e}")
g = samoyeds_grouped_forward(block, x)
print(f"ssmm_grouped, 3 launches for all experts:      max |diff| vs step by step = {(g - a.routed).abs().max():.2e}")
print(f"(output scale: max |y| = {a.output.abs().max():.3f}; fp32 throughout)")

# %% [markdown]
# Differences of order 1e-7 are fp32 rounding from summing in another order; an exact 0 means the same
# operations in the same order.

# %% [markdown]
# ### The fused gather: token ids are the B row addresses
#
# `ssmm(W, x, P_e)` never builds `x[P_e]`. Each B-tile load of the kernel (64 token slots × 32 columns per
# k-step) takes slot `n`'s row straight from `x[P_e[n]]`: the token id *is* the load address, and a
# `SENTINEL` slot loads nothing (its shared-memory row is zero-filled). The usual alternative is two
# passes: a gather kernel first writes the permuted copy `xg = x[P_e]` to memory, then a plain (2:4) GEMM
# reads `xg` back row by row. `samoyeds_lab.reference.stepper.gather_plan` lists both, load by load, for
# the busiest expert above, and builds the B operand each way from `x`.

# %%
plan = gather_plan(sel, T, H, expert=e, element_bytes=x.element_size())
gather_table(plan, listed=min(busiest.num_tokens + 2, plan.token_ids.numel())).show()
xg, b_separate = plan.separate_b(x)
b_fused = plan.fused_b(x)
print(f"expert {e}: {len(plan.loads)} B-tile loads ({plan.token_ids.numel() // 64} tile × {H // 32} k-steps); "
      f"fused B == separate B == x[P_e] with zero SENTINEL rows: {torch.equal(b_fused, b_separate)}")
print("activation-side bytes, fused:   ", plan.fused_bytes)
print("activation-side bytes, separate:", plan.separate_bytes, "(the copy xg written, then read back)")

# %% [markdown]
# ### Dual-side, in bytes: the fused SSMM vs a gather pass + 2:4 GEMM
#
# At a real size (Mixtral-8x7B `w1`, 14336 × 4096, fp16) the roofline model (`samoyeds_lab.bench.fusion`,
# built on `bench.roofline`) charges four ways of computing one expert's product on its routed tokens:
# a gather pass then a dense, a 2:4 (weights-only sparsity) or a Samoyeds GEMM, and the fused Samoyeds
# SSMM. The *weight side* of dual-side sparsity is the smaller operand; the *activation side* is the copy
# `xg` that is never written nor read back. Times are roofline ceilings, two kernels one after the other
# for a separate path (launch latency not modelled, which favours the separate paths).
#
# *Predict first:* at 1 token per expert, which side saves more bytes? At 4096?

# %%
FUSION_TOKENS = (1, 64, 512, 4096)
fc = {t: fusion_costs(14336, 4096, t, "h100_sxm") for t in FUSION_TOKENS}
prof_name = fc[1]["samoyeds fused"].profile
print(f"Mixtral-8x7B w1, fp16 — modelled ({prof_name}), not a measurement")
print(f"{'tokens':>6} {'path':>46} {'weight MB':>10} {'x MB':>7} {'copy MB':>8} {'total MB':>9} {'time µs':>9}")
for t, c in fc.items():
    for path, pc in c.items():
        print(f"{t:6d} {FUSION_LABELS[path]:>46} {pc.weight_bytes / 1e6:10.1f} {pc.x_bytes / 1e6:7.2f} "
              f"{pc.copy_bytes / 1e6:8.2f} {pc.bytes / 1e6:9.1f} {pc.time_us:9.1f}")
    d = dual_side_savings(c)
    print(f"{'':6} dual-side saving vs gather + 2:4: weight side {d['weight_side'] / 1e6:.1f} MB + activation side "
          f"{d['activation_side'] / 1e6:.2f} MB = {d['total'] / 1e6:.1f} MB ({d['bytes_ratio']:.2f}× fewer bytes, "
          f"{d['time_ratio']:.2f}× the modelled speed, modelled ({prof_name}))")
fusion_bytes_figure(fc).show()

# %% [markdown]
# **Reading it.** At decode the activation side is a rounding error (one 8 kB row per token): the weight
# side is everything, 2:4 → Samoyeds halves the bytes again. With thousands of tokens per expert the copy
# `xg` (written, then read back) grows to tens of MB and the activation side overtakes the weight side in
# bytes — though by then the GEMM is compute-bound, so in time it is the fused kernel's half-rows that pay.
# (That the decode ratio over gather + 2:4 comes out near 1.99× is a coincidence of byte counts: the
# paper's measured 1.99× compares other things, see the end of section 4.)

# %% [markdown]
# ### Exercise 2 — the MoE combine in a few lines
#
# Strip away the kernels and the routed part of a block is: for every busy expert, gather the rows of its
# tokens, run the expert **once** on all of them, and add each output row, times its routing weight, into
# its token's row of `y`:
#
# $$y_t = \sum_{j=1}^{k} w_{t,j}\, \mathrm{Expert}_{\text{ids}_{t,j}}(x_t).$$
#
# Write `my_moe_combine(x, topk_ids, topk_weights, expert_fn)` returning `y [T, H]`; `expert_fn(e, rows)`
# runs expert `e` on `rows [n, H]` (here: `block.experts.expert_forward`). `check_moe_combine` compares yours
# with `SwiGLUExperts.forward(..., backend="dense")` on random experts of awkward sizes, and counts your
# calls: one per expert, as the kernels do (a call per token would read the expert's weights every time).

# %%
def my_moe_combine(x, topk_ids, topk_weights, expert_fn):
    """y [T, H] = Σ_j topk_weights[t, j] · expert_fn(topk_ids[t, j], x[t]), one expert_fn call per expert."""
    # TODO: y = torch.zeros_like(x); for each expert e in topk_ids.unique().tolist() (Python ints):
    #       tok, j = (topk_ids == e).nonzero(as_tuple=True)
    #       y.index_add_(0, tok, expert_fn(e, x[tok]) * topk_weights[tok, j, None])
    raise NotImplementedError


check_moe_combine(my_moe_combine);

# %% [markdown]
# Stuck? The solution is `samoyeds_lab.exercises.moe_layer.solution_moe_combine` (read it after trying).
# Solved, `my_moe_combine(x, a.topk_ids, a.topk_weights, block.experts.expert_forward)` equals `a.routed`
# above to fp32 rounding.
#
# ## 2. Three backends: what each reads and computes
#
# | backend | routing bookkeeping | weights read | activations | intermediates |
# |---|---|---|---|---|
# | `dense` — the Hugging Face loop | one-hot mask `[E, k, T]`; per expert `torch.where` over its `[k, T]` slice | dense `W_gate, W_up, W_down` of every busy expert | gather `x[tok]`, weighted `index_add_` per expert | `gate`, `up`, `silu`, `h` written and read back |
# | `grouped` — one sorted dispatch | one sort of `T·k` pairs (`TokenSelection`) | the same dense weights | one gather, one weighted scatter | the same |
# | `samoyeds` — SSMM | the same sort + token ids read by the kernel | **compressed**: values (25%) + 2:4 metadata + row indices ≈ 28% of dense fp16 | gathered **inside** the kernel; scatter-add **in the epilogue** | `up`, `h` only (SiLU·up fused), but on **64-row tiles** |
#
# `layer_costs` counts these bytes and FLOPs (module `samoyeds_lab.bench.moe_layer`; a model of the traffic with
# every tensor written once and read once per pass). First for the tiny block above (fp32, 50 tokens),
# then for a Mixtral-8x7B layer (fp16) with the tiny model's routing of 64 tokens:

# %%
def cost_table(costs):
    print(f"{'backend':10s} {'weights':>10s} {'activ.':>10s} {'interm.':>10s} {'index':>9s} {'total':>10s} "
          f"{'useful GFLOP':>13s} {'executed':>9s} {'launches':>9s} {'rows':>6s}")
    for b, c in costs.items():
        print(f"{b:10s} {c.weight_bytes / 1e6:9.3f}M {c.activation_bytes / 1e6:9.3f}M {c.intermediate_bytes / 1e6:9.3f}M "
              f"{c.index_bytes / 1e6:8.3f}M {c.bytes / 1e6:9.3f}M {c.flops / 1e9:13.4f} {c.executed_flops / 1e9:9.4f} "
              f"{c.launches:9d} {c.padded_rows:6d}")


print(f"tiny block (H={H}, I={I}, fp32), {T} tokens:")
cost_table(layer_costs(sel.counts, H, I, dtype="float32", top_k=K))
mix = MOE_SHAPES["Mixtral-8x7B"]
counts64, src64 = routing_counts(mix, 64, trace=trace_en, layer=LAYER)
costs_mix = layer_costs(counts64, mix.d_model, mix.d_ffn, dtype="float16", top_k=mix.top_k)
print(f"\nMixtral-8x7B layer (H={mix.d_model}, I={mix.d_ffn}, fp16), 64 tokens, {src64}: counts {counts64.tolist()}")
cost_table(costs_mix)
backend_costs_figure(costs_mix, title="Mixtral-8x7B layer, 64 tokens: bytes and FLOPs per backend (a model)").show()

# %% [markdown]
# **Reading it.** `dense` and `grouped` move the same bytes and do the same FLOPs; they differ in
# bookkeeping (`E` scans of the mask vs one sort) and in launches (8 per busy expert vs 5 + 4). Samoyeds
# reads ≈ 28% of the weight bytes — at 64 tokens the weights are most of the traffic, so the layer's bytes
# fall by about 3× — and does a quarter of the multiply-adds per row, but on **padded tiles**: with 64
# tokens spread over 8 experts, each expert's tile of 64 rows is mostly padding, so the *executed* FLOPs
# are not a quarter of the useful ones (here they are equal), and the padded `[64, I]` intermediates double
# the intermediate traffic. Both are small next to the weight bytes saved, and at decode sizes the bytes
# decide (section 4).
#
# **Measured on this CPU.** Now the real thing, on this machine: one block forward per backend on
# `TIME_TOKENS` tokens (held-out text), median of `REPEAT` runs, plus the step-by-step path with fused
# epilogues and the grouped launch. On a CPU the `samoyeds` backend runs the CPU kernels.

# %%
print(cpu_kernels.cpu_path().line())
times = {}
for name in ("dense", "grouped", "samoyeds"):
    block.backend = name
    times[name] = time_cpu(lambda: block(xs), repeat=REPEAT)
block.backend = "grouped"
t_fused = time_cpu(lambda: decompose_block(block, xs), repeat=REPEAT)
t_grouped_launch = time_cpu(lambda: samoyeds_grouped_forward(block, xs), repeat=REPEAT)
for name, t in times.items():
    print(f"{name:9s} {t * 1e3:7.2f} ms per block forward ({xs.shape[0]} tokens)  — measured, {MACHINE}")
print(f"step by step with fused epilogues: {t_fused * 1e3:7.2f} ms;  ssmm_grouped: {t_grouped_launch * 1e3:7.2f} ms")
counts_xs = torch.bincount(block.router(xs).topk_ids.reshape(-1), minlength=E)
n_avg = int(counts_xs.float().mean().round())
# one expert GEMM of this block, alone: the CPU kernel vs torch's dense F.linear on the same pruned weight
op_up, w_up = ex["up"][0], ex["up"][0].to_dense()
calls = {}
for n in (1, n_avg):
    xn = xs[:n]
    calls[n] = (time_cpu(lambda: cpu_kernels.kernel_gemm(op_up, xn), repeat=20),
                time_cpu(lambda: F.linear(xn, w_up), repeat=20))
    print(f"one {I}×{H} fp32 expert GEMM, {n:3d} tokens: CPU kernel {calls[n][0] * 1e6:6.1f} µs, "
          f"torch dense {calls[n][1] * 1e6:6.1f} µs  — measured, {MACHINE}")
print(f"tokens per expert in this forward: {counts_xs.tolist()} (mean {n_avg}); "
      f"{3 * int((counts_xs > 0).sum())} expert GEMMs per block forward; one expert weight is "
      f"{I * H * 4 / 1e3:.0f} kB fp32 dense, {op_up.nbytes / 1e3:.0f} kB compressed")
cpu_time_figure(times, tokens=xs.shape[0], machine=MACHINE,
                samoyeds_path=f"CPU kernels ({cpu_kernels.cpu_path().isa})").show()

# %% [markdown]
# **Why the sparse backend is not faster on this tiny block.** Read the numbers above. The tiny model's
# experts are 256 × 128 in fp32: one weight is 128 kB dense — it sits in the CPU's cache, so there are
# almost no memory bytes to save — and one GEMM is a few microseconds of work, about as long as the
# fixed cost of a call (gathering the tokens, preparing the output, crossing into C; `3·E` calls per
# forward). With 256 tokens and top-2, each expert also gets about 64 tokens: on the AVX-512 path, about
# where the sparse kernels stop winning even at a real size (next cell), because dense GEMM reuses every
# loaded token across all rows while a sparse row's gathered tokens serve that row only (the AVX2 path,
# against a torch without fast bf16, keeps winning at a real size; Lab 02). `grouped` beats `dense`
# on the CPU for the reason it would on a GPU: one sort instead of `E` mask scans, fewer small ops.
#
# ### The same kernels at a real expert's size
#
# The speed-up lives where the weight bytes dominate: big experts, few tokens each. Below, one
# Mixtral-8x7B expert matrix (`w1`, 14336 × 4096, bf16) is pruned to 2:4 and Samoyeds once and timed on
# **this CPU** against torch's fastest dense dtype on the same tokens (cache flushed before every call,
# `samoyeds_lab.bench.cpu.bench_expert`), next to its byte ceiling on this CPU (bytes / the read bandwidth
# `torch.sum` reaches now: a model, approximate — a well-prefetching kernel can beat it slightly) and the
# H100 roofline ceiling of section 4 (a model). Tokens per expert relate
# to the batch as `T·k/E`: a decode batch of 16 sequences gives a Mixtral expert about 4 tokens.

# %%
why_not = cpu_kernel_reason()
MIX_EXPERT = (mix.d_ffn, mix.d_model)  # w1: d_ffn x d_model
if why_not is None:
    W = make_weights(*MIX_EXPERT, dtype=torch.bfloat16)
    BW = read_bandwidth(1 << 28, repeat=3)
    mix_recs = cpu_expert_records(*MIX_EXPERT, EXPERT_TOKENS, weights=W, repeat=EXPERT_REPEAT, bandwidth=BW)
    print(f"{cpu_label(mix_recs[0])}; read bandwidth {BW:.1f} GB/s (measured now)")
    for r in (r for r in mix_recs if r["kind"] in ("samoyeds", "2:4")):
        print(f"{r['kind']:>8s} kernel, {r['tokens']:3d} tokens/expert: {r['ms']:7.2f} ms vs dense {r['dense_ms']:7.2f} ms "
              f"({r['dense_dtype']}) = {r['speedup']:.2f}×; byte ceiling {r['ceiling_ms']:.2f} ms (model)")
    gpu = roofline_sweep(*MIX_EXPERT, [t for t in DEFAULT_TOKENS if 0 < t <= 4096], "h100_sxm", "bfloat16")
    cpu_expert_figure(mix_recs, gpu_sweep=gpu, title="Mixtral-8x7B w1 (14336×4096, bf16), one expert, on this CPU").show()
    x_tok = crossover_tokens([r for r in mix_recs if r["kind"] == "samoyeds"])
    print("Samoyeds kernel vs dense: " + (f"no faster from {x_tok} tokens per expert upwards (measured)" if x_tok is not None
                                          else "faster at every measured token count"))
else:
    print(f"No CPU kernel can run here ({why_not}): nothing to time on this CPU.")

# %% [markdown]
# Move the slider: each move re-measures that token count on this CPU and adds it to the curves. Where the
# Samoyeds curve crosses 1×, the gathered-token cost has overtaken the byte saving; a GPU's `mma.sp` pays no
# such cost, so its ceiling (dotted) stays high to hundreds of tokens.

# %%
expert_panel = CpuExpertPanel(*MIX_EXPERT, weights=W, records=mix_recs, bandwidth=BW, repeat=EXPERT_REPEAT,
                              value=4) if why_not is None else None
expert_panel

# %% [markdown]
# ## 3. Tokens per expert and the 64-token tile
#
# The SSMM kernel processes an expert's tokens 64 at a time. If an expert gets `n` tokens, its tile count
# is `⌈n/64⌉` and `64·⌈n/64⌉ − n` rows are padding. How many an expert gets depends on the batch: `T`
# tokens bring `T·k` (token, expert) pairs, about `T·k/E` per expert. Below, one batch of the tiny
# model's routing (layer 1, held-out English) at decode and prefill sizes:

# %%
for B in (1, 16, 64, 4096):
    c, src = routing_counts(mix, B, trace=trace_en, layer=LAYER)
    tile_rows_figure(c, title=f"{B} token(s) × top-{K}: {padded_fraction(c):.0%} of tile rows are padding"
                              f"<br><sup>{src}</sup>").show()

# %% [markdown]
# The padding share depends only on `E`, `k`, the batch and the routing — not on `d_model` or `d_ffn`.
# Real models have more experts (Qwen2-MoE: 64, top-8; DeepSeek-MoE: 64, top-6; OpenMoE: 32, top-2), so
# each expert sees fewer tokens and needs a bigger batch to fill a tile. No routing trace of those models
# ships with the lab, so they get **uniform random routing** (a stated assumption: real routers are
# skewed, which fills hot experts' tiles sooner and leaves cold ones emptier):

# %%
batch_sizes = [2 ** i for i in range(13)]  # 1 … 4096
fractions = {}
tr_counts = {B: tokens_per_expert(trace_en, B).counts[LAYER] for B in batch_sizes}
fractions["tiny model routing (8 experts, top-2)"] = [
    float(np.mean([padded_fraction(c) for c in tr_counts[B][:MAX_BATCHES]])) for B in batch_sizes]
n_seeds = 64 if FULL_SIZE else 8
for name in ("Mixtral-8x7B", "OpenMoE-8B", "DeepSeek-MoE-16B", "Qwen2-MoE-57B-A14B"):
    s = MOE_SHAPES[name]
    fractions[f"{name} ({s.num_experts} experts, top-{s.top_k}, uniform)"] = [
        float(np.mean([padded_fraction(uniform_routing_counts(B, s.num_experts, s.top_k, seed=i))
                       for i in range(n_seeds)])) for B in batch_sizes]
padding_by_model_figure(batch_sizes, fractions).show()
print(f"{'tokens':>7s} " + "  ".join(f"{k.split(' (')[0][:18]:>18s}" for k in fractions))
for i, B in enumerate(batch_sizes):
    if B in (1, 8, 64, 512, 4096):
        print(f"{B:7d} " + "  ".join(f"{v[i]:18.1%}" for v in fractions.values()))

# %% [markdown]
# **Decode vs prefill.** At decode (1–64 tokens per step) almost every tile row is padding — 63 of 64 at
# one token, still 75–94% of the rows at 64 tokens. Does it matter? At decode the layer is
# **memory-bound**: the time goes into reading the weights, and a tile of 64 rows costs the same bytes as a
# tile of 1 row (the kernel gathers only the real rows and reads the weight once per tile), so padding is
# almost free — *the weight bytes are what Samoyeds saves*. At prefill (thousands of tokens) every busy
# expert has hundreds of tokens, padding falls to a few percent (at most 63 rows per expert), and the
# layer is **compute-bound**: here the half-rows × 2:4 work pays. Section 4 puts numbers on both.

# %% [markdown]
# ## 4. Modelled layer time on a GPU profile
#
# A **model**, not a measurement: for each busy expert `e` with its real `n_e` tokens, the roofline
# ceiling (`samoyeds_lab.bench.roofline.roofline`) of its gate, up and down products, summed:
#
# $$T_{op} = \sum_{e:\,n_e>0} \big[\,2\,R_{op}(d_{ffn}, d_{model}, n_e) + R_{op}(d_{model}, d_{ffn}, n_e)\big]
#   \;(+\ \text{the shared expert on all tokens}),\qquad R = \max\!\Big(\frac{\text{bytes}}{\text{HBM BW}},
#   \frac{\text{tensor FLOP}}{\text{peak}}\Big)$$
#
# for `dense`, 2:4 (`spmm`, the sparse peak on half the weights) and Samoyeds (`ssmm`: 28% of the bytes,
# half the rows at the sparse peak). Batches of 1–64 tokens are decode steps; 4096 tokens is one
# prefill (the sequence length of the Samoyeds paper). Mixtral-8x7B uses the tiny model's real routing
# (same `E = 8, k = 2`); Qwen2-MoE-57B-A14B (64 experts, top-8, a 20 480-wide shared expert) uniform
# routing. H100 SXM datasheet peaks (`data/hardware/h100_sxm.json`).
#
# *Predict first:* Samoyeds reads ≈ 28% of the dense weight bytes and does a quarter of the multiply-adds
# per row. What speed-up over dense do you expect for a Mixtral-8x7B layer at a decode step of 1 token (the
# layer is memory-bound), and at a 4096-token prefill (compute-bound)? The table below gives the model's
# answer.

# %%
BATCHES = [1, 2, 4, 8, 16, 32, 64, 4096]
sweeps = {name: layer_time_sweep(name, BATCHES, "h100_sxm", trace=trace_en, layer=LAYER)
          for name in ("Mixtral-8x7B", "Qwen2-MoE-57B-A14B")}
for name, sw in sweeps.items():
    layer_time_figure(sw).show()
    print(f"{name} on h100_sxm — layer time in µs (model) and speed-up over dense")
    print(f"{'tokens':>7s} " + " ".join(f"{OP_LABELS[op]:>24s}" for op in TIME_OPS) + "   busy experts")
    for i, B in enumerate(BATCHES):
        d = sw["dense"][i].total_s
        cells = " ".join(f"{sw[op][i].total_us:12.1f} ({d / sw[op][i].total_s:4.2f}×)   " for op in TIME_OPS)
        print(f"{B:7d} {cells} {int((sw['counts'][i] > 0).sum()):4d}/{len(sw['counts'][i])}")

# %% [markdown]
# **Reading it.** At decode, the dense layer's time grows in steps: every *new* busy expert brings its
# weights (352 MB per Mixtral expert in fp16), extra tokens for an expert that is already busy are nearly
# free. Samoyeds divides the bytes by ≈3.5, so the modelled speed-up at decode is ≈3.5× (2:4: ≈1.8×) —
# for as long as the layer is memory-bound. At prefill (4096 tokens) Mixtral's large experts become
# compute-bound and the ceilings become the FLOP ratios, 4× and 2×. Qwen2-MoE's small experts (2560 × 3584,
# ≈ 512 tokens each) stay memory-bound under Samoyeds even there: the activation and output bytes, which
# weight sparsity does not shrink, take over, and the ceiling is ≈3.3×. These are *ceilings*: the published kernels
# reached 1.01–2.36× per decoder layer (below), and our own kernel has never been timed on a GPU.
#
# **What the paper reports, and how it squares with these ceilings.** The Samoyeds paper (arXiv:2503.10725)
# reports kernels up to **1.99×** faster than the state of the art, **1.58×** at model level, a **4.41×**
# larger maximum batch on average, and decoder layers 1.01–2.36× (avg 1.42×) faster than `transformers`.
# Read the 1.99× with three things in mind. (1) *What it compares:* the Samoyeds kernel computes only the
# ~`n/4` tokens routed to an expert (top-2 of 8) while the baselines compute all `n`, so the figure
# includes the token-selection benefit, not weight sparsity alone. (2) *Against what:* the baseline is
# VENOM, itself a sparse (V:N:M) kernel, not dense cuBLAS. (3) *Where:* an RTX 4070 Super, not the H100
# profile of this section. Our weight-byte ceiling at decode is ≈3.5× over dense because the Samoyeds
# operand is ≈28–29% of the dense bytes (values ¼, 2:4 metadata, row indices: 28.3% with our uint8
# indices, 29% with the published int32 ones → 3.45×). A kernel does not reach a ceiling: the ceiling
# assumes every byte crosses HBM exactly once at the datasheet bandwidth and every `mma.sp` issues at the
# datasheet sparse peak, while a real kernel also pays for index and metadata loads, the gathers' latency,
# the accumulator flushes, 64-row tile padding, small grids at decode and launch overheads. The next cell
# puts the paper's comparison into our model on the RTX 4070 Super profile.

# %%
for n in (256, 4096):
    d_all = roofline("dense", 14336, 4096, n, "rtx_4070_super").time_s
    s_sel = roofline("ssmm", 14336, 4096, n // 4, "rtx_4070_super", index_bits=32).time_s
    s_all = roofline("ssmm", 14336, 4096, n, "rtx_4070_super", index_bits=32).time_s
    print(f"n = {n:4d}: dense on all n vs Samoyeds on the n/4 routed: ceiling {d_all / s_sel:5.2f}×; "
          f"same tokens for both: {d_all / s_all:4.2f}× — modelled (NVIDIA GeForce RTX 4070 SUPER), Mixtral w1")
print(f"decode weight-byte ceiling (1 token, int32 row indices): "
      f"{op_bytes('dense', 14336, 4096, 1)['total'] / op_bytes('ssmm', 14336, 4096, 1, index_bits=32)['total']:.2f}× "
      f"(modelled)")

# %% [markdown]
# So on the paper's own terms (selection included) the model's ceiling over *dense* is far above 1.99×;
# the measured 1.99× is over VENOM, a faster sparse baseline, and a real kernel lands well below any
# ceiling. VENOM is not in our roofline, so the model does not say how far 1.99× is from its ceiling.
#
# **What does the tile padding cost in this model?** Charge every busy expert `64·⌈n_e/64⌉` tokens
# instead of `n_e`:

# %%
for name in ("Mixtral-8x7B", "Qwen2-MoE-57B-A14B"):
    for B in (1, 64, 4096):
        c, _ = routing_counts(name, B, trace=trace_en, layer=LAYER)
        t_real = layer_time(c, name, "ssmm", "h100_sxm", num_tokens=B)
        t_pad = layer_time(c, name, "ssmm", "h100_sxm", num_tokens=B, padded=True)
        mb = t_real.memory_bound[c > 0]
        bound = "memory" if mb.all() else "compute" if not mb.any() else "mixed"
        print(f"{name:19s} {B:5d} tokens: Samoyeds {t_real.total_us:9.1f} µs with real tokens, "
              f"{t_pad.total_us:9.1f} µs with padded tiles (+{t_pad.total_s / t_real.total_s - 1:5.1%}); "
              f"{padded_fraction(c):4.0%} padding, {bound}-bound (model)")

# %% [markdown]
# Even at 98% padding the modelled cost is single-digit percent: the layer is memory-bound, the
# weight bytes dominate, and padding rows only add their activation and output bytes (an upper bound: the
# kernel never reads a SENTINEL row, though it does write the tile's output rows). At prefill it is a few
# percent (at most 63 padding rows per busy expert). The worst case in between is a Qwen2-MoE batch of 64
# tokens: 64 experts with about 8 tokens each all pay for 64-row tiles (+11%) — the regime where a
# narrower token tile, or a GEMV-style kernel, would pay.
#
# **Recorded GPU results.** Layer times measured on a GPU would be plotted next to the model here:

# %%
records = load_kernel_records()
print(gpu_section(records)["text"])
c, _ = routing_counts("Mixtral-8x7B", 64, trace=trace_en, layer=LAYER)
rec = {op: recorded_layer_time(records, c, "Mixtral-8x7B", op) for op in TIME_OPS}
print("recorded Mixtral-8x7B layer time at 64 tokens: " + ", ".join(
    f"{OP_LABELS[op]} {'—' if v is None else f'{v * 1e6:.1f} µs'}" for op, v in rec.items()))
print(f"kernel shapes a GPU run records (bench.kernels.MODEL_SHAPES): {', '.join(MODEL_SHAPES)}")

# %% [markdown]
# None have been recorded: this project has had no GPU. On an SM80+ GPU (A100, H100, RTX 30/40),
# `samoyeds-lab bench kernels` writes `data/bench/gpu_kernels_<device>.json` (one record per model shape,
# op and token count); `recorded_layer_time` then sums the recorded gate/up/down kernel times over the
# experts' real token counts, exactly like the model above — and returns `—` for any token count that was
# not recorded rather than interpolating. On such a machine, the block timing of section 2 times the
# CUDA kernels instead of the CPU kernels (the same calls, `backend="auto"`).

# %% [markdown]
# ## 5. Explore
#
# Pick the tokens in the batch (1–64: decode steps; 128–4096: prefill), the model's layer shape and the
# GPU profile. Top: each expert's real and padding tile rows for one batch (tiny-model routing for the
# 8-expert, top-2 models; uniform random routing otherwise — the summary line says which). Bottom: every
# expert's modelled time for dense, 2:4 and Samoyeds (for 64-expert models the 16 busiest are shown).

# %%
panel = MoELayerPanel(trace_en, layer=LAYER, batch_tokens=16, shape="Mixtral-8x7B", profile="h100_sxm")
panel

# %% [markdown]
# ## Summary
#
# * An MoE block is a router, one sort of `T·k` (token, expert) pairs into per-expert token lists, and
#   three products per expert. With Samoyeds each product is an `ssmm` on a compressed weight that
#   gathers its tokens itself; SiLU·up and the weighted scatter-add ride in the kernels' epilogues. Done
#   by hand, it equals `MoEBlock.forward` with every backend to fp32 rounding.
# * `dense` (per-expert mask scans) and `grouped` (one sort) move the same bytes; Samoyeds reads ≈ 28% of
#   the weight bytes and executes a quarter of the multiply-adds per row — on 64-row tiles.
# * On a CPU the Samoyeds backend runs CPU kernels that read the compressed operand directly. On the tiny
#   block they do not win (128 kB weights that sit in cache, microsecond GEMMs dominated by per-call cost,
#   ~64 tokens per expert). On one Mixtral-size expert they beat torch's best dense path at a few tokens
#   per expert; on the AVX-512 path they lose from a few dozen on (every compressed row keeps different
#   columns, so a gathered token serves one row only, while dense GEMM reuses it across rows and turns
#   compute-bound), while the AVX2 path stays ahead of a torch without fast bf16 to hundreds of tokens
#   (Lab 02).
# * Tile padding is huge at decode and small at prefill; it matters little where it is largest, because
#   decode is memory-bound and the weight bytes are what Samoyeds saves.
# * Modelled on an H100 profile, the layer ceiling is ≈3.5× faster than dense at decode (bytes) and up to
#   4× at prefill (FLOPs; 3.3× for Qwen2-MoE, whose small experts stay memory-bound) — ceilings, not
#   measurements; no GPU layer has been recorded yet.
#
# Next: Lab 05 asks what the 75% pruning costs in accuracy; Lab 06 what to do when the experts do not fit.
