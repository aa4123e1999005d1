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
# Lab 01 — structured sparsity. What can this machine run?
import samoyeds_lab as sl

print(sl.device_info().banner())

# %% [markdown]
# # Lab 01 — Structured sparsity: N:M, 2:4, Samoyeds and VENOM
#
# **Goal.** See what a *structured* sparse weight looks like, what it costs in bytes, what the little
# index words called **metadata** say, and how the choice of *which* weights to drop (magnitude vs
# Wanda) changes the error of a layer.
#
# **Plan.** (1) N:M sparsity on a tiny matrix · (2) 2:4 on Sparse Tensor Cores and its metadata,
# with two exercises · (3) Samoyeds' dual-side sparsity · (4) VENOM's V:N:M · (5) bytes per format ·
# (6) magnitude vs Wanda · (7) an interactive panel to explore all of it.
#
# Everything runs on the CPU with pure-torch references; nothing here needs a GPU.
#
# **Colours mean the same thing in every lab** (`samoyeds_lab.viz.palette`): grey is dense, blue is
# 2:4, green is Samoyeds, violet is VENOM, pink is SiDA, cyan is MoNDE's near-data side, orange is weights
# offloaded over PCIe. Series named only by their legend (experts, domains, devices) cycle other colours.

# %%
import torch

from samoyeds_lab import viz
from samoyeds_lab.exercises.sparsity import check_decode_word, check_mask_24
from samoyeds_lab.formats import SENTINEL, TokenSelection, compress_nm, compress_samoyeds, compress_venom
from samoyeds_lab.prune import outlier_activations, prune_mask, reconstruction_error, sparsify

# False: small, fast defaults (the whole notebook runs in seconds on a laptop CPU).
# True: a 1024 x 4096 slice of an expert-sized matrix (Mixtral-8x7B's w1 is 14336 x 4096); slower.
FULL_SIZE = False

torch.manual_seed(0)
torch.set_printoptions(precision=3, sci_mode=False, linewidth=110)
ROWS, COLS = (1024, 4096) if FULL_SIZE else (256, 512)
TOKENS = 512 if FULL_SIZE else 128

# A synthetic expert weight: W[out, in] ~ N(0, 0.02²), rows = output features, columns = K (inputs).
W = 0.02 * torch.randn(ROWS, COLS)
# Synthetic layer inputs X[tokens, in] with LLM-like outlier channels (explained in section 6).
X = outlier_activations(TOKENS, COLS, seed=0)
print(f"W: {tuple(W.shape)} weight, X: {tuple(X.shape)} activations")

# %% [markdown]
# ## 1. N:M sparsity
#
# An **N:M** sparse matrix keeps at most **N** nonzeros in every group of **M** consecutive elements
# of a row (along K, the dimension a matrix multiply sums over). Its density is N/M: 2:4 keeps 50%,
# 1:4 keeps 25%. Because every group has the same budget, the work per row is perfectly balanced and
# the kept values pack into a dense array of `cols·N/M` columns, plus, for each kept value, its
# **position** inside its group (`ceil(log2 M)` bits).
#
# Below: a 4×8 matrix, its 2:4 mask by magnitude (the 2 largest `|w|` of each group of 4), and the
# compressed form `NMWeight(values, positions)`.

# %%
tiny = W[:4, :8].clone()
mask = prune_mask(tiny, "2:4")  # method="magnitude" by default
nm = compress_nm(tiny * mask, n=2, m=4)
print("weights:\n", tiny)
print("kept values, shape", tuple(nm.values.shape), ":\n", nm.values)
print("positions inside each group of 4:\n", nm.positions)
viz.mask_heatmap(mask, title="2:4 mask of a 4×8 matrix", group_cols=4).show()
viz.values_heatmap(nm.values, title="Kept values, 2 per group", group_cols=2).show()

# %% [markdown]
# ## 2. 2:4 on Sparse Tensor Cores, and what metadata is
#
# NVIDIA GPUs since Ampere (SM80) have **Sparse Tensor Cores**: the instruction
# `mma.sp.sync.aligned.m16n8k32` multiplies a 2:4-sparse A tile (stored compressed: 16×16 values instead
# of 16×32) by a dense B tile, skipping the zeros, for up to 2× the math rate of the dense instruction
# (Mishra et al., *Accelerating Sparse Deep Neural Networks*, arXiv 2104.08378). Only **2:4** is
# supported in hardware.
#
# The hardware must know where each kept value came from. That is the **metadata**: for every group of
# 4, a 4-bit *nibble* whose `bits[1:0]` hold the position of the first kept value and `bits[3:2]` the
# second (ascending). The six legal nibbles are `0x4` (0,1), `0x8` (0,2), `0xC` (0,3), `0x9` (1,2),
# `0xD` (1,3), `0xE` (2,3). Eight groups (32 columns of the dense row) fill one 32-bit word, group `j`
# in bits `4j … 4j+3`. That is 2 bits per kept 16-bit value: a 12.5% surcharge on the values, so 2:4
# fp16 needs 50% + 6.25% ≈ 56% of the dense bytes.
#
# (How these words are spread over the 32 lanes of a warp for `mma.sp` is the subject of a later lab;
# here we look at the logical word.)

# %%
w24 = sparsify(W[:8, :64].half(), "2:4")  # prune + compress in one call: an NMWeight
words = w24.sptc_metadata()  # uint32 [rows, cols/32]
word = int(words[0, 0].item())
print(f"metadata words: shape {tuple(words.shape)}, dtype {words.dtype}")
print(f"row 0, word 0 = 0x{word:08X} = {word:032b}b")
print("positions of row 0, columns 0..31:", w24.positions[0, :16].view(8, 2).tolist())
viz.metadata_word_figure(word).show()


# %% [markdown]
# ### Exercise 1 — a 2:4 mask by magnitude
#
# Write `my_mask_24(w)` returning a **bool** tensor of `w`'s shape that is True for the 2 elements with
# the largest `|w|` in every group of 4 consecutive elements of a row (`w.shape[1] % 4 == 0`). Do not
# modify `w`. Run the cell: `check_mask_24` prints *yours vs expected* and a mismatch mask until it is
# right.

# %%
def my_mask_24(w: torch.Tensor) -> torch.Tensor:
    """Keep the 2 largest |w| of every 4 consecutive elements of each row; bool mask of w's shape."""
    # TODO: view w as [rows, cols // 4, 4]; find the 2 largest |w| per group (torch.topk on w.abs());
    #       set those 2 positions to True in a bool tensor (scatter_); reshape back to [rows, cols].
    raise NotImplementedError


check_mask_24(my_mask_24);


# %% [markdown]
# Stuck? The solution is `samoyeds_lab.exercises.sparsity.solution_mask_24` (read it after trying).
#
# ### Exercise 2 — decode a metadata word
#
# Write `my_decode_word(word)` that takes one 32-bit metadata word (a Python int) and returns the kept
# positions of its 8 groups, group 0 first, as a list of 8 pairs `(p0, p1)`. Group `j` is the nibble
# `(word >> 4j) & 0xF`; `p0` is its low two bits, `p1` its high two bits.

# %%
def my_decode_word(word: int) -> list[tuple[int, int]]:
    """The kept positions (p0, p1) of the 8 groups of one 2:4 metadata word, group 0 first."""
    # TODO: for j in range(8): nibble = (word >> (4 * j)) & 0xF; p0 = nibble & 0b11; p1 = nibble >> 2
    raise NotImplementedError


check_decode_word(my_decode_word);


# %% [markdown]
# Stuck? The solution is `samoyeds_lab.exercises.sparsity.solution_decode_word` (read it after trying).

# %% [markdown]
# ## 3. Samoyeds: dual-side structured sparsity
#
# Samoyeds (EuroSys'25, arXiv 2503.10725) makes **both** operands of an MoE expert's matrix
# multiply sparse.
#
# **Weight side.** Cut the expert weight `W[out, K]` into `V`-wide windows along K (V = 128 in the
# paper) and into groups of `M = 2` consecutive rows. In every window, only `N = 1` row of each group is
# kept (*vector-wise row selection*), and inside a kept row segment the usual **2:4** applies. Density:
# 1/2 · 1/2 = 25%. Stored: the kept values, the 2:4 metadata, and one small *row index* per window and
# kept row ("which row of my pair is this?").
#
# **Activation side.** In an MoE layer each expert only sees the tokens the router sent to it: with T
# tokens, E experts and top-k routing, about T·k/E of them. Samoyeds passes the expert a list of token
# ids and gathers those token rows inside the kernel's loads, so the activation operand is sparse too:
# whole token rows are skipped. Selecting *rows* of W (output features), not columns, keeps K untouched,
# so the weight pattern never forces a second gather along K on top of the token gather.

# %%
ws = W[:8, :128]
mask_s = prune_mask(ws, "samoyeds", n=1, m=2, vector=32)  # V=32 here so that 4 windows fit the plot
sw = compress_samoyeds((ws * mask_s).half(), n=1, m=2, vector=32)
print(sw)
print(f"density {sw.density:.0%}: values {tuple(sw.values.shape)}, 2:4 metadata "
      f"{tuple(sw.sptc_metadata().shape)} uint32, row_index {tuple(sw.row_index.shape)} (window × kept row)")
print("row_index (which row of each pair is kept, per window):\n", sw.row_index)
viz.mask_heatmap(mask_s, title="Samoyeds 1:2 rows per V=32 window, 2:4 inside", group_cols=32,
                 group_rows=2).show()

# %% [markdown]
# The activation side in miniature: 8 tokens routed top-2 over 4 experts. Each expert gets only its own
# token ids (padded with a sentinel, here to a multiple of 4; the real kernels pad to their 64-token tile).

# %%
topk_ids = torch.tensor([[0, 2], [1, 2], [0, 3], [2, 3], [0, 1], [2, 0], [3, 1], [2, 3]])
sel = TokenSelection.from_topk(topk_ids, num_experts=4, pad_to=4)
for e in range(4):
    seg = sel.padded_token_ids[sel.padded_offsets[e]:sel.padded_offsets[e + 1]].tolist()
    print(f"expert {e}: tokens {sel.tokens_of(e).tolist()}  → padded {seg} (SENTINEL = {SENTINEL})")

# %% [markdown]
# ## 4. VENOM: V:N:M
#
# VENOM (Castro et al., SC'23, arXiv 2310.02065) reaches densities below 50% on the same 2:4 hardware
# differently: cut W into blocks of `V` rows × `M` columns, keep the same `N` **columns** for all V rows
# of a block, then apply 2:4 inside the kept columns. Here `n` counts kept columns, so VENOM's "64:2:8"
# (2 of every 8 per row, 25%) is `v=64, n=4, m=8`. Its metadata: the 2:4 nibbles plus one column index
# per kept column of each block. The kept columns are scattered along K, so a kernel must gather the
# matching K elements of the other operand: exactly the dimension Samoyeds keeps free for the token
# gather.

# %%
wv = W[:16, :64]
mask_v = prune_mask(wv, "venom", v=8, n=4, m=8)
vw = compress_venom((wv * mask_v).half(), v=8, n=4, m=8)
print(vw)
print("kept columns (0..7) of the first 4 column blocks, per 8-row block:\n", vw.column_index[:, :16].view(2, 4, 4))
viz.mask_heatmap(mask_v, title="VENOM 8:4:8 (n = kept columns), 2:4 inside", group_cols=8, group_rows=8).show()

# %% [markdown]
# ## 5. What each format costs in bytes
#
# Every compressed operand reports its size through `.nbytes`: values plus all the metadata it needs
# (positions, row or column indices, CSR's 32-bit column index per value and row pointers). Dense fp16
# is `rows·cols·2` bytes. Compare at the same weight (set `FULL_SIZE = True` for an expert-sized slice).
#
# **Predict first:** write down three percentages of the dense bytes before you run the cell: CSR keeping
# 50% of the values (each with a 32-bit column index), 2:4 (50% kept, 2 bits of metadata per kept value),
# and Samoyeds 1:2 V=128 (25% kept). Is any of them *larger* than dense?

# %%
W16 = W.half()
formats = {
    "dense fp16": sparsify(W16, "dense"),
    "CSR, 50% kept": sparsify(W16, "unstructured", density=0.5),
    "2:4 (50%)": sparsify(W16, "2:4"),
    "CSR, 25% kept": sparsify(W16, "unstructured", density=0.25),
    "VENOM 64:4:8 (25%)": sparsify(W16, "venom", v=64, n=4, m=8),
    "Samoyeds 1:2 V=128 (25%)": sparsify(W16, "samoyeds", n=1, m=2, vector=128),
}
dense_bytes = ROWS * COLS * 2
sizes = {name: op.nbytes for name, op in formats.items()}
for name, b in sizes.items():
    print(f"{name:26s} {b:>10,} bytes  {b / dense_bytes:6.1%} of dense")
viz.bytes_bar(sizes, dense_bytes, highlight="Samoyeds 1:2 V=128 (25%)",
              title=f"Bytes per format, {ROWS}×{COLS} fp16 weight").show()

# %% [markdown]
# Unstructured sparsity in CSR is *larger* than dense at 50% (a 4-byte index per 2-byte value) and only
# slightly smaller at 25%; structured formats pay a few bits per value instead. On a GPU, memory-bound
# expert GEMMs (few tokens per expert, e.g. while decoding) run at the speed of the bytes they stream, so
# these ratios are roughly the speed-up ceilings: ≈1.8× for 2:4 and ≈3.5× for Samoyeds.

# %% [markdown]
# ## 6. Which weights to drop: magnitude vs Wanda
#
# **Magnitude pruning** keeps the largest `|W[i, j]|`, which minimises the *weight* error
# `‖W − Ŵ‖`. But a layer computes `y = W x`: dropping `W[i, j]` changes output `i` by `W[i, j]·x[j]`, so
# what matters is `|W[i, j]|` *times the size of input j*. LLM activations have a few **outlier feature
# dimensions** whose values are many times larger than the rest, in the same dimensions across most
# tokens (Dettmers et al., *LLM.int8()*, arXiv 2208.07339). **Wanda** (Sun et al., ICLR'24,
# arXiv 2306.11695) therefore scores `|W[i, j]| · ‖X[:, j]‖₂` over calibration tokens and compares
# scores within each output row; no retraining, no weight update.
#
# **Honesty note.** No model hub is reachable here, so `X` is *synthetic*: Gaussian values times
# per-channel scales that are log-normal (heavy-tailed) plus a few outlier channels at 20× the median
# scale — the documented property above, not recorded activations (see `outlier_activations`).
# A later lab ships a small trained MoE; this lab will then switch to its recorded activations.
#
# **Predict first:** on the output error, will Wanda beat magnitude for every pattern below, and for which
# pattern do you expect the largest gain? (Hint: which patterns let a score pick *columns*?)

# %%
viz.activation_scale_figure(X).show()

patterns = {
    "2:4": dict(pattern="2:4"),
    "Samoyeds 1:2 V=128": dict(pattern="samoyeds", n=1, m=2, vector=128),
    "VENOM 64:4:8": dict(pattern="venom", v=64, n=4, m=8),
    "unstructured 25%": dict(pattern="unstructured", density=0.25),
}
output_error = {"magnitude": {}, "wanda": {}}
for name, kw in patterns.items():
    for method in ("magnitude", "wanda"):
        m_ = prune_mask(W, method=method, acts=X if method == "wanda" else None, **kw)
        output_error[method][name] = float(reconstruction_error(W, m_, X))
        weight_err = float(reconstruction_error(W, m_))
        print(f"{name:20s} {method:9s} weight error {weight_err:.3f}   output error "
              f"{output_error[method][name]:.3f}")
viz.error_bar(
    output_error, title="Output error ‖XWᵀ − XŴᵀ‖ / ‖XWᵀ‖ on the synthetic activations"
).show()

# %% [markdown]
# Magnitude wins on the weight error (that is what it optimises), Wanda on the output error: it keeps
# the weights that multiply the outlier channels. Wanda helps most where the pattern lets it choose
# columns (unstructured, VENOM: a block keeps the outlier columns for all its rows). Samoyeds' row
# selection drops whole row segments, which no per-column score can rescue, and on this i.i.d. random
# weight no row is more important than its neighbour, so its error is the highest of the 25% patterns.
# Trained weights have more structure, and the Samoyeds paper prunes with second-order (OBS) scores in
# two steps (rows, then 2:4). The mask builders take any score tensor (`samoyeds_mask(scores, n=1, m=2,
# vector=128)` in `samoyeds_lab.prune`), so you can try your own.

# %% [markdown]
# ## 7. Explore
#
# Pick a pattern, N, M, the vector V (Samoyeds: window width along K; VENOM: rows per block), a matrix
# size (top-left slices of `W`) and a pruning method. You see the mask (the outlined cells are the 32
# columns described by the metadata word), the stored values, that metadata word decoded, the bytes of
# every format, and both methods' errors. Settings a pattern cannot build (say N ≥ M) explain why
# instead of plotting. It opens on Samoyeds 1:2 with V = 32, so every slider does something; 2:4 uses none
# of N, M, V (they grey out).

# %%
panel = viz.SparsityPanel(W, X)
panel

# %% [markdown]
# ## Summary
#
# * N:M keeps N of every M consecutive weights; only **2:4** runs on Sparse Tensor Cores, with 2 bits of
#   metadata per kept value (one nibble per group, 8 groups per 32-bit word).
# * **Samoyeds** keeps 1 of 2 rows per 128-wide window, then 2:4: 25% density in ≈28% of the dense bytes,
#   and leaves K free for gathering only the tokens routed to each expert (the activation side).
# * **VENOM** selects columns per block instead; same density, but the selection gathers along K.
# * Unstructured CSR needs more bytes than dense at 50%.
# * With outlier input channels, **Wanda** keeps the weights that matter for the outputs; magnitude only
#   keeps the big weights.
#
# Next: the `mma.sp` register layout and a CPU emulator of the Samoyeds kernel.
