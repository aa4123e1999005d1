"""scripts/gpu_validate.sh, the prepared first job of a GPU session, fits one short device call and runs to
its summary on this CPU machine: every step is reached and reports (GPU tests skip, the sanitizers skip with
the reason, the benchmark refuses with exit 2), so a lent GPU's few minutes are not lost to a typo."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = (ROOT / "scripts" / "gpu_validate.sh").read_text()
#: The steps in the order they must run: probes, compile, each family, the three sanitizers, the bench.
ORDER = ["env", "layout", "compile", "spmm_dense", "ssmm", "grouped", "cases", "memcheck", "racecheck", "synccheck",
         "bench"]
FAMILIES = ["spmm_dense", "ssmm", "grouped", "cases"]


def _plan() -> list[tuple[str, str, int]]:
    block = re.search(r"^PLAN=\(\n(.*?)^\)", SCRIPT, flags=re.M | re.S)
    assert block, "PLAN=( ... ) not found in scripts/gpu_validate.sh"
    rows = re.findall(r'^\s*"(\w+)\s+(\w+)\s+(\d+)"\s*$', block.group(1), flags=re.M)
    return [(n, g, int(t)) for n, g, t in rows]


def test_plan_fits_one_short_device_call():
    plan = _plan()
    assert [n for n, _, _ in plan] == ORDER
    total = sum(t for _, _, t in plan)
    assert total <= 360, f"step timeouts add up to {total} s; one run gets 6 minutes"
    assert all(t > 0 for _, _, t in plan)


def test_each_family_runs_in_its_own_pytest_process_without_x():
    steps = dict(re.findall(r'^step (\w+) ((?:[^\n]*\\\n)*[^\n]*)$', SCRIPT, flags=re.M))
    assert list(steps) == ORDER, list(steps)
    for name in FAMILIES + ["layout"]:
        assert steps[name].startswith('"${PYTEST[@]}" tests/kernels/'), steps[name]
        assert f'--junitxml="$OUT/{name}.xml"' in steps[name]
    pytest_line = re.search(r"^PYTEST=\((.*)\)$", SCRIPT, flags=re.M).group(1)
    assert "-m gpu" in pytest_line
    for text in [pytest_line, *steps.values()]:
        assert not re.search(r"(^|\s)(-x|--exitfirst|--maxfail)\b", text), text
    for tool in ("memcheck", "racecheck", "synccheck"):
        assert steps[tool] == f"sanitize {tool}"
    assert "--projections w1 w2" in steps["bench"] and "--dtypes bfloat16 float16" in steps["bench"]
    assert "1 8 64 1024 4096" in steps["bench"] and "Mixtral-8x7B" in steps["bench"]


def _run(tmp_path, **env):
    full = {**os.environ, "OUT": str(tmp_path), "PYTHON": sys.executable, **env}
    return subprocess.run(["bash", "scripts/gpu_validate.sh"], cwd=ROOT, env=full, capture_output=True, text=True,
                          timeout=900)


def _steps(stdout: str) -> dict[str, str]:
    return {line.split()[0]: line for line in stdout.splitlines() if " rc=" in line}


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("timeout") is None, reason="coreutils timeout missing")
def test_gpu_validate_runs_every_step_and_summarises(tmp_path):
    from samoyeds_lab.kernels import available

    if available():
        pytest.skip("a GPU is present: run the script itself")
    proc = _run(tmp_path, BENCH_MODELS="DeepSeek-MoE-16B", BENCH_TOKENS="1")
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert "== steps" in out and "== environment" in out
    steps = _steps(out)
    assert list(steps) == ORDER, out  # every step reported, in order
    for name in ["layout"] + FAMILIES:
        assert re.search(r"\bok\s+rc=0\b", steps[name]), steps[name]  # collected and skipped, not broken
        log = (tmp_path / f"{name}.log").read_text()
        assert "skipped" in log and "error" not in log.lower(), log[-2000:]
        assert (tmp_path / f"{name}.xml").exists()
    assert "skipped" in steps["compile"]
    for tool in ("memcheck", "racecheck", "synccheck"):
        assert re.search(r"\bskipped\s+rc=0\b", steps[tool]), steps[tool]  # absent tool / no GPU: the reason
        assert "skipped:" in (tmp_path / f"{tool}.log").read_text()
    assert re.search(r"\bfailed\s+rc=2\b", steps["bench"]) and "GPU" in (tmp_path / "bench.log").read_text()
    summary = (tmp_path / "summary.txt").read_text()  # rewritten after every step: what a killed run leaves
    assert list(_steps(summary)) == ORDER and summary.strip() in out


@pytest.mark.skipif(shutil.which("timeout") is None, reason="coreutils timeout missing")
def test_gpu_validate_steps_select_what_runs(tmp_path):
    """STEPS (a name or a group) lets a rerun repeat only what failed."""
    from samoyeds_lab.kernels import available

    if available():
        pytest.skip("a GPU is present: run the script itself")
    proc = _run(tmp_path, STEPS="memcheck")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert list(_steps(proc.stdout)) == ["memcheck"] and not (tmp_path / "bench.log").exists()
    proc = _run(tmp_path / "g", STEPS="sanitizer")
    assert list(_steps(proc.stdout)) == ["memcheck", "racecheck", "synccheck"]


@pytest.mark.skipif(shutil.which("timeout") is None, reason="coreutils timeout missing")
def test_a_step_past_its_timeout_is_reported_and_the_job_goes_on(tmp_path):
    """A hung step is killed at its limit, recorded as 'timeout', and the later steps still run."""
    script = tmp_path / "gv.sh"
    text = SCRIPT.replace('cd "$(dirname "$0")/.."', f'cd {str(ROOT)!r}')
    text = re.sub(r'"memcheck\s+sanitizer\s+\d+"', '"memcheck       sanitizer  1"', text)
    text = text.replace("step memcheck sanitize memcheck", "step memcheck sleep 30")
    script.write_text(text)
    env = {**os.environ, "OUT": str(tmp_path / "out"), "PYTHON": sys.executable, "STEPS": "memcheck racecheck"}
    proc = subprocess.run(["bash", str(script)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    steps = _steps(proc.stdout)
    assert list(steps) == ["memcheck", "racecheck"]
    assert re.search(r"\btimeout\s+rc=124\b", steps["memcheck"]) and "skipped" in steps["racecheck"]
