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
# real GPU measurements next to that ceiling when some have been recorded, and time one real-size
# expert live on your own CPU, where the same bytes argument holds.
#
# **Plan.** (1) one `mma.sp.m16n8k32`, seen from one lane of the warp, then the whole tiled kernel
# stepped across a V-window boundary · (2) the roofline: bytes, FLOPs
# and the speed-up ceilings vs tokens per expert · (3) recorded GPU results · (4) live: one Mixtral-size
# expert on this CPU, dense vs 2:4 vs Samoyeds, with a tokens slider (and the GPU kernels, on a GPU).
#
# **Honesty rules of this lab.** A number is either a **model** (labelled *model (roofline ceiling),
# not a measurement*), a **recording** (labelled *recorded on DEVICE, DATE*), or **measured now** on
# this machine (labelled *measured on CPU, DATE, N threads*). Nothing else.

# %%
import torch

from samoyeds_lab import kernels
from samoyeds_lab.bench.cpu import make_weights, read_bandwidth
from samoyeds_lab.exercises.cpu_kernels import check_decode_ceiling, check_unit_columns
from samoyeds_lab.bench.kernels import MODEL_SHAPES, load_kernel_records
from samoyeds_lab.bench.roofline import DEFAULT_TOKENS, OPS, expert_matrices, op_bytes, roofline, roofline_sweep
from samoyeds_lab.kernels import cpu as cpu_kernels
from samoyeds_lab.reference import ssmm as ssmm_reference
from samoyeds_lab.reference.mma_sp import mma_sp_m16n8k32, pack_a, pack_b, pack_c, pack_e, unpack_d
from samoyeds_lab.reference.stepper import example_ssmm, ssmm_steps
from samoyeds_lab.reference.wgmma import SmemDescriptor, load_b, unpack_wg_d, wgmma_sp_m64nNk32
from samoyeds_lab.viz.kernel_panel import (
    CPU_TOKENS,
    CpuExpertPanel,
    LivePanel,
    RooflinePanel,
    cpu_expert_records,
    cpu_kernel_reason,
    crossover_tokens,
)
from samoyeds_lab.viz.kernel_steps import StepPanel, step_lines
from samoyeds_lab.viz.kernels import cpu_expert_figure, cpu_label, roofline_figure, speedup_figure
from samoyeds_lab.viz.mma_panel import MmaLanePanel, example_tile, example_warpgroup, lane_figures, lane_view

# False: small, fast defaults (Run All takes well under a minute on a 2-core CPU): the Mixtral-size
# CPU timing at 1, 16 and 64 tokens per expert, 3 timed calls each.
# True: every slider token count (1 ... 256), 5 timed calls each (about a minute more).
FULL_SIZE = False

torch.manual_seed(0)
torch.set_printoptions(precision=3, sci_mode=False, linewidth=110)
CPU_EXPERT = (14336, 4096)  # Mixtral-8x7B w1 (gate), bf16: the same matrix as the roofline of section 2
TIMED_TOKENS = CPU_TOKENS if FULL_SIZE else (1, 16, 64)
CPU_REPEAT = 5 if FULL_SIZE else 3

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
# ### From one instruction to the kernel: a V-window boundary, step by step
#
# The SSMM kernel tiles the product `Yᵀ = W · Xᵀ` into blocks of 128 *compressed* weight rows × 64 token
# slots and walks K 32 columns (one `mma.sp.m16n8k32`) at a time. A Samoyeds weight keeps, per V-wide
# window of K, one row of every pair: compressed row `c` (row group `r = c`) stands for dense row
# `2r + row_index[w, c]` in window `w` — `2r` in one window, maybe `2r + 1` in the next. So the kernel
# keeps **one accumulator per compressed row**, and at the end of every window adds it into the output
# row that window names and starts again from zero (no data moves between windows: only the row index
# changes). On the token side, the ids themselves are the addresses of the B rows: slot `n` loads
# `x[token_idx[n]]`, and a `SENTINEL` (padding) slot loads nothing.
#
# `samoyeds_lab.reference.stepper.ssmm_steps` runs the tiled emulator (the same `mma.sp` calls as above,
# in the kernel's loop order) and records every k-step. The example: 8 output rows (4 compressed rows),
# K = 192 in 3 windows of V = 64 (2 k-steps each), 4 tokens picked out of 10 plus one SENTINEL slot,
# small integers so every fp32 sum is exact.
#
# *Predict first:* after step 0 has anything been written to the output? After step 1, how many output
# rows hold values, and which rows of each pair could they be?

# %%
sw, sx, sidx = example_ssmm(seed=0)
steps = ssmm_steps(sw, sx, sidx)
print(f"{sw}; token ids {sidx.tolist()}: {len(steps)} k-steps in one block")
print("row_index (window × compressed row):", sw.row_index.tolist())
for s_ in steps[:2]:
    print("\n".join(step_lines(steps, s_.index)))
print("\nstep | window | flush | live accumulator of c = 0, 1, 2, 3 lands in output row")
for s_ in steps:
    print(f"{s_.index:4d} | {s_.window:6d} | {'yes' if s_.flush else 'no ':5s} | {s_.dense_row.tolist()}")
print("final output == reference ssmm (fp32), bit for bit:",
      torch.equal(steps[-1].out, ssmm_reference(sw, sx, sidx, out_dtype=torch.float32)))
print(f"B load of every step: slots 0–{len(sidx) - 1} read rows {steps[0].b_tokens[:len(sidx)].tolist()} of x "
      f"(SENTINEL = -1 reads nothing), and the other {64 - len(sidx)} slots of the 64-token tile are SENTINEL too")

# %% [markdown]
# Move the slider over the steps: the table shows each compressed row's live accumulator (per token
# slot) and the output row it will land in; the map below shows the output so far — grey cells not yet
# written, amber the cells this step's flush adds into. Every window writes a *different* row of some
# pairs: that swap of destination is all the "row selection" of Samoyeds costs the kernel.

# %%
StepPanel(steps)

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
# ### What *our* kernel's design predicts, before any GPU run
#
# A roofline says what the bytes allow; whether a kernel gets there depends on its launch configuration.
# Little's law says how much a GPU must keep in flight to stream at full bandwidth: bytes in flight per SM
# ≈ latency × bandwidth per SM (≈ 20 KB on an H100, ≈ 29 KB on an H200 at an assumed 800 ns). A CTA that
# waits on two 32-wide K stages has ≈ 9 KB in flight, so the SMs idle between loads; and a grid of 280 CTAs
# on 264 slots runs two waves, the second almost empty. `samoyeds_lab.bench.ssmm_model` counts exactly this
# (shared memory → CTAs per SM, grid → waves, stages × bytes per stage → bytes in flight, the 2:4 tensor-core
# rate) for today's `kernels/ssmm.cu` and for a grid of decode configurations, and picks a default per
# token range. **Every number below is a prediction**, written before the first GPU measurement so that the
# measurement can prove it wrong.
#
# *Predict first:* at 8 tokens on an H100, is today's configuration faster or slower than dense cuBLAS on
# Mixtral's w1 (14336×4096)?

# %%
from samoyeds_lab.bench.ssmm_model import TODAY, choose_defaults, predict
from samoyeds_lab.viz.ssmm_model import default_model_figure

today_w1 = predict(TODAY, 14336, 4096, 8, "h100_sxm")
print(f"today's ssmm.cu config, Mixtral w1, 8 tokens on H100 SXM (predicted): {today_w1.predicted_s * 1e6:.1f} µs, "
      f"{today_w1.predicted_ratio_vs_dense:.2f}× dense · {today_w1.ctas_per_sm} CTAs/SM · "
      f"{today_w1.grid} CTAs = {today_w1.waves:.2f} waves · "
      f"{today_w1.bytes_in_flight_per_sm / 1024:.1f} KiB in flight per SM of {today_w1.littles_law_bytes_per_sm / 1024:.1f} needed")
default_model_figure("h100_sxm").show()

# %% [markdown]
# The model's decode default (deeper pipelines, wider K stages, split-K chosen from the SM count) is what
# the kernel issue asks the decode variant to be; until it runs on a GPU, the right-hand curve is a
# hypothesis, and `samoyeds-lab bench kernels` on a lent GPU records what really happens.

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
# ## 4. Live: one Mixtral-size expert on this CPU
#
# A CPU has no Sparse Tensor Cores, but the first half of the argument above does not need them:
# at decode an expert GEMM is limited by the **bytes of the weight**, on a CPU as on a GPU, and the
# Samoyeds operand is 28% of them. This project has CPU kernels (`samoyeds_lab.kernels.cpu`,
# `kernels/cpu_sparse.c`) that compute straight from the compressed operand and never build the
# dense weight: each 2:4 group's two kept values multiply the two token entries its metadata names,
# gathered in registers (on AVX-512: `vpermt2w` gathers and `vdpbf16ps` products). The MoE backends
# use them on CPU tensors (`backend="auto"`).
#
# Below, one Mixtral-8x7B `w1` (14336 × 4096, bf16: the matrix of section 2) is pruned to 2:4 and to
# Samoyeds once (a few seconds), then timed on **this CPU** at a few token counts
# (`samoyeds_lab.bench.cpu.bench_expert`): torch's dense `F.linear` on the pruned weight stored dense
# in fp32, bf16 and fp16 (the fastest of the three is the baseline) against the two kernels, on the same
# tokens, with a ~96 MB read before every timed call so the weight is never already in cache; medians
# of `CPU_REPEAT`, min–max beside. Next to them: this CPU's **byte ceiling** (the operand's bytes at the
# read bandwidth measured just now: a model) and the GPU roofline of section 2 (a model). The bandwidth is
# what `torch.sum` reaches over 256 MB; a kernel that prefetches better can come in a little under that
# "ceiling", which says the ceiling is approximate, not that the bytes were not read.

# %% [markdown]
# ### Exercise 1 — the gather columns of one unit
#
# The CPU kernel cuts every compressed row into 32-column *units*: 8 groups of 4 columns, 16 kept values.
# Its metadata is one 32-bit word per unit: the **first** kept position of group `g` in bits `2g..2g+1`,
# the **second** in bits `16+2g..17+2g`. Kept value `v = 2g + s` (`s = 0` first, `1` second) multiplies
# column `4g + position` of the token — the kernel turns the word into these 16 gather indices in two
# vector instructions. Write `my_unit_columns(word)` returning the 16 columns (0–31) in value order.
# `check_unit_columns` tries words taken from a real 2:4 weight in the kernel's layout and shows yours vs
# expected (and where the dense unit is nonzero) until it is right.

# %%
def my_unit_columns(word: int) -> list[int]:
    """Columns (0..31) multiplied by the 16 kept values of a unit, in value order v = 2g + s."""
    # TODO: for v in range(16): g, s = v >> 1, v & 1; position = (word >> (16 * s + 2 * g)) & 3;
    #       column = 4 * g + position
    raise NotImplementedError


check_unit_columns(my_unit_columns);

# %% [markdown]
# Stuck? The solution is `samoyeds_lab.exercises.cpu_kernels.solution_unit_columns` (read it after trying).
#
# ### Exercise 2 — predict the speed-up at one token before you measure it
#
# At one token per expert the product reads every weight byte once and does almost nothing else, so its
# time is at best *bytes / bandwidth*. Write `my_decode_ceiling(rows, cols, gbps)` returning
# `(dense_ms, samoyeds_ms)` for a bf16 weight: dense `rows·cols` values of 2 bytes; the Samoyeds 1:2, V=128
# operand the kernel reads: `rows/2 · cols/2` kept values (2 bytes each), 2 bits of metadata per kept value,
# and one byte of row index per 128-column window per compressed row (`rows/2` of them). Their ratio is
# the most any decode kernel can gain; the table below shows how close this CPU gets.

# %%
def my_decode_ceiling(rows: int, cols: int, gbps: float) -> tuple[float, float]:
    """(dense_ms, samoyeds_ms): the time to read the weight at gbps GB/s, dense bf16 and Samoyeds 1:2 V=128."""
    # TODO: count the bytes of each, then ms = bytes / (gbps * 1e9) * 1e3
    raise NotImplementedError


check_decode_ceiling(my_decode_ceiling);

# %% [markdown]
# Stuck? The solution is `samoyeds_lab.exercises.cpu_kernels.solution_decode_ceiling`.

# %%
print(cpu_kernels.cpu_path().line())
why_not = cpu_kernel_reason()
if why_not is None:
    W = make_weights(*CPU_EXPERT, dtype=torch.bfloat16)  # {"samoyeds": ..., "2:4": ...}, magnitude-pruned
    BW = read_bandwidth(1 << 28, repeat=3)
    # reference=FULL_SIZE: the pure-torch reference too (it rebuilds the dense weight on every call: slow)
    cpu_recs = cpu_expert_records(*CPU_EXPERT, TIMED_TOKENS, weights=W, repeat=CPU_REPEAT, bandwidth=BW,
                                  reference=FULL_SIZE)
    dense_mb = CPU_EXPERT[0] * CPU_EXPERT[1] * 2 / 1e6
    print(f"read bandwidth of this CPU: {BW:.1f} GB/s (measured now, {torch.get_num_threads()} threads)")
    print(f"weight bytes: dense bf16 {dense_mb:.0f} MB, 2:4 {W['2:4'].nbytes / 1e6:.0f} MB, "
          f"Samoyeds {W['samoyeds'].nbytes / 1e6:.0f} MB")
    print(f"{cpu_label(cpu_recs[0])}:")
    print(f"{'tokens':>6} {'dense ms':>9} {'(dtype)':>10} {'2:4 ms':>8} {'×':>6} {'Samoyeds ms':>12} {'×':>6}"
          f" {'Sam. ceiling ms':>16}")
    for t in TIMED_TOKENS:
        by = {r["kind"]: r for r in cpu_recs if r["tokens"] == t and r["kind"] != "dense"}
        s_, n_ = by["samoyeds"], by["2:4"]
        print(f"{t:>6} {s_['dense_ms']:>9.2f} {s_['dense_dtype']:>10} {n_['ms']:>8.2f} {n_['speedup']:>5.2f}× "
              f"{s_['ms']:>12.2f} {s_['speedup']:>5.2f}× {s_['ceiling_ms']:>16.2f}")
    for ref in (r for r in cpu_recs if r["kind"] == "reference"):
        print(f"the pure-torch reference (rebuilds the dense weight on every call), {ref['tokens']} token: "
              f"{ref['ms']:.0f} ms")
    gpu = roofline_sweep(*CPU_EXPERT, [t for t in DEFAULT_TOKENS if 0 < t <= 4096], "h100_sxm", "bfloat16")
    cpu_expert_figure(cpu_recs, gpu_sweep=gpu, title=f"{MODEL} w1 ({CPU_EXPERT[0]}×{CPU_EXPERT[1]}, bf16) on this CPU"
                      ).show()
    x = crossover_tokens([r for r in cpu_recs if r["kind"] == "samoyeds"])
    print("Samoyeds kernel vs dense: " + (f"no faster from {x} tokens per expert on" if x is not None
                                          else f"faster at every measured count ({', '.join(map(str, TIMED_TOKENS))})"))
else:
    print(f"No CPU kernel can run here ({why_not}): there is nothing to time on this CPU.")

# %% [markdown]
# **Reading it** (your numbers are in the table above). At one token per expert the GEMM is a
# matrix-vector product: the kernel reads the 28% operand once and does little else, so it can run up to
# the byte ratio (≈3.5×) faster than the best dense path, and on a CPU with AVX-512 it gets a good part
# of the way — the same reason Samoyeds is fast on a GPU at decode. With more tokens the speed-up fades,
# and past some tens of tokens dense wins. Why: a dense GEMM loads a block of tokens once and reuses it
# across many weight rows (all rows use the same columns), so as tokens grow it turns compute-bound and
# runs near the CPU's matrix-multiply peak, and the bytes it reads stop mattering. In a 2:4 or Samoyeds
# operand **every row keeps different columns**: the token entries gathered for one row's kept values
# are of no use to the next row, so each row pays for its own gathers for every token, and the kernel's
# work grows with tokens × kept values. On a GPU the Sparse Tensor Cores do that selection inside
# `mma.sp`, in hardware, which is why the GPU ceilings (dotted) stay high up to hundreds of tokens.
#
# That is the AVX-512 path's story (the banner names yours). On the **AVX2 path** the gathers are cheap
# per token: the shuffle controls of a unit come from a 256-entry table once, then each further token
# costs one load, one `vpshufb` and one FMA per 8 kept values. And on a CPU without AVX-512 BF16 torch has
# no fast bf16 matmul either (its best is fp16 or fp32, twice the bytes), so there the kernel stays ahead
# to hundreds of tokens (recorded on such a CPU: README).
#
# Move the slider: each move **re-measures** that token count on this CPU (about a second at ≤ 16 tokens,
# several at 256) and adds it to the curves, so you can watch where the speed-up fades on your machine.

# %%
cpu_panel = CpuExpertPanel(*CPU_EXPERT, weights=W, records=cpu_recs, bandwidth=BW, repeat=CPU_REPEAT,
                           value=16) if why_not is None else None
cpu_panel

# %% [markdown]
# On a machine with Sparse Tensor Cores the panel below runs the real GPU kernels (`ssmm`, `spmm`, the
# dense kernel and the torch baselines) for the model, token count and dtype you pick, and plots the
# measurement against the ceiling.

# %%
if kernels.available():
    print("Sparse Tensor Cores available: the panel below runs the GPU kernels.")
    live = LivePanel(MODEL_SHAPES)
else:
    live = None
    print("No Sparse Tensor Cores here (see the banner): the live GPU panel is not shown; the CPU panel above "
          "is this machine's live measurement.")
live

# %% [markdown]
# ## Summary
#
# * `mma.sp.m16n8k32` is a warp-wide 16×8×32 multiply whose A operand is stored as 16×16 values plus
#   2-bit positions; each lane holds 8 A values, 8 B values, 4 accumulators, and (two lanes per quad)
#   one metadata register with 8 nibbles.
# * The kernel keeps one accumulator per *compressed* row and, at every V-window boundary, adds it into
#   the output row that window's row index names (`2r` or `2r + 1` at 1:2) and zeroes it; its B loads use
#   the token ids as addresses. Stepped on the emulator, the result equals the reference bit for bit.
# * Hopper's `wgmma.mma_async.sp` keeps the same A and metadata registers per warp but reads B from
#   swizzled shared memory through a matrix descriptor; whether it beats `mma.sp` is a measurement.
# * On a GPU, an expert GEMM with few tokens is limited by HBM bytes: the ceilings over dense are
#   ≈1.78× for 2:4 and ≈3.5× for Samoyeds at decode; with thousands of tokens, 2× and 4× from the math.
# * On a CPU the same bytes argument holds at decode: kernels that read the compressed operand directly
#   run a Mixtral-size expert several times faster than torch's best dense path at 1 token. On the
#   AVX-512 path the gain fades with tokens and turns into a loss from a few dozen on, because every
#   compressed row keeps different columns (no reuse of a gathered token across rows), while dense GEMM
#   becomes compute-bound and efficient; the AVX2 path's table-driven gathers keep it ahead of a torch
#   without fast bf16 to hundreds of tokens. On a GPU `mma.sp` does that selection in hardware.
# * Ceilings are models. Measured results carry their device and date: recorded GPU runs, and CPU
#   timings measured now on this CPU.
#
# Next: the whole MoE layer, with the kernels inside it.
