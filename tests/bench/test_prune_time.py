"""bench.prune_time: records on a small expert (no timing asserted), bad sizes named."""

from __future__ import annotations

import json

import pytest

from samoyeds_lab.bench.prune_time import main, time_obs_prune


@pytest.mark.parametrize("rows,cols,tokens", [(6, 128, 3), (38, 256, 19)])
def test_records(rows, cols, tokens):
    recs = time_obs_prune(rows, cols, tokens)
    assert [r["label"] for r in recs] == ["samoyeds-1:2-v128", "2:4"]
    assert [r["density"] for r in recs] == [0.25, 0.5]
    for r in recs:
        assert r["shape"] == [rows, cols] and r["tokens"] == tokens
        assert r["seconds"] >= 0 and r["cpu_seconds"] >= 0 and r["factor_seconds"] >= 0 and "device" in r


def test_main_writes_json(tmp_path, capsys):
    out = tmp_path / "t.json"
    assert main(["--size", "4", "128", "--tokens", "5", "--out", str(out)]) == 0
    assert len(json.loads(out.read_text())) == 2
    assert "samoyeds-1:2-v128" in capsys.readouterr().out


@pytest.mark.parametrize("kw,word", [({"rows": 0}, "rows"), ({"tokens": 0}, "tokens"), ({"cols": 1.5}, "cols")])
def test_bad_sizes(kw, word):
    args = {"rows": 4, "cols": 128, "tokens": 2, **kw}
    with pytest.raises((ValueError, TypeError), match=word):
        time_obs_prune(**args)


def test_threads_are_restored():
    import torch

    before = torch.get_num_threads()
    recs = time_obs_prune(4, 128, 2, nthreads=1)
    assert recs[0]["threads"] == 1 and torch.get_num_threads() == before
    with pytest.raises(ValueError, match="nthreads"):
        time_obs_prune(4, 128, 2, nthreads=0)
    assert torch.get_num_threads() == before
