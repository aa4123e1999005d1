"""Run the project's tests from Python or a notebook, with a progress bar and a per-test table.

>>> from samoyeds_lab import testing
>>> result = testing.run("formats")   # doctest: +SKIP
>>> result                            # in a notebook: one row per test module, failures in full  # doctest: +SKIP
>>> print(result.table())             # one row per test  # doctest: +SKIP

Pytest runs in a subprocess (``sys.executable -m pytest``, cwd the repository root so ``pyproject.toml``'s
settings apply): a test that crashes, leaks threads or changes global state cannot take the notebook's
kernel with it. A small plugin (:mod:`samoyeds_lab._pytest_progress`) streams one JSON line per test to a
file the parent reads while pytest runs, which drives a ``tqdm.auto`` bar (a widget in JupyterLab, text
elsewhere).

The tests live in the source checkout (``tests/`` beside the package); a wheel install has none, and
:func:`run` then raises :class:`TestsNotAvailableError` saying so.
"""

from __future__ import annotations

import html
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from .errors import SamoyedsLabError

__all__ = ["SELECTIONS", "TestOutcome", "TestRunResult", "TestsNotAvailableError", "run", "tests_root"]

#: Named selections → paths relative to the repository root (only those that exist are passed to pytest).
SELECTIONS: dict[str, tuple[str, ...]] = {
    # the GPU kernels against the CPU references (kernel tests marked `gpu` skip, with the reason, without
    # an SM80+ GPU + CuPy) and the references and the warp-level mma.sp emulator they are checked against
    "kernels": ("tests/kernels", "tests/reference"),
    # sparse formats, SpTC metadata packing and the mma.sp emulator: fast (a few seconds)
    "formats": ("tests/formats", "tests/reference"),
    # everything except the browser test (it starts JupyterLab and chromium: run it with `make test`)
    "all": ("tests",),
}
_ENV_REPORT = "SAMOYEDS_LAB_TESTING_REPORT"  # read by samoyeds_lab/_pytest_progress.py
_PLUGIN = Path(__file__).resolve().parent / "_pytest_progress.py"
# NOTE: pytest runs through this bootstrap rather than `-m pytest -p samoyeds_lab...`: the plugin is loaded
# from its file, so the subprocess imports neither samoyeds_lab nor torch (4 s on 2 cores) unless the
# selected tests do.
_BOOTSTRAP = """import importlib.util, sys
spec = importlib.util.spec_from_file_location("_samoyeds_lab_progress", {plugin!r})
plugin = importlib.util.module_from_spec(spec)
spec.loader.exec_module(plugin)
import pytest
sys.exit(pytest.main(sys.argv[1:], plugins=[plugin]))
"""
_OUTCOMES = ("passed", "failed", "error", "skipped", "xfailed", "xpassed")
_COLORS = {"passed": "#2e7d32", "failed": "#c62828", "error": "#c62828", "skipped": "#9e9e9e",
           "xfailed": "#9e9e9e", "xpassed": "#ef6c00"}


class TestsNotAvailableError(SamoyedsLabError, FileNotFoundError):
    """The test suite is not on disk (samoyeds-lab installed from a wheel, without its source tree)."""

    __test__ = False  # not a pytest test class


def tests_root(root: str | os.PathLike | None = None) -> Path:
    """The repository root that holds ``tests/`` (the parent of the installed package by default).

    Raises
    ------
    TestsNotAvailableError
        When ``<root>/tests`` does not exist.
    """
    base = Path(root) if root is not None else Path(__file__).resolve().parents[1]
    if not (base / "tests").is_dir():
        raise TestsNotAvailableError(
            f"root: expected a samoyeds-lab source checkout with a tests/ folder, got {str(base)!r}, which has "
            "none (the package seems installed without its source tree). Clone the repository and "
            "`pip install -e '.[lab,test]'` (or run `make test`) to run the tests.")
    return base


@dataclass(frozen=True)
class TestOutcome:
    """One test's result.

    Attributes
    ----------
    nodeid : str
        pytest's id, e.g. ``tests/formats/test_nm.py::test_roundtrip[2:4]``.
    outcome : str
        ``passed``, ``failed``, ``error`` (in set-up/tear-down or collection), ``skipped``, ``xfailed``
        or ``xpassed``.
    duration : float
        Seconds (set-up + call + tear-down).
    message : str
        The skip reason, or the last line of the failure; empty for a pass.
    detail : str
        A failure's or error's full report as pytest prints it (traceback, captured output); empty
        otherwise.
    """

    __test__ = False

    nodeid: str
    outcome: str
    duration: float = 0.0
    message: str = ""
    detail: str = ""

    @property
    def module(self) -> str:
        """The test file, e.g. ``tests/formats/test_nm.py`` (the node id before ``::``)."""
        return self.nodeid.split("::", 1)[0]


@dataclass
class TestRunResult:
    """What :func:`run` found: per-test outcomes, counts and skip reasons; a table in notebooks.

    Attributes
    ----------
    selection : str
        What was asked for.
    args : list of str
        The pytest arguments used.
    outcomes : list of TestOutcome
        One per test, in the order they finished.
    returncode : int
        pytest's exit status (0 all passed, 1 some failed, 5 nothing collected).
    seconds : float
        Wall time of the pytest run.
    output : str
        pytest's own terminal output (for the failures' tracebacks).
    """

    __test__ = False

    selection: str
    args: list[str]
    outcomes: list[TestOutcome] = field(default_factory=list)
    returncode: int = 0
    seconds: float = 0.0
    output: str = ""

    @property
    def counts(self) -> dict[str, int]:
        """Number of tests per outcome (every outcome key present)."""
        c = Counter(o.outcome for o in self.outcomes)
        return {k: c.get(k, 0) for k in _OUTCOMES}

    @property
    def ok(self) -> bool:
        """True when nothing failed or errored and pytest exited cleanly (skips are fine)."""
        n = self.counts
        return self.returncode in (0, 5) and n["failed"] == n["error"] == 0 and bool(self.outcomes)

    @property
    def failures(self) -> list[TestOutcome]:
        return [o for o in self.outcomes if o.outcome in ("failed", "error")]

    @property
    def skip_reasons(self) -> dict[str, int]:
        """Skip reason → number of tests skipped for it."""
        return dict(Counter(o.message for o in self.outcomes if o.outcome == "skipped"))

    @property
    def modules(self) -> list[dict]:
        """One row per test module, sorted by path: ``{"module", "passed", "failed", "skipped", "seconds"}``.

        ``passed`` counts passed and xpassed tests, ``failed`` failed ones and errors, ``skipped`` skipped and
        xfailed ones; ``seconds`` is the sum of the module's test durations.
        """
        col = {"passed": "passed", "xpassed": "passed", "failed": "failed", "error": "failed",
               "skipped": "skipped", "xfailed": "skipped"}
        rows: dict[str, dict] = {}
        for o in self.outcomes:
            r = rows.setdefault(o.module, {"module": o.module, "passed": 0, "failed": 0, "skipped": 0,
                                           "seconds": 0.0})
            r[col.get(o.outcome, "failed")] += 1
            r["seconds"] += o.duration
        return [rows[m] for m in sorted(rows)]

    def module_table(self) -> str:
        """A plain-text table, one row per test module: module, passed, failed, skipped, seconds; then the
        summary line."""
        rows = self.modules
        width = max([len(r["module"]) for r in rows] + [6])
        lines = [f"{'module':{width}}  {'passed':>6}  {'failed':>6}  {'skipped':>7}  {'s':>7}", "-" * (width + 36)]
        for r in rows:
            lines.append(f"{r['module']:{width}}  {r['passed']:6d}  {r['failed']:6d}  {r['skipped']:7d}  "
                         f"{r['seconds']:7.2f}")
        lines.append(self.summary())
        return "\n".join(lines)

    def failure_report(self) -> str:
        """Every failure and error in full (pytest's report, traceback included), or "" when there are none."""
        parts = []
        for o in self.failures:
            rule = "_" * 20
            parts.append(f"{rule} {o.outcome.upper()} {o.nodeid} {rule}\n{o.detail or o.message}".rstrip())
        return "\n\n".join(parts)

    def summary(self) -> str:
        parts = [f"{v} {k}" for k, v in self.counts.items() if v]
        return f"{self.selection!r}: " + (", ".join(parts) or "no tests") + f" in {self.seconds:.1f} s"

    def table(self, outcomes: Sequence[str] | None = None) -> str:
        """A plain-text table, one row per test: outcome, seconds, id, reason/message.

        ``outcomes`` keeps only those kinds (e.g. ``("failed", "error")``).
        """
        rows = [o for o in self.outcomes if outcomes is None or o.outcome in outcomes]
        width = max([len(o.nodeid) for o in rows] + [4])
        lines = [f"{'outcome':8} {'s':>6}  {'test':{width}}  reason", "-" * (width + 26)]
        for o in rows:
            lines.append(f"{o.outcome:8} {o.duration:6.2f}  {o.nodeid:{width}}  {o.message}".rstrip())
        lines.append(self.summary())
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"<TestRunResult {self.summary()}>"

    def __str__(self) -> str:
        """The per-module table, then every failure in full (``table()`` has one row per test)."""
        report = self.failure_report()
        return self.module_table() + (f"\n\n{report}" if report else "")

    def _repr_html_(self) -> str:
        """The badge and summary, skip reasons, one table row per test module, then every failure in full."""
        badge = ("#2e7d32", "all passed") if self.ok else ("#c62828", "FAILURES") if self.failures else (
            "#ef6c00", "nothing ran" if not self.outcomes else f"pytest exit status {self.returncode}")
        head = (f"<p><b style='color:{badge[0]}'>{badge[1]}</b> · {html.escape(self.summary())}</p>")
        if self.skip_reasons:
            head += "<p>skipped because: " + "; ".join(
                f"{html.escape(r)} ({n})" for r, n in self.skip_reasons.items()) + "</p>"
        left = "style='text-align:left'"  # JupyterLab right-aligns table cells by default
        num = "style='text-align:right'"
        red = "color:#c62828;font-weight:bold"
        rows = "".join(
            f"<tr><td {left}><code>{html.escape(r['module'])}</code></td>"
            f"<td style='text-align:right;color:{_COLORS['passed']}'>{r['passed']}</td>"
            f"<td style='text-align:right;{red if r['failed'] else ''}'>{r['failed']}</td>"
            f"<td {num}>{r['skipped']}</td><td {num}>{r['seconds']:.2f}</td></tr>"
            for r in self.modules)
        page = (head + "<table>"
                f"<thead><tr><th {left}>module</th><th>passed</th><th>failed</th><th>skipped</th><th>s</th></tr>"
                f"</thead><tbody>{rows}</tbody></table>")
        for o in self.failures:  # in full: the traceback is what a learner needs to fix it
            page += (f"<p style='{red}'>{o.outcome.upper()} <code>{html.escape(o.nodeid)}</code></p>"
                     "<pre style='white-space:pre-wrap;font-size:90%'>"
                     f"{html.escape(o.detail or o.message)}</pre>")
        return page


def _selection_args(selection: str | Sequence[str], root: Path) -> list[str]:
    """pytest arguments for a named selection, path(s) (``::`` node ids allowed) or a ``-k`` expression."""
    if isinstance(selection, (list, tuple)):
        if not selection or not all(isinstance(s, str) for s in selection):
            raise TypeError(f"selection: expected a name, a path, a -k expression or a non-empty list of "
                            f"paths, got {selection!r}")
        out = []
        for s in selection:
            out += _selection_args(s, root)
        return out
    if not isinstance(selection, str) or not selection.strip():
        raise TypeError(f"selection: expected a name ({', '.join(SELECTIONS)}), a path or a -k expression, "
                        f"got {selection!r}")
    if selection in SELECTIONS:
        paths = [p for p in SELECTIONS[selection] if (root / p).exists()]
        if not paths:
            raise TestsNotAvailableError(f"selection: {selection!r} means {', '.join(SELECTIONS[selection])}, "
                                         f"none of which exists under {root}")
        return paths
    path = selection.split("::", 1)[0]
    looks_like_path = "/" in path or path.endswith(".py") or (root / path).exists()
    if looks_like_path:
        full = Path(path) if Path(path).is_absolute() else root / path
        if not full.exists():
            raise FileNotFoundError(f"selection: {selection!r} looks like a path but {full} does not exist")
        return [selection]
    return ["tests", "-k", selection]


def run(selection: str | Sequence[str] = "kernels", *, gpu: bool | None = None, progress: bool = True,
        root: str | os.PathLike | None = None, extra_args: Sequence[str] = (),
        timeout: float | None = None) -> TestRunResult:
    """Run a selection of the tests with pytest and return every test's outcome.

    Parameters
    ----------
    selection : str or list of str
        A name from :data:`SELECTIONS` (``"kernels"``, ``"formats"``, ``"all"``), a path relative to the
        repository root (``"tests/formats/test_nm.py"``, ``"tests/formats/test_nm.py::test_x"``), a list of
        paths, or otherwise a pytest ``-k`` expression over all tests (``"mma_sp and not tiled"``).
    gpu : bool or None
        None: every selected test (``gpu``-marked ones skip, with the reason, without an SM80+ GPU);
        True: only the ``gpu``-marked tests; False: none of them.
    progress : bool
        Show a ``tqdm.auto`` bar (a widget in JupyterLab) with running counts, and print each failure as
        it happens.
    root : path, optional
        The repository root holding ``tests/`` (default: the checkout this package was imported from).
    extra_args : sequence of str
        More pytest arguments (e.g. ``["-x"]``).
    timeout : float, optional
        Seconds after which pytest is stopped (the result then holds the tests that finished).

    Returns
    -------
    TestRunResult

    Raises
    ------
    TestsNotAvailableError
        No ``tests/`` folder (installed without the source tree), or a named selection none of whose
        folders exists.
    ValueError
        pytest rejected the arguments (e.g. a malformed ``-k`` expression); the message quotes it.
    """
    if gpu is not None and not isinstance(gpu, bool):
        raise TypeError(f"gpu: expected None, True or False, got {gpu!r}")
    if timeout is not None and not (isinstance(timeout, (int, float)) and timeout > 0):
        raise ValueError(f"timeout: expected a positive number of seconds or None, got {timeout!r}")
    if isinstance(extra_args, str) or not all(isinstance(a, str) for a in extra_args):
        raise TypeError(f"extra_args: expected a sequence of strings, got {extra_args!r}")
    base = tests_root(root)
    args = _selection_args(selection, base)
    if gpu is not None:
        args += ["-m", "gpu" if gpu else "not gpu"]
    # the browser test starts JupyterLab and chromium: not from inside a notebook (`make test` runs it)
    args += [f"--ignore={base / 'tests' / 'browser'}", "-p", "no:cacheprovider",
             "-q", "-rN", "--color=no", *extra_args]
    label = selection if isinstance(selection, str) else " ".join(selection)
    result = TestRunResult(selection=label, args=args)

    with tempfile.TemporaryDirectory(prefix="samoyeds-testing-") as tmp:
        report = Path(tmp) / "report.jsonl"
        log = Path(tmp) / "pytest.log"
        env = dict(os.environ, **{_ENV_REPORT: str(report)})
        # the package under test is the one imported here, even where it is not installed
        env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).resolve().parents[1])] +
                                            ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
        bar = None
        t0 = time.perf_counter()
        with open(log, "w") as logf:
            boot = _BOOTSTRAP.format(plugin=str(_PLUGIN))
            proc = subprocess.Popen([sys.executable, "-c", boot, *args], cwd=base, env=env,
                                    stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
            offset = 0
            try:
                while True:
                    finished = proc.poll() is not None
                    offset, events = _read_events(report, offset)
                    for ev in events:
                        bar = _handle_event(ev, result, bar, progress, label)
                    if finished:
                        break
                    if timeout is not None and time.perf_counter() - t0 > timeout:
                        proc.terminate()
                        proc.wait(timeout=30)
                        result.output = f"stopped after {timeout} s (timeout)\n"
                        continue
                    time.sleep(0.1)
            except KeyboardInterrupt:
                proc.terminate()
                proc.wait(timeout=30)
                raise
            finally:
                if proc.poll() is None:
                    proc.kill()
                if bar is not None:
                    bar.close()
        result.returncode = proc.returncode
        result.seconds = time.perf_counter() - t0
        result.output += log.read_text(errors="replace")
    if result.returncode == 4 or (result.returncode in (2, 3) and not result.outcomes):
        tail = "\n".join(result.output.strip().splitlines()[-8:])
        raise ValueError(f"selection: pytest could not run {label!r} (exit status {result.returncode}):\n{tail}")
    return result


def _read_events(report: Path, offset: int) -> tuple[int, list[dict]]:
    """New complete JSON lines of the report file after byte ``offset``."""
    if not report.exists():
        return offset, []
    with open(report, "rb") as f:
        f.seek(offset)
        chunk = f.read()
    end = chunk.rfind(b"\n") + 1  # a line still being written waits for the next poll
    lines = chunk[:end].decode().splitlines()
    return offset + end, [json.loads(line) for line in lines if line.strip()]


def _handle_event(ev: dict, result: TestRunResult, bar, progress: bool, label: str):
    if ev["event"] == "collected":
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=ev["count"], desc=f"tests {label}", unit="test", leave=True)
        return bar
    o = TestOutcome(ev["nodeid"], ev["outcome"], ev["duration"], ev["message"], ev.get("detail", ""))
    result.outcomes.append(o)
    if bar is not None:
        n = result.counts
        bar.set_postfix(passed=n["passed"], failed=n["failed"] + n["error"], skipped=n["skipped"], refresh=False)
        if ev["event"] == "test":
            bar.update(1)
        if o.outcome in ("failed", "error", "xpassed"):
            bar.write(f"{o.outcome.upper()} {o.nodeid}: {o.message}")
    return bar
