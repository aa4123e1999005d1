"""Joint gate/up row selection in the MoE layers: SwiGLUExperts / MoEBlock / TinyMoEForCausalLM sparsify and
the accuracy sweep. ``joint=False`` is compared bit for bit with the per-projection loop written here (what
sparsify did before joint selection existed)."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F

import samoyeds_lab.prune.api as prune_api
from samoyeds_lab.moe import MoEBlock, SwiGLUExperts, TinyMoEConfig, TinyMoEForCausalLM
from samoyeds_lab.moe.accuracy import (
    config_label,
    default_configs,
    live_neurons,
    normalize_config,
    prune_model,
    sparsity_sweep,
    windows_per_row,
)
from samoyeds_lab.prune import live_neuron_fraction, sparsify


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


# E, H, I: H/32 = 2 windows for gate/up, I/32 = 4 for down; V = H = 64 is one window per row
E, H, I = 3, 64, 128


def independent_reference(ex: SwiGLUExperts, pattern, method, acts, **kw):
    """The per-projection loop: each of gate/up/down pruned on its own (down scored on the pruned gate/up)."""
    out = {p: [] for p in ("gate", "up", "down")}
    wg, wu, wd = ex.w_gate.detach().clone(), ex.w_up.detach().clone(), ex.w_down.detach().clone()
    for e in range(ex.num_experts):
        a = None if acts is None or acts[e].shape[0] == 0 else acts[e]  # no tokens: magnitude
        m = method if a is not None else "magnitude"
        g = sparsify(wg[e], pattern, m, None if m == "magnitude" else a, **kw)
        u = sparsify(wu[e], pattern, m, None if m == "magnitude" else a, **kw)
        h = None
        if a is not None:
            h = F.silu(a @ g.to_dense().T) * (a @ u.to_dense().T)
        d = sparsify(wd[e], pattern, m, None if m == "magnitude" else h, **kw)
        for p, op in zip(("gate", "up", "down"), (g, u, d)):
            out[p].append(op)
    return out


def experts(seed=0) -> SwiGLUExperts:
    torch.manual_seed(seed)
    return SwiGLUExperts(E, H, I)


def calib(seed=1, tokens=(13, 0, 29)):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(t, H, generator=g) for t in tokens]  # expert 1 saw no token: magnitude fallback


def segments(w: torch.Tensor, vector: int) -> torch.Tensor:
    return (w.detach() != 0).reshape(*w.shape[:-1], w.shape[-1] // vector, vector).any(-1)


def assert_same_ops(a, b):
    for x, y in zip(a, b):
        assert type(x) is type(y)
        for f in dataclasses.fields(x):
            vx, vy = getattr(x, f.name), getattr(y, f.name)
            assert torch.equal(vx, vy) if isinstance(vx, torch.Tensor) else vx == vy


# ------------------------------------------------------------------------------------------- SwiGLUExperts
@pytest.mark.parametrize("method", ["magnitude", "wanda", "obs"])
@pytest.mark.parametrize("vector", [32, 64])
def test_joint_shares_gate_up_rows_and_down_keeps_its_own(method, vector):
    ex = experts()
    acts = calib() if method != "magnitude" else None
    ref = independent_reference(ex, "samoyeds", method, acts, vector=vector)
    ex.sparsify("samoyeds", method, acts, vector=vector)
    assert ex.joint is True
    assert torch.equal(segments(ex.w_gate, vector), segments(ex.w_up, vector))
    for e in range(E):
        assert torch.equal(ex.compressed["gate"][e].row_index, ex.compressed["up"][e].row_index)
        for p, w in (("gate", ex.w_gate), ("up", ex.w_up), ("down", ex.w_down)):
            assert torch.equal(ex.compressed[p][e].to_dense(), w[e].detach())
    # gate/up: 2:4 inside every kept row segment, a quarter of the weights
    for w in (ex.w_gate, ex.w_up):
        nz = (w.detach() != 0).reshape(E, I, -1, 4).sum(-1)  # (an OBS-updated kept weight is 0 with prob. 0)
        assert bool(((nz == 2) | (nz == 0)).all()) and int((w != 0).sum()) == E * I * H // 4
    # down: its own selection; with magnitude scores it does not depend on gate/up at all
    if method == "magnitude":
        assert_same_ops(ex.compressed["down"], ref["down"])
    live = ex.live_neurons()
    assert live.paired == 1.0 and live.per_window.tolist() == pytest.approx([0.5] * (H // vector))


@pytest.mark.parametrize("method", ["magnitude", "wanda", "obs"])
@pytest.mark.parametrize("pattern,kw", [("samoyeds", {"vector": 32}), ("samoyeds", {"n": 1, "m": 4, "vector": 64}),
                                        ("2:4", {}), ("venom", {"v": 16, "n": 4, "m": 8})])
def test_joint_false_is_the_independent_loop_bit_for_bit(method, pattern, kw):
    ex = experts(3)
    acts = calib(4) if method != "magnitude" else None
    ref = independent_reference(ex, pattern, method, acts, **kw)
    ex.sparsify(pattern, method, acts, joint=False, **kw)
    assert ex.joint is False
    for p in ("gate", "up", "down"):
        assert_same_ops(ex.compressed[p], ref[p])
        assert torch.equal(ex.weights()[p].detach(), torch.stack([op.to_dense() for op in ref[p]]))


@pytest.mark.parametrize("pattern,kw", [("2:4", {}), ("venom", {"v": 16, "n": 4, "m": 8}),
                                        ("unstructured", {"density": 0.3})])
def test_joint_changes_nothing_for_patterns_without_rows(pattern, kw):
    a, b = experts(5), experts(5)
    a.sparsify(pattern, joint=True, **kw)
    b.sparsify(pattern, joint=False, **kw)
    assert a.joint is False  # nothing was paired
    for p in ("gate", "up", "down"):
        assert torch.equal(a.weights()[p], b.weights()[p])


def test_one_window_per_row_joint_keeps_both_halves_together():
    a, b = experts(6), experts(6)
    a.sparsify("samoyeds", vector=H)
    b.sparsify("samoyeds", vector=H, joint=False)
    ja, jb = a.live_neurons(), b.live_neurons()
    assert ja.per_window.shape == (1,) and ja.overall == pytest.approx(0.5) and ja.paired == 1.0
    assert jb.overall < ja.overall and jb.paired < 1.0
    want = live_neuron_fraction(b.w_gate.detach() != 0, b.w_up.detach() != 0, H)
    assert jb.overall == want.overall and torch.equal(jb.per_window, want.per_window)
    assert b.live_neurons(vector=16).per_window.shape == (H // 16,)  # any window width on request


def test_live_neurons_of_dense_experts_are_all_alive():
    live = experts(7).live_neurons()
    assert live.overall == 1.0 and live.per_window.tolist() == [1.0]


def test_samoyeds_backend_runs_joint_operands():
    torch.manual_seed(8)
    block = MoEBlock(H, I, 4, 2, backend="grouped")
    x = torch.randn(37, H)
    block.sparsify("samoyeds", "wanda", x, vector=32)
    assert block.experts.joint is True
    ref = block(x)
    block.backend = "samoyeds"
    torch.testing.assert_close(block(x), ref, atol=1e-5, rtol=1e-5)
    live = block.live_neurons()
    assert live.paired == 1.0


def test_model_sparsify_joint_and_live_neurons_per_layer():
    torch.manual_seed(9)
    cfg = TinyMoEConfig(hidden=H, intermediate=I, layers=2, heads=2, num_experts=E, top_k=2, max_seq=16)
    a, b = TinyMoEForCausalLM(cfg), TinyMoEForCausalLM(cfg)
    b.load_state_dict(a.state_dict())
    a.sparsify("samoyeds", vector=32)
    b.sparsify("samoyeds", vector=32, joint=False)
    la, lb = a.live_neurons(), b.live_neurons()
    assert list(la) == [n for n, _ in a.moe_blocks()] and len(la) == 2
    for name in la:
        assert la[name].paired == 1.0 and lb[name].paired < 1.0
        assert la[name].per_window.shape == (H // 32,)


# ------------------------------------------------------------------------------------------- bad input
BAD = [
    (lambda: experts().sparsify("samoyeds", vector=32, joint="yes"), TypeError, "joint"),
    (lambda: experts().sparsify("samoyeds", vector=32, joint=1), TypeError, "joint"),
    (lambda: experts().sparsify("samoyeds", "bogus", vector=32), ValueError, "method"),
    (lambda: experts().sparsify("samoyeds", "obs", vector=32), ValueError, "acts"),
    (lambda: experts().sparsify("bogus"), ValueError, "pattern"),
    (lambda: MoEBlock(H, I, E, 2).sparsify("samoyeds", vector=32, joint=None), TypeError, "joint"),
    (lambda: experts().live_neurons(vector=48), ValueError, "vector"),
]


@pytest.mark.parametrize("fn,exc,word", BAD)
def test_bad_inputs_name_the_argument(fn, exc, word):
    with pytest.raises(exc, match=word):
        fn()


def test_method_without_joint_scores_needs_joint_false(monkeypatch):
    # A method the api knows but that has no fixed scores to pair (e.g. second-order OBS): joint is refused
    # with a message naming `joint`; with joint=False it goes to the api's per-projection sparsify.
    calls = []
    real = prune_api.sparsify

    def fake_sparsify(w, pattern, method="magnitude", acts=None, **kw):
        calls.append(method)
        return real(w, pattern, "magnitude", None, **kw)

    import samoyeds_lab.moe.experts as experts_mod

    monkeypatch.setattr(prune_api, "METHODS", prune_api.METHODS + ("fake",))
    monkeypatch.setattr(experts_mod, "_sparsify_weight", fake_sparsify)
    with pytest.raises(ValueError, match="joint"):
        experts().sparsify("samoyeds", "fake", calib(), vector=32)
    experts().sparsify("samoyeds", "fake", calib(), vector=32, joint=False)
    # expert 1 saw no token and falls back to magnitude, as before
    assert calls == ["fake"] * 3 + ["magnitude"] * 3 + ["fake"] * 3


# ------------------------------------------------------------------------------------------- accuracy sweep
def test_normalize_config_joint():
    c = normalize_config({"pattern": "samoyeds", "vector": 32})
    assert c["joint"] is True and normalize_config(c) == c
    assert normalize_config({"pattern": "samoyeds", "vector": 32, "joint": False})["joint"] is False
    assert normalize_config({"pattern": "2:4"})["joint"] is None
    assert config_label({"pattern": "samoyeds", "vector": 32}) == "Samoyeds V=32 · magnitude"
    assert config_label({"pattern": "samoyeds", "vector": 32, "joint": False}) == \
        "Samoyeds V=32 · magnitude · independent"
    both = default_configs(vectors=(32,), methods=("wanda",), joint=(True, False))
    assert [config_label(c) for c in both] == ["dense", "2:4 · wanda", "Samoyeds V=32 · wanda",
                                               "Samoyeds V=32 · wanda · independent"]
    assert windows_per_row({"pattern": "samoyeds", "vector": 32}, 128, 256) == {"gate_up": 4, "down": 8}
    assert windows_per_row({"pattern": "samoyeds", "vector": 128}, 128, 256) == {"gate_up": 1, "down": 2}
    assert windows_per_row({"pattern": "2:4"}, 128, 256) is None


@pytest.mark.parametrize("config,exc", [({"pattern": "2:4", "joint": True}, ValueError),
                                        ({"pattern": "dense", "joint": False}, ValueError),
                                        ({"pattern": "samoyeds", "vector": 32, "joint": "no"}, TypeError)])
def test_normalize_config_bad_joint(config, exc):
    with pytest.raises(exc, match="joint"):
        normalize_config(config)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    torch.manual_seed(10)
    cfg = TinyMoEConfig(hidden=H, intermediate=I, layers=2, heads=2, num_experts=E, top_k=2, max_seq=24)
    d = tmp_path_factory.mktemp("tiny_joint")
    TinyMoEForCausalLM(cfg).save_pretrained(d)
    return d


def test_prune_model_joint_and_independent(model_dir):
    a = TinyMoEForCausalLM.from_pretrained(model_dir)
    b = TinyMoEForCausalLM.from_pretrained(model_dir)
    prune_model(a, {"pattern": "samoyeds", "vector": 32})
    prune_model(b, {"pattern": "samoyeds", "vector": 32, "joint": False})
    la, lb = live_neurons(a, 32), live_neurons(b, 32)
    assert la["paired"] == 1.0 and lb["paired"] < 1.0
    assert set(la["per_layer"]) == {n for n, _ in a.moe_blocks()}
    for v in la["per_layer"].values():
        assert v["per_window"] == pytest.approx([0.5, 0.5])
    for _, blk in b.moe_blocks():  # joint=False is each projection's own samoyeds mask
        ex = blk.experts
        assert ex.joint is False and not torch.equal(segments(ex.w_gate, 32), segments(ex.w_up, 32))


def test_sweep_records_joint_windows_and_live_neurons(model_dir):
    cfgs = [{"pattern": "dense"}, {"pattern": "samoyeds", "vector": 32},
            {"pattern": "samoyeds", "vector": 32, "joint": False}]
    recs = sparsity_sweep(model_dir, cfgs, calib_tokens=0, eval_tokens=24, domains=("en",), recovery_steps=1,
                          recovery_batch=2)
    dense, joint, indep = recs
    assert dense["joint"] is None and dense["windows_per_row"] is None and dense["live_neurons"]["overall"] == 1.0
    assert joint["joint"] is True and indep["joint"] is False
    assert joint["windows_per_row"] == indep["windows_per_row"] == {"gate_up": H // 32, "down": I // 32}
    assert joint["live_neurons"]["paired"] == 1.0 and indep["live_neurons"]["paired"] < 1.0
    assert joint["label"] == "Samoyeds V=32 · magnitude" and indep["label"].endswith("independent")
    assert joint["heldout_ppl"]["overall"] != indep["heldout_ppl"]["overall"]
    assert joint["backend_max_abs_diff"] <= 1e-4  # the fine-tune kept the joint pattern (re-sparsified)


def test_prune_model_obs_joint_needs_calibration_and_shares_rows(model_dir):
    m = TinyMoEForCausalLM.from_pretrained(model_dir)
    with pytest.raises(ValueError, match="calib"):
        prune_model(m, {"pattern": "samoyeds", "method": "obs", "vector": 32})
    windows = torch.randint(0, 256, (4, 24), generator=torch.Generator().manual_seed(11))
    cfg = prune_model(m, {"pattern": "samoyeds", "method": "obs", "vector": 32}, windows)
    assert cfg["method"] == "obs" and cfg["joint"] is True
    assert live_neurons(m, 32)["paired"] == 1.0
    assert "obs" in {c.get("method") for c in default_configs()}  # the recorded study prunes with OBS too
