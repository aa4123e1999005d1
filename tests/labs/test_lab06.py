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


@pytest.mark.slow
def test_hash_routing_section_reports_fidelity_moves_and_regimes(executed):
    nb, _ = executed
    text = all_outputs_text(nb)
    # measured: one row per held-out text, perplexity with the routers and with the predictor's routing
    rows = re.findall(r"^(en|de|code)\s+([0-9.]+)\s+([0-9.]+)\s+\+([0-9.]+)%\s+((?:[0-9.]+ ?){4})$", text, re.M)
    assert [r[0] for r in rows] == ["en", "de", "code"]
    for _, ppl_r, ppl_h, cost, hits in rows:
        assert 1 < float(ppl_r) < float(ppl_h) < 1.5 * float(ppl_r)
        assert abs(float(cost) - 100 * (float(ppl_h) / float(ppl_r) - 1)) < 0.15
        assert all(0.5 < float(h) <= 1 for h in hits.split())
    m = re.search(r"router's weights instead: ppl ([0-9.]+)", text)
    assert m and float(rows[0][1]) <= float(m.group(1)) <= float(rows[0][2])
    # the cache simulator: hash routing never demand-loads, the prefetch mode wastes some loads
    hash_row = re.search(r"^hash\s+([0-9.]+)\s+([0-9.]+)\s+([0-9.]+)", text, re.M)
    assert hash_row and float(hash_row.group(1)) == 0 and float(hash_row.group(3)) == 0
    assert "and stalls on none" in text
    # modelled: the Switch-like preset shows SiDA (paper mode) ahead of the static hot set, Mixtral-like behind
    assert "Switch-like 6×128 top-1, A100 PCIe 4: SiDA as the paper runs it is ahead of the static hot set" in text
    assert "Mixtral-like 4×8 top-2, A100 PCIe 4: SiDA as the paper runs it is behind the static hot set" in text


def test_says_what_the_default_is_and_quotes_the_paper():
    text = "\n".join(c.source for c in jupytext.read(SOURCE).cells if c.cell_type == "markdown")
    assert "**What this lab's default does.**" in text and "the router still runs" in text
    assert "**The paper's mode** (SiDA-MoE, arXiv:2310.18859)" in text
    for claim in ("3.93×", "28 %", "80 % GPU memory", "90.5–99 %", "one A100"):
        assert claim in text, claim
    assert "PAPERS.md" not in text and "MLSys" not in text
