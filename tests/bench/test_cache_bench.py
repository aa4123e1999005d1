"""bench.cache: the Zipf trace is what it says, records carry the stamp and a throughput per policy, and the
recorded results meet the issue's floor (>= 10 M accesses/s for lru and belady on the 2-core CPU)."""

import json
from pathlib import Path

import numpy as np
import pytest

from samoyeds_lab.bench.cache import CACHE_POLICIES, bench_cache, zipf_trace
from samoyeds_lab.cli import main

RECORDED = Path(__file__).resolve().parents[2] / "data" / "bench" / "cpu_cache.json"


def test_zipf_trace_is_seeded_skewed_and_in_range():
    a = zipf_trace(20000, 64, seed=1)
    assert a.dtype == np.int64 and a.min() >= 0 and a.max() < 64
    assert np.array_equal(a, zipf_trace(20000, 64, seed=1))
    counts = np.sort(np.bincount(a, minlength=64))[::-1]
    assert counts[0] > 10 * counts[32]  # rank 1 vs rank 33: (33)^1.1 ≈ 47× in expectation
    for kw, match in ((dict(n=0, ids=4), "n"), (dict(n=4, ids=0), "ids"), (dict(n=4, ids=4, alpha=0), "alpha")):
        with pytest.raises(ValueError, match=match):
            zipf_trace(**kw)


def test_bench_cache_records(capsys, tmp_path):
    recs = bench_cache(5000, 64, 8, repeat=1)
    assert [r["op"] for r in recs] == [f"simulate_cache({p})" for p in CACHE_POLICIES]
    for r in recs:
        assert r["accesses"] == 5000 and r["accesses_per_s"] == pytest.approx(5000 / r["median_s"])
        assert 0 <= r["hit_rate"] <= 1 and "device" in r and "date" in r
    by = {r["op"]: r["hit_rate"] for r in recs}
    assert by["simulate_cache(belady)"] >= by["simulate_cache(lru)"]
    out = tmp_path / "c.json"
    assert main(["bench", "cache", "--accesses", "3000", "--repeat", "1", "--out", str(out)]) == 0
    assert "M accesses/s" in capsys.readouterr().out and len(json.loads(out.read_text())) == len(CACHE_POLICIES)


def test_recorded_throughput_meets_the_floor():
    recs = {r["op"]: r for r in json.loads(RECORDED.read_text())}
    for pol in ("lru", "belady"):
        r = recs[f"simulate_cache({pol})"]
        assert r["accesses"] >= 10_000_000 and r["numba"] is True
        assert r["accesses_per_s"] >= 10e6, (pol, r["accesses_per_s"])
