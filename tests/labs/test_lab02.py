"""Lab 02 (Sparse Tensor Cores): the notebook runs headless without errors, fast, showing its figures and
panels; every modelled number is labelled as a model; with no recorded GPU run it says so; its .ipynb
matches the py:percent source it is generated from."""

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
                   "kernels.available()", "samoyeds-lab bench kernels"):
        assert needle in src, needle
    nb = jupytext.read(SOURCE)
    assert sum(c.cell_type == "code" for c in nb.cells) >= 10


# ---------------------------------------------------------------------------------------------- execution
@pytest.fixture(scope="module")
def executed():
    """The notebook run top to bottom in a fresh python3 kernel, cwd labs/."""
    return execute(NOTEBOOK)


@pytest.mark.slow
def test_runs_without_errors_or_warnings_and_fast(executed):
    assert_ran_cleanly(executed)


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
    if not kernels.available():
        assert "CPU reference, not Sparse Tensor Cores" in figures
        assert "reference ssmm (Samoyeds)" in text
