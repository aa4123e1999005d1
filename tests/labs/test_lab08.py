"""Lab 08 (end to end): the notebook runs headless without errors and fast, shows the three ways side by side
with provenance, the offload policies and the budget panel, says plainly whether GPU results exist, and its
.ipynb matches the py:percent source it is generated from."""

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

SOURCE = LABS / "08_end_to_end.py"
NOTEBOOK = LABS / "08_end_to_end.ipynb"


# ---------------------------------------------------------------------------------------------- pairing


def test_structure():
    src = SOURCE.read_text()
    assert "serve_three_ways(" in src and "OffloadBudgetPanel(" in src and "gpu_section()" in src
    # the measured CPU time is reported as measured, whatever it is, with the reason; modelled numbers are a
    # model; the tiny model's measured time and the modelled Mixtral time are never on one axis
    assert "never a GPU\n# measurement" in src and "not a promise" in src and "expert_calls_figure(" in src
    assert "separate panels, never one axis" in src
    # no empty GPU chart frame: the recorded-results figure only when something was recorded
    assert 'if g["records"]:\n    kernel_records_figure(g["records"]).show()' in src
    # five ways: MoNDE measured (HybridExecutor) and modelled, Samoyeds + offloaded modelled, all five modelled
    # on one axis (one kind, one model), the measured MoNDE split in its own panel
    assert "serve_more_ways(result" in src and "monde_measured_figure(more)" in src
    assert "five_ways_model_figure(result, more)" in src and "HybridExecutor" in src
    # the papers' headline numbers, each with its arXiv id, and a reconciliation
    for quote in ("1.58×", "4.41×", "1.99×", "3.93×", "7.5×", "3.7×", "arXiv:2503.10725", "arXiv:2310.18859",
                  "arXiv:2405.18832", "**Reconciling.**"):
        assert quote in src, quote
    assert "PAPERS.md" not in src


def test_exercises_and_predictions():
    nb = jupytext.read(SOURCE)
    # two exercises: a stub the learner fills in, then its self-check; the solutions live in the package
    stubs = [c for c in nb.cells if "# TODO" in c.source]
    assert len(stubs) == 2 and all("raise NotImplementedError" in c.source for c in stubs)
    assert [re.search(r"^(check_\w+)\(my_\w+\);", c.source, re.M).group(1) for c in stubs] == [
        "check_hot_set", "check_offload_time"]
    # no solution cell: nothing tagged "solution", no solution_* in any code cell
    assert not [c for c in nb.cells if "solution" in c.metadata.get("tags", [])]
    assert not [c for c in nb.cells if c.cell_type == "code" and "solution_" in c.source]
    text = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
    named = re.findall(r"Stuck\? The solution is `samoyeds_lab\.exercises\.end_to_end\.(solution_\w+)`", text)
    assert named == ["solution_hot_set", "solution_offload_time"]
    assert text.count("**Predict first:**") >= 2
    from samoyeds_lab.exercises import end_to_end

    assert all(callable(getattr(end_to_end, n)) for n in named)


# ---------------------------------------------------------------------------------------------- execution
@pytest.fixture(scope="module")
def executed():
    """The notebook run top to bottom in a fresh python3 kernel, cwd labs/."""
    return execute(NOTEBOOK)


@pytest.mark.slow
def test_runs_without_errors_and_fast(executed):
    assert_ran_cleanly(executed, forbid_warnings=False)


@pytest.mark.slow
def test_three_ways_with_provenance(executed):
    nb, _ = executed
    kinds = output_kinds(nb)
    assert kinds.count("application/vnd.plotly.v1+json") >= 5  # table, side by side, policies, curve, records
    assert "application/vnd.jupyter.widget-view+json" in kinds  # the budget panel
    text = "".join(outputs_text(c) for c in nb.cells if c.cell_type == "code")
    assert "traces recorded on this checkpoint" in text and "recorded sweep on this checkpoint" in text
    for way in ("dense (grouped)", "Samoyeds dual-side sparse", "offloaded ("):
        assert way in text
    for label in ("live,", "measured,", "model:", "recorded 20"):
        assert label in text
    # the Samoyeds way is pruned as Lab 05's study recommends, and says so: OBS, V = 32, joint gate/up rows
    from pathlib import Path

    from samoyeds_lab.moe.accuracy import load_sweep

    sweep = load_sweep(Path(__file__).resolve().parents[2] / "data" / "accuracy" / "tiny_moe_sparsity.json")
    steps = sweep["settings"]["recovery_steps"]
    assert "Samoyeds V=32 · obs" in text and f"after {steps} fine-tune steps" in text
    assert "No GPU kernel results have been recorded yet" in text or "Recorded GPU kernel results:" in text
    # the measured time says which way it went and what ran, and one expert GEMM timed alone says why
    assert re.search(r"Samoyeds [0-9.]+ ms/token — [0-9.]+× (faster|slower) than dense", text)
    from samoyeds_lab.bench.end_to_end import samoyeds_cpu_path
    from samoyeds_lab.bench.kernels import load_kernel_records

    assert f"samoyeds backend ({samoyeds_cpu_path()})" in text
    assert "256×128 float32 expert GEMM" in text and "1 token(s): samoyeds backend ssmm" in text
    assert "CPU reference" not in text
    if not load_kernel_records():
        assert "No GPU chart" in text
    assert_banner(nb)


@pytest.mark.slow
def test_exercises_report_unsolved_stubs_and_the_reveals(executed):
    nb, _ = executed
    stub_out = [outputs_text(c) for c in nb.cells if "# TODO" in c.source]
    assert len(stub_out) == 2 and all("not yet solved" in s and "NotImplementedError" in s for s in stub_out)
    text = "".join(outputs_text(c) for c in nb.cells if c.cell_type == "code")
    assert re.search(r"waiting no longer than computing needs a hit rate of [0-9.]+%", text) or \
        "LRU hits every access" in text
    assert "best policy within 2× of dense from " in text


@pytest.mark.slow
def test_five_ways_and_the_papers(executed):
    nb, _ = executed
    text = "".join(outputs_text(c) for c in nb.cells if c.cell_type == "code")
    assert re.search(r"MoNDE, measured here \(measured, .*HybridExecutor.*\): every expert on the fast side "
                     r"[0-9.]+ ms/token, MoNDE split [0-9.]+ ms/token", text)
    assert re.search(r"MoNDE, model: cost model .*: [0-9.]+ ms/token", text)
    assert re.search(r"×3\.[45][0-9] fewer bytes per miss", text)
    assert re.search(r"MoNDE ×[0-9.]+ faster, Samoyeds \+ offloaded ×[0-9.]+ faster", text)
    for row in ("MoNDE: hot experts fast, cold near data", "Samoyeds + offloaded (compressed experts over the link)"):
        assert row in text
    assert re.search(r"SiDA \(our prefetch-only policy, model\): [0-9.]+ ms/token vs LRU", text)
    # no checkpoint set: the bring-your-own-model cell says it is skipped and how to set it
    assert "Bring-your-own-model cell skipped: no checkpoint set" in text and "SAMOYEDS_HF_MODEL" in text


# ---------------------------------------------------------------------------------------------- your own model
def test_byo_cell_on_a_tiny_hf_checkpoint(tmp_path, monkeypatch):
    """The lab's own bring-your-own-model cell, run with SAMOYEDS_HF_MODEL set to a tiny random Mixtral."""
    from .byo import run_byo_cell, tiny_hf_checkpoint

    out, figs = run_byo_cell(SOURCE, tiny_hf_checkpoint(tmp_path), monkeypatch)
    assert "skipped" not in out and figs == []
    assert "tiny-mixtral: 2 MoE layers × 6 experts, top-2, expert d_model=64, d_ffn=32" in out
    assert re.search(r"all resident [0-9.e-]+ ms/token", out)
    for pol in ("lru", "lfu", "static", "belady"):
        assert re.search(rf"offloaded, {pol} +[0-9.e-]+ ms/token", out)
    assert re.search(r"Samoyeds \+ offloaded [0-9.e-]+ ms/token; MoNDE [0-9.e-]+ ms/token", out)


def test_byo_cell_skips_without_a_path(monkeypatch):
    from .byo import run_byo_cell

    out, figs = run_byo_cell(SOURCE, None, monkeypatch)
    assert out.startswith("Bring-your-own-model cell skipped") and figs == []
