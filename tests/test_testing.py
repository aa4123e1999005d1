"""samoyeds_lab.testing.run: pytest in a subprocess on a tiny throw-away test tree, outcomes per test."""

from __future__ import annotations

import textwrap

import pytest

from samoyeds_lab import testing
from samoyeds_lab.testing import TestOutcome, TestRunResult, TestsNotAvailableError

TINY = '''
import pytest

def test_passes():
    assert 1 + 1 == 2

def test_fails():
    assert [1, 2] == [1, 3], "lists differ"

@pytest.mark.skip(reason="not on this machine")
def test_skipped():
    pass

@pytest.mark.gpu
def test_gpu_only():
    pass

@pytest.mark.xfail(reason="known bug", strict=True)
def test_known_bug():
    assert False

@pytest.fixture
def broken():
    raise RuntimeError("fixture broke")

def test_setup_error(broken):
    pass

@pytest.mark.parametrize("n", [1, 19, 99])
def test_param(n):
    assert n > 0
'''


def make_tree(tmp_path):
    """A repository-like root: tests/ with two test files, and markers registered like pyproject.toml."""
    (tmp_path / "tests" / "sub").mkdir(parents=True)
    (tmp_path / "tests" / "test_tiny.py").write_text(TINY)
    (tmp_path / "tests" / "sub" / "test_other.py").write_text("def test_other_a():\n    pass\n")
    (tmp_path / "pytest.ini").write_text(textwrap.dedent("""
        [pytest]
        testpaths = tests
        addopts = -ra --strict-markers
        markers =
            gpu: needs a GPU
            browser: drives a browser
        """))
    return tmp_path


@pytest.fixture
def tree(tmp_path):
    return make_tree(tmp_path)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """One run of tests/test_tiny.py (pytest subprocesses take seconds: shared by the read-only checks)."""
    return testing.run("tests/test_tiny.py", root=make_tree(tmp_path_factory.mktemp("tiny")), progress=False)


def outcome_map(result: TestRunResult) -> dict[str, str]:
    return {o.nodeid.split("::", 1)[1]: o.outcome for o in result.outcomes}


def test_runs_a_path_and_reports_every_test(tiny):
    r = tiny
    assert outcome_map(r) == {
        "test_passes": "passed", "test_fails": "failed", "test_skipped": "skipped", "test_gpu_only": "passed",
        "test_known_bug": "xfailed", "test_setup_error": "error",
        "test_param[1]": "passed", "test_param[19]": "passed", "test_param[99]": "passed"}
    assert r.counts == {"passed": 5, "failed": 1, "error": 1, "skipped": 1, "xfailed": 1, "xpassed": 0}
    assert r.returncode == 1 and not r.ok
    assert r.skip_reasons == {"not on this machine": 1}
    fails = {o.nodeid.split("::")[1]: o.message for o in r.failures}
    assert fails["test_fails"] == "AssertionError: lists differ"
    assert "fixture broke" in fails["test_setup_error"]
    assert all(o.duration >= 0 for o in r.outcomes)
    assert "1 failed" in r.output  # pytest's own output is kept for the tracebacks


def test_gpu_switch_selects_the_marked_tests(tree):
    only = testing.run("tests/test_tiny.py", root=tree, gpu=True, progress=False)
    assert outcome_map(only) == {"test_gpu_only": "passed"} and only.ok
    without = testing.run("tests/test_tiny.py", root=tree, gpu=False, progress=False)
    assert "test_gpu_only" not in outcome_map(without) and len(without.outcomes) == 8


def test_k_expression_node_id_and_list(tree):
    r = testing.run("param and not 19", root=tree, progress=False)
    assert outcome_map(r) == {"test_param[1]": "passed", "test_param[99]": "passed"} and r.ok
    r = testing.run("tests/test_tiny.py::test_passes", root=tree, progress=False)
    assert outcome_map(r) == {"test_passes": "passed"}
    r = testing.run(["tests/sub", "tests/test_tiny.py::test_skipped"], root=tree, progress=False)
    assert outcome_map(r) == {"test_other_a": "passed", "test_skipped": "skipped"} and r.ok


def test_named_selection_uses_the_folders_that_exist(tree):
    r = testing.run("all", root=tree, progress=False)
    assert len(r.outcomes) == 10
    with pytest.raises(TestsNotAvailableError, match="'kernels' means tests/kernels, tests/reference"):
        testing.run("kernels", root=tree, progress=False)


def test_progress_bar_and_failure_lines(tree, capsys):
    r = testing.run("tests/test_tiny.py", root=tree, progress=True)
    cap = capsys.readouterr()  # outside a notebook tqdm draws text on stderr; failures are printed
    assert "9/9" in cap.err and "tests tests/test_tiny.py" in cap.err
    assert "FAILED tests/test_tiny.py::test_fails: AssertionError: lists differ" in cap.out
    assert "ERROR tests/test_tiny.py::test_setup_error" in cap.out
    assert len(r.outcomes) == 9


def test_table_and_html(tiny):
    r = tiny
    text = r.table()  # one row per test, on request
    assert text.count("\n") == 9 + 2  # header, rule, 9 rows, summary
    assert "not on this machine" in text and "5 passed, 1 failed, 1 error, 1 skipped, 1 xfailed" in text
    assert r.table(outcomes=("failed",)).count("\nfailed ") == 1
    page = r._repr_html_()
    # one row per module, not per test: the notebook shows a summary, not every passing test
    assert "FAILURES" in page and page.count("<tr>") == 1 + 1 and "not on this machine (1)" in page
    assert "test_passes" not in page and "<code>tests/test_tiny.py</code>" in page
    for col in ("module", "passed", "failed", "skipped"):
        assert f">{col}</th>" in page
    # the failures in full, traceback included, escaped
    assert "FAILED <code>tests/test_tiny.py::test_fails</code>" in page
    assert "ERROR <code>tests/test_tiny.py::test_setup_error</code>" in page
    assert "assert [1, 2] == [1, 3]" in page and "RuntimeError: fixture broke" in page
    assert "<TestRunResult 'tests/test_tiny.py': 5 passed" in repr(r)


def test_module_summary(tree):
    r = testing.run("all", root=tree, progress=False)
    seconds = {m: sum(o.duration for o in r.outcomes if o.module == m)
               for m in ("tests/sub/test_other.py", "tests/test_tiny.py")}
    assert r.modules == [  # sorted by path; errors count as failed, xfailed as skipped
        {"module": "tests/sub/test_other.py", "passed": 1, "failed": 0, "skipped": 0,
         "seconds": pytest.approx(seconds["tests/sub/test_other.py"])},
        {"module": "tests/test_tiny.py", "passed": 5, "failed": 2, "skipped": 2,
         "seconds": pytest.approx(seconds["tests/test_tiny.py"])},
    ]
    text = r.module_table()
    lines = text.splitlines()
    assert lines[0].split() == ["module", "passed", "failed", "skipped", "s"]
    assert lines[2].split()[:4] == ["tests/sub/test_other.py", "1", "0", "0"]
    assert lines[3].split()[:4] == ["tests/test_tiny.py", "5", "2", "2"]
    assert lines[-1] == r.summary() and len(lines) == 2 + 2 + 1


def test_failures_are_reported_in_full(tiny):
    fails = {o.nodeid.split("::")[1]: o for o in tiny.failures}
    detail = fails["test_fails"].detail
    assert "def test_fails():" in detail and "assert [1, 2] == [1, 3]" in detail and "test_tiny.py:" in detail
    assert "fixture broke" in fails["test_setup_error"].detail
    assert all(o.detail == "" for o in tiny.outcomes if o.outcome not in ("failed", "error"))
    report = tiny.failure_report()
    assert report.count("FAILED tests/test_tiny.py::test_fails") == 1
    assert "ERROR tests/test_tiny.py::test_setup_error" in report
    assert "def test_fails():" in report
    # str(): the module table, then the failures in full (no row per passing test)
    text = str(tiny)
    assert text.startswith(tiny.module_table()) and "def test_fails():" in text and "test_param[19]" not in text


def test_a_clean_run_has_no_failure_report(tree):
    r = testing.run("tests/sub", root=tree, progress=False)
    assert r.ok and r.failure_report() == "" and str(r) == r.module_table()
    assert "<pre" not in r._repr_html_() and "all passed" in r._repr_html_()


def test_collection_error_is_an_error_outcome(tree):
    (tree / "tests" / "test_broken.py").write_text("import no_such_module_here\n")
    r = testing.run("tests/test_broken.py", root=tree, progress=False)
    assert [o.outcome for o in r.outcomes] == ["error"] and "no_such_module_here" in r.outcomes[0].message
    assert "no_such_module_here" in r.outcomes[0].detail and r.modules[0]["failed"] == 1
    assert not r.ok


def test_timeout_stops_pytest(tree):
    (tree / "tests" / "test_slow.py").write_text("import time\ndef test_a():\n    pass\n"
                                                 "def test_b():\n    time.sleep(60)\n")
    r = testing.run("tests/test_slow.py", root=tree, progress=False, timeout=3)
    assert r.seconds < 40 and "timeout" in r.output and not r.ok


def test_default_root_is_this_checkout():
    root = testing.tests_root()
    assert (root / "tests" / "test_testing.py").is_file()


@pytest.mark.parametrize("bad, exc, match", [
    (dict(selection=""), TypeError, "selection: expected a name"),
    (dict(selection=3), TypeError, "selection: expected a name"),
    (dict(selection=[]), TypeError, "selection: expected"),
    (dict(selection="tests/nope.py"), FileNotFoundError, "selection: 'tests/nope.py' looks like a path"),
    (dict(gpu="yes"), TypeError, "gpu: expected None, True or False, got 'yes'"),
    (dict(timeout=0), ValueError, "timeout: expected a positive number"),
    (dict(extra_args="-x"), TypeError, "extra_args: expected a sequence of strings"),
])
def test_bad_arguments(tree, bad, exc, match):
    kw = dict(selection="tests/test_tiny.py", root=tree, progress=False) | bad
    with pytest.raises(exc, match=match):
        testing.run(**kw)


def test_bad_k_expression_is_a_value_error(tree):
    with pytest.raises(ValueError, match="selection: pytest could not run 'param and and'"):
        testing.run("param and and", root=tree, progress=False)


def test_no_tests_folder(tmp_path):
    with pytest.raises(TestsNotAvailableError, match="installed without its source tree"):
        testing.run("all", root=tmp_path, progress=False)
    assert issubclass(TestsNotAvailableError, FileNotFoundError)


def test_outcome_is_a_frozen_record():
    o = TestOutcome("tests/x.py::t", "passed", 0.5)
    with pytest.raises(AttributeError):
        o.outcome = "failed"  # type: ignore[misc]
