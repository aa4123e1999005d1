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
# Lab 03 — routing and expert hotness. What can this machine run?
import samoyeds_lab as sl

print(sl.device_info().banner())

# %% [markdown]
# # Lab 03 — Routing: which experts are hot, when, and for which text
#
# **Goal.** See what an MoE router decides on real text, measure how *uneven* (hot experts), how
# *local* (consecutive tokens reusing experts) and how *data-dependent* (prose vs code) those
# decisions are, and why the number of tokens each expert receives decides the shape of the kernels
# that Samoyeds, SiDA and MoNDE optimise.
#
# **Plan.** (1) what a router computes · (2) the shipped routing traces · (3) layer × expert hotness per
# domain and load imbalance · (4) a token timeline coloured by expert · (5) temporal locality vs random
# baselines, compared with the Mixtral paper · (6) transitions between layers and co-activation ·
# (7) tokens per expert for decode and prefill batches, and the 64-token tile · (8) your own text ·
# (9) an interactive panel.
#
# **The model.** A *tiny* byte-level MoE trained by this project on CPU in minutes
# (`data/tiny_moe`, 4 MoE layers × 8 experts, top-2, Mixtral-style router, ≈3.5 M parameters) on three
# kinds of text: English prose, German prose and Python code (`samoyeds_lab.corpus`). It is small enough
# to run here and real enough to have learned its routing — but it is not Mixtral, and where it behaves
# differently this lab says so.

# %%
import tempfile
from pathlib import Path

import numpy as np
import torch

from samoyeds_lab.corpus import load_corpus
from samoyeds_lab.exercises.routing import check_locality, check_top_k_routing
from samoyeds_lab.formats import TokenSelection
from samoyeds_lab.moe import TinyMoEForCausalLM
from samoyeds_lab.routing import (
    coactivation,
    expert_counts,
    expert_frequency,
    imbalance,
    record_routing,
    temporal_locality,
    tokens_per_expert,
    transition_matrix,
)
from samoyeds_lab.routing.ship import load_shipped_trace, record_shipped_traces
from samoyeds_lab.viz.routing import (
    MIXTRAL_LOCALITY,
    byte_labels,
    coactivation_heatmap,
    domain_hotness_figure,
    imbalance_figure,
    locality_figure,
    padding_curve_figure,
    token_timeline,
    tokens_per_expert_figure,
    transition_heatmap,
)
from samoyeds_lab.viz.routing_panel import RoutingPanel

# False: load the routing traces shipped in data/traces (8192 held-out tokens per domain; seconds).
# True: re-record them live from the model over the whole held-out split (52 224 tokens per domain, the
# shortest domain's held-out bytes in 256-byte windows; about 2 minutes on 2 CPU cores).
FULL_SIZE = False

torch.manual_seed(0)
torch.set_printoptions(precision=3, sci_mode=False, linewidth=110)
np.set_printoptions(precision=3, suppress=True, linewidth=110)
MODEL_DIR = Path(sl.__file__).resolve().parents[1] / "data" / "tiny_moe"
DOMAINS = ("en", "de", "code")
model = TinyMoEForCausalLM.from_pretrained(MODEL_DIR)
cfg = model.config
E, K = cfg.num_experts, cfg.top_k
print(f"tiny MoE: {cfg.layers} MoE layers, E = {E} experts, top-{K}, hidden {cfg.hidden}, "
      f"{cfg.router_style} router, {model.num_parameters() / 1e6:.2f} M parameters")

# %% [markdown]
# ## 1. What a router computes
#
# Every MoE layer replaces the feed-forward block by `E` feed-forward *experts* and a **router** (or
# *gate*): a single linear layer `W_g [E, H]`. For the hidden state `x` of one token:
#
# $$z = W_g x, \qquad p = \mathrm{softmax}(z), \qquad \text{ids} = \mathrm{top}_k(p), \qquad
#   w_j = \frac{p_{\text{ids}_j}}{\sum_{i} p_{\text{ids}_i}}, \qquad
#   y = \sum_{j=1}^{k} w_j \, \mathrm{Expert}_{\text{ids}_j}(x).$$
#
# Only `k` of the `E` experts run for this token (here 2 of 8): the model has 8× the feed-forward
# parameters but spends about 2× the compute of one. That is the whole point of MoE, and the whole
# problem of serving it: *which* experts' weights are needed depends on the token, layer by layer.
#
# Below, the router of layer 0 on a short sentence: the probabilities `p` of all 8 experts for a few
# tokens, the two it keeps, and their renormalised weights.

# %%
sentence = "The router picks two experts per token."
ids = torch.tensor(list(sentence.encode()), dtype=torch.int64)
demo = record_routing(model, ids)  # one forward pass with hooks on every router (outputs unchanged)
probs = torch.softmax(demo.logits[0].float(), dim=-1)  # layer 0, [tokens, E]
labels = byte_labels(demo.token_ids)
print("token  " + " ".join(f"  e{e} " for e in range(E)) + "   → top-2 (weights)")
for t in range(8):
    row = " ".join(f"{v:5.2f}" for v in probs[t].tolist())
    chosen = ", ".join(f"e{int(e)} ({float(w):.2f})" for e, w in zip(demo.topk_ids[0, t], demo.weights[0, t]))
    print(f"{labels[t]!r:6s} {row}   → {chosen}")

# %% [markdown]
# ### Exercise 1 — write the router's top-k
#
# Write `my_top_k(logits, k)` for Mixtral-style routing: `logits` is `[T, E]`; return `ids [T, k]`, the `k`
# experts of largest `p = softmax(logits)` per token **in descending order** (column 0 is the first
# choice), and `weights [T, k]`, their probabilities renormalised to sum to 1 per token — the formula
# above. `check_top_k_routing` compares yours with the package's router (`samoyeds_lab.moe.route`) on a
# small example, 64 tokens of the tiny model's real router logits and random shapes up to 64 experts, and
# shows yours vs expected for the first tokens that differ.

# %%
def my_top_k(logits: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids [T, k] int64, weights [T, k] float): Mixtral-style top-k routing of router logits [T, E]."""
    # TODO: p = torch.softmax(logits.float(), dim=-1); keep torch.topk(p, k, dim=-1) (values, indices),
    #       then divide the kept values by their sum over the last dimension
    raise NotImplementedError


check_top_k_routing(my_top_k);

# %% [markdown]
# Stuck? The solution is `samoyeds_lab.exercises.routing.solution_top_k_routing` (read it after trying).
# Once it passes, notice that a softmax over only the `k` kept *logits* gives the same weights: the
# normaliser `Σ_e exp z_e` cancels in the renormalisation.

# %% [markdown]
# ## 2. Routing traces
#
# Running the model in every cell would be slow and would hide what we want to study, so the project
# ships **routing traces** (`data/traces/`, see its README): the tiny model was run once over held-out
# text of each domain (text it never trained on: 32 windows of 256 bytes spread over the held-out split,
# 8192 tokens per domain) and every router's decision was stored — first and second choice, weights, and
# the raw router logits in fp16 (a later lab trains SiDA's predictor on them). Each file records the
# exact checkpoint hash and command that made it.

# %%
if FULL_SIZE:
    held = load_corpus("heldout", DOMAINS)
    tokens = min(len(text) // cfg.max_seq * cfg.max_seq for text in held.values())
    live_dir = Path(tempfile.mkdtemp(prefix="traces_"))
    record_shipped_traces(MODEL_DIR, live_dir, tokens, write_readme=False, command="Lab 03, FULL_SIZE = True")
    traces = {d: load_shipped_trace(d, trace_dir=live_dir) for d in DOMAINS}
else:
    traces = {d: load_shipped_trace(d) for d in DOMAINS}
for d, tr in traces.items():
    m = tr.meta
    print(f"{d:5s} {tr.num_tokens} tokens in {tr.sequence_lengths.numel()} windows of {m['window']} bytes "
          f"({m['corpus_split']} split) · topk_ids {tuple(tr.topk_ids.shape)} · logits {tr.logits.dtype} · "
          f"checkpoint sha256 {m['model_sha256'][:12]}… ({'final' if m['final'] else 'intermediate'})")
LAYERS = traces["en"].layer_names
L = len(LAYERS)

# %% [markdown]
# ## 3. Expert hotness per layer and domain
#
# The **usage** of expert `e` in layer `l` is the share of tokens that send one of their `k` choices to
# it: `u[l, e] = #{tokens using e} / T`. Perfectly even routing gives every expert `k/E = 25%`. Each row
# below sums to `k = 200%`. White is uniform, red is hot (more tokens than average), blue is cold.

# %%
usage = {d: expert_frequency(tr) * K for d, tr in traces.items()}
domain_hotness_figure(usage, uniform=K / E, layer_names=LAYERS).show()

# %% [markdown]
# **Load imbalance** in numbers: `max/mean` is the busiest expert's tokens over the average (1 =
# balanced; at most `E/k = 4`, when one expert serves every token). It is the *straggler factor* of expert
# parallelism — with one expert per GPU, the layer is as slow as its busiest GPU — and the reason MoE
# training adds a load-balancing loss (this model used the Switch/Mixtral loss with weight 0.01).

# %%
imb = {d: imbalance(tr) for d, tr in traces.items()}
print("max/mean load per layer      " + "  ".join(f"{n:>12s}" for n in LAYERS))
for d in DOMAINS:
    print(f"{d:28s} " + "  ".join(f"{v:12.2f}" for v in imb[d].max_over_mean.tolist()))
print("normalised entropy (1 = uniform)")
for d in DOMAINS:
    print(f"{d:28s} " + "  ".join(f"{v:12.2f}" for v in imb[d].normalized_entropy.tolist()))
imbalance_figure({d: v.max_over_mean for d, v in imb.items()}, layer_names=LAYERS, worst=E / K,
                 title="Load imbalance: busiest expert / mean").show()

all_usage = torch.stack(list(usage.values())).mean(0)  # [L, E], averaged over the three domains
for l, name in enumerate(LAYERS):
    cold = [f"e{e} ({all_usage[l, e]:.1%})" for e in range(E) if all_usage[l, e] < 0.03]
    print(f"{name}: experts used by < 3% of tokens: {', '.join(cold) if cold else 'none'}")

# %% [markdown]
# **What the tiny model shows, honestly.** The trained model is *close to balanced*: on English and
# German the busiest expert mostly gets only 1.15–1.4× its fair share (German's last layer 1.6×) and no
# expert is starved (the list above is empty); on code the skew is larger (about 1.5–1.6×), because
# code leans on a few experts (next cell). That is the load-balancing loss doing its job — and it was not a given: in an earlier,
# shorter training run of this same model (18 minutes, stopped around step 1900), the deeper layers had
# *partially collapsed*, one expert serving 60–80% of the tokens and others almost never chosen; longer
# training with the same loss evened them out. So the hotness here is mild per layer, as in Mixtral
# (whose authors report no strong expert specialisation). Within a *small batch* it is stronger (section
# 7), and that is what an expert cache or a near-data unit (MoNDE) exploits.
#
# **Data-aware routing.** Compare the three heatmaps: the same experts are hot in all three domains, but
# not equally. The total-variation distance between two domains' routing distributions,
# `½ Σ_e |f_a[e] − f_b[e]|` (0 = identical routing, 1 = disjoint), says by how much, and the last lines
# name the expert that code uses most beyond prose in each layer:

# %%
freq = {d: expert_frequency(tr) for d, tr in traces.items()}  # rows sum to 1
pairs = [("en", "de"), ("en", "code"), ("de", "code")]
print("total variation distance     " + "  ".join(f"{n:>12s}" for n in LAYERS))
for a, b in pairs:
    tv = 0.5 * (freq[a] - freq[b]).abs().sum(1)
    print(f"{a + ' vs ' + b:28s} " + "  ".join(f"{v:12.3f}" for v in tv.tolist()))
for l in range(L):
    e = int((freq["code"][l] - 0.5 * (freq["en"][l] + freq["de"][l])).argmax())
    print(f"{LAYERS[l]}: the expert code uses most more than prose: e{e} "
          f"(code {usage['code'][l, e]:.0%}, en {usage['en'][l, e]:.0%}, de {usage['de'][l, e]:.0%} of tokens)")

# %% [markdown]
# Code stands apart from prose: in every layer it sends about 1.4–3× as many tokens as English or German
# to one particular expert, and its distance to German is the largest in the table. English and German
# are close in layer 0 (which mostly sees the current byte) and drift apart in deeper layers. A
# byte-level router sees characters: Python's indentation, brackets and identifiers look different
# from either language's letters, and German's umlauts and capitalised nouns differ from English too.
# All the same, every domain uses every expert — experts specialise "more by token type than by topic",
# as reported for large MoEs. This is the property SiDA's "data-aware" offloading relies on: the input
# tells you in advance which experts will be busy.

# %% [markdown]
# ## 4. A token timeline
#
# Each column is one byte of held-out text (`␣` space, `↵` newline), each row a layer; the colour is
# the expert it chose first. The same colour in consecutive cells means consecutive tokens reused an
# expert. Hover a cell for the weight; the panel at the end also shows the second choices.

# %%
for d in DOMAINS:
    tr = traces[d]
    a, b = 0, 64  # the first 64 tokens of the first window
    token_timeline(tr.token_ids[a:b], tr.topk_ids[:, a:b], num_experts=E, weights=tr.weights[:, a:b],
                   layer_names=LAYERS, title=f"{d}: first choice of every token, tokens {a}–{b - 1}").show()

# %% [markdown]
# Look for runs: in code, indentation (runs of `␣`) and identifiers tend to keep their expert in some
# layers; in prose, spaces and word starts often go to their own expert. A byte-level model routes by
# character class as much as by meaning.

# %% [markdown]
# ## 5. Temporal locality — compared with Mixtral, honestly
#
# The Mixtral paper (Jiang et al. 2024, arXiv 2401.04088, Sec. 5) measured how often *consecutive*
# tokens are assigned the same experts: the same first choice 14–28% of the time vs 12.5% for random
# routing, and a shared expert among the top-2 sets 62–67% at layer 15 vs 46% for random. Locality
# matters for serving: an expert cache keeps the last token's experts, so repetition is cache hits.
#
# Two baselines, both drawn below:
# * **uniform**: every expert equally likely — `1/E = 12.5%` for the first choice, `1 − C(6,2)/C(8,2) =
#   46.4%` for top-2 sets (the paper's baseline; same `E = 8, k = 2` as our model);
# * **random with the measured skew**: two *independent* tokens drawn from the layer's actual expert
#   frequencies (`Σ_e p_e²` for first choices). A skewed layer repeats experts often by chance alone, so
#   *locality is the gap between a solid bar and its light bar*, not the height of the solid bar.
#
# *Predict first:* uniform routing repeats the first choice `1/E = 12.5%` of the time. Which domain — English,
# German or code — do you expect to repeat its first choice most often, and by roughly how many percentage
# points above its light bar? Write your guess down, then run the next cell.

# %%
loc = {d: temporal_locality(tr) for d, tr in traces.items()}
locality_figure(loc, layer_names=LAYERS).show()
print(f"{'':10s}{'same first choice (measured / random with skew)':>52s}   top-2 sets share an expert")
for d in DOMAINS:
    t = loc[d]
    cells = "  ".join(f"{m:4.0%}/{r:4.0%}" for m, r in zip(t.first.tolist(), t.first_random.tolist()))
    cells2 = "  ".join(f"{m:4.0%}/{r:4.0%}" for m, r in zip(t.first_or_second.tolist(), t.first_or_second_random.tolist()))
    print(f"{d:6s} {cells}   {cells2}")
print(f"uniform: {loc['en'].first_uniform:.1%} / {loc['en'].first_or_second_uniform:.1%};  "
      f"Mixtral-8x7B (paper): {MIXTRAL_LOCALITY['first'][0]:.0%}–{MIXTRAL_LOCALITY['first'][1]:.0%} / "
      f"{MIXTRAL_LOCALITY['first_or_second'][0]:.0%}–{MIXTRAL_LOCALITY['first_or_second'][1]:.0%} (layer 15)")
gap = {d: (loc[d].first - loc[d].first_random) for d in DOMAINS}
print("first-choice locality above the skew baseline, per layer (percentage points):")
for d in DOMAINS:
    print(f"  {d:5s} " + "  ".join(f"{100 * v:+5.1f}" for v in gap[d].tolist()))

# %% [markdown]
# **Reading it.** Because the trained model is nearly balanced, the two baselines almost coincide (the
# light bars sit near the dashed uniform line), so the comparison with Mixtral's uniform-baseline
# figures is fair. English and German prose repeat the first choice about as often as chance (within a
# few points of their light bars; a little more in the last layer) — inside Mixtral's 14–28% range only
# because that range starts just above 12.5%. **Code** has clear locality: 27–32% same first choice vs
# 13–18% by chance, at or above the top of Mixtral's range (indentation runs and identifiers keep their
# experts). For top-2 sets, prose sits between chance and Mixtral's 62–67% (approached only in the last
# layer), code rises to about Mixtral's level in the deeper layers. Caveats: the paper measured a 32-layer model with a 32 K-token
# vocabulary (our tokens are bytes) and quotes layer 15 for the top-2 figure. What carries over:
# locality depends strongly on the kind of text, and a cache that keeps recent experts hits most on
# code-like, repetitive input.

# %% [markdown]
# ### Exercise 2 — the locality statistic and its baseline
#
# Write `my_locality(first, sequence_lengths)` returning `(rate, random_rate)` for one layer: `first` is the
# `[T]` tensor of first-choice experts, tokens in order, and `sequence_lengths` the `[S]` lengths of the
# windows they came from (summing to `T`). `rate` is the share of **consecutive pairs of the same
# sequence** with the same first choice (the last token of one window and the first of the next are not
# consecutive text); `random_rate = Σ_e p_e²`, with `p_e` the share of the `T` tokens whose first choice is
# `e` — two independent tokens with the measured skew agree that often. `check_locality` compares yours
# with `samoyeds_lab.routing.repetition_rate` on a 12-token example, two shipped traces and random
# sequences.

# %%
def my_locality(first: torch.Tensor, sequence_lengths: torch.Tensor) -> tuple[float, float]:
    """(rate, random_rate): same-first-choice rate of consecutive same-sequence tokens, and Σ_e p_e²."""
    # TODO: same = first[1:] == first[:-1]; drop the pairs at positions cumsum(sequence_lengths)[:-1] - 1;
    #       p = torch.bincount(first) / T; return the mean of the kept pairs and (p ** 2).sum(), as floats
    raise NotImplementedError


check_locality(my_locality);

# %% [markdown]
# Stuck? The solution is `samoyeds_lab.exercises.routing.solution_locality` (read it after trying). With
# it, `my_locality(traces["code"].topk_ids[l, :, 0], traces["code"].sequence_lengths)` reproduces the
# code row of the table above for layer `l`.

# %% [markdown]
# ## 6. Structure across layers and inside a layer
#
# **Transitions.** Row `i` is the distribution of the next layer's first choice for the tokens whose
# first choice here was `e_i`. Rows much sharper than uniform mean the next layer's expert is
# predictable from this one's — what next-layer prefetching (mixtral-offloading) and Pre-gated MoE
# exploit. Columns that are hot in every row are just hot experts (section 3), not structure: the fair
# test is whether knowing this layer's expert beats always guessing the next layer's hottest one.

# %%
tr = traces["code"]
first_counts = expert_counts(tr, choice=0)
for l in range(L - 1):
    P = transition_matrix(tr, l)
    marginal = expert_frequency(tr, choice=0)[l + 1]
    # how much knowing this layer's expert sharpens the next layer's: mutual information in bits
    joint = transition_matrix(tr, l, normalize=False).double() / tr.num_tokens
    px, py = joint.sum(1, keepdim=True), joint.sum(0, keepdim=True)
    mi = float((joint * torch.log2(joint / (px * py))).nan_to_num().sum())
    best = float((joint.max(1).values).sum())
    print(f"{LAYERS[l]} → {LAYERS[l + 1]}: predicting the next first choice from this one is right "
          f"{best:.0%} of the time (vs {float(marginal.max()):.0%} by always guessing the hottest); "
          f"mutual information {mi:.2f} bits (of {np.log2(E):.0f})")
for l in (0, L - 2):
    transition_heatmap(transition_matrix(tr, l), layer_from=LAYERS[l], layer_to=LAYERS[l + 1],
                       row_counts=first_counts[l]).show()

# %% [markdown]
# Every transition is far more predictable than guessing the hottest expert (about twice as often right,
# with close to a bit of mutual information out of 3): a token's path through the layers is structured.
# A prefetcher that guesses the next layer's experts from the current layer's choice would be right
# about half the time for the first choice — useful, but far from enough to skip the router (Pre-gated
# MoE needs fine-tuning to get there; SiDA trains a separate predictor).

# %% [markdown]
# **Co-activation.** Within one layer, which pairs of experts serve the *same* token (its top-2)? A
# pair that is often co-activated is worth placing on the same device (or keeping in the cache
# together).

# %%
coactivation_heatmap(coactivation(tr, 1), num_tokens=tr.num_tokens, layer_name=LAYERS[1]).show()

# %% [markdown]
# ## 7. Tokens per expert: why the batch size decides the kernel shape
#
# An expert's GEMM multiplies its weight `[I, H]` by the tokens routed to it: `n` columns, where `n`
# depends on the batch. **Decoding** one sequence processes one token per step: `k = 2` experts get
# `n = 1`, the other six get nothing — a matrix-*vector* product, bound by the bytes of the weight
# (Lab 01: that is where Samoyeds' 25%-dense weights pay off). **Prefill** of a long prompt gives every
# expert hundreds or thousands of tokens — a real GEMM, bound by compute, where Sparse Tensor Cores
# pay off. Samoyeds' SSMM kernel gathers each expert's tokens into tiles of **64 tokens**
# (`TokenSelection.from_topk(..., pad_to=64)`, padded with a sentinel): every tile row without a token
# is wasted work.

# %%
for batch in (1, 64, 4096):
    tpe = tokens_per_expert(traces["en"], batch)
    tokens_per_expert_figure(tpe.counts[1], batch_tokens=batch, top_k=K, layer_name=LAYERS[1]).show()

# %% [markdown]
# The padding waste and the idle experts for every batch size, averaged over layers and domains.
#
# *Predict first:* decoding one token (batch 1), `k = 2` experts get one token each. What share of the rows
# of their 64-token tiles is padding? And at batch 4096, where every expert gets about a thousand tokens,
# roughly how much? The curve and the printed lines below give both.

# %%
batch_sizes = [2**i for i in range(14)]  # 1 … 8192
padded, idle = [], []
for b in batch_sizes:
    per_domain = [tokens_per_expert(tr_, b) for tr_ in traces.values()]
    padded.append(torch.stack([x.padded_fraction(64).mean() for x in per_domain]).mean())
    idle.append(torch.stack([x.idle_fraction().mean() for x in per_domain]).mean())
padded, idle = torch.stack(padded), torch.stack(idle)
padding_curve_figure(batch_sizes, padded, idle, pad_to=64, highlight=64).show()
for b, p, i in zip(batch_sizes, padded.tolist(), idle.tolist()):
    if b in (1, 8, 64, 512, 4096):
        # busiest expert of each (layer, batch) over the mean b·k/E, averaged over layers, batches, domains
        c = torch.cat([tokens_per_expert(tr_, b).counts for tr_ in traces.values()], 1).double()
        straggler = float((c.max(-1).values / c.mean(-1)).mean())
        print(f"batch {b:5d}: mean {b * K / E:7.1f} tokens per expert, busiest {straggler:4.2f}× the mean, "
              f"{i:5.1%} experts idle, {p:5.1%} of 64-token tile rows are padding")

# %% [markdown]
# One batch of 64 tokens of English text as Samoyeds' token selection sees it, layer 1: each expert's
# token ids, padded to a multiple of 64 with the sentinel. Hot experts fill a tile, cold ones launch a
# nearly empty tile (or none at all):

# %%
sel = TokenSelection.from_topk(traces["en"].topk_ids[1, :64], num_experts=E, pad_to=64)
for e in range(E):
    n = int(sel.counts[e])
    tiles = (int(sel.padded_offsets[e + 1]) - int(sel.padded_offsets[e])) // 64
    print(f"expert {e}: {n:3d} tokens → {tiles} tile(s) of 64, {tiles * 64 - n:3d} padding rows")

# %% [markdown]
# **Why this matters for the kernels.** At decode batch sizes almost every tile row is padding: a
# 64-token tile is the wrong shape, and a GEMV-like kernel (or batching many sequences) is needed. From a
# few hundred tokens per batch on, padding falls below ~30% and the tiled sparse GEMM is the right
# shape. And within one batch the load is uneven even though it is nearly balanced over the whole text
# (the busiest expert gets 1.6–2.2× the mean in batches of 8–64 tokens): the busiest expert's tile count
# sets the layer's time, so routing skew is a kernel-scheduling problem as well as a memory one. Samoyeds' reported speed-ups are
# measured at prefill (sequence 4096, batch 1; Samoyeds, arXiv:2503.10725); SiDA and MoNDE target the memory side.

# %% [markdown]
# ## 8. Your own text
#
# Type anything (at most 256 bytes: the model's context). This cell runs the model live (a fraction of a
# second) and shows the first choices of every layer and how many tokens each expert got.

# %%
MY_TEXT = "def forward(self, x):\n    return self.experts(x)  # Hallo Welt, hello world!"
my_ids = torch.tensor(list(MY_TEXT.encode("utf-8"))[: cfg.max_seq], dtype=torch.int64)
mine = record_routing(model, my_ids, meta={"text": "typed in Lab 03"})
token_timeline(mine.token_ids, mine.topk_ids, num_experts=E, weights=mine.weights, layer_names=LAYERS,
               title="Your text: first choice of every token").show()
print("tokens per expert (all k choices), per layer:")
for l, name in enumerate(LAYERS):
    print(f"  {name}: {expert_counts(mine)[l].tolist()}")

# %% [markdown]
# ### Bring your own model
#
# The same hotness analysis on any local Hugging Face MoE checkpoint (Mixtral, Qwen2/3-MoE, OLMoE,
# DeepSeek-V2 layouts; see `samoyeds_lab.moe.load_hf_moe`). Set `HF_MODEL_PATH` below to the checkpoint
# directory, or start JupyterLab with the environment variable `SAMOYEDS_HF_MODEL` set to it. The cell loads
# it offline, records one routing trace on 256 tokens of held-out English text (the checkpoint's own
# tokenizer when its directory has one) and shows the usage of every expert in every MoE layer, and the load
# imbalance per layer, measured live on your model. Nothing is downloaded.

# %%
from samoyeds_lab.bench.byo import ENV_VAR, byo_model_path, byo_trace
from samoyeds_lab.routing import expert_frequency, imbalance
from samoyeds_lab.viz.routing import domain_hotness_figure

HF_MODEL_PATH = None  # e.g. "/models/Mixtral-8x7B-v0.1"; None: read the environment variable SAMOYEDS_HF_MODEL
byo_path = byo_model_path(HF_MODEL_PATH)
if byo_path is None:
    print(f"Bring-your-own-model cell skipped: no checkpoint set. To run it, set "
          f"HF_MODEL_PATH = \"/path/to/checkpoint\" in this cell, or export {ENV_VAR}=/path/to/checkpoint "
          f"before starting JupyterLab.")
else:
    byo_model, byo_tr, byo_how = byo_trace(byo_path, tokens=256)
    k_byo, e_byo = byo_tr.top_k, byo_tr.num_experts
    print(f"{byo_path.name}: {byo_tr.num_layers} MoE layers × {e_byo} experts, top-{k_byo}; routed {byo_how} (live)")
    domain_hotness_figure({byo_path.name: expert_frequency(byo_tr) * k_byo}, uniform=k_byo / e_byo,
                          layer_names=list(byo_tr.layer_names),
                          title="Your model: expert usage per layer (share of tokens)").show()
    byo_imb = imbalance(byo_tr)
    for name, mm, ent in zip(byo_tr.layer_names, byo_imb.max_over_mean.tolist(), byo_imb.normalized_entropy.tolist()):
        print(f"  {name:28s} busiest expert / mean {mm:5.2f} (at most {e_byo / k_byo:.1f}), "
              f"normalised entropy {ent:.2f}")

# %% [markdown]
# ## 9. Explore
#
# Pick a text (the three domains, or `yours` from the cell above), a layer, the top-k view (first choice
# only, or both choices), the batch size for the tokens-per-expert histogram, and which recorded
# window (*sequence*) and *offset* the timeline shows. The selected layer is outlined in the hotness map
# and the timeline; the transition matrix goes from the selected layer to the next.

# %%
panel = RoutingPanel({**traces, "yours": mine})
panel

# %% [markdown]
# ## Summary
#
# * A router scores all `E` experts with one linear layer and keeps the top `k`; only those experts'
#   weights are needed for the token — a different set per token and per layer.
# * Per layer and over many tokens, the trained tiny model is **close to balanced** (busiest expert
#   1.15–1.6× its share); a shorter training run had partially collapsed — balance is trained, not given.
# * Routing is **data-aware**: code sends 1.5–2× more tokens than prose to particular experts; English
#   and German are close in the first layer and drift apart deeper.
# * **Temporal locality** must be judged against a baseline with the same skew: the tiny model's code
#   repeats its first choice about twice as often as chance, its prose barely more than chance. Mixtral's
#   14–28% (vs 12.5%) is against the uniform baseline.
# * **Transitions** between layers are structured: the next layer's first choice is guessed right about
#   half the time from this layer's, twice the best blind guess.
# * **Tokens per expert** follow the batch size: decode gives `n = 1` for `k` experts (tiles are almost
#   all padding), prefill gives hundreds (tiles are full). That decides which kernel shape wins.
#
# Next: Lab 04 puts these tokens-per-expert counts through one MoE block and its kernels; Labs 06–07 simulate
# expert caches and offloading (SiDA, MoNDE) on these traces.
