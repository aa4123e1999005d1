"""Lab 02 figures (roofline, recorded GPU results, CPU-kernel timings, fragments) and the roofline / CPU expert /
live panels driven over every widget value. The records here are test fixtures built in this file (or measured
now on small shapes), never presented as results."""

import json

import numpy as np
import plotly.graph_objects as go
import pytest
import torch

from samoyeds_lab.bench.roofline import DEFAULT_TOKENS, GPU_PROFILES, OPS, expert_matrices, roofline, roofline_sweep
from samoyeds_lab.viz.kernel_panel import (
    CPU_TOKENS,
    CpuExpertPanel,
    LivePanel,
    RooflinePanel,
    cpu_expert_records,
    cpu_kernel_reason,
    crossover_tokens,
    matching_records,
)
from samoyeds_lab.viz.kernels import (
    MODEL_LABEL,
    cpu_expert_figure,
    cpu_label,
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


def fake_cpu_records(tokens=(1, 16, 64), rows=512, cols=1024, bw=20.0):
    """bench_expert-shaped fixtures (the CPU name says they are fixtures): dense in three dtypes + two kernels."""
    out = []
    for t in tokens:
        dense = {"float32": 4.0 + t, "bfloat16": 2.0 + 0.1 * t, "float16": 1.5 + 0.5 * t}
        best = min(dense, key=dense.get)
        common = dict(op="gemm", name="", rows=rows, cols=cols, tokens=t, threads=2, cpu="TEST FIXTURE CPU",
                      date="2000-01-01")
        for dt, ms in dense.items():
            out.append(dict(common, kind="dense", dtype=dt, ms=ms, min_ms=ms * 0.9, max_ms=ms * 1.2))
        for kind, ms, nb in (("samoyeds", 0.5 + 0.2 * t, 0.28), ("2:4", 0.9 + 0.15 * t, 0.56)):
            out.append(dict(common, kind=kind, dtype="bfloat16", ms=ms, min_ms=ms * 0.95, max_ms=ms * 1.1,
                            kernel_ms=ms, dense_ms=dense[best], dense_dtype=best, speedup=dense[best] / ms,
                            bytes=int(nb * rows * cols * 2), bandwidth_gbps=bw, ceiling_ms=nb * rows * cols * 2 / bw / 1e6,
                            dense_ceiling_ms=rows * cols * 2 / bw / 1e6))
    return out


def test_cpu_label():
    assert cpu_label(dict(cpu="X", date="2000-01-01", threads=1)) == "measured on X, 2000-01-01, 1 thread"
    assert cpu_label(dict(cpu="X", date="2000-01-01", threads=2)).endswith("2 threads")
    with pytest.raises(ValueError, match="date"):
        cpu_label(dict(cpu="X", threads=2))


def test_cpu_expert_figure_values_and_labels(sweep):
    recs = fake_cpu_records()
    gpu = roofline_sweep(512, 1024, DEFAULT_TOKENS, "h100_sxm", "bfloat16")
    d = cpu_expert_figure(recs, gpu_sweep=gpu, highlight=16).to_dict()
    assert "measured on TEST FIXTURE CPU, 2000-01-01, 2 threads" in d["layout"]["title"]["text"]
    by = {tr["name"]: tr for tr in d["data"]}
    dense = by["dense (torch, fastest dtype), measured"]
    # the fastest dense dtype at each token count, with its min/max as error bars
    want = [min(r["ms"] for r in recs if r["kind"] == "dense" and r["tokens"] == t) for t in (1, 16, 64)]
    assert list(dense["x"]) == [1, 16, 64] and list(dense["y"]) == pytest.approx(want)
    assert list(dense["error_y"]["array"]) == pytest.approx([0.2 * v for v in want])
    sam = by["Samoyeds CPU kernel, measured"]
    assert list(sam["y"]) == pytest.approx([0.5 + 0.2 * t for t in (1, 16, 64)]) and sam["xaxis"] == "x"
    sp = by["Samoyeds CPU kernel vs dense, measured"]
    assert sp["xaxis"] == "x2" and list(sp["y"]) == pytest.approx(
        [r["speedup"] for r in recs if r["kind"] == "samoyeds"])
    ceil = by["Samoyeds operand: byte ceiling at 20 GB/s (model)"]
    assert list(ceil["y"]) == pytest.approx([0.28 * 512 * 1024 * 2 / 20e6] * 2)
    assert list(by["samoyeds byte ratio on this CPU (model)"]["y"]) == pytest.approx([1 / 0.28] * 2)
    g = by["Samoyeds roofline ceiling on NVIDIA H100 SXM5 80GB (model)"]
    dense_t = {p.tokens: p.time_s for p in gpu["dense"]}
    assert list(g["y"]) == pytest.approx([dense_t[p.tokens] / p.time_s for p in gpu["ssmm"] if p.tokens in g["x"]])
    assert max(g["x"]) <= 256 and g["xaxis"] == "x2"
    vlines = [sh for sh in d["layout"]["shapes"] if sh.get("x0") == 16 and sh.get("x1") == 16]
    assert len(vlines) == 2  # the slider's token count, in both panels
    assert d["layout"]["xaxis"]["type"] == "log" and d["layout"]["yaxis"]["type"] == "log"
    # no GPU sweep: no GPU traces; every measured trace says so, every model trace says model
    d2 = cpu_expert_figure(recs).to_dict()
    assert not any("roofline" in tr["name"] for tr in d2["data"])
    assert all(tr["name"].endswith("measured") or tr["name"].endswith("(model)") for tr in d2["data"])


def test_cpu_expert_figure_errors():
    recs = fake_cpu_records()
    with pytest.raises(ValueError, match="records"):
        cpu_expert_figure([])
    with pytest.raises(ValueError, match="kernel record"):
        cpu_expert_figure([r for r in recs if r["kind"] == "dense"])
    with pytest.raises(ValueError, match=r"records\[0\]"):
        cpu_expert_figure([{"kind": "dense"}])
    with pytest.raises(ValueError, match="one expert shape"):
        cpu_expert_figure(recs + fake_cpu_records(rows=256))
    with pytest.raises(ValueError, match="dense_ms"):
        cpu_expert_figure([{k: v for k, v in r.items() if k != "dense_ms"} for r in recs])


def test_crossover_tokens():
    rec = lambda t, s: dict(kind="samoyeds", tokens=t, speedup=s)  # noqa: E731
    assert crossover_tokens([rec(1, 3.0), rec(16, 1.4), rec(64, 0.6), rec(256, 0.3)]) == 64
    assert crossover_tokens([rec(64, 0.9), rec(1, 3.0), rec(16, 1.2)]) == 64  # any order
    assert crossover_tokens([rec(1, 0.9), rec(16, 1.2), rec(64, 0.8)]) == 64  # a later win resets it
    assert crossover_tokens([rec(1, 2.0), rec(16, 1.1)]) is None
    assert crossover_tokens([rec(1, 0.5)], kind="2:4") is None


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


# ---------------------------------------------------------------------------------------------- CPU kernels
ROWS, COLS = 256, 512  # small: every measurement takes well under a millisecond


@pytest.fixture(scope="module")
def small_weights():
    from samoyeds_lab.bench.cpu import make_weights

    return make_weights(ROWS, COLS, dtype=torch.bfloat16)


needs_kernel = pytest.mark.skipif(cpu_kernel_reason() is not None, reason="no CPU kernel on this machine")


@needs_kernel
def test_cpu_expert_records_measure_the_kernels(small_weights):
    recs = cpu_expert_records(ROWS, COLS, (1, 19), weights=small_weights, repeat=1, bandwidth=10.0)
    kinds = [(r["kind"], r["tokens"]) for r in recs]
    assert kinds == [(k, t) for t in (1, 19) for k in ("dense", "dense", "dense", "samoyeds", "2:4")]
    for r in recs:
        assert r["ms"] > 0 and r["min_ms"] <= r["ms"] <= r["max_ms"] and (r["rows"], r["cols"]) == (ROWS, COLS)
        cpu_label(r)  # every record says where and when
        if r["kind"] != "dense":
            dense = min(d["ms"] for d in recs if d["kind"] == "dense" and d["tokens"] == r["tokens"])
            assert r["dense_ms"] == dense and r["speedup"] == pytest.approx(dense / r["ms"])
            assert r["ceiling_ms"] == pytest.approx(small_weights[r["kind"]].nbytes / 10e9 * 1e3)
    ref = cpu_expert_records(ROWS, COLS, (4,), weights=small_weights, repeat=1, reference=True)
    assert [r["kind"] for r in ref][-1] == "reference"
    with pytest.raises(ValueError, match="dtype"):
        cpu_expert_records(ROWS, COLS, (1,), weights=small_weights, dtype="int8")
    with pytest.raises(ValueError, match="shape"):
        cpu_expert_records(ROWS * 2, COLS, (1,), weights=small_weights)
    with pytest.raises(ValueError, match="tokens"):
        cpu_expert_records(ROWS, COLS, (), weights=small_weights)
    with pytest.raises(ValueError, match="weights"):
        cpu_expert_records(ROWS, COLS, (1,), weights={})


@needs_kernel
def test_cpu_expert_panel_over_the_whole_slider(small_weights):
    panel = CpuExpertPanel(ROWS, COLS, weights=small_weights, repeat=1, bandwidth=10.0, value=16)
    slider = panel.controls["tokens"]
    assert panel.options()["tokens"] == CPU_TOKENS == (1, 2, 4, 8, 16, 32, 64, 128, 256)
    assert slider.continuous_update is False
    v = panel.update(measure=False)  # nothing measured yet: measures the start value
    assert v.measured and v.settings == {"tokens": 16} and {r["tokens"] for r in v.records} == {16}
    calls = []
    real = panel.measure
    panel.measure = lambda t: calls.append(t) or real(t)
    for t in CPU_TOKENS:
        slider.value = t  # the widget callback re-measures
        v = panel.last
        assert v.measured and calls[-1] == t and v.settings == {"tokens": t}
        assert {r["tokens"] for r in v.current} == {t} and len(v.current) == 5  # 3 dense dtypes + 2 kernels
        assert f"<b>{t} token" in v.summary and "measured on " in v.summary and "GPU roofline" in v.summary
        assert "byte ceiling" in v.summary
        sam = next(tr for tr in panel.figure_widget.data if tr.name == "Samoyeds CPU kernel, measured")
        assert t in sam.x
        assert any(sh.x0 == t for sh in panel.figure_widget.layout.shapes)  # the highlight follows the slider
    assert sorted({r["tokens"] for r in v.records}) == list(CPU_TOKENS)
    n = len(calls)
    v = panel.update(measure=False, tokens=4)  # measured already: no new measurement
    assert not v.measured and len(calls) == n and slider.value == 4
    v = panel.update(tokens=4)
    assert v.measured and calls[-1] == 4
    crossing = crossover_tokens([r for r in v.records if r["kind"] == "samoyeds"])
    assert ("no faster than dense from" in v.summary) == (crossing is not None)
    assert panel.compute(4).figure.layout.title.text == panel.figure_widget.layout.title.text


@needs_kernel
def test_cpu_expert_panel_starts_from_given_records(small_weights):
    recs = cpu_expert_records(ROWS, COLS, (1, 4), weights=small_weights, repeat=1, bandwidth=10.0)
    panel = CpuExpertPanel(ROWS, COLS, weights=small_weights, records=recs, repeat=1, bandwidth=10.0, value=4,
                           profile=None)
    panel.measure = lambda t: pytest.fail("the given records cover the start value")
    v = panel.update(measure=False)
    assert not v.measured and sorted({r["tokens"] for r in v.records}) == [1, 4]
    assert "GPU roofline" not in v.summary
    assert not any("roofline" in tr.name for tr in panel.figure_widget.data)


def test_cpu_expert_panel_makes_weights_and_bandwidth_once(monkeypatch):
    import samoyeds_lab.bench.cpu as bc

    made = []
    real = bc.make_weights

    def counting(*a, **kw):
        made.append(a)
        return real(*a, **kw)

    monkeypatch.setattr(bc, "make_weights", counting)
    panel = CpuExpertPanel(ROWS, COLS, repeat=1, tokens=(1, 2), value=1)
    if cpu_kernel_reason() is not None:
        pytest.skip("no CPU kernel on this machine")
    panel.update()
    panel.update(tokens=2)
    assert made == [(ROWS, COLS)] and panel.bandwidth > 0


def test_cpu_expert_panel_without_a_kernel(monkeypatch):
    monkeypatch.setenv("SAMOYEDS_LAB_CPU_ISA", "none")
    assert "SAMOYEDS_LAB_CPU_ISA=none" in cpu_kernel_reason()
    panel = CpuExpertPanel(ROWS, COLS, repeat=1)
    v = panel.update()
    assert v.records == [] and "No CPU kernel" in v.summary
    assert "No CPU kernel can run on this machine" in panel.figure_widget.layout.annotations[0].text
    with pytest.raises(RuntimeError, match="no CPU kernel"):
        cpu_expert_records(ROWS, COLS, (1,), weights={"x": None})


def test_cpu_expert_panel_errors(small_weights):
    with pytest.raises(ValueError, match="value"):
        CpuExpertPanel(ROWS, COLS, value=3)
    with pytest.raises(ValueError, match="dtype"):
        CpuExpertPanel(ROWS, COLS, dtype="int8")
    with pytest.raises(ValueError, match="bandwidth"):
        CpuExpertPanel(ROWS, COLS, bandwidth=0)
    with pytest.raises(ValueError, match="records"):
        CpuExpertPanel(ROWS, COLS, records=fake_cpu_records(rows=512, cols=1024))
    panel = CpuExpertPanel(ROWS, COLS, weights=small_weights, repeat=1, bandwidth=10.0)
    with pytest.raises(ValueError, match="tokens"):
        panel.update(tokens=3)
    with pytest.raises(TypeError, match="update"):
        panel.update(model="x")
    with pytest.raises(ValueError, match="not been measured"):
        panel.compute(256)


def test_live_panel_errors():
    with pytest.raises(ValueError, match="shapes"):
        LivePanel({})
    panel = LivePanel(SHAPES, profile="h100_sxm")
    with pytest.raises(ValueError, match="tokens"):
        panel.update(tokens=3)
    with pytest.raises(TypeError, match="update"):
        panel.update(size=(256, 512))


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
    panel = LivePanel(SHAPES, profile="h200", gpu_tokens=(1, 64))
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


def test_failed_records_are_not_plotted():
    ok = fake_record(tokens=8)
    failed = fake_record(tokens=64, status="failed", reason="KernelMismatchError: ...", ms=0.0)
    assert matching_records([ok, failed], m=14336, k=4096, dtype="float16") == [ok]
    assert matching_records([fake_record(status="ok")], m=14336, k=4096, dtype="float16")


@needs_kernel
def test_cpu_expert_panel_says_why_a_speed_up_beats_the_byte_ratio(small_weights):
    recs = cpu_expert_records(ROWS, COLS, (1, 4), weights=small_weights, repeat=1, bandwidth=10.0)
    for r in recs:  # 1 token: within the byte ratio; 4 tokens: far above it (a slow dense path)
        if r["kind"] in ("samoyeds", "2:4"):
            r["speedup"] = 0.5 if r["tokens"] == 1 else 100.0
            r["dense_ms"] = r["dense_ceiling_ms"] * (1.0 if r["tokens"] == 1 else 10.0)
    panel = CpuExpertPanel(ROWS, COLS, weights=small_weights, records=recs, repeat=1, bandwidth=10.0, value=4,
                           profile=None)
    panel.measure = lambda t: pytest.fail("the given records cover these token counts")
    v = panel.update(measure=False, tokens=4)
    assert "Above the byte ratio" in v.summary and "at 10% of the 16-bit weight's byte ceiling" in v.summary
    assert "Above the byte ratio" not in panel.update(measure=False, tokens=1).summary
