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
# Lab 02 — Sparse Tensor Cores. What can this machine run?
import samoyeds_lab as sl

print(sl.device_info().banner())

# %% [markdown]
# # Lab 02 — Sparse Tensor Cores and how fast the Samoyeds kernel can be
#
# **Goal.** Open up one Sparse Tensor Core instruction, `mma.sp`, lane by lane; then work out how fast
# dense, 2:4 and Samoyeds expert matrix multiplies *can* be on a given GPU (a roofline model), put
# real GPU measurements next to that ceiling when some have been recorded, and run something live.
#
# **Plan.** (1) one `mma.sp.m16n8k32`, seen from one lane of the warp · (2) the roofline: bytes, FLOPs
# and the speed-up ceilings vs tokens per expert · (3) recorded GPU results · (4) live timings on this
# machine.
#
# **Honesty rules of this lab.** A number is either a **model** (labelled *model (roofline ceiling),
# not a measurement*), a **recording** (labelled *recorded on DEVICE, DATE*), or **measured now** on
# this machine (a CPU says so). Nothing else.

# %%
import torch

from samoyeds_lab import kernels
from samoyeds_lab.bench.kernels import MODEL_SHAPES, load_kernel_records
from samoyeds_lab.bench.roofline import DEFAULT_TOKENS, OPS, expert_matrices, op_bytes, roofline, roofline_sweep
from samoyeds_lab.reference.mma_sp import mma_sp_m16n8k32, pack_a, pack_b, pack_c, pack_e, unpack_d
from samoyeds_lab.reference.wgmma import SmemDescriptor, load_b, unpack_wg_d, wgmma_sp_m64nNk32
from samoyeds_lab.viz.kernel_panel import LivePanel, RooflinePanel, cpu_reference_records
from samoyeds_lab.viz.kernels import cpu_timing_figure, roofline_figure, speedup_figure
from samoyeds_lab.viz.mma_panel import MmaLanePanel, example_tile, example_warpgroup, lane_figures, lane_view

# False: small, fast defaults (Run All takes well under a minute on a 2-core CPU).
# True: the CPU timings also use a 2048 x 4096 weight and 256 tokens (slower).
FULL_SIZE = False

torch.manual_seed(0)
torch.set_printoptions(precision=3, sci_mode=False, linewidth=110)
CPU_SHAPE = (2048, 4096) if FULL_SIZE else (512, 1024)
CPU_TOKENS = 256 if FULL_SIZE else 16

# %% [markdown]
# ## 1. One `mma.sp` instruction, lane by lane
#
# A tensor-core instruction is issued by a whole **warp** of 32 threads (*lanes*) at once. The sparse
# one the Samoyeds kernel uses is
#
# ```
# mma.sp::ordered_metadata.sync.aligned.m16n8k32.row.col.f32.f16.f16.f32  d, a, b, c, e, f;
# ```
#
# It computes `D = A·B + C` with **A** 16×32 *2:4-sparse* (so only 16×16 values are stored, plus 2 bits
# of position per value), **B** 32×8 dense, **C** and **D** 16×8 in fp32. No lane holds a whole
# matrix: each holds a few registers, and the hardware knows which element every register half is.
# With `g = lane >> 2` (which quad of 4 lanes) and `t = lane & 3` (which lane in the quad):
#
# * `a0…a3` — 4 registers × 2 halves of stored A values: rows `g` and `g+8`, stored columns
#   `2t, 2t+1` and `2t+8, 2t+9`;
# * `b0…b3` — 8 elements of B: column `g` (one token, in the MoE layout), rows `k = 2t + i + 8r`;
# * `c0…c3` / `d0…d3` — 4 fp32 accumulators: rows `g`, `g+8`, columns `2t, 2t+1`;
# * `e` — one 32-bit **metadata** register, read only from two lanes per quad chosen by the sparsity
#   selector `f`: lanes `4g + 2f` and `4g + 2f + 1`. Each holds 8 nibbles: rows `g` (bits 15:0) and
#   `g+8` (bits 31:16), 4 groups of 4 dense columns each.
#
# The CPU emulator `samoyeds_lab.reference.mma_sp` implements exactly these layouts, and the CUDA
# kernels of this project use the same ones. Below, a tile with small integer entries (so every
# product is exact) is multiplied by the emulator for the whole warp and compared with a plain
# `A @ B + C`.

# %%
tile = example_tile(seed=0)
e = pack_e(tile.words, selector=0)  # the metadata registers of the 32 lanes
d = mma_sp_m16n8k32(pack_a(tile.values), pack_b(tile.b), pack_c(tile.c), e, 0)  # one warp, one instruction
D = unpack_d(d)
print("per-lane registers: a", tuple(pack_a(tile.values).shape), "b", tuple(pack_b(tile.b).shape),
      "c/d", tuple(d.shape), "e", tuple(e.shape))
print("emulated D == A·B + C exactly:", torch.equal(D, tile.dense_a.float() @ tile.b.float() + tile.c))
print("metadata words of the tile (register order, lanes 4g and 4g+1 with selector 0):")
print(" ".join(f"{int(w):08X}" for w in tile.words))

# %% [markdown]
# Now pick one lane. `lane_view` asks the emulator itself where each register's value comes from
# (it packs matrices whose entries encode their own coordinates) and which 2:4 groups the lane's
# metadata describes (it changes one nibble at a time and watches which values move). Amber outlines:
# the lane's registers; dotted red: the groups its metadata register describes.

# %%
view = lane_view(tile, lane=5, selector=0)
print(f"lane {view.lane}: g = {view.g}, t = {view.t}")
for r in range(4):
    pairs = ", ".join(f"A[{int(view.a_row[r, i])}, {int(view.a_dense_col[r, i])}] = {float(view.a_value[r, i]):g}"
                      for i in range(2))
    print(f"  a{r} = ({pairs})")
print("  d0..d3 =", [f"D[{int(r)}, {int(c)}] = {float(v):g}" for r, c, v in zip(view.c_row, view.c_col, view.d_value)])
print(f"  e = 0x{view.e_word:08X} describes:",
      ", ".join(f"row {n['row']} group {n['group']} (0x{n['value']:X})" for n in view.e_nibbles))
figs = lane_figures(tile, view)
figs["a_dense"].show()
figs["registers"].show()

# %% [markdown]
# Each lane's `d` registers need a whole row of A and a whole column of B, which are spread over
# many lanes: that is why the instruction is *warp-wide*. Move the slider through the 32 lanes, and
# flip the selector to see the metadata move from lanes `4g, 4g+1` to `4g+2, 4g+3` (the kernels
# alternate selectors so one 32-bit load feeds two 16-row tiles).

# %%
MmaLanePanel(tile, lane=5)

# %% [markdown]
# ### On Hopper: the same registers, a warpgroup at a time
#
# H100 has a second way to reach the Sparse Tensor Cores, `wgmma.mma_async.sp.m64nNk32`, issued by a
# *warpgroup* (4 warps, 128 threads) and asynchronous. This project's `ssmm` has that path too
# (`kernel="wgmma_sp"`, sm_90a only). Each warp keeps exactly the A and metadata registers above (warp
# `w` owns rows `16w … 16w+15` of a 64-row slab); B, the gathered tokens, is *not* loaded into
# registers: the tensor cores read it from shared memory through a 64-bit **matrix descriptor** (start
# address, the stride between 8-row groups, a swizzle mode). The emulator `samoyeds_lab.reference.wgmma`
# decodes descriptors the same way. Below, 64 tokens are written into shared memory in the kernel's
# 64-byte-swizzled layout and one emulated instruction is checked against `A · B + C`. Which of the two
# paths is faster on a given GPU is measured (`samoyeds-lab bench kernels`), not assumed.

# %%
wg = example_warpgroup(seed=0)
desc = SmemDescriptor.decode(wg.desc)
print(f"b-desc = 0x{wg.desc:016X}: start {desc.start_address} B, stride between 8-token groups "
      f"{desc.stride_byte_offset} B, swizzle {desc.swizzle}")
print("token 0..7, 16-byte chunk k -> byte address (the XOR with (token >> 1) & 3 is the swizzle):")
for tok in range(8):
    print(f"  token {tok}:", "  ".join(f"k{c * 8:>2}-{c * 8 + 7:<2} @{wg.offsets[tok, c * 8]:5d}" for c in range(4)))
d = wgmma_sp_m64nNk32(wg.a, load_b(wg.smem, wg.desc, 64, wg.b.dtype), wg.c, wg.e, 0)
print("emulated wgmma D == A·B + C exactly:", torch.equal(unpack_wg_d(d), wg.dense_a.float() @ wg.b.float() + wg.c_matrix))

# %% [markdown]
# ## 2. The roofline: how fast *can* an expert GEMM be?
#
# An expert multiplies its weight `W` (`m` output rows × `k` inputs) by the `tokens` routed to it.
# Two things bound the time from below on a GPU:
#
# * **memory**: every byte of the (compressed) weight, the gathered activations, the token ids and
#   the output must cross HBM at least once: `t_memory = bytes / HBM bandwidth`;
# * **math**: `t_compute = tensor FLOP / tensor-core peak`. `mma.sp` runs at the *sparse* peak
#   (datasheets quote it dense-equivalent: 2× the dense peak); Samoyeds also skips half of the rows.
#
# The ceiling is `max(t_memory, t_compute)`. Bytes per op (`b` = 2 bytes for fp16/bf16):
#
# | op | weight bytes | per token |
# |---|---|---|
# | dense | `m·k·b` | `k·b` in + `m·b` out |
# | 2:4 | `m·k/2·b` values + `m·k/8` metadata | same |
# | Samoyeds 1:2, V=128 | `m/2·k/2·b` + `m/2·k/8` + one uint8 row index per window and kept row | same + 4-byte token id |
#
# While decoding, an expert sees a handful of tokens: the weight bytes dominate, and the ceiling is
# the byte ratio (≈1.78× for 2:4, ≈3.5× for Samoyeds). With thousands of tokens the math dominates:
# 2× and 4×. The activation and output bytes are the same for every op, so for small experts with
# many tokens they cap the gain. (Samoyeds' other trick, gathering only the routed tokens, is not in
# these ratios: every op here gets the same routed tokens.)

# %%
print("models (d_model, d_ffn):", MODEL_SHAPES)
MODEL = "Mixtral-8x7B" if "Mixtral-8x7B" in MODEL_SHAPES else next(iter(MODEL_SHAPES))
m, k = expert_matrices(*MODEL_SHAPES[MODEL])["gate/up (w1, w3)"]
dense_w = op_bytes("dense", m, k, 1)["weight"]
for op in OPS:
    w = op_bytes(op, m, k, 1)["weight"]
    print(f"{op:6s} weight operand of {MODEL} w1 ({m}×{k}, fp16): {w / 1e6:7.1f} MB = {w / dense_w:6.1%} of dense")
print("\nRoofline on H100 SXM (model, not a measurement):")
print(f"{'tokens':>7} {'dense µs':>9} {'2:4 µs':>8} {'Sam. µs':>8} {'bound':>8}  ceiling 2:4  ceiling Samoyeds")
for t in (1, 16, 64, 256, 1024, 4096):
    p = {op: roofline(op, m, k, t, "h100_sxm") for op in OPS}
    print(f"{t:>7} {p['dense'].time_s * 1e6:>9.1f} {p['spmm'].time_s * 1e6:>8.1f} {p['ssmm'].time_s * 1e6:>8.1f} "
          f"{p['ssmm'].bound:>8}  {p['dense'].time_s / p['spmm'].time_s:>10.2f}×  "
          f"{p['dense'].time_s / p['ssmm'].time_s:>15.2f}×")

# %%
sweep = roofline_sweep(m, k, DEFAULT_TOKENS, "h100_sxm", "float16")
roofline_figure(sweep, metric="time", title=f"Time per GEMM, {MODEL} w1").show()
roofline_figure(sweep, metric="tflops", title=f"Effective TFLOP/s, {MODEL} w1").show()
speedup_figure(sweep, title=f"Speed-up ceiling over dense, {MODEL} w1").show()

# %% [markdown]
# The TFLOP/s curves count only the useful work `2·m·k·tokens` (no padding tokens, no tokens routed
# elsewhere), the same for all three ops, so a higher curve is simply a faster kernel. Note where each
# curve bends: that token count is its *ridge point*, where memory stops being the limit.
#
# Explore other GPUs (H200 has 43% more bandwidth, the same math; A100 less of both), models, the
# down projection and bf16:

# %%
RECORDS = load_kernel_records()
RooflinePanel(MODEL_SHAPES, RECORDS)

# %% [markdown]
# ## 3. Recorded GPU results
#
# A roofline is only a ceiling; real kernels reach some fraction of it. The project records
# measurements made on real GPUs in `data/bench/gpu_kernels*.json` (CUDA events, warm-up, L2 flushed,
# medians, each record naming its device, driver and date). When there are some, the panel above
# draws them as markers over the model curves, labelled *recorded on DEVICE, DATE*.

# %%
if RECORDS:
    devices = sorted({(r["device"], r["date"]) for r in RECORDS})
    print(f"{len(RECORDS)} recorded kernel measurements:")
    for dev, date in devices:
        print(f"  recorded on {dev}, {date}")
    shown = [r for r in RECORDS if (int(r["m"]), int(r["k"])) == (m, k) and r["dtype"] == "float16"]
    if shown:
        roofline_figure(sweep, metric="time", records=shown, title=f"Recorded vs ceiling, {MODEL} w1").show()
else:
    print("No GPU run has been recorded yet: every curve above is the roofline model, not a measurement.\n"
          "To record one, run on a machine with an SM80+ NVIDIA GPU (A100, H100, H200, RTX 30xx/40xx):\n"
          "    samoyeds-lab bench kernels\n"
          "which writes data/bench/gpu_kernels*.json; this lab then plots the results here.")

# %% [markdown]
# ## 4. Live
#
# On a machine with Sparse Tensor Cores the panel below runs the real kernels (`ssmm`, `spmm`, the
# dense kernel and the torch baselines) for the model, token count and dtype you pick, and plots the
# measurement against the ceiling. Without one, it times the **CPU references** instead: the
# pure-torch functions every kernel is tested against.
#
# Do not expect the sparse references to be faster on a CPU. A CPU has no Sparse Tensor Cores, and the
# references are written to be obviously correct: they expand the compressed weight back to dense on
# every call, then run the same fp32 matrix multiply as the dense baseline, so they do strictly more
# work. (A CPU kernel that used the compressed bytes directly would save memory traffic but pay for
# decoding positions element by element.) The speed-ups in this lab come from fewer HBM bytes and
# `mma.sp` on a GPU.

# %%
if kernels.available():
    print("Sparse Tensor Cores available: the panel below runs the GPU kernels.")
else:
    cpu = cpu_reference_records(*CPU_SHAPE, CPU_TOKENS, "float16", repeat=5)
    for r in cpu:
        print(f"{r['op']:28s} {r['ms']:8.3f} ms  (max |diff| to dense fp32: {r['check']:.1e})")
    cpu_timing_figure(cpu, title=f"{CPU_SHAPE[0]}×{CPU_SHAPE[1]} weight, {CPU_TOKENS} tokens").show()

# %%
LivePanel(MODEL_SHAPES, full_size=FULL_SIZE)

# %% [markdown]
# ## Summary
#
# * `mma.sp.m16n8k32` is a warp-wide 16×8×32 multiply whose A operand is stored as 16×16 values plus
#   2-bit positions; each lane holds 8 A values, 8 B values, 4 accumulators, and (two lanes per quad)
#   one metadata register with 8 nibbles.
# * Hopper's `wgmma.mma_async.sp` keeps the same A and metadata registers per warp but reads B from
#   swizzled shared memory through a matrix descriptor; whether it beats `mma.sp` is a measurement.
# * On a GPU, an expert GEMM with few tokens is limited by HBM bytes: the ceilings over dense are
#   ≈1.78× for 2:4 and ≈3.5× for Samoyeds at decode; with thousands of tokens, 2× and 4× from the math.
# * Ceilings are models. Measured results, when recorded, carry their device and date; CPU timings are
#   CPU timings.
#
# Next: the whole MoE layer, with the kernels inside it.
