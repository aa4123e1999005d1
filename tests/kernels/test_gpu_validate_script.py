"""scripts/gpu_validate.sh, the prepared first job of a GPU session, runs to its summary on this CPU machine:
every step is reached and reports (GPU tests skip, the benchmark refuses with exit 2), so a lent GPU's few
minutes are not lost to a typo in the script."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("timeout") is None, reason="coreutils timeout missing")
def test_gpu_validate_runs_every_step_and_summarises(tmp_path):
    from samoyeds_lab.kernels import available

    if available():
        pytest.skip("a GPU is present: run the script itself")
    env = {**os.environ, "OUT": str(tmp_path), "PYTHON": sys.executable, "BENCH_MODELS": "DeepSeek-MoE-16B",
           "BENCH_TOKENS": "1"}
    proc = subprocess.run(["bash", "scripts/gpu_validate.sh"], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert "== steps" in out
    steps = {line.split()[0]: line for line in out.splitlines() if " rc=" in line}
    assert set(steps) == {"layout", "kernels", "memcheck", "bench"}, out
    for name in ("layout", "kernels"):
        assert "rc=0" in steps[name], steps[name]  # the gpu tests are collected and skipped, not broken
        log = (tmp_path / f"{name}.log").read_text()
        assert "skipped" in log and "error" not in log.lower(), log[-2000:]
    assert "rc=2" in steps["bench"] and "GPU" in (tmp_path / "bench.log").read_text()
    assert (tmp_path / "env.log").exists() and (tmp_path / "kernels.xml").exists()


@pytest.mark.skipif(shutil.which("timeout") is None, reason="coreutils timeout missing")
def test_gpu_validate_steps_select_what_runs(tmp_path):
    """STEPS splits the job over several device calls (one call may run 10 minutes at most)."""
    from samoyeds_lab.kernels import available

    if available():
        pytest.skip("a GPU is present: run the script itself")
    env = {**os.environ, "OUT": str(tmp_path), "PYTHON": sys.executable, "STEPS": "memcheck"}
    proc = subprocess.run(["bash", "scripts/gpu_validate.sh"], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ran = [line.split()[0] for line in proc.stdout.splitlines() if " rc=" in line]
    assert ran == ["memcheck"] and not (tmp_path / "bench.log").exists()
