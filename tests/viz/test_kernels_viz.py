"""Lab 02 figures (roofline, recorded and CPU timings, fragments) and the roofline / live panels driven over
every widget value. The records here are test fixtures built in this file, never presented as results."""

import json

import numpy as np
import plotly.graph_objects as go
import pytest
import torch

from samoyeds_lab.bench.roofline import DEFAULT_TOKENS, GPU_PROFILES, OPS, expert_matrices, roofline, roofline_sweep
from samoyeds_lab.viz.kernel_panel import (
    CPU_SIZES,
    CPU_TOKENS,
    LivePanel,
    RooflinePanel,
    cpu_reference_records,
    matching_records,
)
from samoyeds_lab.viz.kernels import (
    CPU_LABEL,
    MODEL_LABEL,
    cpu_timing_figure,
    fragment_heatmap,
    recorded_label,
    register_table,
    roofline_figure,
    speedup_figure,
)

SHAPES = {"Mixtral-8x7B": (4096, 14336), "DeepSeek-MoE": (2048, 1408)}


def fake_record(op="ssmm", tokens=16, ms=0.02, m=14336, k=4096, dtype="float16", **kw):
    """A record-shaped fixture (device name says it is a test fixture)."""
    return dict(device="TEST FIXTURE GPU", date="2000-01-01", op=op, model="Mixtral-8x7B", m=m, k=k,
                tokens=tokens, dtype=dtype, ms=ms, baseline="dense", baseline_ms=0.05) | kw


# ---------------------------------------------------------------------------------------------- figures
@pytest.fixture(scope="module")
def sweep():
    return roofline_sweep(14336, 4096, DEFAULT_TOKENS, "h100_sxm", "float16")


@pytest.mark.parametrize("metric", ["time", "tflops"])
def test_roofline_figure_is_labelled_as_a_model(sweep, metric):
    fig = roofline_figure(sweep, metric=metric)
    assert isinstance(fig, go.Figure)
    assert MODEL_LABEL in fig.layout.title.text and "no GPU measurement recorded" in fig.layout.title.text
    assert len(fig.data) == 3 and all("model" in tr.name for tr in fig.data)
    assert fig.layout.xaxis.type == "log"
    for tr, op in zip(fig.data, OPS):
        pts = sweep[op]
        want = [p.time_s * 1e6 for p in pts] if metric == "time" else [p.tflops for p in pts]
        np.testing.assert_allclose(np.asarray(tr.y, float), want)
        assert list(tr.x) == list(DEFAULT_TOKENS)


def test_recorded_points_carry_device_and_date(sweep):
    recs = [fake_record(tokens=16, ms=0.02), fake_record(tokens=64, ms=0.03, tflops=None)]
    fig = roofline_figure(sweep, metric="time", records=recs)
    markers = [tr for tr in fig.data if tr.mode == "markers"]
    assert len(markers) == 4  # op + baseline per record
    assert all("recorded on TEST FIXTURE GPU, 2000-01-01" in tr.name for tr in markers)
    assert sum(bool(tr.showlegend) for tr in markers) == 2  # one legend entry per (op, device)
    assert markers[0].y[0] == pytest.approx(20.0)  # 0.02 ms in µs
    assert "measured" in fig.layout.title.text
    tf = roofline_figure(sweep, metric="tflops", records=recs[1:])
    ssmm = [tr for tr in tf.data if tr.mode == "markers"][0]
    assert ssmm.y[0] == pytest.approx(2 * 14336 * 4096 * 64 / 0.03e-3 / 1e12)
    with pytest.raises(ValueError, match="device"):
        roofline_figure(sweep, records=[fake_record(device="")])
    with pytest.raises(ValueError, match="metric"):
        roofline_figure(sweep, metric="bytes")
    with pytest.raises(ValueError, match="sweep"):
        roofline_figure({})
    with pytest.raises(TypeError, match="sweep"):
        roofline_figure({"dense": [1, 2]})
    assert recorded_label(fake_record()) == "recorded on TEST FIXTURE GPU, 2000-01-01"


def test_speedup_figure(sweep):
    fig = speedup_figure(sweep)
    assert MODEL_LABEL in fig.layout.title.text
    by = {tr.name: np.asarray(tr.y, float) for tr in fig.data}
    ssmm = next(v for k, v in by.items() if "Samoyeds" in k)
    assert ssmm[0] == pytest.approx(sweep["dense"][0].time_s / sweep["ssmm"][0].time_s)
    assert ssmm[-1] == pytest.approx(4.0)
    with pytest.raises(ValueError, match="dense"):
        speedup_figure({"ssmm": sweep["ssmm"]})


def test_cpu_timing_figure():
    recs = [dict(op="dense torch matmul (fp32)", ms=1.0, device="CPU x", date="2000-01-01"),
            dict(op="reference ssmm (Samoyeds)", ms=3.0, device="CPU x", date="2000-01-01")]
    fig = cpu_timing_figure(recs)
    assert CPU_LABEL in fig.layout.title.text and "CPU x" in fig.layout.title.text
    assert list(fig.data[0].x) == [1.0, 3.0]
    with pytest.raises(ValueError, match="records"):
        cpu_timing_figure([])
    with pytest.raises(ValueError, match="'ms'"):
        cpu_timing_figure([dict(op="x", device="d", date="d")])


def test_fragment_heatmap_and_register_table():
    m = torch.tensor([[1.0, 0.0], [0.0, -2.0]])
    fig = fragment_heatmap(m, title="t", cells=[(0, 0, "a0.lo")], boxes=[(1, 0, 1, 1)],
                           hover=[["x", "y"], ["z", "w"]])
    assert fig.data[0].text[0][0] == "a0.lo" and len(fig.layout.shapes) == 2
    assert fig.data[1].z[0][0] is None and fig.data[1].z[0][1] == 1.0  # zeros greyed, others blank
    json.dumps(fig.to_plotly_json()["data"][1]["z"], allow_nan=False)  # FigureWidgets send JSON: no NaN
    with pytest.raises(TypeError, match="matrix"):
        fragment_heatmap(torch.zeros(3), title="t")
    with pytest.raises(ValueError, match="matrix"):
        fragment_heatmap(torch.zeros(65, 2), title="t")
    with pytest.raises(ValueError, match="cells"):
        fragment_heatmap(m, title="t", cells=[(2, 0, "x")])
    with pytest.raises(ValueError, match="boxes"):
        fragment_heatmap(m, title="t", boxes=[(0, 0, 1)])
    with pytest.raises(ValueError, match="hover"):
        fragment_heatmap(m, title="t", hover=[["x"]])
    tab = register_table([dict(register="a0", value=1), dict(register="e", value=2)])
    assert list(tab.data[0].cells.values[0]) == ["a0", "e"]
    with pytest.raises(ValueError, match="rows"):
        register_table([])
    with pytest.raises(ValueError, match="keys"):
        register_table([dict(a=1), dict(b=2)])


# ---------------------------------------------------------------------------------------------- roofline panel
def test_roofline_panel_over_every_widget_value():
    recs = [fake_record(tokens=t, ms=0.05 / (1 + i)) for i, t in enumerate((1, 16, 64))]
    recs.append(fake_record(m=4096, k=14336, dtype="bfloat16", op="spmm"))
    panel = RooflinePanel(SHAPES, recs)
    opts = panel.options()
    assert opts["profile"] == GPU_PROFILES and opts["model"] == tuple(SHAPES)
    panel.update()  # the initial view; from here on every widget change fires update() through its callback
    for profile in opts["profile"]:
        panel.controls["profile"].value = profile  # the widget callbacks
        for model in opts["model"]:
            panel.controls["model"].value = model
            for matrix in opts["matrix"]:
                panel.controls["matrix"].value = matrix
                for dtype in opts["dtype"]:
                    panel.controls["dtype"].value = dtype
                    v = panel.last
                    assert v.settings == dict(profile=profile, model=model, matrix=matrix, dtype=dtype)
                    m, k = expert_matrices(*SHAPES[model])[matrix]
                    assert v.records == matching_records(recs, m=m, k=k, dtype=dtype, model=model)
                    for op, t in (("ssmm", 4096), ("spmm", 1), ("ssmm", 64)):
                        assert v.ceilings[op][t] == pytest.approx(roofline("dense", m, k, t, profile, dtype).time_s
                                                                  / roofline(op, m, k, t, profile, dtype).time_s)
                    assert ("No GPU measurement recorded" in v.summary) == (not v.records)
                    tw = panel.figure_widgets["time"]
                    assert f"{m}×{k}" in tw.layout.title.text
                    n_markers = sum(1 for tr in tw.data if tr.mode == "markers")
                    assert n_markers == 2 * len(v.records)
    assert len(panel.update(profile="h100_sxm", model="Mixtral-8x7B", matrix="gate/up (w1, w3)",
                            dtype="float16").records) == 3


def test_roofline_panel_errors():
    with pytest.raises(ValueError, match="shapes"):
        RooflinePanel({})
    with pytest.raises(ValueError, match="device"):
        RooflinePanel(SHAPES, [fake_record(device=None)])
    with pytest.raises(ValueError, match="name_or_path"):
        RooflinePanel(SHAPES, profiles=["h100_sxm", "tpu_v9"])
    panel = RooflinePanel(SHAPES)
    with pytest.raises(ValueError, match="model"):
        panel.update(model="GPT-5")
    with pytest.raises(TypeError, match="update"):
        panel.update(tokens=4)


# ---------------------------------------------------------------------------------------------- CPU timing
def test_cpu_reference_records_are_correct_and_labelled():
    recs = cpu_reference_records(256, 512, 19, "bfloat16", repeat=1)
    assert [r["op"] for r in recs] == ["dense torch matmul (fp32)", "reference spmm (2:4)", "reference ssmm (Samoyeds)"]
    for r in recs:
        assert r["backend"] == "CPU reference" and r["device"].startswith("CPU ")
        assert r["ms"] > 0 and (r["m"], r["k"], r["tokens"], r["dtype"]) == (256, 512, 19, "bfloat16")
        assert r["check"] < 1e-3  # each result equals the dense product with the same pruned weight
    with pytest.raises(ValueError, match="V=128"):
        cpu_reference_records(256, 200, 4)
    with pytest.raises(ValueError, match="dtype"):
        cpu_reference_records(256, 512, 4, "float32")
    with pytest.raises(ValueError, match="total_tokens"):
        cpu_reference_records(256, 512, 4, total_tokens=2)


def test_live_panel_cpu_over_every_widget_value():
    panel = LivePanel(SHAPES, mode="cpu", repeat=1)
    opts = panel.options()
    assert opts["size"] == CPU_SIZES[:-1] and opts["tokens"] == CPU_TOKENS
    v = panel.update()
    assert v.mode == "cpu" and CPU_LABEL in v.summary and "not expected to be faster" in v.summary
    for size in opts["size"][:2]:
        panel.controls["size"].value = size
        for tokens in opts["tokens"]:
            panel.controls["tokens"].value = tokens
            v = panel.last
            assert v.settings["size"] == size and v.settings["tokens"] == tokens
            assert [r["tokens"] for r in v.records] == [tokens] * 3
            assert CPU_LABEL in panel.figure_widget.layout.title.text
    panel.controls["dtype"].value = "bfloat16"
    assert panel.last.records[0]["dtype"] == "bfloat16"
    # the largest offered size once (slowest), at the fewest tokens
    v = panel.update(size=opts["size"][-1], tokens=1)
    assert v.records[0]["m"] == opts["size"][-1][0]
    assert LivePanel(mode="cpu", full_size=True).options()["size"] == CPU_SIZES


def test_live_panel_errors():
    with pytest.raises(ValueError, match="mode"):
        LivePanel(SHAPES, mode="tpu")
    with pytest.raises(ValueError, match="shapes"):
        LivePanel(mode="gpu")
    panel = LivePanel(mode="cpu", repeat=1)
    with pytest.raises(ValueError, match="tokens"):
        panel.update(tokens=3)
    with pytest.raises(TypeError, match="update"):
        panel.update(model="x")


def test_profile_for_device():
    from samoyeds_lab.viz.kernel_panel import profile_for_device

    assert profile_for_device("NVIDIA H200") == "h200"
    assert profile_for_device("NVIDIA H100 80GB HBM3") == "h100_sxm"
    assert profile_for_device("NVIDIA H100 PCIe") == "h100_pcie"
    assert profile_for_device("NVIDIA A100-SXM4-80GB") == "a100_sxm"
    assert profile_for_device("NVIDIA GeForce RTX 4070 SUPER") == "rtx_4070_super"
    assert profile_for_device(None) == "h100_sxm" and profile_for_device("Tesla T4", default="a100_sxm") == "a100_sxm"


def test_live_panel_gpu_mode_plumbing(monkeypatch):
    """The GPU mode's wiring, with the benchmark replaced by a fixture (no GPU here; nothing is measured)."""
    import samoyeds_lab.bench.kernels as bk

    calls = []

    def fake_bench(shapes, tokens, dtype, *, profile):
        calls.append((dict(shapes), tuple(tokens), dtype, profile))
        (model, (d_model, d_ffn)), = shapes.items()
        return [bk.make_record(device="TEST FIXTURE GPU", driver="0", versions={}, op=op, model=model, m=m, k=k,
                               tokens=t, dtype=dtype, ms=0.01, baseline="torch_dense", baseline_ms=0.02,
                               profile=bk_profile, date="2000-01-01")
                for m, k in ((d_ffn, d_model), (d_model, d_ffn)) for t in tokens for op in ("ssmm", "spmm_24")]

    from samoyeds_lab.offload.hardware import load_profile

    bk_profile = load_profile("h200")
    monkeypatch.setattr(bk, "run_kernel_bench", fake_bench)
    panel = LivePanel(SHAPES, mode="gpu", profile="h200", gpu_tokens=(1, 64))
    panel.update()
    for model in SHAPES:
        panel.controls["model"].value = model
        for matrix in panel.options()["matrix"]:
            panel.controls["matrix"].value = matrix
            for tokens in (1, 64):
                panel.controls["tokens"].value = tokens
                v = panel.last
                m, k = expert_matrices(*SHAPES[model])[matrix]
                assert v.mode == "gpu" and len(v.records) == 2
                assert all((r["m"], r["k"], r["tokens"]) == (m, k, tokens) for r in v.records)
                assert "recorded on TEST FIXTURE GPU, 2000-01-01" in v.summary
                markers = [tr for tr in panel.figure_widget.data if tr.mode == "markers"]
                assert len(markers) == 4
    assert calls[-1][1:] == ((64,), "float16", "h200")
