"""Lab 06 (data-aware offloading, SiDA): the notebook runs headless without errors, fast, showing its
figures, tables and panel, and its .ipynb matches the py:percent source it is generated from."""

import pytest

from .notebooks import (
    LABS,
    all_outputs_text,
    assert_ran_cleanly,
    execute,
    output_kinds,
)

SOURCE = LABS / "06_data_aware_offloading.py"
NOTEBOOK = LABS / "06_data_aware_offloading.ipynb"


def test_structure():
    src = SOURCE.read_text()
    # shipped predictions and traces: no training at the default size
    assert "load_shipped_predictions(d)" in src and "load_shipped_trace(d)" in src
    assert "train_predictor(" not in src


@pytest.fixture(scope="module")
def executed():
    return execute(NOTEBOOK)


@pytest.mark.slow
def test_runs_without_errors_or_warnings_and_fast(executed):
    assert_ran_cleanly(executed, progress_marks=("it/s]", "s/it]"))


@pytest.mark.slow
def test_figures_numbers_and_panel_are_displayed(executed):
    nb, _ = executed
    kinds = output_kinds(nb)
    assert kinds.count("application/vnd.plotly.v1+json") >= 4
    assert "application/vnd.jupyter.widget-view+json" in kinds  # the SiDAPanel
    text = all_outputs_text(nb)
    for needle in ("shipped predictions agree with the live run: True", "belady: hits 1, misses 5",
                   "ms per token (model) by tokens per batch", "one expert load over 64 GB/s"):
        assert needle in text, needle
