"""Checks every lab's test shares: py:percent ↔ .ipynb pairing, stripped outputs, headless execution."""

from __future__ import annotations

import time
from pathlib import Path

import jupytext
import nbformat

LABS = Path(__file__).resolve().parents[2] / "labs"


def cells(nb):
    return [(c.cell_type, c.source.strip()) for c in nb.cells]


def assert_paired(source: Path, notebook: Path) -> None:
    """`jupytext --to ipynb` of the .py gives the committed .ipynb's cells (type, source, metadata)."""
    regenerated = jupytext.read(source)
    committed = nbformat.read(notebook, as_version=4)
    assert cells(regenerated) == cells(committed), "run `make sync-notebooks` (jupytext --to ipynb --update)"
    for a, b in zip(regenerated.cells, committed.cells):
        assert a.metadata == b.metadata


def assert_kernelspec_and_no_outputs(notebook: Path) -> None:
    nb = nbformat.read(notebook, as_version=4)
    # without a kernelspec JupyterLab opens a "Select Kernel" dialog
    assert nb.metadata["kernelspec"]["name"] == "python3"
    assert nb.metadata["jupytext"]["formats"] == "ipynb,py:percent"
    for c in nb.cells:
        if c.cell_type == "code":
            assert c.outputs == [] and c.execution_count is None


def execute(notebook: Path):
    """Run the notebook top to bottom in a fresh python3 kernel, cwd labs/ (as `make lab` opens it).

    Returns ``(executed notebook, seconds)``.
    """
    from nbclient import NotebookClient

    nb = nbformat.read(notebook, as_version=4)
    client = NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(LABS)}})
    t0 = time.perf_counter()
    client.execute()
    return nb, time.perf_counter() - t0


def outputs_text(cell) -> str:
    out = []
    for o in cell.get("outputs", []):
        if o.output_type == "stream":
            out.append(o.text)
        elif o.output_type in ("execute_result", "display_data"):
            out.append(o.data.get("text/plain", ""))
    return "".join(out)


def output_kinds(nb) -> list[str]:
    """The MIME types of every displayed output of the code cells (one entry per output and type)."""
    return [k for c in nb.cells if c.cell_type == "code" for o in c.outputs
            if o.output_type in ("display_data", "execute_result") for k in o.data]


def all_outputs_text(nb) -> str:
    """The text of every code cell's outputs, joined."""
    return "\n".join(outputs_text(c) for c in nb.cells if c.cell_type == "code")


def assert_banner(nb) -> None:
    """The first cell prints the device banner."""
    banner = outputs_text(nb.cells[0])
    assert "samoyeds-lab" in banner and "backend" in banner, banner


def assert_lab_conventions(source: Path) -> None:
    """Device banner in the first cell, committed with small defaults, seeded."""
    nb = jupytext.read(source)
    first = nb.cells[0]
    assert first.cell_type == "code" and "sl.device_info().banner()" in first.source
    src = source.read_text()
    assert "\nFULL_SIZE = False" in src, "commit the lab with FULL_SIZE = False"
    assert "torch.manual_seed(" in src


def error_outputs(nb) -> list[tuple[int, str, str]]:
    return [(i, o.ename, o.evalue) for i, c in enumerate(nb.cells) if c.cell_type == "code"
            for o in c.outputs if o.output_type == "error"]


def stderr_texts(nb) -> list[str]:
    return [o.text for c in nb.cells if c.cell_type == "code" for o in c.outputs
            if o.output_type == "stream" and o.name == "stderr"]


def assert_ran_cleanly(executed, *, limit_s: float = 60, forbid_warnings: bool = True,
                       progress_marks: tuple[str, ...] = ()) -> None:
    """No error output, no traceback (nor warning) on stderr, and Run All under ``limit_s`` seconds.

    ``progress_marks``: substrings of stderr lines that are progress bars (tqdm writes to stderr).
    """
    nb, seconds = executed
    assert not error_outputs(nb)
    stderr = [s for s in stderr_texts(nb) if not any(m in s for m in progress_marks)]
    # e.g. "Out of range float values are not JSON compliant" from a FigureWidget fed a NaN
    bad = ("Traceback", "Warning") if forbid_warnings else ("Traceback",)
    assert not any(b in s for s in stderr for b in bad), stderr
    assert seconds < limit_s, f"Run All took {seconds:.1f} s at the default sizes"
