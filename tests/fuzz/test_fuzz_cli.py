"""Bad command lines for every ``samoyeds-lab`` command: one error line naming the argument, exit 2, no traceback.

Every case fails in argument checking, before any benchmark, training run or JupyterLab starts (each case
also names a throw-away ``--out`` so that nothing shipped under ``data/`` could be touched). One test runs
the real console entry (``python -m samoyeds_lab.cli``) in a subprocess and checks ``--debug``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from .harness import cli_case, ids, run_case

TMP = Path(tempfile.gettempdir()) / "samoyeds-fuzz-cli"      # never created by a clear case
NOWHERE = "/dev/null/sub/out.json"                           # under a device file: no directory can be made
MISSING = str(TMP / "no-such-dir")

FMT = ["bench", "formats", "--rows", "256", "--cols", "512", "--repeat", "1"]
CACHE = ["bench", "cache", "--accesses", "1000", "--repeat", "1"]
KER = ["bench", "kernels", "--models", "DeepSeek-MoE-16B", "--tokens", "1"]
ROOF = ["bench", "roofline", "--m", "256", "--k", "512", "--tokens", "1"]
CPU = ["bench", "cpu", "--size", "64", "128", "--tokens", "1", "--threads", "1", "--repeat", "1"]
TRACE = ["trace", "--out", str(TMP / "traces"), "--tokens", "256"]
ACC = ["accuracy", "--out", str(TMP / "acc.json"), "--calib-tokens", "256", "--eval-tokens", "256",
       "--recovery-steps", "0", "--vectors", "32", "--methods", "magnitude"]
TT = ["train-tiny", "--out", str(TMP / "tiny"), "--steps", "1", "--batch", "1", "--seq", "32"]
SIDA = ["train-sida", "--out", str(TMP / "sida"), "--steps", "1", "--windows", "1", "--minutes", "0.05"]

CASES = [
    # ------------------------------------------------------------------ doctor
    cli_case(["doctor", "--bogus"], "unknown option", "--bogus"),
    cli_case(["doctor", "extra"], "stray argument", "extra"),
    cli_case(["doctor", "--debug", "--verbose"], "unknown option with --debug", "--verbose"),
    # ------------------------------------------------------------------ bench formats
    cli_case([*FMT, "--rows", "0"], "zero rows", "--rows"),
    cli_case([*FMT, "--rows", "-5"], "negative rows", "--rows"),
    cli_case([*FMT, "--rows", "abc"], "rows not an int", "--rows"),
    cli_case([*FMT, "--cols", "0"], "zero cols", "--cols"),
    cli_case([*FMT, "--cols", "100"], "cols not a multiple of V=128", ("--cols", "cols:")),
    cli_case([*FMT, "--repeat", "0"], "zero repeats", "--repeat"),
    cli_case([*FMT, "--rows", "1000000000", "--cols", "1000000000"], "huge weight", ("--rows", "rows")),
    cli_case([*FMT, "--out", NOWHERE], "unwritable --out", "--out"),
    cli_case([*FMT, "--accesses", "5"], "option of another suite", "--accesses"),
    # ------------------------------------------------------------------ bench cache
    cli_case([*CACHE, "--accesses", "0"], "zero accesses", "--accesses"),
    cli_case([*CACHE, "--accesses", "-1"], "negative accesses", "--accesses"),
    cli_case([*CACHE, "--accesses", "1e6"], "accesses not an int", "--accesses"),
    cli_case([*CACHE, "--accesses", "100000000000000"], "huge trace", "--accesses"),
    cli_case([*CACHE, "--repeat", "0"], "zero repeats", "--repeat"),
    cli_case([*CACHE, "--out", NOWHERE], "unwritable --out", "--out"),
    cli_case([*CACHE, "--rows", "5"], "option of another suite", "--rows"),
    # ------------------------------------------------------------------ bench kernels
    cli_case([*KER, "--tokens", "0"], "zero tokens", "--tokens"),
    cli_case([*KER, "--tokens", "-1"], "negative tokens", "--tokens"),
    cli_case([*KER, "--tokens", "x"], "tokens not an int", "--tokens"),
    cli_case(["bench", "kernels", "--tokens"], "empty token list", "--tokens"),
    cli_case([*KER, "--dtype", "float32"], "unsupported dtype", "--dtype"),
    cli_case(["bench", "kernels", "--models", "GPT-5"], "unknown model", "--models"),
    cli_case([*KER, "--profile", "no_such_gpu"], "unknown hardware profile", "profile"),
    cli_case([*KER, "--out", NOWHERE], "unwritable --out", "--out"),
    cli_case([*KER, "--bogus"], "unknown option", "--bogus"),
    # ------------------------------------------------------------------ bench roofline
    cli_case([*ROOF, "--m", "0"], "zero m", ("--m", "m:")),
    cli_case([*ROOF, "--k", "-1"], "negative k", ("--k", "k:")),
    cli_case([*ROOF, "--m", "x"], "m not an int", "--m"),
    cli_case([*ROOF, "--tokens", "0"], "zero tokens", "tokens"),
    cli_case([*ROOF, "--profile", "no_such_gpu"], "unknown hardware profile", "profile"),
    cli_case([*ROOF, "--dtype", "int8"], "unsupported dtype", "--dtype"),
    cli_case([*ROOF, "--m", "255"], "m not a multiple of M=2", "m"),
    cli_case([*ROOF, "--bogus"], "unknown option", "--bogus"),
    # ------------------------------------------------------------------ bench cpu
    cli_case([*CPU, "--tokens", "0"], "zero tokens", "--tokens"),
    cli_case([*CPU, "--threads", "0"], "zero threads", "--threads"),
    cli_case([*CPU, "--repeat", "0"], "zero repeats", "--repeat"),
    cli_case(["bench", "cpu", "--size", "3", "5"], "size below the minimum", "--size"),
    cli_case(["bench", "cpu", "--shapes", "nope"], "unknown shape", "--shapes"),
    cli_case([*CPU, "--isa", "mmx"], "unknown ISA", "--isa"),
    cli_case([*CPU, "--out", NOWHERE], "unwritable --out", "--out"),
    cli_case(["bench", "cpu", "--no-run"], "--no-run without --readme", "--no-run"),
    cli_case(["bench", "cpu", "--no-run", "--readme", str(TMP / "missing.md")], "missing --readme file",
             "--readme"),
    # ------------------------------------------------------------------ trace
    cli_case([*TRACE, "--tokens", "0"], "zero tokens", "--tokens"),
    cli_case([*TRACE, "--tokens", "-1"], "negative tokens", "--tokens"),
    cli_case([*TRACE, "--tokens", "x"], "tokens not an int", "--tokens"),
    cli_case([*TRACE, "--model-dir", MISSING], "nonexistent model dir", "--model-dir"),
    cli_case([*TRACE, "--out", NOWHERE], "unwritable --out", "--out"),
    cli_case([*TRACE, "--domains", "fr"], "unknown domain", "--domains"),
    # ------------------------------------------------------------------ accuracy
    cli_case([*ACC, "--model", MISSING], "nonexistent model dir", "--model"),
    cli_case([*ACC, "--calib-tokens", "0"], "zero calibration tokens", "--calib-tokens"),
    cli_case([*ACC, "--eval-tokens", "0"], "zero evaluation tokens", "--eval-tokens"),
    cli_case([*ACC, "--eval-tokens", "-1"], "negative evaluation tokens", "--eval-tokens"),
    cli_case([*ACC, "--recovery-steps", "-1"], "negative recovery steps", "--recovery-steps"),
    cli_case([*ACC, "--vectors", "0"], "zero window width", "--vectors"),
    cli_case([*ACC, "--methods", "random"], "unknown method", "--methods"),
    cli_case([*ACC, "--seed", "-1"], "negative seed", "--seed"),
    cli_case([*ACC, "--threads", "0"], "zero threads", "--threads"),
    cli_case([*ACC, "--out", NOWHERE], "unwritable --out", "--out"),
    # ------------------------------------------------------------------ lab (never starts JupyterLab here)
    cli_case(["lab", "--bogus"], "unknown option", "--bogus"),
    cli_case(["lab", "extra"], "stray argument", "extra"),
    cli_case(["lab", "--port", "0"], "an option lab does not have", "--port"),
    # ------------------------------------------------------------------ train-tiny
    cli_case([*TT, "--steps", "0"], "zero steps", "--steps"),
    cli_case([*TT, "--steps", "-3"], "negative steps", "--steps"),
    cli_case([*TT, "--steps", "x"], "steps not an int", "--steps"),
    cli_case([*TT, "--minutes", "-5"], "negative minutes", "--minutes"),
    cli_case([*TT, "--minutes", "0"], "zero minutes", "--minutes"),
    cli_case([*TT, "--minutes", "nan"], "NaN minutes", "--minutes"),
    cli_case([*TT, "--minutes", "inf"], "infinite minutes", "--minutes"),
    cli_case([*TT, "--batch", "0"], "zero batch", "--batch"),
    cli_case([*TT, "--seq", "1"], "seq below 2", "--seq"),
    cli_case([*TT, "--seq", "100000"], "seq above the model's max_seq", "max_seq"),
    cli_case([*TT, "--threads", "0"], "zero threads", "--threads"),
    cli_case([*TT, "--stop-at", "0"], "zero stop-at", "--stop-at"),
    cli_case([*TT, "--seed", "-1"], "negative seed", "--seed"),
    cli_case([*TT, "--resume", "--overwrite"], "resume and overwrite together", ("--overwrite", "overwrite")),
    cli_case(["train-tiny", "--out", MISSING, "--resume", "--steps", "2"], "resume without a state", "resume"),
    cli_case([*TT, "--out", NOWHERE], "unwritable --out", "--out"),
    # ------------------------------------------------------------------ train-sida
    cli_case([*SIDA, "--steps", "0"], "zero steps", "--steps"),
    cli_case([*SIDA, "--steps", "x"], "steps not an int", "--steps"),
    cli_case([*SIDA, "--minutes", "-5"], "negative minutes", "--minutes"),
    cli_case([*SIDA, "--minutes", "nan"], "NaN minutes", "--minutes"),
    cli_case([*SIDA, "--windows", "0"], "zero windows", "--windows"),
    cli_case([*SIDA, "--lr", "0"], "zero learning rate", "--lr"),
    cli_case([*SIDA, "--lr", "inf"], "infinite learning rate", "--lr"),
    cli_case([*SIDA, "--threads", "0"], "zero threads", "--threads"),
    cli_case([*SIDA, "--seed", "-1"], "negative seed", "--seed"),
    cli_case([*SIDA, "--out", NOWHERE], "unwritable --out", "--out"),
    cli_case([*SIDA, "--bogus"], "unknown option", "--bogus"),
]


@pytest.mark.parametrize("c", CASES, ids=ids(CASES))
def test_bad_input(c):
    run_case(c)


def _main(argv):
    from samoyeds_lab.cli import main

    try:
        return main(argv)
    except SystemExit as e:
        return e.code


@settings(max_examples=25, deadline=None)
@given(st.integers(max_value=0))
def test_any_non_positive_size_is_one_named_line(n):
    import contextlib
    import io

    for argv, flag in (([*FMT, "--rows", str(n)], "--rows"), ([*CACHE, "--accesses", str(n)], "--accesses"),
                       ([*TT, "--batch", str(n)], "--batch"), ([*SIDA, "--windows", str(n)], "--windows")):
        err = io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            rc = _main(argv)
        lines = err.getvalue().splitlines()
        assert rc == 2 and len(lines) == 1 and flag in lines[0] and ": error: " in lines[0], (argv, lines)


@settings(max_examples=25, deadline=None)
@given(st.one_of(st.floats(max_value=0.0), st.just(float("nan")), st.just(float("inf"))))
def test_any_bad_budget_is_one_named_line(minutes):
    import contextlib
    import io

    for argv in ([*TT, "--minutes", repr(minutes)], [*SIDA, "--minutes", repr(minutes)]):
        err = io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            rc = _main(argv)
        lines = err.getvalue().splitlines()
        assert rc == 2 and len(lines) == 1 and "--minutes" in lines[0], (argv, lines)


def test_console_script_one_line_and_debug_traceback():
    """The real entry (``python -m samoyeds_lab.cli``): one line and exit 2; ``--debug`` gives the traceback."""
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    argv = [sys.executable, "-m", "samoyeds_lab.cli", "trace", "--model-dir", MISSING, "--out", str(TMP / "t")]
    p = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=120)
    lines = [s for s in p.stderr.splitlines() if s.strip()]
    assert p.returncode == 2, p.stderr
    assert len(lines) == 1 and lines[0].startswith("samoyeds-lab trace: error: ") and "--model-dir" in lines[0]
    assert "Traceback" not in p.stderr
    q = subprocess.run([*argv, "--debug"], capture_output=True, text=True, env=env, timeout=120)
    assert q.returncode != 0 and "Traceback (most recent call last)" in q.stderr
    # an argparse error stays one line under --debug too (there is no traceback to show)
    r = subprocess.run([sys.executable, "-m", "samoyeds_lab.cli", "bench", "formats", "--rows", "0"],
                       capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 2 and r.stderr.strip().splitlines() == [
        r.stderr.strip()] and r.stderr.startswith("samoyeds-lab bench formats: error: ")
