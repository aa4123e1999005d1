"""Lab 05 (sparsity vs accuracy): the notebook runs headless without errors and fast, shows the recorded
sweep and a live one, and its .ipynb matches the py:percent source it is generated from."""

import pytest

from .notebooks import (
    LABS,
    all_outputs_text,
    assert_banner,
    assert_ran_cleanly,
    execute,
    output_kinds,
)

SOURCE = LABS / "05_sparsity_accuracy.py"
NOTEBOOK = LABS / "05_sparsity_accuracy.ipynb"


# ---------------------------------------------------------------------------------------------- pairing


def test_structure():
    src = SOURCE.read_text()
    # the recorded sweep and a live one are both there, and the modelled speed is called a model
    assert "load_sweep(" in src and "sparsity_sweep(" in src and "AccuracyPanel(" in src
    assert "not a GPU measurement" in src or "not a benchmark" in src


# ---------------------------------------------------------------------------------------------- execution
@pytest.fixture(scope="module")
def executed():
    """The notebook run top to bottom in a fresh python3 kernel, cwd labs/."""
    return execute(NOTEBOOK)


@pytest.mark.slow
def test_runs_without_errors_and_fast(executed):
    assert_ran_cleanly(executed, forbid_warnings=False)


@pytest.mark.slow
def test_recorded_and_live_results_are_shown(executed):
    nb, _ = executed
    kinds = output_kinds(nb)
    assert kinds.count("application/vnd.plotly.v1+json") >= 7  # scale, error, mask, table, 2 scatters, live
    assert "application/vnd.jupyter.widget-view+json" in kinds  # the AccuracyPanel
    text = all_outputs_text(nb)
    assert "the shipped one" in text, "the recorded sweep was run on another checkpoint: regenerate it"
    assert text.count("live Samoyeds V=128") == 2
    assert_banner(nb)
