"""Lab 01 (structured sparsity): the notebook runs headless without errors, and its .ipynb matches the
py:percent source it is generated from."""

import jupytext
import pytest

from .notebooks import (
    LABS,
    assert_banner,
    assert_ran_cleanly,
    execute,
    output_kinds,
    outputs_text,
)

SOURCE = LABS / "01_structured_sparsity.py"
NOTEBOOK = LABS / "01_structured_sparsity.ipynb"


# ---------------------------------------------------------------------------------------------- pairing


def test_structure():
    nb = jupytext.read(SOURCE)
    # the exercise stubs are unsolved on purpose; each has a collapsed solution cell after it
    stubs = [c for c in nb.cells if "# TODO" in c.source]
    assert len(stubs) == 2 and all("raise NotImplementedError" in c.source for c in stubs)
    solutions = [c for c in nb.cells if "solution" in c.metadata.get("tags", [])]
    assert len(solutions) == 2
    for c in solutions:
        assert c.metadata["jupyter"]["source_hidden"] is True
        assert c.source.strip().splitlines()[-1].startswith("assert check_")


# ---------------------------------------------------------------------------------------------- execution
@pytest.fixture(scope="module")
def executed():
    """The notebook run top to bottom in a fresh python3 kernel, cwd labs/."""
    return execute(NOTEBOOK)


@pytest.mark.slow
def test_runs_without_errors_and_fast(executed):
    assert_ran_cleanly(executed, forbid_warnings=False)


@pytest.mark.slow
def test_exercises_report_unsolved_stubs_and_solved_solutions(executed):
    nb, _ = executed
    stub_out = [outputs_text(c) for c in nb.cells if "# TODO" in c.source]
    assert len(stub_out) == 2 and all("not yet solved" in s for s in stub_out)
    sol_out = [outputs_text(c) for c in nb.cells if "solution" in c.metadata.get("tags", [])]
    assert len(sol_out) == 2 and all("solved" in s and "not yet" not in s for s in sol_out)


@pytest.mark.slow
def test_figures_and_panel_are_displayed(executed):
    nb, _ = executed
    kinds = output_kinds(nb)
    assert kinds.count("application/vnd.plotly.v1+json") >= 8
    assert "application/vnd.jupyter.widget-view+json" in kinds  # the SparsityPanel
    assert_banner(nb)
