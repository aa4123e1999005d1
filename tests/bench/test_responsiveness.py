"""`samoyeds-lab bench panels`: the labs' latency budgets as a benchmark (the bookkeeping, not the speed)."""

import json

import pytest

from samoyeds_lab.bench import responsiveness as R
from samoyeds_lab.cli import main as cli_main


def test_every_case_has_a_budget_and_runs():
    cases = R._cases()
    groups = {g for g, _, _ in cases}
    assert groups == set(R.BUDGETS_S)
    assert len({(g, n) for g, n, _ in cases}) == len(cases)  # names are unique
    assert sum(g == "sparsity_panel" for g, _, _ in cases) >= 10  # every pattern × method


def test_records_carry_budget_and_verdict(monkeypatch):
    ticks = iter([0.0, 0.1, 0.1, 5.1])  # one fast case, one slow case (fake clock)
    monkeypatch.setattr(R, "_cases", lambda: [("sparsity_panel", "fast", lambda: None),
                                              ("pruning_check", "slow", lambda: None)])
    monkeypatch.setattr("samoyeds_lab.bench.timing.time.perf_counter", lambda: next(ticks))
    recs = R.bench_responsiveness(repeat=1)
    assert [(r["case"], r["within_budget"]) for r in recs] == [("fast", True), ("slow", False)]
    assert recs[1]["median_s"] == pytest.approx(5.0) and recs[1]["budget_s"] == R.BUDGETS_S["pruning_check"]
    assert {"device", "date", "threads", "torch"} <= set(recs[0])  # the environment stamp


def test_groups_filter_and_bad_arguments():
    with pytest.raises(ValueError, match="groups: expected names from"):
        R.bench_responsiveness(groups=("nope",))
    with pytest.raises(ValueError, match="repeat"):
        R.bench_responsiveness(repeat=0)


def test_cli_writes_records_and_exit_status(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(R, "_cases", lambda: [("caching_check", "a check", lambda: None)])
    out = tmp_path / "r.json"
    assert cli_main(["bench", "panels", "--repeat", "2", "--out", str(out)]) == 0
    recs = json.loads(out.read_text())["records"]
    assert len(recs) == 1 and recs[0]["repeat"] == 2 and recs[0]["group"] == "caching_check"
    assert "ok" in capsys.readouterr().out
    with pytest.raises(SystemExit) as e:  # an argparse range error: one line, exit 2
        cli_main(["bench", "panels", "--repeat", "0"])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--repeat" in err[0] and "Traceback" not in err[0]
