"""Lab 05 (sparsity vs accuracy): the notebook runs headless without errors and fast, shows the recorded
sweep and a live one, and its .ipynb matches the py:percent source it is generated from."""

import time
from pathlib import Path

import jupytext
import nbformat
import pytest

LABS = Path(__file__).resolve().parents[2] / "labs"
SOURCE = LABS / "05_sparsity_accuracy.py"
NOTEBOOK = LABS / "05_sparsity_accuracy.ipynb"


def cells(nb):
    return [(c.cell_type, c.source.strip()) for c in nb.cells]


# ---------------------------------------------------------------------------------------------- pairing
def test_ipynb_is_in_sync_with_the_py_source():
    """`jupytext --to ipynb` of the .py gives the committed .ipynb's cells (type, source, metadata)."""
    regenerated = jupytext.read(SOURCE)
    committed = nbformat.read(NOTEBOOK, as_version=4)
    assert cells(regenerated) == cells(committed), "run `make sync-notebooks` (jupytext --to ipynb --update)"
    for a, b in zip(regenerated.cells, committed.cells):
        assert a.metadata == b.metadata


def test_ipynb_has_kernelspec_and_no_outputs():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    assert nb.metadata["kernelspec"]["name"] == "python3"  # else JupyterLab asks for a kernel
    assert nb.metadata["jupytext"]["formats"] == "ipynb,py:percent"
    for c in nb.cells:
        if c.cell_type == "code":
            assert c.outputs == [] and c.execution_count is None


def test_structure():
    nb = jupytext.read(SOURCE)
    first = nb.cells[0]
    assert first.cell_type == "code" and "sl.device_info().banner()" in first.source
    src = SOURCE.read_text()
    assert "\nFULL_SIZE = False" in src, "commit the lab with FULL_SIZE = False"
    assert "torch.manual_seed(" in src
    # the recorded sweep and a live one are both there, and the modelled speed is called a model
    assert "load_sweep(" in src and "sparsity_sweep(" in src and "AccuracyPanel(" in src
    assert "not a GPU measurement" in src or "not a benchmark" in src


# ---------------------------------------------------------------------------------------------- execution
@pytest.fixture(scope="module")
def executed():
    """The notebook run top to bottom in a fresh python3 kernel, cwd labs/ (as `make lab` opens it)."""
    from nbclient import NotebookClient

    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(LABS)}})
    t0 = time.perf_counter()
    client.execute()
    return nb, time.perf_counter() - t0


def outputs_text(cell):
    out = []
    for o in cell.get("outputs", []):
        if o.output_type == "stream":
            out.append(o.text)
        elif o.output_type in ("execute_result", "display_data"):
            out.append(o.data.get("text/plain", ""))
    return "".join(out)


@pytest.mark.slow
def test_runs_without_errors_and_fast(executed):
    nb, seconds = executed
    errors = [(i, o.ename, o.evalue) for i, c in enumerate(nb.cells) if c.cell_type == "code"
              for o in c.outputs if o.output_type == "error"]
    assert not errors
    stderr = [o.text for c in nb.cells if c.cell_type == "code" for o in c.outputs
              if o.output_type == "stream" and o.name == "stderr"]
    assert not any("Traceback" in s for s in stderr)
    assert seconds < 60, f"Run All took {seconds:.1f} s at the default sizes"


@pytest.mark.slow
def test_recorded_and_live_results_are_shown(executed):
    nb, _ = executed
    kinds = [k for c in nb.cells if c.cell_type == "code" for o in c.outputs
             if o.output_type in ("display_data", "execute_result") for k in o.data]
    assert kinds.count("application/vnd.plotly.v1+json") >= 7  # scale, error, mask, table, 2 scatters, live
    assert "application/vnd.jupyter.widget-view+json" in kinds  # the AccuracyPanel
    text = "".join(outputs_text(c) for c in nb.cells if c.cell_type == "code")
    assert "the shipped one" in text, "the recorded sweep was run on another checkpoint: regenerate it"
    assert text.count("live Samoyeds V=128") == 2
    banner = outputs_text(nb.cells[0])
    assert "samoyeds-lab" in banner and "backend" in banner
