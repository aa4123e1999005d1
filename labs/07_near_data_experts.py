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
# Lab 07 — near-data experts (MoNDE). What can this machine run?
import samoyeds_lab as sl

print(sl.device_info().banner())

# %% [markdown]
# # Lab 07 — Near-data experts: move the weights, or move the activations?
#
# **Goal.** An MoE model's experts rarely all fit in GPU memory. The classic answer (*parameter
# offloading*) keeps them in host memory and copies each needed expert's **weights** over PCIe when a
# batch needs it. MoNDE (arXiv:2405.18832) observes that a *cold* expert — one that
# only a few tokens of the batch use — is cheaper to compute **where its weights live**, by processing
# units inside a CXL memory device, sending only those tokens' **activations** over the link. *Hot*
# experts still go to the GPU. Both sides work at the same time.
#
# **Plan.** (1) the cost of the two paths and their crossover · (2) tokens per expert in real routing
# traces · (3) hot/cold placement policies per layer · (4) how the batch size changes everything · (5) a
# real hybrid run on this machine, measured against the cost model · (5b) the near side computing from
# the compressed (Samoyeds) operands, with a tokens-per-expert slider · (6) an interactive panel.
#
# Everything before section 5 is the analytic cost model of `samoyeds_lab.offload.cost` on datasheet
# profiles (`data/hardware/`; the CXL near-data device is an *illustrative* profile — MoNDE was simulated,
# no such product exists). Section 5 runs experts for real, on this machine's CPU.

# %%
import os

import numpy as np
import torch

from samoyeds_lab.offload.cost import (
    crossover_tokens,
    gpu_path_cost,
    hot_set_placement,
    layer_cost,
    near_data_path_cost,
)
from samoyeds_lab.exercises.offload import check_crossover, check_path_times
from samoyeds_lab.offload.hardware import load_profile, probe_host
from samoyeds_lab.offload.hybrid import (
    HybridExecutor,
    calibrate_host,
    check_placements,
    compressed_bytes,
    make_experts,
    measure_paths,
)
from samoyeds_lab.offload.placement import POLICIES, place_experts, place_layers
from samoyeds_lab.routing import tokens_per_expert
from samoyeds_lab.routing.ship import load_shipped_trace
from samoyeds_lab.viz.monde import (
    crossover_figure,
    placement_checks_figure,
    placement_grid_figure,
    policy_times_figure,
    tokens_placement_figure,
)
from samoyeds_lab.viz.monde_panel import MoNDEPanel, NearTokensPanel

# False: a scaled-down Mixtral-like expert layer for the real hybrid run (8 experts, hidden 512,
# intermediate 1792, fp32; seconds on 2 cores). True: hidden 1024, intermediate 3584 and more tokens
# (about 4x the work per run; a minute or more on 2 cores).
FULL_SIZE = False

torch.manual_seed(0)
np.set_printoptions(precision=3, suppress=True, linewidth=110)
HERE = f"{os.cpu_count()}-core CPU"  # every time measured in section 5 is labelled with the machine
P = 3 * 4096 * 14336  # Mixtral-8x7B: one expert = three 4096 x 14336 matrices = 176 M parameters
D = 4096
GPU, NEAR = "h100_pcie", "cxl_ndp_monde"
print(f"cost-model expert: Mixtral-8x7B, P = {P / 1e6:.0f} M parameters = {2 * P / 1e6:.0f} MB in fp16, d = {D}")
for name in (GPU, NEAR, "host_ddr5"):
    p = load_profile(name)
    print(f"  {name:14s} {p.kind:9s} {p.fp16_tflops:7.1f} TFLOP/s  memory {p.memory_bandwidth_gbs:6.1f} GB/s  "
          f"link {p.link_bandwidth_gbs or load_profile(p.link).link_bandwidth_gbs:5.1f} GB/s   ({p.name})")

# %% [markdown]
# ## 1. Two paths for one expert
#
# An expert with `P` parameters (`b` bytes each) receives `n` tokens of width `d`:
#
# $$T_{gpu}(n) = \underbrace{\frac{P\,b}{B_{link}}}_{\text{move the weights}} +
#   \max\Big(\frac{2nP}{F_{gpu}}, \frac{P\,b}{B_{hbm}}\Big), \qquad
#   T_{near}(n) = \underbrace{\frac{2\,n\,d\,b_{act}}{B_{link}}}_{\text{move the activations}} +
#   \max\Big(\frac{P\,b}{B_{int}}, \frac{2nP}{F_{ndp}}\Big).$$
#
# For one Mixtral expert, moving the weights costs `352 MB / 63 GB/s ≈ 5.6 ms` whatever `n` is; moving
# the activations of one token costs `2·4096·2 B / 63 GB/s ≈ 0.26 µs`. But the near-data units are slow
# (4 TFLOP/s here against the GPU's 756), so their compute grows with `n` 190× faster. The **crossover**
# `n*` is the token count from which moving the weights is no slower: below it an expert is *cold*, from
# it on *hot*.

# %%
N = np.unique(np.round(np.logspace(0, 14, 57, base=2)).astype(np.int64))
curves, cross = {}, {}
for g in ("h100_pcie", "a100_sxm", "rtx_4090"):
    curves[g] = (gpu_path_cost(N, P, g, link=63.0).total, near_data_path_cost(N, P, NEAR, d_model=D, link=63.0).total)
    cross[g] = crossover_tokens(g, NEAR, P, d_model=D, link=63.0)
crossover_figure(N, curves, crossovers=cross, title=f"One Mixtral expert: GPU vs {NEAR} (63 GB/s link)").show()
print("crossover n* (tokens per expert) for a Mixtral expert:")
print(f"{'GPU':14s}" + "".join(f"{near + ', ' + str(bw) + ' GB/s':>28s}" for near in (NEAR, "host_ddr5")
                               for bw in (16, 63)))
for g in ("h100_pcie", "h100_sxm", "a100_sxm", "rtx_4090", "rtx_4070_super"):
    row = [crossover_tokens(g, near, P, d_model=D, link=float(bw)) for near in (NEAR, "host_ddr5") for bw in (16, 63)]
    print(f"{g:14s}" + "".join(f"{str(x):>28s}" for x in row))

# %% [markdown]
# **Reading it.** The near-data curve (dashed) starts far below the GPU's (solid): with few tokens the
# weights are the expensive thing to move. It rises linearly once its slow units are compute-bound; the
# GPU curve is flat (the transfer dominates) until thousands of tokens. The crossover depends on the
# *near-data compute* more than on the GPU: every GPU above crosses at about the same `n*` against the same
# CXL device, while the host CPU (`host_ddr5`, 14 TFLOP/s of AVX-512) moves it up several-fold. A slower
# link moves the crossover *up* too (moving the weights gets dearer, activations are tiny either way).

# %% [markdown]
# ### Exercise 1 — the two path times
#
# Write `my_path_times(n, P, d, gpu, near, link_gbs)` returning `(t_gpu_s, t_near_s)` in **seconds** for fp16
# weights and activations (`b = b_act = 2`), the weights not resident, by the two formulas above. `gpu` and
# `near` are hardware profiles: `.fp16_tflops` (TFLOP/s) and `.memory_bandwidth_gbs` (GB/s); the link is
# `link_gbs` GB/s. `check_path_times` compares yours with the cost model on Mixtral and a smaller expert.

# %%
def my_path_times(n, P, d, gpu, near, link_gbs):
    """(t_gpu, t_near) in seconds for one expert on n tokens (fp16, not resident)."""
    # TODO: t_gpu  = P*2 / (link_gbs*1e9) + max(2*n*P / (gpu.fp16_tflops*1e12), P*2 / (gpu.memory_bandwidth_gbs*1e9))
    #       t_near = 2*n*d*2 / (link_gbs*1e9) + max(P*2 / (near.memory_bandwidth_gbs*1e9), 2*n*P / (near.fp16_tflops*1e12))
    raise NotImplementedError


check_path_times(my_path_times);

# %% [markdown]
# ### Exercise 2 — the crossover n*
#
# *Predict first:* against the CXL device on a 64 GB/s link, is a Mixtral expert hot at 16 tokens? At 256?
# Then write `my_crossover(P, d, gpu, near, link_gbs)`: the smallest `n` in 1 … 65536 with
# `t_gpu(n) <= t_near(n)`, or `None` if near data wins throughout (use your `my_path_times`; both times grow
# with `n`, the near one faster, so a bisection works — or solve the linear pieces in closed form).
# Stuck? The solutions are `samoyeds_lab.exercises.offload.solution_path_times` and `solution_crossover`.

# %%
def my_crossover(P, d, gpu, near, link_gbs):
    """Smallest n (1..65536) from which moving the weights is no slower, else None."""
    # TODO: bisect lo=1, hi=65536 on "my_path_times(n, ...)[0] <= my_path_times(n, ...)[1]"
    raise NotImplementedError


check_crossover(my_crossover);

# %% [markdown]
# ## 2. How many tokens does an expert get?
#
# The shipped routing traces (`data/traces`, Lab 03) record a tiny MoE's router decisions on held-out
# text; it has Mixtral's routing shape (`E = 8` experts, top-2). Cutting the trace into batches of `B`
# consecutive tokens gives the `n_e` of every expert in every batch. Mean tokens per expert is `B·k/E =
# B/4`, so the crossover (≈ 66 tokens for the H100 + CXL pair) sits around batches of a few hundred
# tokens: decoding (B of one to a few dozen) is all cold, long prefills are all hot, and in between the
# split is per expert.

# %%
traces = {d: load_shipped_trace(d) for d in ("en", "de", "code")}
tr = traces["en"]
LAYERS = list(tr.layer_names)
x_star = crossover_tokens(GPU, NEAR, P, d_model=D)
for B in (16, 256, 1024):
    counts = tokens_per_expert(tr, B).counts[:, 0, :].numpy()  # [layers, E], the first batch
    p = place_experts(counts[1], P, GPU, NEAR, d_model=D, policy="threshold")
    tokens_placement_figure(counts[1], p.mask, threshold=x_star, layer_name=LAYERS[1],
                            title=f"Batch of {B} tokens, {LAYERS[1]}: hot (GPU) and cold (near data) experts").show()
for B in (1, 16, 64, 256, 1024, 4096):
    c = tokens_per_expert(tr, B).counts.double()
    hot = float((c >= x_star).double().mean())
    print(f"batch {B:5d}: mean {B * 2 / 8:7.1f} tokens per expert; {hot:6.1%} of (layer, batch, expert) "
          f"are hot at n* = {x_star}")

# %% [markdown]
# ## 3. Placement policies, layer by layer
#
# MoNDE runs the GPU side and the near-data side **concurrently**, so a layer costs
# `T(G) = max(Σ_{e∈G} T_gpu(n_e), Σ_{e∉G} T_near(n_e))` for the hot set `G`. Policies
# (`samoyeds_lab.offload.placement`):
#
# * `threshold` — MoNDE's rule: hot iff `n_e ≥ n*`;
# * `greedy` — take experts by decreasing benefit `T_near − T_gpu`, move each one if that lowers `T(G)`;
# * `exact` — try all `2^8 = 256` subsets (feasible up to 16 experts with tokens);
# * `all_gpu` (parameter offloading: every expert's weights cross the link) and `all_near`.
#
# The threshold rule decides each expert alone; it ignores that the two sides run *at the same time*. When
# all experts are cold it leaves the GPU idle, when all are hot the near-data units idle. Greedy and exact
# balance the two sides.

# %%
B = 256
counts = tokens_per_expert(tr, B).counts[:, 0, :].numpy()
places = {pol: place_layers(counts, P, GPU, NEAR, d_model=D, policy=pol) for pol in POLICIES}
times = {pol: np.array([p.time for p in ps]) for pol, ps in places.items()}
placement_grid_figure(counts, np.stack([p.mask for p in places["exact"]]), layer_names=LAYERS,
                      title=f"Exact placement, batch of {B} tokens ({GPU} + {NEAR})").show()
policy_times_figure(times, layer_names=LAYERS, title=f"Predicted layer time, batch of {B} tokens").show()
print(f"{'policy':10s} " + " ".join(f"{n:>15s}" for n in LAYERS) + "      sum   GPU experts")
for pol in POLICIES:
    ps = places[pol]
    print(f"{pol:10s} " + " ".join(f"{1e3 * p.time:12.2f} ms" for p in ps)
          + f" {1e3 * times[pol].sum():8.2f}   {sum(p.num_on_gpu for p in ps):3d}")
ex = places["exact"][1]
print(f"\n{LAYERS[1]}, exact: GPU side {1e3 * ex.gpu_time:.2f} ms, near side {1e3 * ex.near_time:.2f} ms; "
      f"{ex.cost.gpu_weight_bytes / 1e9:.2f} GB of expert weights on the GPU; {ex.evaluated} placements tried")

# %% [markdown]
# **Is greedy good enough?** With the two sides running one after the other (`concurrent=False`) the
# objective is a sum, separable per expert, and greedy is provably optimal (tested). With the `max`
# objective, choosing the hot set is a partition problem; on random instances greedy is usually optimal
# and otherwise within a fraction of a percent here, which is why MoNDE-like systems can afford a simple
# rule at run time. A **GPU memory budget** (`max_on_gpu`, `gpu_budget_bytes`) caps the hot set:

# %%
for cap in (0, 1, 2, 4, 8):
    p = place_experts(counts[1], P, GPU, NEAR, d_model=D, policy="exact", max_on_gpu=cap)
    print(f"at most {cap} experts on the GPU: {1e3 * p.time:7.2f} ms, GPU gets experts "
          f"{np.nonzero(p.mask)[0].tolist()} ({p.gpu_bytes / 1e9:.2f} GB)")

# %% [markdown]
# ## 4. Batch size decides
#
# Predicted time of all four MoE layers for the first batch of each size (English text):

# %%
print(f"{'batch':>6s} " + " ".join(f"{pol:>10s}" for pol in POLICIES) + "   exact vs all_gpu")
for B in (1, 4, 16, 64, 256, 1024, 4096):
    c = tokens_per_expert(tr, B).counts[:, 0, :].numpy()
    t = {pol: sum(p.time for p in place_layers(c, P, GPU, NEAR, d_model=D, policy=pol)) for pol in POLICIES}
    print(f"{B:6d} " + " ".join(f"{1e3 * t[pol]:8.1f}ms" for pol in POLICIES) + f"   {t['all_gpu'] / t['exact']:5.2f}x")

# %% [markdown]
# At decode sizes, near data is several times faster than moving the weights of the few experts a
# batch needs (`all_near` ≈ `exact`), and the exact placement still moves the odd expert to keep the
# GPU busy. In between, the split pays most. At large prefills all experts are hot and everything
# converges to parameter offloading: at thousands of tokens the link time of the weights is amortised.
# (The factors are those of this illustrative CXL profile; edit `data/hardware/cxl_ndp_monde.json` to
# explore.)
#
# **The paper's numbers.** MoNDE (arXiv:2405.18832) reports up to 7.5× (encoder) and 3.7× (decoder)
# speed-up over parameter offloading, evaluated in simulation, not on hardware. Our last column is the same
# kind of number from the same kind of model (datasheet-like profiles, no device measured) and has the same
# shape: largest at decode sizes, where every expert is below the crossover n* of section 1, falling to 1×
# once batches put most experts above it. Where the peak lands depends on the near device's assumed
# bandwidth and compute and on the link, which is why neither our factors nor the paper's are a measured
# speed-up; section 5 measures the split on a real machine instead.

# %% [markdown]
# ## 5. A real hybrid run on this machine
#
# Now the same split, executed: `HybridExecutor` runs hot experts on the **fast side** (the GPU when there
# is one; here, the calling thread) after a real copy of their weights (the stand-in for the link), and
# cold experts on a **worker thread** that gets only their tokens' rows and copies its results back; both
# sides run concurrently. The output equals the one-device computation.
#
# **Be clear about what this is.** This machine has no GPU and no CXL device: *both sides are the same
# CPU cores*, each side one torch thread. There is no faster device, so here moving weights never pays per
# expert; the lesson is whether the cost model — calibrated with a short probe of this CPU's FLOP/s and
# bandwidths — predicts what the real run measures, and where it cannot (two "devices" sharing cores,
# caches and memory bandwidth, and other processes on the machine).

# %%
H, I = (1024, 3584) if FULL_SIZE else (512, 1792)
T = 1024 if FULL_SIZE else 256
experts = make_experts(8, H, I, seed=0)
cal = calibrate_host(experts, threads=(1, 2))
for t in (1, 2):
    print(f"this CPU, {t} torch thread(s): {cal.flops[t] / 1e9:6.1f} GFLOP/s (fp32 expert matmuls), weight copy "
          f"{cal.copy_bandwidth[t] / 1e9:5.1f} GB/s, one-token weight streaming {cal.stream_bandwidth[t] / 1e9:5.1f} GB/s")
print(f"expert: {cal.expert_params / 1e6:.2f} M parameters, {cal.expert_params * 4 / 1e6:.1f} MB in fp32")

# %% [markdown]
# **The crossover, measured.** To give the fast side an advantage, it gets 2 torch threads and the near
# side 1, each path timed alone for one expert (`measure_paths`). Solid: weight copy + expert; dashed:
# activation copies + expert. The model lines use the calibrated profiles. Whether a crossover appears
# depends on the calibration line above: on an idle machine 2 threads run the matmuls ~1.8x faster than
# one and the fast side wins from some tens of tokens on; on a machine busy with other processes the
# second thread brings little (or, waiting at every OpenMP barrier, costs time), and neither the model nor
# the measurement finds a crossover. Two-thread timings under load are also very noisy.

# %%
fast2, near1 = cal.profiles(2, 1)
NS = np.array([1, 2, 4, 8, 16, 32, 64, 128, 256] + ([512, 1024] if FULL_SIZE else []))
sweep = measure_paths(experts, NS, fast_threads=2, near_threads=1, repeats=3)
Pc = cal.expert_params
model_g = gpu_path_cost(NS, Pc, fast2, bytes_per_param=4).total
model_n = near_data_path_cost(NS, Pc, near1, d_model=H, bytes_per_param=4, bytes_per_act=4).total
x_model = crossover_tokens(fast2, near1, Pc, d_model=H, bytes_per_param=4, bytes_per_act=4, max_tokens=1 << 14)
crossover_figure(NS, {f"measured ({HERE})": (sweep.fast_s, sweep.near_s), "cost model": (model_g, model_n)},
                 crossovers={f"measured ({HERE})": sweep.crossover, "cost model": x_model},
                 title="This machine: fast side 2 threads vs near side 1 thread").show()
print(f"{'tokens':>7s} {'fast meas':>10s} {'fast model':>11s} {'near meas':>10s} {'near model':>11s}  (ms, {HERE})")
for n, a, b, c, d in zip(NS, sweep.fast_s, model_g, sweep.near_s, model_n):
    print(f"{n:7d} {1e3 * a:10.2f} {1e3 * b:11.2f} {1e3 * c:10.2f} {1e3 * d:11.2f}")
print(f"crossover: measured {sweep.crossover}, modelled {x_model} tokens")

# %% [markdown]
# **The concurrent layer.** One batch of `T` tokens routed as in the English trace (layer 1), random
# activations; each side one thread. The cost model predicts `max(Σ fast, Σ near)` from the same
# calibration; the run is the median of 5 after a warm-up.

# %%
ids = tr.topk_ids[1, :T].contiguous()
w = tr.weights[1, :T].float().contiguous()
x = torch.randn(T, H)
n_e = np.bincount(ids.reshape(-1).numpy(), minlength=8)
fast1, near1 = cal.profiles(1, 1)
reference = experts.forward_grouped(x, ids, w)
with HybridExecutor(experts, near_workers=1, threads=1) as hx:
    placed = [(pol, p.mask, p) for pol in ("all_near", "all_gpu", "threshold", "greedy", "exact")
              for p in [place_experts(n_e, Pc, fast1, near1, d_model=H, policy=pol, bytes_per_param=4, bytes_per_act=4)]]
    checks = check_placements(hx, x, ids, w, placed, reference=reference, rtol=1e-5, atol=1e-6)
for c in checks:
    print(c.line())
print(f"measured on this {HERE}; tokens per expert: {n_e.tolist()}; outputs equal the one-device forward (checked)")
placement_checks_figure(checks, title=f"Hybrid layer, {T} tokens: cost model vs measured ({HERE}, 1 thread per side)"
                        ).show()

# %% [markdown]
# **Reading it.** The single-side runs (`all_near`, `all_gpu`) check the per-path model: it predicts
# them from FLOP/s and bandwidths measured on one expert, so a ratio near 1 means the model's *sums* are
# right. The split placements check the `max`: the model assumes two independent devices, but here the
# two threads share two cores with everything else running on the machine, the memory bus and the
# last-level cache — so measured times sit above the model, by an amount that depends on the machine's load
# at that moment (rerun the cell to see it move). That is exactly the gap MoNDE closes with a separate
# device: on a real GPU + CXL system the two sides share only the link.

# %% [markdown]
# ## 5b. Near-data experts in the compressed format
#
# MoNDE's near side streams every cold expert's weights from its own memory: at decode sizes it is
# **memory-bound**, so the bytes it reads are the cost. A Samoyeds 1:2 (V=128) operand is ≈28 % of the
# bf16 bytes (≈ 27 % of fp32 here), and the CPU kernels of `samoyeds_lab.kernels.cpu` compute straight
# from it, never building a dense weight. So: sparsify the same experts (pruned dense weights stay for the
# fast side), let the near side run `ssmm` on the compressed operands (up; gate with the fused `silu_mul`
# epilogue; down with a routing-weighted `scatter_add`), and give the cost model the compressed bytes
# `W` instead of `P·b`: `T_near(n) = 2nd·b_act/B_link + max(W/B_int, 2nP/F_sparse)`.
#
# First, this machine as a hardware profile (`probe_host`: read bandwidth, dense and sparse-kernel
# throughput, **measured** now), beside the one **recorded** on the development machine
# (`data/hardware/probed_2core_epyc.json`), and what the compressed bytes do to `n*` against an H100
# (**modelled**).

# %%
probe = probe_host(rows=2048, cols=2048, compute_tokens=64, repeats=3)
rec = load_profile("probed_2core_epyc")
for label, p in ((f"measured now ({HERE})", probe.profile), ("recorded (dev machine)", rec)):
    print(f"{label:28s} read {p.memory_bandwidth_gbs:5.1f} GB/s, dense {1e3 * p.fp16_tflops:6.1f} GFLOP/s, "
          f"sparse kernel {1e3 * p.fp16_sparse_tflops:6.1f} GFLOP/s (dense-equivalent)  [{p.source[:60]}...]")
print(f"measured one-token streaming: dense {probe.dense_stream_gbs:.1f} GB/s, sparse kernel "
      f"{probe.sparse_stream_gbs:.1f} GB/s of compressed bytes ({probe.compressed_bytes / probe.dense_bytes:.0%} "
      f"of the dense bytes)")
for label, p in (("measured now", probe.profile), ("recorded", rec)):
    xd = crossover_tokens(GPU, p, P, d_model=D, link=16.0)
    xc = crossover_tokens(GPU, p, P, d_model=D, link=16.0, near_bytes=0.28 * 2 * P, near_sparse=True)
    print(f"modelled n* ({GPU} + this host as near side, 16 GB/s): dense near side {xd}, compressed near side "
          f"{xc} tokens ({label} profile)")

# %% [markdown]
# **One expert, measured and modelled.** The same sweep as above (fast side 2 threads with the dense
# pruned weights moved; near side 1 thread), once with a dense near side and once compressed. The model
# lines come from a calibration of *these* sparsified experts (`calibrate_host` also probes the compressed
# path: its dense-equivalent FLOP/s and compressed bytes per second).

# %%
sp = make_experts(8, H, I, seed=0)
sp.sparsify(pattern="samoyeds", n=1, m=2, vector=128)
W = compressed_bytes(sp)
cal_sp = calibrate_host(sp, threads=(1, 2))
print(f"expert: dense {Pc * 4 / 1e6:.2f} MB (fp32), compressed operands the kernels read {W / 1e6:.2f} MB "
      f"({W / (Pc * 4):.0%}); measured near path (1 thread): {cal_sp.sparse_flops[1] / 1e9:.1f} GFLOP/s, "
      f"one token {cal_sp.sparse_stream_bandwidth[1] / 1e9:.1f} GB/s compressed vs dense "
      f"{cal_sp.flops[1] / 1e9:.1f} GFLOP/s, {cal_sp.stream_bandwidth[1] / 1e9:.1f} GB/s")
sw_d = measure_paths(sp, NS, fast_threads=2, near_threads=1, repeats=3, near_format="dense")
sw_c = measure_paths(sp, NS, fast_threads=2, near_threads=1, repeats=3, near_format="compressed")
f2, n1d = cal_sp.profiles(2, 1)
_, n1c = cal_sp.profiles(2, 1, compressed=True)
kw_d, kw_c = cal_sp.cost_kwargs(), cal_sp.cost_kwargs(compressed=True)
mg = gpu_path_cost(NS, Pc, f2, bytes_per_param=4).total
mnd = near_data_path_cost(NS, Pc, n1d, d_model=H, bytes_per_param=4, bytes_per_act=4).total
mnc = near_data_path_cost(NS, Pc, n1c, d_model=H, bytes_per_param=4, bytes_per_act=4, weight_bytes=W,
                          sparse=True).total
xs = {f"measured, dense near ({HERE})": sw_d.crossover, f"measured, compressed near ({HERE})": sw_c.crossover,
      "modelled, dense near": crossover_tokens(f2, n1d, Pc, d_model=H, max_tokens=1 << 14, **kw_d),
      "modelled, compressed near": crossover_tokens(f2, n1c, Pc, d_model=H, max_tokens=1 << 14, **kw_c)}
curves_c = {f"measured, dense near ({HERE})": (sw_d.fast_s, sw_d.near_s),
            f"measured, compressed near ({HERE})": (sw_c.fast_s, sw_c.near_s),
            "modelled, dense near": (mg, mnd), "modelled, compressed near": (mg, mnc)}
print(f"{'tokens':>7s} {'fast meas':>10s} {'fast meas 2':>12s} {'near dense meas':>16s} {'near comp meas':>15s} {'near comp model':>16s}"
      f"  (ms, measured on this {HERE})")
for i, n in enumerate(NS):
    print(f"{n:7d} {1e3 * sw_d.fast_s[i]:10.2f} {1e3 * sw_c.fast_s[i]:12.2f} {1e3 * sw_d.near_s[i]:16.2f} {1e3 * sw_c.near_s[i]:15.2f} "
          f"{1e3 * mnc[i]:16.2f}")
print("crossover n*: " + ", ".join(f"{k} {v}" for k, v in xs.items()))

# %% [markdown]
# **The slider.** Move the tokens per expert: below `n*` the near side (compressed) is the cheaper path,
# from `n*` on moving the weights wins. Measured curves are this machine's, now; modelled ones come
# from the calibration.

# %%
tokens_panel = NearTokensPanel(NS, curves_c, crossovers=xs,
                               title=f"Where near-data compute (compressed) stops paying ({HERE} and model)")
tokens_panel

# %% [markdown]
# **The layer, compressed near side.** The same batch as above through `HybridExecutor` on the sparsified
# experts: the near worker runs the CPU kernels on the cold experts' compressed operands. The model uses
# the compressed bytes for the near path (placements: all near, all fast, threshold at the compressed
# `n*`, and the model's best hot set).

# %%
f1, n1c1 = cal_sp.profiles(1, 1, compressed=True)
x_c1 = crossover_tokens(f1, n1c1, Pc, d_model=H, max_tokens=1 << 14, **kw_c)
ref_sp = sp.forward_grouped(x, ids, w)  # dense matmuls on the same pruned weights
masks = {"all_near": np.zeros(8, bool), "all_fast": np.ones(8, bool),
         "threshold": n_e >= (x_c1 if x_c1 is not None else np.inf),
         "best": hot_set_placement(n_e, Pc, f1, n1c1, d_model=H, **kw_c)}
with HybridExecutor(sp, near_workers=1, threads=1) as hx:
    assert hx.near_format == "compressed"
    cases = [(name, mask, layer_cost(n_e, Pc, f1, n1c1, d_model=H, on_gpu=mask, **kw_c)) for name, mask in masks.items()]
    checks_c = check_placements(hx, x, ids, w, cases, reference=ref_sp)
for c in checks_c:
    print(c.line())
print(f"measured on this {HERE}, compressed near side; outputs equal the dense forward on the pruned weights (checked)")
placement_checks_figure(checks_c, title=f"Hybrid layer, compressed near side, {T} tokens: modelled vs measured ({HERE})"
                        ).show()

# %% [markdown]
# **Reading it.** The compressed near side reads about a quarter of the bytes, so at few tokens per expert
# it is faster than the dense one, and `n*` (measured and modelled) moves up: near data pays for more
# tokens. As tokens grow, the AVX-512 kernels' gathered products lose to torch's dense GEMM (every
# compressed row keeps different columns), so the compressed near path's advantage shrinks and then
# reverses; the AVX2 path, against a torch without fast bf16, keeps more of it (the banner names your
# path) — the model captures either only through the single FLOP/s measured at the calibration's
# token count. All timings here
# are on 2 shared cores (another process may be running): rerun a cell to see how much they move.

# %% [markdown]
# ## 6. Explore
#
# Pick a text, a layer, the batch size, the policy, the GPU and the near-data device (the CXL profile or
# the host CPU, as in Fiddler), and the link bandwidth. The first batch of the trace is placed; the
# crossover chart compares three GPUs (and the selected one) against the selected near-data device.

# %%
panel = MoNDEPanel(traces)
panel

# %% [markdown]
# ## Summary
#
# * Moving an expert's **weights** costs `P·b / B_link` whatever the batch; moving its **activations**
#   costs `2·n·d·b / B_link`, tiny — but then the expert runs on slow near-data units. The **crossover**
#   `n*` (tens of tokens for a Mixtral expert on H100 + a CXL device) separates cold from hot experts.
# * In real routing, tokens per expert scale with the batch (`B·k/E` on average, uneven per expert):
#   decode batches are all cold, long prefills all hot, and in between the split is per expert.
# * With both sides working concurrently, the best hot set **balances** them; MoNDE's threshold rule
#   does not, greedy nearly always does, and the exact search (≤ 16 experts) shows the optimum.
# * On this CPU-only machine the real hybrid run reproduces the per-path costs once calibrated, while the
#   concurrent split is slower than modelled: the "two devices" share cores and memory. The model is a
#   model of *separate* devices.
# * A near side that computes from the **compressed** operands (Samoyeds 1:2, the CPU sparse kernels)
#   reads ≈¼ of the bytes; the cost model takes those bytes (`near_bytes`) and the kernel's FLOP/s
#   (`near_sparse`), and `n*` moves up — until enough tokens make the dense GEMM the faster way to compute.
