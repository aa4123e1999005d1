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
# Lab 00 — welcome. What can this machine run?
import samoyeds_lab as sl

print(sl.device_info().banner())

# %% [markdown]
# # Lab 00 — Welcome: what runs where, the map of the labs, and the tests
#
# **Goal.** Know what this machine runs (CPU reference or GPU kernels), where each number in the labs
# comes from, which lab to open next, and how to check the code yourself by running its tests from here.
#
# **Plan.** (1) What runs where, and one sparse multiply through the kernel API · (2) a first figure and
# how to save it · (3) the map of the labs · (4) run the tests with a progress bar.
#
# The banner above is `samoyeds_lab.device_info()`: the single place that decides whether the CuPy
# kernels can run (an NVIDIA GPU with Sparse Tensor Cores, compute capability 8.0 or newer, and CuPy)
# and, when they cannot, says why. Every lab starts with it.

# %%
import json
import tempfile
from pathlib import Path

import torch
from IPython.display import Markdown, display

from samoyeds_lab import kernels, reference, testing
from samoyeds_lab.bench.kernels import load_kernel_records
from samoyeds_lab.formats import TokenSelection
from samoyeds_lab.prune import sparsify
from samoyeds_lab.viz.export import ExportDependencyError, export_figure, set_notebook_renderer
from samoyeds_lab.viz.sparsity import bytes_bar

# False: a fast test selection (sparse formats + the mma.sp emulator, seconds) and small matrices.
# True: the kernel tests too (GPU kernels against the references; minutes on a CPU) and an expert-sized matrix.
FULL_SIZE = False

torch.manual_seed(0)
ROWS, COLS, TOKENS = (14336, 4096, 256) if FULL_SIZE else (512, 256, 64)
# Figures keep their plots in a saved notebook and in `jupyter nbconvert --to html`, offline
# (plotly.js is embedded once; see samoyeds_lab/viz/export.py for why this renderer).
set_notebook_renderer()

# %% [markdown]
# ## 1. What runs where
#
# Everything in the labs has a **CPU reference** written in plain PyTorch: the sparse formats, pruning,
# the sparse multiplies, the MoE layers, routing analytics and the offloading simulators. The same API
# switches to **CuPy kernels** (`kernels/*.cu`, using the `mma.sp` Sparse Tensor Core instruction) when the
# banner says `backend: CuPy kernels`. GPU timings that could not be measured on this machine are shown
# only as **recorded** results, each labelled with the GPU, driver and date it was measured on.

# %%
info = sl.device_info()
live = kernels.available()
rows = [
    ("sparse formats, pruning, metadata packing", "CPU (torch)", "`samoyeds_lab.formats`, `samoyeds_lab.prune`"),
    ("reference multiplies + warp-level `mma.sp` emulator", "CPU (torch)", "`samoyeds_lab.reference`"),
    ("SpMM / SSMM / dense kernels",
     f"GPU: CuPy on {info.gpu_name}" if live else "CPU reference (no usable GPU here)", "`samoyeds_lab.kernels`"),
    ("MoE layers, tiny MoE model", "GPU kernels" if live else "CPU (torch)", "`samoyeds_lab.moe`"),
    ("routing traces, offloading simulators", "CPU (numpy / numba)", "`samoyeds_lab.routing`, `samoyeds_lab.offload`"),
]
table = "| what | runs on | module |\n|---|---|---|\n" + "\n".join(f"| {a} | {b} | {c} |" for a, b, c in rows)
display(Markdown(table))
if not live:
    print("why no GPU kernels:", "; ".join(info.reasons[:2]))

# %% [markdown]
# One Samoyeds multiply through the kernel API. `kernels.ssmm(weight, x, token_idx)` takes a sparse expert
# weight (here: 1 of every 2 rows kept per 128-wide window of K, then 2:4 inside the kept rows — 25% of
# the weights) and the ids of the tokens routed to this expert, and multiplies only those. With
# `backend="auto"` it runs the CUDA kernel where it can and the CPU reference elsewhere; both must agree
# with a plain dense multiply of the pruned weight.

# %%
# the kernels take CUDA tensors (fp16/bf16); the reference takes any device and dtype
on_gpu = live and torch.cuda.is_available()
device, dtype = ("cuda", torch.float16) if on_gpu else ("cpu", torch.float32)
W = (0.02 * torch.randn(ROWS, COLS)).to(device, dtype)
sw = sparsify(W, "samoyeds", method="magnitude", n=1, m=2, vector=128)
x = torch.randn(TOKENS, COLS).to(device, dtype)
sel = TokenSelection.from_topk(torch.randint(0, 8, (TOKENS, 1)), num_experts=8)
tokens = sel.tokens_of(0).to(device)  # the tokens the router sent to expert 0
y = kernels.ssmm(sw, x, tokens)  # backend="auto"
dense = x[tokens].float() @ sw.to_dense().float().T  # the pruned weight, multiplied densely
ref = reference.ssmm(sw, x, tokens)
print(f"expert 0 got {tokens.numel()} of {TOKENS} tokens; output {tuple(y.shape)} computed by "
      f"{'the CuPy kernel on ' + str(info.gpu_name) if on_gpu else 'the CPU reference'}")
print(f"max |ssmm - dense| = {(y.float() - dense).abs().max().item():.2e}, "
      f"max |reference - dense| = {(ref.float() - dense).abs().max().item():.2e}")

# %% [markdown]
# Recorded GPU results live in `data/bench/gpu_kernels*.json`, one record per measured shape, each with
# the device, driver, versions and date. The labs plot them next to what this machine computes, labelled
# as recorded; no lab claims a GPU number it did not measure.

# %%
records = load_kernel_records()
if records:
    by_run = {}
    for r in records:
        by_run.setdefault((r["device"], r["driver"], r["date"]), []).append(r)
    for (dev, drv, date), rs in by_run.items():
        print(f"recorded on {dev} (driver {drv}), {date}: {len(rs)} measurements, ops {sorted({r['op'] for r in rs})}")
else:
    print("No GPU results recorded yet (data/bench/gpu_kernels*.json): the labs show CPU numbers, each "
          "labelled with the machine it was measured on, and model-based estimates labelled as such.")

# %% [markdown]
# ## 2. A first figure, and saving it
#
# Figures are plotly: hover for values, drag to zoom, double-click to reset. `export_figure` saves one as
# an HTML file with plotly.js inside, which opens in any browser without internet; PNG and other images
# are drawn by `kaleido`, which drives the machine's Chromium (`make chromium` installs Debian's).
#
# **Predict first:** the figure compares the bytes of the Samoyeds weight of section 1 stored as 2:4 and as
# Samoyeds 1:2 V=128, against dense fp16. 2:4 keeps half the values, Samoyeds a quarter; both also store
# metadata. Guess both percentages of dense before you run the cell (Lab 01 counts every byte).

# %%
W16 = W.to("cpu", torch.float16)  # bytes as stored in fp16: values + metadata + row indices
formats = {"2:4": sparsify(W16, "2:4").nbytes,
           "Samoyeds 1:2, V=128": sparsify(W16, "samoyeds", n=1, m=2, vector=128).nbytes}
fig = bytes_bar(formats, W16.numel() * 2, highlight="Samoyeds 1:2, V=128",
                title=f"Bytes of a {ROWS}×{COLS} fp16 weight per format")
fig.show()

out_dir = Path(tempfile.mkdtemp(prefix="samoyeds_lab_figures_"))
html_file = export_figure(fig, out_dir / "bytes_per_format.html")
print(f"saved {html_file} ({html_file.stat().st_size / 1e6:.1f} MB, opens offline)")
try:
    export_figure(fig, out_dir / "bytes_per_format.png")
    print("saved the PNG too (kaleido drew it in Chromium)")
except ExportDependencyError as err:
    print("PNG:", err)

# %% [markdown]
# ## 3. The map of the labs
#
# Each lab is a notebook in `labs/` (open it from the file browser on the left, or click its name below)
# paired with a `.py` source. The list is read from the `labs/` folder now: a lab that exists shows its
# own title and goal; a planned one that is not there yet says *coming*.

# %%
LABS_DIR = Path(sl.__file__).resolve().parents[1] / "labs"
PLANNED = {  # shown only for labs whose notebook does not exist yet
    0: "Welcome: what runs where, the map of the labs, the tests",
    1: "Structured sparsity: N:M, 2:4, Samoyeds and VENOM formats, metadata, magnitude vs Wanda",
    2: "Sparse Tensor Cores: mma.sp lane by lane, a roofline of dense / 2:4 / Samoyeds, recorded GPU runs",
    3: "Routing and expert hotness in a tiny trained MoE",
    4: "(topic not announced yet)",
    5: "Accuracy of dual-side sparsity: perplexity against density, magnitude vs Wanda",
    6: "Data-aware offloading (SiDA): predict the experts a batch needs and move them ahead of time",
    7: "Near-data experts (MoNDE): move the weights, or move the activations",
    8: "End to end: one MoE served dense, Samoyeds-sparse and offloaded, side by side",
}


def describe(notebook: Path) -> tuple[str, str]:
    """(title, first sentence of the Goal) from a lab's first markdown heading."""
    for cell in json.loads(notebook.read_text())["cells"]:
        text = "".join(cell["source"])
        if cell["cell_type"] == "markdown" and text.startswith("# Lab"):
            title = text.splitlines()[0].lstrip("# ").split("—", 1)[-1].strip()
            goal = text.split("**Goal.**", 1)[1].split(". ")[0].strip() + "." if "**Goal.**" in text else ""
            return title, " ".join(goal.split())
    return notebook.stem, ""


found = {int(p.name[:2]): p for p in sorted(LABS_DIR.glob("[0-9][0-9]_*.ipynb"))}
lines = ["| lab | what you do | notebook |", "|---|---|---|"]
for num in sorted(set(PLANNED) | set(found)):
    if num in found:
        title, goal = describe(found[num])
        lines.append(f"| {num:02d} | **{title}** — {goal} | [{found[num].name}]({found[num].name}) |")
    else:
        lines.append(f"| {num:02d} | {PLANNED[num]} | *coming* |")
display(Markdown("\n".join(lines)))
print(f"{len(found)} labs in {LABS_DIR.name}/: {', '.join(p.name for p in found.values())}")

# %% [markdown]
# ## 4. Run the tests from here
#
# The package is tested the same way everywhere: `make test` in a terminal runs every test (the labs in
# a real browser included). `samoyeds_lab.testing.run(selection)` runs a part of them from a notebook, in
# a separate process, with a progress bar, and shows one row per test *module* (passed, failed, skipped,
# seconds) followed by every failure in full, traceback included (`result.table()` lists every test):
#
# - `"formats"`: sparse formats, SpTC metadata and the `mma.sp` emulator (a few seconds);
# - `"kernels"`: the GPU kernels against the CPU references, and the references themselves (on a machine
#   without an SM80+ GPU the kernel runs are *skipped*, and the table says why);
# - `"all"`, a path such as `"tests/formats/test_nm.py"`, or a `-k` expression such as `"metadata"`;
# - `gpu=True` keeps only the tests that need a GPU (`make test-gpu` does the same in a terminal).

# %%
SELECTION = "kernels" if FULL_SIZE else "formats"
result = testing.run(SELECTION)
result

# %%
print(result.summary())
for reason, n in result.skip_reasons.items():
    print(f"  skipped {n}: {reason}")
slowest = max(result.modules, key=lambda r: r["seconds"], default=None)
if slowest:
    print(f"slowest module: {slowest['module']} ({slowest['seconds']:.1f} s); result.table() lists all "
          f"{len(result.outcomes)} tests, result.failure_report() the failures in full")
