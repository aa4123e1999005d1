"""SparsityPanel: its update() logic driven over every widget's range, without a browser."""


import plotly.graph_objects as go
import pytest
import torch

from samoyeds_lab.formats import compress_nm, compress_samoyeds
from samoyeds_lab.prune import prune_mask
from samoyeds_lab.prune import outlier_activations
from samoyeds_lab.viz import METHODS, PATTERNS, SparsityPanel, SparsityView
from samoyeds_lab.viz.panels import _copy_into, _pattern_args
from samoyeds_lab.viz.sparsity import mask_heatmap, message_figure

FIGURES = {"mask", "values", "metadata", "bytes", "error"}


# ---------------------------------------------------------------------------------------------- references
def legal(pattern, n, m, vector, rows, cols):
    """Which widget settings a pattern can build (written out independently of the panel)."""
    if pattern == "2:4":
        return cols % 4 == 0
    if pattern == "N:M":
        return n < m and cols % m == 0
    if pattern == "Samoyeds":
        return n < m and rows % m == 0 and cols % vector == 0
    if pattern == "VENOM":
        return n <= m and rows % vector == 0 and cols % m == 0 and (cols // m * n) % 4 == 0
    if pattern == "unstructured":
        return n < m
    raise AssertionError(pattern)


def expected_density(pattern, n, m, rows, cols):
    if pattern == "2:4":
        return 0.5
    if pattern == "N:M":
        return n / m
    if pattern in ("Samoyeds", "VENOM"):
        return n / m / 2
    total = rows * cols
    return min(total, int(n / m * total + 0.5)) / total


@pytest.fixture(scope="module")
def panel():
    return SparsityPanel(seed=0)


def check_view(panel, view):
    """Invariants every view satisfies, legal or not."""
    s = view.settings
    assert isinstance(view, SparsityView)
    assert set(view.figures) == FIGURES
    assert all(isinstance(f, go.Figure) for f in view.figures.values())
    assert view.dense_bytes == s["rows"] * s["cols"] * 2
    if legal(s["pattern"], s["n"], s["m"], s["vector"], s["rows"], s["cols"]):
        assert view.message is None, view.message
        mask = view.mask
        assert mask.shape == (s["rows"], s["cols"]) and mask.dtype == torch.bool
        assert float(mask.float().mean()) == pytest.approx(
            expected_density(s["pattern"], s["n"], s["m"], s["rows"], s["cols"]))
        w = panel.weight[: s["rows"], : s["cols"]]
        assert torch.equal(view.compressed.to_dense(), (w * mask).half())
        assert set(view.errors) == set(METHODS)
        assert all(0.0 <= e <= 1.0 for per in view.errors.values() for e in per.values())
        assert view.figures["mask"].data[0].type == "heatmap"
    else:
        assert isinstance(view.message, str) and view.message
        assert view.mask is None and view.compressed is None
        assert view.figures["mask"].layout.annotations[0].text.replace("<br>", " ") == view.message
    # the bytes chart always shows the reference formats, from .nbytes
    bars = view.figures["bytes"].data[0]
    assert "dense fp16" in bars.y


# ---------------------------------------------------------------------------------------------- defaults
def test_default_view(panel):
    view = panel.update(pattern="2:4", method="magnitude", rows=64, cols=128)
    check_view(panel, view)
    assert view.settings["pattern"] == "2:4"
    assert "56.2% of dense fp16" in view.summary
    # the widgets show it
    for name in FIGURES:
        assert len(panel.figure_widgets[name].data) >= 1
    assert "2:4" in panel.status.value


def test_every_pattern_and_method_at_default_sizes(panel):
    # how fast these updates are is a benchmark with a budget (`samoyeds-lab bench panels`), not a test
    panel.update(rows=64, cols=128)
    for pattern in PATTERNS:
        for method in METHODS:
            check_view(panel, panel.update(pattern=pattern, method=method))


def test_reference_bytes_come_from_nbytes(panel):
    view = panel.update(pattern="2:4", rows=64, cols=128)
    w = panel.weight[:64, :128]
    w16 = w.half()
    m24 = prune_mask(w, "2:4")
    assert view.nbytes["dense fp16"] == 64 * 128 * 2
    assert view.nbytes["2:4 (50%)"] == compress_nm(w16 * m24).nbytes
    msam = prune_mask(w, "samoyeds", n=1, m=2, vector=128)
    assert view.nbytes["Samoyeds 1:2 V=128 (25%)"] == compress_samoyeds(w16 * msam, vector=128).nbytes
    # Samoyeds ≈ 25% values + 3.1% metadata + row indices; CSR at 50% is bigger than dense
    assert 0.28 < view.nbytes["Samoyeds 1:2 V=128 (25%)"] / view.dense_bytes < 0.30
    assert view.nbytes["CSR, 50% kept"] > view.dense_bytes
    assert view.nbytes["▶ 2:4"] == view.nbytes["2:4 (50%)"]


def test_wanda_beats_magnitude_on_outputs_with_outlier_channels(panel):
    """The lab's claim: with outlier input channels, Wanda's output error is lower."""
    for pattern in ("2:4", "Samoyeds", "VENOM", "unstructured"):
        view = panel.update(pattern=pattern, n=1, m=2, vector=32, rows=64, cols=128)
        e = view.errors
        assert e["wanda"]["output"] < 0.8 * e["magnitude"]["output"], (pattern, e)
        assert e["magnitude"]["weight"] <= e["wanda"]["weight"] + 1e-6, (pattern, e)


# ---------------------------------------------------------------------------------------------- sweeps
@pytest.mark.slow
@pytest.mark.parametrize("pattern", PATTERNS)
def test_every_widget_over_its_whole_range(panel, pattern):
    """Each widget swept over all its values, the others at the pattern's usual setting."""
    base = dict(pattern=pattern, n=2, m=4, vector=32, rows=64, cols=128, method="magnitude")
    for name, values in panel.options().items():
        if name == "pattern":
            continue
        for value in values:
            view = panel.update(**{**base, name: value})
            assert view.settings[name] == value
            assert panel.controls[name].value == value
            check_view(panel, view)


@pytest.mark.slow
@pytest.mark.parametrize("pattern", [p for p in PATTERNS if p != "2:4"])  # 2:4 ignores N and M
def test_all_n_m_combinations(panel, pattern):
    """Every (N, M) pair, legal or not, at the smallest size: a view or a friendly message, never a raise."""
    opts = panel.options()
    vector = 16 if pattern == "VENOM" else 32
    for n in opts["n"]:
        for m in opts["m"]:
            view = panel.compute(pattern, n, m, vector, 32, 64, "wanda")
            check_view(panel, view)


def test_friendly_message_agrees_with_the_library():
    """_pattern_args flags exactly the settings prune_mask rejects (over the whole widget grid)."""
    panel = SparsityPanel(seed=1)
    opts = panel.options()
    sizes = [(r, c) for r in (opts["rows"][0], opts["rows"][-1]) for c in (opts["cols"][0], opts["cols"][-1])]
    zeros = {rc: torch.zeros(rc) for rc in sizes}
    for pattern in PATTERNS:
        uses = {"2:4": (), "N:M": ("n", "m"), "unstructured": ("n", "m")}.get(pattern, ("n", "m", "vector"))
        grid = [(n, m, v) for n in (opts["n"] if "n" in uses else (2,)) for m in (opts["m"] if "m" in uses else (4,))
                for v in (opts["vector"] if "vector" in uses else (32,))]
        for n, m, vector in grid:
            for rows, cols in sizes:
                _, args, problem = _pattern_args(pattern, n, m, vector, rows, cols)
                assert (problem is None) == legal(pattern, n, m, vector, rows, cols)
                if problem is None:
                    continue
                assert "must" in problem
                if pattern == "unstructured" and n == m:
                    continue  # density 1 is legal for prune_mask; the panel asks for N < M all the same
                with pytest.raises(ValueError):
                    prune_mask(zeros[rows, cols], args["pattern"], **args["options"])


# ---------------------------------------------------------------------------------------------- widgets
def test_panel_opens_with_live_sliders():
    """Issue 14: the panel used to open on 2:4, which uses none of N, M, V (all three disabled)."""
    c = SparsityPanel(seed=0).controls
    assert c["pattern"].value == "Samoyeds" and (c["n"].value, c["m"].value, c["vector"].value) == (1, 2, 32)
    assert not (c["n"].disabled or c["m"].disabled or c["vector"].disabled)
    c24 = SparsityPanel(seed=0, pattern="2:4").controls
    assert c24["n"].disabled and c24["m"].disabled and c24["vector"].disabled
    with pytest.raises(ValueError, match="pattern"):
        SparsityPanel(seed=0, pattern="3:4")


def test_widget_callbacks_apply_presets_and_disable_unused_sliders():
    panel = SparsityPanel(seed=0, pattern="2:4")
    c = panel.controls
    c["pattern"].value = "Samoyeds"
    assert (c["n"].value, c["m"].value, c["vector"].value) == (1, 2, 32)
    assert not c["vector"].disabled and not c["n"].disabled
    assert panel.last.settings["pattern"] == "Samoyeds" and panel.last.message is None
    assert "Samoyeds 1:2" in panel.status.value
    c["pattern"].value = "2:4"
    assert c["n"].disabled and c["m"].disabled and c["vector"].disabled
    c["pattern"].value = "N:M"
    assert c["vector"].disabled and not c["n"].disabled
    c["n"].value = 8  # N >= M
    assert panel.last.message is not None and "smaller than M" in panel.last.message
    assert "⚠️" in panel.status.value
    assert panel.figure_widgets["mask"].layout.annotations[0].text.replace("<br>", " ") == panel.last.message
    c["n"].value = 3  # back to a legal 3:8: the message annotation is gone from the widget
    assert panel.last.message is None
    assert not panel.figure_widgets["mask"].layout.annotations
    assert panel.figure_widgets["mask"].data[0].type == "heatmap"
    assert panel.figure_widgets["mask"].layout.width == 500  # two figures side by side fit the notebook
    c["method"].value = "wanda"
    assert panel.last.settings["method"] == "wanda"


def test_sliders_do_not_update_continuously():
    panel = SparsityPanel(seed=0)
    for name in ("n", "m", "vector"):
        assert panel.controls[name].continuous_update is False


def test_copy_into_replaces_traces_and_clears_stale_layout_keys():
    fw = go.FigureWidget()
    _copy_into(fw, message_figure("hello"))
    assert fw.layout.annotations[0].text == "hello" and len(fw.data) == 0
    _copy_into(fw, mask_heatmap(torch.ones(4, 8), highlight=(0, 1, 0, 4)))
    assert not fw.layout.annotations
    assert len(fw.data) == 1 and fw.data[0].type == "heatmap"
    assert fw.layout.shapes[0].type == "rect"
    _copy_into(fw, mask_heatmap(torch.ones(2, 4)))
    assert not fw.layout.shapes and len(fw.data) == 1


def test_update_rejects_values_no_widget_offers(panel):
    with pytest.raises(TypeError, match="density"):
        panel.update(density=0.5)
    with pytest.raises(ValueError, match="n"):
        panel.update(n=99)
    with pytest.raises(ValueError, match="rows"):
        panel.update(rows=100)
    with pytest.raises(ValueError, match="pattern"):
        panel.update(pattern="3:4")
    with pytest.raises(ValueError, match="n"):
        panel.update(n=True)


def test_custom_weight_and_size_options():
    w = torch.randn(128, 256)
    panel = SparsityPanel(w, outlier_activations(16, 256), rows=32, cols=64)
    assert panel.options()["rows"] == (32, 64, 128)
    assert panel.options()["cols"] == (64, 128, 256)
    view = panel.update(pattern="VENOM", n=4, m=8, vector=32, rows=128, cols=256)
    check_view(panel, view)


@pytest.mark.parametrize(
    "kwargs, match",
    [(dict(weight=torch.randn(30, 64)), "weight"), (dict(weight=torch.randn(64)), "weight"),
     (dict(weight=torch.ones(32, 64, dtype=torch.int64)), "weight"),
     (dict(weight=torch.randn(32, 64), acts=torch.randn(4, 32)), "acts"), (dict(rows=48), "rows"),
     (dict(cols=100), "cols")],
)
def test_constructor_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SparsityPanel(**kwargs)


# ---------------------------------------------------------------------------------------------- activations
def test_outlier_activations_shape_seed_and_outliers():
    x = outlier_activations(64, 512, seed=3)
    assert x.shape == (64, 512) and x.dtype == torch.float32
    assert torch.equal(x, outlier_activations(64, 512, seed=3))
    assert not torch.equal(x, outlier_activations(64, 512, seed=4))
    rms = x.pow(2).mean(0).sqrt()
    big = rms > 6 * rms.median()
    assert int(big.sum()) == 2  # max(2, round(0.004 * 512)) outlier channels
    assert float(rms[big].min() / rms.median()) > 10
    state = torch.random.get_rng_state()
    outlier_activations(4, 8)
    assert torch.equal(state, torch.random.get_rng_state())  # the global RNG is untouched


def test_outlier_activations_count_scales_with_channels():
    x = outlier_activations(32, 4096, seed=0)
    rms = x.pow(2).mean(0).sqrt()
    assert int((rms > 12 * rms.median()).sum()) == 16  # the designated ones (20× the median scale)


@pytest.mark.parametrize(
    "kwargs, match",
    [(dict(tokens=0, channels=8), "tokens"), (dict(tokens=4, channels=8, n_outliers=9), "n_outliers"),
     (dict(tokens=4, channels=8, outlier_scale=-1.0), "outlier_scale"),
     (dict(tokens=4, channels=8, sigma=float("nan")), "sigma"), (dict(tokens=4, channels=8, seed=-1), "seed")],
)
def test_outlier_activations_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        outlier_activations(**kwargs)
