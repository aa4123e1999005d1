"""Pure figure builders of samoyeds_lab.viz.sparsity, inspected through fig.to_dict()."""

import base64
import re

import numpy as np
import plotly.graph_objects as go
import pytest
import torch

from samoyeds_lab.formats import compress_nm
from samoyeds_lab.viz import (
    COLORS,
    activation_scale_figure,
    bytes_bar,
    decode_metadata_word,
    error_bar,
    mask_heatmap,
    message_figure,
    metadata_word_figure,
    values_heatmap,
)

HEX = re.compile(r"^#[0-9a-fA-F]{6}$")


def arr(v):
    """An array from fig.to_dict(): plotly encodes numpy arrays as {'dtype', 'bdata', 'shape'}."""
    if isinstance(v, dict) and "bdata" in v:
        out = np.frombuffer(base64.b64decode(v["bdata"]), dtype=np.dtype(v["dtype"]))
        shape = v.get("shape")
        if shape:
            out = out.reshape([int(x) for x in str(shape).split(",")])
        return out
    return np.asarray(v)


# ---------------------------------------------------------------------------------------------- references
def mask_24(w):
    g = w.abs().reshape(w.shape[0], -1, 4)
    idx = g.topk(2, dim=-1).indices
    return torch.zeros_like(g, dtype=torch.bool).scatter_(-1, idx, True).reshape(w.shape)


def decode_ref(word):
    """Bit-by-bit reference: nibble j = bits 4j..4j+3, first position = low two bits."""
    bits = [(word >> b) & 1 for b in range(32)]
    return [(bits[4 * j] + 2 * bits[4 * j + 1], bits[4 * j + 2] + 2 * bits[4 * j + 3]) for j in range(8)]


def colours_in(obj):
    """Every string under a key containing 'color' in a figure dict (colorscales included)."""
    out = []
    if isinstance(obj, dict):
        for k, v in obj.items():
            if "color" in k.lower():
                out += _strings(v)
            out += colours_in(v)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            out += colours_in(v)
    return out


def _strings(v):
    if isinstance(v, str):
        return [v]
    if isinstance(v, (list, tuple)):
        return [s for x in v for s in _strings(x)]
    if isinstance(v, np.ndarray) and v.dtype.kind in "OU":
        return [str(x) for x in v.ravel()]
    return []


def all_figures():
    gen = torch.Generator().manual_seed(0)
    w = torch.randn(8, 64, generator=gen)
    nm = compress_nm(w * mask_24(w))
    return {
        "mask": mask_heatmap(mask_24(w), group_cols=4, highlight=(0, 1, 0, 32)),
        "values": values_heatmap(nm.values, group_cols=2),
        "metadata": metadata_word_figure(int(nm.sptc_metadata()[0, 0].item())),
        "bytes": bytes_bar({"dense fp16": 1024, "2:4": 576, "Samoyeds": 290}, 1024, highlight="2:4"),
        "error": error_bar({"magnitude": {"weight": 0.3, "output": 0.5}, "wanda": {"weight": 0.32, "output": 0.2}},
                           highlight="wanda"),
        "acts": activation_scale_figure(torch.randn(16, 64, generator=gen)),
        "message": message_figure("nothing to show"),
    }


# ---------------------------------------------------------------------------------------------- general
@pytest.mark.parametrize("name", list(all_figures()))
def test_every_figure_is_a_figure_with_hex_colours(name):
    fig = all_figures()[name]
    assert isinstance(fig, go.Figure)
    d = fig.to_dict()
    colours = [c for c in colours_in(d) if c]
    assert colours, "expected at least one explicit colour"
    bad = [c for c in colours if not HEX.match(c)]
    assert not bad, f"non-hex colours: {bad[:5]}"


@pytest.mark.parametrize("name", list(all_figures()))
def test_every_figure_says_whether_its_axes_are_visible(name):
    """A FigureWidget going from a message (hidden axes) to a chart by relayout must show axes again."""
    layout = all_figures()[name].to_dict()["layout"]
    assert isinstance(layout["xaxis"]["visible"], bool) and isinstance(layout["yaxis"]["visible"], bool)
    assert layout["yaxis"]["visible"] is (name != "message")


def test_colour_table_is_hex():
    assert all(HEX.match(c) for c in COLORS.values())


# ---------------------------------------------------------------------------------------------- mask
@pytest.mark.parametrize("rows, cols", [(1, 4), (3, 8), (19, 36), (64, 128)])
def test_mask_heatmap_z_is_the_mask(rows, cols):
    gen = torch.Generator().manual_seed(rows)
    mask = torch.rand(rows, cols, generator=gen) < 0.5
    d = mask_heatmap(mask).to_dict()
    z = arr(d["data"][0]["z"])
    assert z.shape == (rows, cols)
    np.testing.assert_array_equal(z, mask.numpy().astype(np.int8))
    assert f"density {float(mask.float().mean()):.1%}" in d["layout"]["title"]["text"]
    # rows go downwards, cells square
    assert d["layout"]["yaxis"]["range"][0] > d["layout"]["yaxis"]["range"][1]
    assert d["layout"]["yaxis"]["scaleanchor"] == "x"


def test_mask_heatmap_accepts_01_floats():
    m = torch.tensor([[1.0, 0.0, 0.0, 1.0]])
    z = arr(mask_heatmap(m).to_dict()["data"][0]["z"])
    np.testing.assert_array_equal(z, [[1, 0, 0, 1]])


def test_mask_heatmap_crops_large_masks_and_says_so():
    mask = torch.ones(1024, 4096, dtype=torch.bool)
    mask[:, 1::2] = False
    d = mask_heatmap(mask, max_rows=32, max_cols=64).to_dict()
    assert arr(d["data"][0]["z"]).shape == (32, 64)
    title = d["layout"]["title"]["text"]
    assert "top-left 32×64 of 1024×4096" in title
    assert "density 50.0%" in title  # density of the whole mask, not the crop


def test_mask_heatmap_separators_and_highlight():
    mask = torch.ones(8, 32, dtype=torch.bool)
    d = mask_heatmap(mask, group_cols=4, group_rows=2, highlight=(1, 2, 0, 32)).to_dict()
    shapes = d["layout"]["shapes"]
    path = [s for s in shapes if s["type"] == "path"]
    assert len(path) == 1
    assert path[0]["path"].count("V") == 32 // 4 - 1  # vertical lines between column groups
    assert path[0]["path"].count("H") == 8 // 2 - 1  # horizontal lines between row groups
    rect = [s for s in shapes if s["type"] == "rect"]
    assert len(rect) == 1 and rect[0]["line"]["color"] == COLORS["highlight"]
    assert (rect[0]["y0"], rect[0]["y1"], rect[0]["x0"], rect[0]["x1"]) == (0.5, 1.5, -0.5, 31.5)


def test_mask_heatmap_leaves_out_dense_separator_grids():
    d = mask_heatmap(torch.ones(64, 256, dtype=torch.bool), group_cols=4, group_rows=2, max_cols=256).to_dict()
    assert not d["layout"].get("shapes")  # 63 column and 31 row lines would hide the cells


@pytest.mark.parametrize(
    "arg, exc, match",
    [([[1, 0]], TypeError, "mask"), (torch.ones(4), ValueError, "mask"), (torch.ones(2, 2, 2), ValueError, "2-D")],
)
def test_mask_heatmap_rejects_bad_input(arg, exc, match):
    with pytest.raises(exc, match=match):
        mask_heatmap(arg)


def test_mask_heatmap_rejects_bad_crop_and_highlight():
    with pytest.raises(ValueError, match="max_rows"):
        mask_heatmap(torch.ones(2, 4), max_rows=0)
    with pytest.raises(ValueError, match="highlight"):
        mask_heatmap(torch.ones(2, 4), highlight=(0, 1))


# ---------------------------------------------------------------------------------------------- values
def test_values_heatmap_is_zero_centred():
    v = torch.tensor([[-2.0, 1.0], [0.5, 0.0]])
    d = values_heatmap(v).to_dict()["data"][0]
    np.testing.assert_allclose(arr(d["z"]), v.numpy())
    assert d["zmin"] == -2.0 and d["zmax"] == 2.0 and d["zmid"] == 0.0
    assert d["colorscale"][0][1] == COLORS["negative"] and d["colorscale"][-1][1] == COLORS["positive"]


def test_values_heatmap_nan_cells_are_blank_and_ignored_for_the_scale():
    v = torch.tensor([[1.0, float("nan")], [-3.0, 2.0]])
    d = values_heatmap(v).to_dict()["data"][0]
    assert np.isnan(arr(d["z"]).astype(float)[0, 1])
    assert d["zmax"] == 3.0


def test_values_heatmap_fp16_and_all_zero():
    d = values_heatmap(torch.zeros(3, 5, dtype=torch.float16)).to_dict()["data"][0]
    assert d["zmax"] == 1.0  # no division by zero, a valid range


def test_values_heatmap_rejects_bool():
    with pytest.raises(TypeError, match="values"):
        values_heatmap(torch.ones(2, 2, dtype=torch.bool))


# ---------------------------------------------------------------------------------------------- metadata
WORDS = [0x0, 0x44444444, 0xEEEEEEEE, 0x8D9E4CD4, 0xFFFFFFFF, 0x12345678]


@pytest.mark.parametrize("word", WORDS, ids=hex)
def test_decode_metadata_word_matches_bitwise_reference(word):
    assert decode_metadata_word(word) == decode_ref(word)


def test_decode_agrees_with_library_packing():
    gen = torch.Generator().manual_seed(3)
    w = torch.randn(5, 96, generator=gen)
    nm = compress_nm(w * mask_24(w))
    words = nm.sptc_metadata()
    for r in range(5):
        for k in range(3):
            pairs = decode_metadata_word(words[r, k])  # tensor input accepted
            pos = nm.positions[r, 16 * k:16 * (k + 1)].tolist()
            assert pairs == [tuple(pos[2 * j:2 * j + 2]) for j in range(8)]


@pytest.mark.parametrize("word", WORDS, ids=hex)
def test_metadata_word_figure_bits_and_labels(word):
    d = metadata_word_figure(word, col_offset=32).to_dict()
    trace = d["data"][0]
    text = np.asarray(trace["text"])
    assert text.shape == (2, 16)
    # reads like the hex literal: top row bits 31..16, bottom row bits 15..0
    assert "".join(text[0]) + "".join(text[1]) == f"{word:032b}"
    z = np.asarray(trace["z"])
    for row, bits in enumerate((range(31, 15, -1), range(15, -1, -1))):
        for x, b in enumerate(bits):
            field = (b % 4) // 2
            assert z[row, x] == 2 * field + ((word >> b) & 1)
    labels = [a["text"] for a in d["layout"]["annotations"]]
    assert len(labels) == 8
    for j, (p0, p1) in enumerate(decode_ref(word)):
        label = next(lab for lab in labels if lab.startswith(f"<b>g{j}</b>"))
        assert f"({p0}, {p1})" in label
        if p0 < p1:
            assert f"col {32 + 4 * j + p0}, {32 + 4 * j + p1}" in label
        else:
            assert "not ascending" in label
    assert f"0x{word:08X}" in d["layout"]["title"]["text"]


def test_metadata_word_figure_marks_illegal_nibbles_red():
    ann = metadata_word_figure(0x0000000E).to_dict()["layout"]["annotations"]
    colours = {a["text"].split("</b>")[0][3:]: a["font"]["color"] for a in ann}
    assert colours["g0"] == COLORS["text"]  # 0xE = (2, 3), legal
    assert colours["g1"] == COLORS["illegal"]  # 0x0 = (0, 0), not a legal ordered nibble


@pytest.mark.parametrize("word, exc", [(-1, ValueError), (2**32, ValueError), (1.5, TypeError), ("0x4", TypeError),
                                       (torch.zeros(2, dtype=torch.int64), ValueError)])
def test_metadata_word_rejects_bad_words(word, exc):
    with pytest.raises(exc, match="word"):
        metadata_word_figure(word)


def test_metadata_word_accepts_uint32_tensor_and_numpy():
    t = torch.tensor([0xEEEEEEEE], dtype=torch.int64).to(torch.uint32)[0]
    assert decode_metadata_word(t) == decode_ref(0xEEEEEEEE)
    assert decode_metadata_word(np.uint32(0x44444444)) == decode_ref(0x44444444)


# ---------------------------------------------------------------------------------------------- bytes
def test_bytes_bar_values_fractions_and_highlight():
    fmts = {"dense fp16": 8192, "CSR": 12000, "2:4": 4608, "Samoyeds 1:2 V=128": 2368}
    d = bytes_bar(fmts, 8192, highlight="2:4").to_dict()
    bar = d["data"][0]
    assert list(bar["y"]) == list(fmts)
    np.testing.assert_allclose(np.asarray(bar["x"]) * 1024, list(fmts.values()))  # KiB axis
    assert "KiB" in d["layout"]["xaxis"]["title"]["text"]
    assert list(bar["text"]) == ["100.0%", "146.5%", "56.2%", "28.9%"]
    widths = list(bar["marker"]["line"]["width"])
    assert widths[2] > 0 and sum(widths) == widths[2]
    line = d["layout"]["shapes"][0]
    assert line["x0"] == pytest.approx(8.0)


def test_bytes_bar_small_sizes_use_bytes():
    d = bytes_bar({"a": 10}, 20).to_dict()
    assert d["layout"]["xaxis"]["title"]["text"] == "size (B)"


@pytest.mark.parametrize(
    "fmts, dense, hl, match",
    [({}, 10, None, "formats"), ({"a": -1}, 10, None, "formats"), ({"a": 1.5}, 10, None, "formats"),
     ({"a": 1}, 0, None, "dense_bytes"), ({"a": 1}, 10, "b", "highlight")],
)
def test_bytes_bar_rejects_bad_input(fmts, dense, hl, match):
    with pytest.raises(ValueError, match=match):
        bytes_bar(fmts, dense, highlight=hl)


# ---------------------------------------------------------------------------------------------- errors
def test_error_bar_one_trace_per_method():
    errs = {"magnitude": {"weight": 0.30, "output": 0.50}, "wanda": {"weight": 0.32, "output": 0.20}}
    d = error_bar(errs, highlight="magnitude").to_dict()
    assert [t["name"] for t in d["data"]] == ["magnitude", "wanda"]
    assert list(d["data"][1]["y"]) == [0.32, 0.20]
    assert list(d["data"][0]["x"]) == ["weight", "output"]
    assert d["data"][0]["marker"]["color"] == COLORS["magnitude"]
    assert d["data"][0]["marker"]["line"]["width"] > 0 and d["data"][1]["marker"]["line"]["width"] == 0
    assert d["layout"]["barmode"] == "group"


@pytest.mark.parametrize(
    "errs, hl, match",
    [({}, None, "errors"), ({"a": {}}, None, "errors"), ({"a": {"x": 1}, "b": {"y": 1}}, None, "metrics"),
     ({"a": {"x": "1"}}, None, "errors"), ({"a": {"x": 1.0}}, "b", "highlight")],
)
def test_error_bar_rejects_bad_input(errs, hl, match):
    with pytest.raises(ValueError, match=match):
        error_bar(errs, highlight=hl)


# ---------------------------------------------------------------------------------------------- activations / message
def test_activation_scale_figure_counts_outliers():
    x = torch.ones(10, 50)
    x[:, [3, 17]] = 100.0
    d = activation_scale_figure(x).to_dict()
    normal, outliers = d["data"]
    assert (normal["name"], outliers["name"]) == ("channels", "outliers")
    np.testing.assert_array_equal(arr(outliers["x"]), [3, 17])
    np.testing.assert_allclose(arr(outliers["y"]), [100.0, 100.0])
    assert len(arr(normal["x"])) == 48 and np.allclose(arr(normal["y"]), 1.0)
    assert "2 outlier channel(s)" in d["layout"]["title"]["text"]
    assert d["layout"]["yaxis"]["type"] == "log"
    assert outliers["marker"]["color"] == COLORS["wanda"] and normal["marker"]["color"] == COLORS["magnitude"]


def test_activation_scale_figure_without_outliers_and_bad_input():
    d = activation_scale_figure(torch.zeros(3, 4)).to_dict()
    assert len(arr(d["data"][1]["x"])) == 0
    with pytest.raises(TypeError, match="acts"):
        activation_scale_figure(torch.ones(3, 4, dtype=torch.int32))


def test_message_figure():
    d = message_figure("N must be < M", title="Mask").to_dict()
    assert d["layout"]["annotations"][0]["text"] == "N must be < M"
    assert d["layout"]["xaxis"]["visible"] is False
    with pytest.raises(TypeError, match="text"):
        message_figure(3)


def test_message_figure_wraps_long_lines():
    text = "8:8: N:M keeps N of every M elements, so N must be smaller than M (got N=8, M=8)."
    shown = message_figure(text, wrap=40).to_dict()["layout"]["annotations"][0]["text"]
    lines = shown.split("<br>")
    assert len(lines) == 2 and all(len(line) <= 40 for line in lines)
    assert " ".join(lines) == text
    assert message_figure("a<br>b").to_dict()["layout"]["annotations"][0]["text"] == "a<br>b"
