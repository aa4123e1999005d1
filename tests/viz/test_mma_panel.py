"""The mma.sp lane view: every lane and selector checked against the whole-warp emulator result, the
fragment formulas of SPTC_FACTS.md and the logical 2:4 metadata; the panel driven over its whole range."""

import pytest
import torch

from samoyeds_lab.formats import compress_nm
from samoyeds_lab.reference.mma_sp import mma_sp_m16n8k32, pack_a, pack_b, pack_c, pack_e, unpack_d
from samoyeds_lab.viz.mma_panel import (
    MMA_FIGURES,
    LaneView,
    MmaLanePanel,
    MmaTile,
    example_tile,
    lane_figures,
    lane_view,
)

LANES = range(32)


def assert_json_safe(fw):
    """No NaN/inf in a FigureWidget's data: its comm messages are strict JSON (a NaN fails to serialize)."""
    import math

    def walk(v):
        if isinstance(v, float):
            assert math.isfinite(v)
        elif hasattr(v, "tolist") and not isinstance(v, str):
            walk(v.tolist())
        elif isinstance(v, (list, tuple)):
            for x in v:
                walk(x)

    for tr in fw.data:
        for attr in ("x", "y", "z"):
            walk(getattr(tr, attr, None))


@pytest.fixture(scope="module", params=[torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
def tile(request):
    return example_tile(seed=3, dtype=request.param)


@pytest.fixture(scope="module")
def views(tile):
    return {(lane, f): lane_view(tile, lane, f) for f in (0, 1) for lane in LANES}


def product(tile):
    """D = A·B + C from the plain matrices (integers: exact in fp32)."""
    return tile.dense_a.float() @ tile.b.float() + tile.c


def test_example_tile_is_2_4_with_integer_entries(tile):
    assert tile.dense_a.shape == (16, 32) and tile.values.shape == (16, 16) and tile.b.shape == (32, 8)
    assert ((tile.dense_a != 0).view(16, 8, 4).sum(-1) == 2).all()
    assert torch.equal(compress_nm(tile.dense_a, 2, 4).values, tile.values)
    for t in (tile.values.float(), tile.b.float(), tile.c):
        assert torch.equal(t, t.round())
    assert torch.equal(example_tile(seed=3, dtype=tile.values.dtype).b, tile.b)  # seeded


def test_each_lane_holds_what_the_emulator_computes(tile, views):
    d_ref = product(tile)
    for (lane, f), v in views.items():
        assert isinstance(v, LaneView) and (v.g, v.t) == (lane >> 2, lane & 3)
        # A: the stored value, and where it sits in the dense A
        assert torch.equal(v.a_value, tile.values[v.a_row, v.a_stored_col])
        assert torch.equal(tile.dense_a[v.a_row, v.a_dense_col], v.a_value)
        assert torch.equal(v.a_dense_col // 4, v.a_stored_col // 2)  # same 2:4 group
        assert (v.a_dense_col[:, 0] < v.a_dense_col[:, 1]).all()  # lower position in the low half
        # B and C/D
        assert torch.equal(v.b_value, tile.b[v.b_k, v.b_n])
        assert torch.equal(v.c_value, tile.c[v.c_row, v.c_col])
        assert torch.equal(v.d_value, d_ref[v.c_row, v.c_col])
        assert torch.equal(v.d_full, d_ref)


def test_lane_view_matches_the_fragment_formulas(views):
    """Independent statement of the m16n8k32 layouts (SPTC_FACTS.md)."""
    r = torch.arange(4).view(4, 1)
    i = torch.arange(2).view(1, 2)
    j = torch.arange(4)
    for (lane, f), v in views.items():
        g, t = lane >> 2, lane & 3
        assert torch.equal(v.a_row, (g + 8 * (r & 1)).expand(4, 2))
        assert torch.equal(v.a_stored_col, 2 * t + i + 8 * (r >> 1))
        assert torch.equal(v.b_k, 2 * t + i + 8 * r)
        assert torch.equal(v.b_n, torch.full((4, 2), g))
        assert torch.equal(v.c_row, g + 8 * (j >> 1)) and torch.equal(v.c_col, 2 * t + (j & 1))


def test_the_warp_covers_every_element_exactly_once(views):
    for f in (0, 1):
        lanes = [views[(lane, f)] for lane in LANES]
        a = sorted((int(r), int(c)) for v in lanes for r, c in zip(v.a_row.flatten(), v.a_stored_col.flatten()))
        b = sorted((int(k), int(n)) for v in lanes for k, n in zip(v.b_k.flatten(), v.b_n.flatten()))
        c = sorted((int(r), int(cc)) for v in lanes for r, cc in zip(v.c_row, v.c_col))
        assert a == [(r, c) for r in range(16) for c in range(16)]
        assert b == [(k, n) for k in range(32) for n in range(8)]
        assert c == [(r, cc) for r in range(16) for cc in range(8)]


def test_metadata_lanes_and_nibbles(tile, views):
    logical = compress_nm(tile.dense_a, 2, 4).sptc_metadata().to(torch.int64)[:, 0]
    for f in (0, 1):
        seen = []
        for lane in LANES:
            v = views[(lane, f)]
            g, q = lane >> 2, lane & 3
            if q in (2 * f, 2 * f + 1):
                h = q - 2 * f
                assert [n["nibble"] for n in v.e_nibbles] == list(range(8))
                for n in v.e_nibbles:
                    # bits [15:0]: row g, groups 4h..4h+3; bits [31:16]: row g+8
                    assert n["row"] == g + 8 * (n["nibble"] >> 2) and n["group"] == 4 * h + (n["nibble"] & 3)
                    assert n["value"] == (int(logical[n["row"]]) >> (4 * n["group"])) & 0xF
                    assert n["value"] == (v.e_word >> (4 * n["nibble"])) & 0xF
                    seen.append((n["row"], n["group"]))
            else:
                assert v.e_nibbles == [] and v.e_word == 0
        assert sorted(seen) == [(r, grp) for r in range(16) for grp in range(8)]


def test_a_wrong_layout_would_be_caught(tile):
    """The checks above can fail: a B packed with the transposed fragment gives a different D."""
    e = pack_e(tile.words, 0)
    wrong_b = pack_b(tile.b.flip(0))
    d = mma_sp_m16n8k32(pack_a(tile.values), wrong_b, pack_c(tile.c), e, 0)
    assert not torch.equal(unpack_d(d), product(tile))


def test_figures(tile, views):
    v = views[(5, 0)]
    figs = lane_figures(tile, v)
    assert set(figs) == set(MMA_FIGURES)
    a = figs["a_dense"]
    assert len(a.layout.shapes) == 8 + 8  # 8 value cells + 8 metadata groups
    text = a.data[0].text
    for r in range(4):
        for i, half in enumerate(("lo", "hi")):
            assert text[int(v.a_row[r, i])][int(v.a_dense_col[r, i])] == f"a{r}.{half}"
    assert "lane 5" in a.layout.title.text
    assert len(figs["b"].layout.shapes) == 8 and len(figs["d"].layout.shapes) == 4
    cells = figs["registers"].data[0].cells.values
    assert len(cells[0]) == 8 + 8 + 4 + 8
    assert "row 1, group 4" in " ".join(cells[3])
    # a lane that supplies no metadata says so
    none = lane_figures(tile, views[(5, 1)])
    assert len(none["a_dense"].layout.shapes) == 8
    assert "not read" in " ".join(none["registers"].data[0].cells.values[3])


def test_panel_over_every_lane_and_selector():
    panel = MmaLanePanel()
    tile = panel.tile
    assert panel.update().lane == 0
    for f in (0, 1):
        panel.controls["selector"].value = f  # the widget callback
        for lane in LANES:
            panel.controls["lane"].value = lane
            v = panel.last
            assert (v.lane, v.selector) == (lane, f)
            assert torch.equal(v.d_value, product(tile)[v.c_row, v.c_col])
            assert f"lane {lane}" in panel.status.value
            assert all(len(panel.figure_widgets[n].data) >= 1 for n in MMA_FIGURES)
            for n in ("a_dense", "a_stored", "b", "d"):
                assert_json_safe(panel.figure_widgets[n])
    v = panel.update(lane=9, selector=0)
    assert (panel.controls["lane"].value, panel.controls["selector"].value) == (9, 0) and v.lane == 9


def test_errors():
    tile = example_tile()
    with pytest.raises(ValueError, match="lane"):
        lane_view(tile, 32)
    with pytest.raises(TypeError, match="lane"):
        lane_view(tile, 1.0)
    with pytest.raises(ValueError, match="selector"):
        lane_view(tile, 0, 2)
    with pytest.raises(TypeError, match="tile"):
        lane_view("tile", 0)
    with pytest.raises(TypeError, match="dtype"):
        example_tile(dtype=torch.float32)
    with pytest.raises(ValueError, match="seed"):
        example_tile(seed=-1)
    panel = MmaLanePanel(tile, lane=3, selector=1)
    with pytest.raises(TypeError, match="update"):
        panel.update(row=1)
    with pytest.raises(ValueError, match="lane"):
        panel.update(lane=40)
    with pytest.raises(TypeError, match="tile"):
        MmaLanePanel(tile=torch.zeros(2))
    with pytest.raises(ValueError, match="lane"):
        MmaLanePanel(lane=-1)
    assert isinstance(tile, MmaTile)


def test_example_warpgroup_is_what_ssmm_cu_lays_out():
    """The Lab 02 Hopper tile: registers per warp = the mma.sp layouts, B image = ssmm.cu's b_off layout,
    the descriptor = ssmm.cu's b_desc for a B stage at address 0, and the emulated wgmma is A·B + C."""
    from samoyeds_lab.reference.wgmma import SmemDescriptor, load_b, unpack_wg_d, wgmma_sp_m64nNk32
    from samoyeds_lab.viz.mma_panel import example_warpgroup

    for dtype in (torch.float16, torch.bfloat16):
        wg = example_warpgroup(seed=3, dtype=dtype)
        assert wg.desc == (0 | (1 << 16) | ((512 >> 4) << 32) | (2 << 62))  # b_desc(0)
        assert SmemDescriptor.decode(wg.desc).swizzle == "64B"
        for tok in range(64):
            for k in range(32):
                assert wg.offsets[tok, k] == tok * 64 + (((k // 8) ^ ((tok >> 1) & 3)) << 4) + 2 * (k % 8)
        b = load_b(wg.smem, wg.desc, 64, dtype)
        assert torch.equal(b, wg.b)
        d = wgmma_sp_m64nNk32(wg.a, b, wg.c, wg.e, 0)
        assert torch.equal(unpack_wg_d(d), wg.dense_a.float() @ wg.b.float() + wg.c_matrix)
        assert ((wg.dense_a != 0).view(64, 8, 4).sum(-1) <= 2).all()
    with pytest.raises(TypeError, match="dtype"):
        example_warpgroup(dtype=torch.float32)
    with pytest.raises(ValueError, match="seed"):
        example_warpgroup(seed=-1)
