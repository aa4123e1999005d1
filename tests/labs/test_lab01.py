"""Lab 01 (structured sparsity): the notebook runs headless without errors, and its .ipynb matches the
py:percent source it is generated from."""

import re

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
    # two exercises: a stub the learner fills in, then its self-check; the solutions live in the package
    stubs = [c for c in nb.cells if "# TODO" in c.source]
    assert len(stubs) == 2 and all("raise NotImplementedError" in c.source for c in stubs)
    checks = [c for c in nb.cells if c.cell_type == "code" and re.search(r"^check_\w+\(my_\w+\)", c.source, re.M)]
    assert len(checks) >= 2
    # no solution cell in the notebook: no "solution" tag, no solution_* defined or called
    assert not [c for c in nb.cells if "solution" in c.metadata.get("tags", [])]
    assert not [c for c in nb.cells if c.cell_type == "code" and "solution_" in c.source]
    # each exercise points at its solution in the package, and the solution passes its own check
    text = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
    named = re.findall(r"Stuck\? The solution is `samoyeds_lab\.exercises\.sparsity\.(solution_\w+)`", text)
    assert named == ["solution_mask_24", "solution_decode_word"]
    assert "Predict first:" in text


def test_pointed_solutions_pass_their_checks(capsys):
    from samoyeds_lab.exercises import sparsity

    assert sparsity.check_mask_24(sparsity.solution_mask_24, trials=5)
    assert sparsity.check_decode_word(sparsity.solution_decode_word)
    assert capsys.readouterr().out.count("solved") == 2


# ---------------------------------------------------------------------------------------------- execution
@pytest.fixture(scope="module")
def executed():
    """The notebook run top to bottom in a fresh python3 kernel, cwd labs/."""
    return execute(NOTEBOOK)


@pytest.mark.slow
def test_runs_without_errors_and_fast(executed):
    assert_ran_cleanly(executed, forbid_warnings=False)


@pytest.mark.slow
def test_exercises_report_unsolved_stubs(executed):
    nb, _ = executed
    stub_out = [outputs_text(c) for c in nb.cells if "# TODO" in c.source]
    assert len(stub_out) == 2 and all("not yet solved" in s and "NotImplementedError" in s for s in stub_out)


@pytest.mark.slow
def test_figures_and_panel_are_displayed(executed):
    nb, _ = executed
    kinds = output_kinds(nb)
    assert kinds.count("application/vnd.plotly.v1+json") >= 8
    assert "application/vnd.jupyter.widget-view+json" in kinds  # the SparsityPanel
    assert_banner(nb)
