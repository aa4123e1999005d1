"""Lab 00 (welcome): runs headless without errors, fast; its map of the labs matches the labs/ folder; it runs
a test selection through samoyeds_lab.testing and shows the table; its .ipynb matches its py:percent source."""

import re

import pytest

from .notebooks import (
    LABS,
    all_outputs_text,
    assert_banner,
    assert_ran_cleanly,
    execute,
    output_kinds,
)

SOURCE = LABS / "00_welcome.py"
NOTEBOOK = LABS / "00_welcome.ipynb"


# ---------------------------------------------------------------------------------------------- pairing


def test_structure():
    src = SOURCE.read_text()
    # the map is read from the labs folder at run time, not hard-coded as present/absent
    assert 'LABS_DIR.glob("[0-9][0-9]_*.ipynb")' in src
    # the default test selection is the fast one; the kernel tests only at full size
    assert 'SELECTION = "kernels" if FULL_SIZE else "formats"' in src
    assert "**Predict first:**" in src


# ---------------------------------------------------------------------------------------------- execution
def present_labs() -> dict[int, str]:
    return {int(p.name[:2]): p.name for p in LABS.glob("[0-9][0-9]_*.ipynb")}


@pytest.fixture(scope="module")
def executed():
    """The notebook run top to bottom in a fresh python3 kernel, cwd labs/."""
    PRESENT.update(present_labs())  # what the lab's map sees (taken just before it runs)
    return execute(NOTEBOOK)


PRESENT: dict[int, str] = {}


def markdown_outputs(nb) -> list[str]:
    return [o.data["text/markdown"] for c in nb.cells if c.cell_type == "code" for o in c.outputs
            if o.output_type == "display_data" and "text/markdown" in o.data]


@pytest.mark.slow
def test_runs_without_errors_or_warnings_and_fast(executed):
    assert_ran_cleanly(executed, limit_s=90, progress_marks=("test/s",))


@pytest.mark.slow
def test_banner_what_runs_where_and_the_kernel_api(executed):
    nb, _ = executed
    assert_banner(nb)
    what = markdown_outputs(nb)[0]
    assert "| what | runs on | module |" in what and "`samoyeds_lab.kernels`" in what
    text = all_outputs_text(nb)
    m = re.search(r"max \|ssmm - dense\| = ([0-9.e+-]+), max \|reference - dense\| = ([0-9.e+-]+)", text)
    assert m and float(m.group(1)) < 1e-2 and float(m.group(2)) < 1e-4, text
    # no GPU figure claimed: either recorded ones with device and date, or the statement that there are none
    assert "No GPU results recorded yet" in text or re.search(r"recorded on .+ \(driver .+\), \d{4}-\d\d-\d\d", text)


@pytest.mark.slow
def test_figure_and_export(executed):
    nb, _ = executed
    kinds = output_kinds(nb)
    assert kinds.count("application/vnd.plotly.v1+json") == 1
    # set_notebook_renderer(): the figure also carries HTML, so a saved notebook keeps the plot
    assert "text/html" in next(o.data for c in nb.cells if c.cell_type == "code" for o in c.outputs
                               if "application/vnd.plotly.v1+json" in o.get("data", {}))
    text = all_outputs_text(nb)
    assert re.search(r"saved \S+bytes_per_format\.html \(\d+\.\d MB, opens offline\)", text)
    assert "needs the 'kaleido' package" in text or "needs a Chrome/Chromium" in text or "saved the PNG too" in text


@pytest.mark.slow
def test_map_of_the_labs_matches_the_folder(executed):
    nb, _ = executed
    table = markdown_outputs(nb)[1]
    present = PRESENT
    rows = {int(m.group(1)): m.group(0) for m in re.finditer(r"^\| (\d\d) \|.*$", table, re.M)}
    assert set(rows) == set(range(9)) | set(present)
    for num, row in rows.items():
        if num in present:  # linked by file name, described by the lab's own title
            assert f"[{present[num]}]({present[num]})" in row and "*coming*" not in row
        else:
            assert row.endswith("| *coming* |")
    assert "Structured sparsity" in rows[1]


@pytest.mark.slow
def test_runs_the_fast_tests_and_shows_the_table(executed):
    nb, _ = executed
    html = [o.data["text/html"] for c in nb.cells if c.cell_type == "code" for o in c.outputs
            if o.output_type == "execute_result" and "text/html" in o.data and "<table>" in o.data["text/html"]]
    assert len(html) == 1 and "all passed" in html[0]
    m = re.search(r"'formats': (\d+) passed in [\d.]+ s", all_outputs_text(nb))
    assert m and int(m.group(1)) >= 100  # tests/formats + tests/reference
    assert "tests/formats/" in html[0] and "tests/reference/" in html[0]
    # one row per test module (module, passed, failed, skipped, s), not one per passing test
    modules = len(re.findall(r"<tr><td style='text-align:left'><code>tests/", html[0]))
    assert 5 <= modules == html[0].count("<tr>") - 1 < int(m.group(1)) // 3
    assert "<th style='text-align:left'>module</th><th>passed</th><th>failed</th><th>skipped</th>" in html[0]
    assert "::test_" not in html[0]
    assert re.search(r"slowest module: tests/\S+ \([\d.]+ s\); result.table\(\) lists all \d+ tests",
                     all_outputs_text(nb))
