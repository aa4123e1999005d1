"""Lab 07 (MoNDE near-data experts): the notebook runs headless without errors, fast, showing its figures,
measured-vs-modelled numbers and panel, and its .ipynb matches the py:percent source it is generated from."""

import pytest

from .notebooks import (
    LABS,
    all_outputs_text,
    assert_banner,
    assert_ran_cleanly,
    execute,
    output_kinds,
)

SOURCE = LABS / "07_near_data_experts.py"
NOTEBOOK = LABS / "07_near_data_experts.ipynb"


def test_structure():
    src = SOURCE.read_text()
    assert "load_shipped_trace(d)" in src
    assert "from samoyeds_lab.viz.monde import" in src and "from samoyeds_lab.viz.monde_panel import" in src
    # the CPU-only caveat is stated in the lab, not only in the docs
    assert "same\n# CPU cores" in src or "same CPU cores" in src


@pytest.fixture(scope="module")
def executed():
    return execute(NOTEBOOK)


@pytest.mark.slow
def test_runs_without_errors_or_warnings_and_fast(executed):
    assert_ran_cleanly(executed)


@pytest.mark.slow
def test_figures_numbers_and_panel_are_displayed(executed):
    nb, _ = executed
    kinds = output_kinds(nb)
    assert kinds.count("application/vnd.plotly.v1+json") >= 8
    assert "application/vnd.jupyter.widget-view+json" in kinds  # the MoNDEPanel
    assert_banner(nb)
    text = all_outputs_text(nb)
    for needle in ("crossover n* (tokens per expert)", "exact vs all_gpu", "GFLOP/s (fp32 expert matmuls)",
                   "crossover: measured", "outputs equal the one-device forward (checked)", "-core CPU"):
        assert needle in text, needle
