"""samoyeds-lab bench cpu: records, side-by-side baselines, the command line (small shapes; no timing goals)."""

from __future__ import annotations

import json

import pytest
import torch

from samoyeds_lab.bench import cpu as bc
from samoyeds_lab.bench.cpu_layer import bench_layer, make_layer
from samoyeds_lab.cli import main


def test_bench_expert_records_every_path_side_by_side():
    recs = bc.bench_expert(64, 256, [1, 3], nthreads=1, repeat=2, bandwidth=10.0, name="tiny")
    kinds = {(r["kind"], r["tokens"]) for r in recs}
    assert {("samoyeds", 1), ("2:4", 3), ("dense", 1), ("reference", 1)} <= kinds
    dense = {(r["tokens"], r["dtype"]): r["ms"] for r in recs if r["kind"] == "dense"}
    assert {d for _, d in dense} == {"float32", "bfloat16", "float16"}
    for r in recs:
        assert r["min_ms"] <= r["ms"] <= r["max_ms"] and r["cpu"] and r["date"] and r["threads"] == 1
        if r["kind"] in ("samoyeds", "2:4"):
            best = min(v for (t, _), v in dense.items() if t == r["tokens"])
            assert r["dense_ms"] == best and r["speedup"] == pytest.approx(best / r["kernel_ms"])
            assert r["ceiling_ms"] == pytest.approx(r["bytes"] / 10e9 * 1e3)
            assert r["tiles_ms"] > 0


def test_layer_bench_compares_backends_on_the_same_tokens():
    ex = make_layer(128, 256, 4)
    recs = bench_layer(ex, shape=("t", 128, 256, 4, 2), batches=(1, 2), prefill=16, repeat=2, nthreads=1)
    assert {(r["backend"], r["dtype"], r["tokens"]) for r in recs} == {
        (b, d, t) for b, d in (("samoyeds", "bfloat16"), ("grouped", "bfloat16"), ("dense", "bfloat16"),
                               ("grouped", "float32"), ("dense", "float32")) for t in (1, 2, 16)}
    g = {}
    for r in recs:  # against the fastest dtype of grouped
        if r["backend"] == "grouped":
            g[r["tokens"]] = min(g.get(r["tokens"], r["ms"]), r["ms"])
    for r in recs:
        assert r["speedup_vs_grouped"] == pytest.approx(g[r["tokens"]] / r["ms"])
        assert r["phase"] == ("prefill" if r["tokens"] == 16 else "decode")


def test_layer_bench_names_a_bad_baseline_dtype():
    with pytest.raises(TypeError, match="baseline_dtypes: expected floating torch dtypes"):
        bench_layer(None, shape=("t", 128, 256, 4, 2), batches=(1,), prefill=None, baseline_dtypes=(torch.int8,))


def test_layer_backends_agree():
    ex = make_layer(128, 256, 4)
    ids, w = torch.tensor([[0, 1], [2, 3], [1, 2]]), torch.rand(3, 2)
    x = torch.randn(3, 128).bfloat16()
    with torch.no_grad():
        ys = {b: ex(x, ids, w, backend=b).float() for b in ("samoyeds", "grouped")}
    torch.testing.assert_close(ys["samoyeds"], ys["grouped"], rtol=3e-2, atol=3e-2)


def test_cli_writes_records(tmp_path, capsys):
    out, lout = tmp_path / "k.json", tmp_path / "l.json"
    rc = main(["bench", "cpu", "--size", "64", "256", "--tokens", "1", "2", "--threads", "1", "--repeat", "1",
               "--out", str(out), "--layer-shape", "128", "256", "4", "2", "--layer-out", str(lout)])
    assert rc == 0
    data = json.loads(out.read_text())
    assert data["device"]["isa"] and data["read_bandwidth_gbps"]["1"] > 0
    assert {r["kind"] for r in data["records"]} >= {"samoyeds", "2:4", "dense", "reference"}
    assert json.loads(lout.read_text())["records"]
    assert "ratio" in capsys.readouterr().out


@pytest.mark.parametrize("argv,msg", [
    (["--tokens", "0"], "--tokens: expected an int in [1, 4096], got 0"),
    (["--shapes", "nope"], "--shapes: expected names from"),
    (["--layer-shape", "64", "128", "2", "4"], "--layer-shape: expected K <= E"),
    (["--repeat", "x"], "--repeat: expected an int, got 'x'"),
])
def test_cli_errors_are_one_line(argv, msg, capsys):
    extra = ["--size", "64", "128", "--tokens", "1", "--threads", "1", "--repeat", "1"] if "--layer-shape" in argv else []
    try:
        rc = main(["bench", "cpu", *extra, *argv])
    except SystemExit as e:  # argparse's own usage errors exit 2
        rc = e.code
    err = capsys.readouterr().err
    assert rc == 2 and msg in err and "Traceback" not in err


def test_readme_results_come_from_the_recorded_json():
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    assert bc.README_START in readme and bc.README_END in readme
    if not bc.RECORDS_PATH.exists():
        pytest.skip("no recorded CPU benchmark yet")
    result = json.loads(bc.RECORDS_PATH.read_text())
    layer = json.loads(bc.LAYER_PATH.read_text()) if bc.LAYER_PATH.exists() else None
    isa = json.loads(bc.ISA_PATH.read_text()) if bc.ISA_PATH.exists() else None
    avx2 = json.loads(bc.AVX2_PATH.read_text()) if bc.AVX2_PATH.exists() else None
    avx2_layer = json.loads(bc.AVX2_LAYER_PATH.read_text()) if bc.AVX2_LAYER_PATH.exists() else None
    assert bc.update_readme(readme, bc.readme_table(result, layer, isa, avx2, avx2_layer)) == readme
    if avx2:  # recorded where the machine's own path is avx2 (not forced)
        assert avx2["device"]["isa"] == "avx2" and not any(f.startswith("avx512") for f in avx2["device"]["flags"])
        assert "**On a CPU without AVX-512**" in readme


def test_readme_table_from_records():
    recs = bc.bench_expert(64, 256, [1, 2], nthreads=1, repeat=1, bandwidth=5.0, name="tiny", tiles=False,
                           reference=False)
    table = bc.readme_table({"device": bc.cpu_device(), "read_bandwidth_gbps": {"1": 5.0}, "records": recs})
    assert "**tiny** (64×256), 1 thread(s):" in table and "| tokens | 1 | 2 |" in table
    assert table.count("×") >= 5


def test_bench_helpers_name_the_bad_argument():
    with pytest.raises(ValueError, match="rows: expected an int >= 2"):
        bc.make_weights(0, 256)
    with pytest.raises(TypeError, match="dtype: expected"):
        bc.make_weights(8, 256, dtype=torch.int8)
    with pytest.raises(ValueError, match="patterns: expected"):
        bc.make_weights(8, 256, patterns=("venom",))
    with pytest.raises(ValueError, match="repeat: expected an int >= 1"):
        bc.time_flushed(lambda: None, repeat=0)
    with pytest.raises(TypeError, match="fn: expected a callable"):
        bc.time_flushed(3)
    with pytest.raises(ValueError, match="tokens: expected an int >= 1"):
        bc.bench_expert(64, 256, [0])
    with pytest.raises(ValueError, match="isa: expected one of"):
        bc.bench_expert(64, 256, [1], isa="sse2", weights=bc.make_weights(64, 256))
    with pytest.raises(ValueError, match="nbytes: expected an int >= "):
        bc.read_bandwidth(10)
