"""Lab 02 (Sparse Tensor Cores): the notebook runs headless without errors, fast, showing its figures and
panels; every modelled number is labelled as a model and every CPU timing as measured on this CPU (the CPU
kernels on a Mixtral-size expert, not the reference); with no recorded GPU run it says so; its .ipynb
matches the py:percent source it is generated from."""

import re

import jupytext
import pytest

from .notebooks import (
    LABS,
    all_outputs_text,
    assert_banner,
    assert_ran_cleanly,
    execute,
    output_kinds,
)

SOURCE = LABS / "02_sparse_tensor_cores.py"
NOTEBOOK = LABS / "02_sparse_tensor_cores.ipynb"


# ---------------------------------------------------------------------------------------------- pairing


def test_structure():
    src = SOURCE.read_text()
    # the lane view and the panels come from the library (tested in tests/viz), not from notebook code
    for needle in ("from samoyeds_lab.viz.mma_panel import", "from samoyeds_lab.viz.kernel_panel import",
                   "load_kernel_records()", "MmaLanePanel(", "example_warpgroup(", "RooflinePanel(", "LivePanel(",
                   "kernels.available()", "samoyeds-lab bench kernels", "CpuExpertPanel(", "cpu_expert_records(",
                   "CPU_EXPERT = (14336, 4096)", "read_bandwidth("):
        assert needle in src, needle
    # the old CPU-reference timing is gone (it rebuilt the dense weight on every call)
    assert "cpu_reference_records" not in src and "cpu_timing_figure" not in src
    nb = jupytext.read(SOURCE)
    assert sum(c.cell_type == "code" for c in nb.cells) >= 10
    # the tiled kernel stepped across V-window boundaries, from the package, with a step slider
    for needle in ("from samoyeds_lab.reference.stepper import example_ssmm, ssmm_steps", "StepPanel(steps)",
                   "*Predict first:*"):
        assert needle in src, needle


# ---------------------------------------------------------------------------------------------- execution
@pytest.fixture(scope="module")
def executed():
    """The notebook run top to bottom in a fresh python3 kernel, cwd labs/."""
    return execute(NOTEBOOK)


@pytest.mark.slow
def test_runs_without_errors_or_warnings_and_fast(executed):
    assert_ran_cleanly(executed, limit_s=90)  # it times a Mixtral-size expert on this CPU


@pytest.mark.slow
def test_figures_panels_and_labels_are_displayed(executed):
    nb, _ = executed
    kinds = output_kinds(nb)
    assert kinds.count("application/vnd.plotly.v1+json") >= 5
    assert kinds.count("application/vnd.jupyter.widget-view+json") >= 3  # lane, roofline and live panels
    assert_banner(nb)
    text = all_outputs_text(nb)
    assert "emulated D == A·B + C exactly: True" in text
    assert "emulated wgmma D == A·B + C exactly: True" in text and "swizzle 64B" in text
    # the stepped kernel: 6 k-steps over 3 windows, a flush every second step, exact against the reference
    assert "final output == reference ssmm (fp32), bit for bit: True" in text
    flushes = re.findall(r"^\s*(\d+) \|\s+(\d) \| (yes|no)\s*\| \[([0-9, ]+)\]$", text, flags=re.M)
    assert [(int(i), int(w), f) for i, w, f, _ in flushes] == [(i, i // 2, "yes" if i % 2 else "no") for i in range(6)]
    for _, _, _, rows in flushes:  # compressed row c lands in 2c or 2c + 1
        assert all(int(r) // 2 == c for c, r in enumerate(rows.split(", ")))
    assert "FLUSH: add each accumulator" in text and "live accumulator -> output row" in text
    assert "model, not a measurement" in text
    figures = "\n".join(str(o.data.get("application/vnd.plotly.v1+json", ""))
                        for c in nb.cells if c.cell_type == "code" for o in c.outputs
                        if o.output_type in ("display_data", "execute_result"))
    assert "model (roofline ceiling), not a measurement" in figures
    from samoyeds_lab import kernels
    from samoyeds_lab.bench.kernels import load_kernel_records

    if not load_kernel_records():
        assert "No GPU run has been recorded yet" in text and "samoyeds-lab bench kernels" in text
    else:
        assert "recorded on " in text
    from samoyeds_lab.viz.kernel_panel import cpu_kernel_reason

    assert "CPU kernels: " in text and "CPU reference" not in figures
    if cpu_kernel_reason() is None:
        # the Mixtral-size expert, measured on this CPU: bandwidth, a table per token count, the figure, the panel
        assert "read bandwidth of this CPU:" in text and "weight bytes: dense bf16 117 MB" in text
        assert re.search(r"\n\s+1\s+[0-9.]+\s+\w+\s+[0-9.]+\s+[0-9.]+× ", text)
        assert "measured on " in figures and "byte ceiling" in figures and "roofline ceiling on" in figures
        assert "Samoyeds kernel vs dense: " in text
    else:
        assert "No CPU kernel can run here" in text
    if not kernels.available():
        assert "the live GPU panel is not shown" in text
