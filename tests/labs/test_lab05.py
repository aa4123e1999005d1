"""Lab 05 (sparsity vs accuracy): the notebook runs headless without errors and fast, shows the recorded
sweep and a live one, and its .ipynb matches the py:percent source it is generated from."""

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
    outputs_text,
)

SOURCE = LABS / "05_sparsity_accuracy.py"
NOTEBOOK = LABS / "05_sparsity_accuracy.ipynb"


# ---------------------------------------------------------------------------------------------- pairing


def test_structure():
    src = SOURCE.read_text()
    # the recorded sweep and a live one are both there, and the modelled speed is called a model
    assert "load_sweep(" in src and "sparsity_sweep(" in src and "AccuracyPanel(" in src
    assert "pareto_figure(" in src and "convergence_figure(" in src and "V = 32" in src
    assert "arXiv 2503.10725" in src  # the paper whose claim section 7 weighs
    assert "not a GPU measurement" in src or "not a benchmark" in src


def test_exercises_and_predictions():
    nb = jupytext.read(SOURCE)
    # two exercises: a stub the learner fills in, then its self-check; the solutions live in the package
    stubs = [c for c in nb.cells if "# TODO" in c.source]
    assert len(stubs) == 2 and all("raise NotImplementedError" in c.source for c in stubs)
    assert [re.search(r"^(check_\w+)\(my_\w+\);", c.source, re.M).group(1) for c in stubs] == [
        "check_wanda_mask", "check_samoyeds_mask"]
    # no solution cell: nothing tagged "solution", no solution_* in any code cell
    assert not [c for c in nb.cells if "solution" in c.metadata.get("tags", [])]
    assert not [c for c in nb.cells if c.cell_type == "code" and "solution_" in c.source]
    text = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
    named = re.findall(r"Stuck\? The solution is `samoyeds_lab\.exercises\.pruning\.(solution_\w+)`", text)
    assert named == ["solution_wanda_mask", "solution_samoyeds_mask"]
    assert text.count("**Predict first:**") >= 2
    from samoyeds_lab.exercises import pruning

    assert all(callable(getattr(pruning, n)) for n in named)


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
    # scale, error, mask, table, Pareto one-shot, convergence, Pareto with recovery, live scatter
    assert kinds.count("application/vnd.plotly.v1+json") >= 8
    assert "application/vnd.jupyter.widget-view+json" in kinds  # the AccuracyPanel
    text = all_outputs_text(nb)
    assert "the shipped one" in text, "the recorded sweep was run on another checkpoint: regenerate it"
    assert text.count("live Samoyeds V=32") == 2
    # the study read back: windows per row stated, the method ordering checked, the targets printed
    assert "V =  32: 4 window(s) per gate/up row, 8 per down row (Mixtral K = 4096: 128)" in text
    assert "V = 128: 1 window(s) per gate/up row, 2 per down row (Mixtral K = 4096: 32)" in text
    assert "every pattern ordered OBS ≤ Wanda ≤ magnitude: True" in text
    assert "Samoyeds V=32 · OBS, joint, one-shot" in text and "the fine-tuned dense (target ≤ 1.5×)" in text
    # the Wanda narrative is computed from the model: gate/up inputs have no channel above 6x the median
    assert re.search(r"gate/up input: .*, 0 of 128 channels > 6×", text)
    assert_banner(nb)


@pytest.mark.slow
def test_exercises_report_unsolved_stubs(executed):
    nb, _ = executed
    stub_out = [outputs_text(c) for c in nb.cells if "# TODO" in c.source]
    assert len(stub_out) == 2 and all("not yet solved" in s and "NotImplementedError" in s for s in stub_out)
