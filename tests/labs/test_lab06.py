"""Lab 06 (data-aware offloading, SiDA): the notebook runs headless without errors, fast, showing its
figures, tables and panel, and its .ipynb matches the py:percent source it is generated from."""

import re

import jupytext
import pytest

from .notebooks import (
    LABS,
    all_outputs_text,
    assert_ran_cleanly,
    execute,
    output_kinds,
    outputs_text,
)

SOURCE = LABS / "06_data_aware_offloading.py"
NOTEBOOK = LABS / "06_data_aware_offloading.ipynb"


def test_structure():
    src = SOURCE.read_text()
    # shipped predictions and traces: no training at the default size
    assert "load_shipped_predictions(d)" in src and "load_shipped_trace(d)" in src
    assert "train_predictor(" not in src


def test_exercises_and_predictions():
    nb = jupytext.read(SOURCE)
    # two exercises: a stub the learner fills in, then its self-check; the solutions live in the package
    stubs = [c for c in nb.cells if "# TODO" in c.source]
    assert len(stubs) == 2 and all("raise NotImplementedError" in c.source for c in stubs)
    assert [re.search(r"^(check_\w+)\(my_\w+\);", c.source, re.M).group(1) for c in stubs] == [
        "check_lru_hits", "check_belady_hits"]
    # no solution cell: nothing tagged "solution", no solution_* in any code cell
    assert not [c for c in nb.cells if "solution" in c.metadata.get("tags", [])]
    assert not [c for c in nb.cells if c.cell_type == "code" and "solution_" in c.source]
    text = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
    named = re.findall(r"Stuck\? The solution is `samoyeds_lab\.exercises\.caching\.(solution_\w+)`", text)
    assert named == ["solution_lru_hits", "solution_belady_hits"]
    assert text.count("**Predict first:**") >= 2
    from samoyeds_lab.exercises import caching

    assert all(callable(getattr(caching, n)) for n in named)


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


@pytest.mark.slow
def test_exercises_report_unsolved_stubs(executed):
    nb, _ = executed
    stub_out = [outputs_text(c) for c in nb.cells if "# TODO" in c.source]
    assert len(stub_out) == 2 and all("not yet solved" in s and "NotImplementedError" in s for s in stub_out)
    # the reveal of the budget prediction: LRU collapses below one token's 8 experts, Belady does not
    m = re.search(r"hit rate at a budget of 6 experts: lru ([0-9.]+)%, belady ([0-9.]+)%, sida ([0-9.]+)%",
                  all_outputs_text(nb))
    assert m and float(m.group(1)) < 5 < float(m.group(2))
