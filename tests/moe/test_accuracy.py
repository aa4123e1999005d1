"""samoyeds_lab.moe.accuracy: sparsity sweeps of a tiny random MoE saved in tmp_path (fast), byte
accounting against a formula written here, mask-preserving recovery, recorded-JSON round trip and
bad-input tables. Tolerances: fp32 logits of the grouped vs samoyeds backends within 1e-4 (reference
ssmm accumulates in fp32; the two paths only reorder sums)."""

import json
import math

import pytest
import torch

from samoyeds_lab.errors import CorruptFileError
from samoyeds_lab.moe import TinyMoEConfig, TinyMoEForCausalLM
from samoyeds_lab.moe.accuracy import (
    SCHEMA,
    SPEED_MODEL,
    calibration_windows,
    config_label,
    default_configs,
    dense_expert_bytes,
    expert_bytes,
    expert_masks,
    load_sweep,
    model_sha256,
    normalize_config,
    prune_model,
    recovery_finetune,
    sparsity_sweep,
    write_sweep,
)

# awkward-ish but pattern-compatible sizes: H = 96 (V=32 divides, V=64 does not), I = 160 (V=32 divides)
H, I, E, SEQ = 96, 160, 5, 24


def expected_bytes(pattern, vector=None):
    """fp16 bytes of all expert operands from the formats' definitions, written out independently."""
    per_block = 0
    for rows, cols in ((I, H), (I, H), (H, I)):  # gate, up, down: [out, K]
        if pattern == "dense":
            per_block += rows * cols * 2
        elif pattern == "2:4":
            kept = rows * cols // 2
            per_block += kept * 2 + math.ceil(kept * 2 / 8)  # values + 2-bit positions
        else:  # samoyeds 1:2 rows per V window, 2:4 inside
            kept = rows * cols // 4
            row_idx = (cols // vector) * (rows // 2)  # one 1-bit index per window and kept row
            per_block += kept * 2 + math.ceil(kept * 2 / 8) + math.ceil(row_idx / 8)
    return per_block * E * 2  # 2 layers


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    torch.manual_seed(0)
    cfg = TinyMoEConfig(hidden=H, intermediate=I, layers=2, heads=2, num_experts=E, top_k=2, max_seq=SEQ)
    d = tmp_path_factory.mktemp("tiny")
    TinyMoEForCausalLM(cfg).save_pretrained(d)
    return d


CONFIGS = [
    {"pattern": "dense"},
    {"pattern": "2:4", "method": "magnitude"},
    {"pattern": "2:4", "method": "wanda"},
    {"pattern": "samoyeds", "method": "wanda", "vector": 32},
]


@pytest.fixture(scope="module")
def records(model_dir):
    return sparsity_sweep(model_dir, CONFIGS, calib_tokens=96, eval_tokens=48, seed=1)


# ---------------------------------------------------------------------------------------------- records
def test_records_have_every_field(records):
    keys = {"label", "pattern", "method", "vector", "n", "m", "density", "nonzero_fraction", "expert_bytes",
            "dense_expert_bytes", "modelled_decode_speedup", "heldout_ppl", "heldout_bits_per_byte",
            "eval_tokens", "recovered_ppl", "recovery", "backend_max_abs_diff", "seconds"}
    assert len(records) == len(CONFIGS)
    for r in records:
        assert keys <= set(r)
        assert set(r["heldout_ppl"]) == {"en", "de", "code", "overall"}
        for v in r["heldout_ppl"].values():
            assert math.isfinite(v) and v >= 1
        # 48 bytes per domain = 2 windows of 24 (eval_tokens // seq)
        assert r["eval_tokens"] == {"en": 48, "de": 48, "code": 48, "overall": 144}
        assert r["recovered_ppl"] is None and r["recovery"] is None
        json.dumps(r)  # JSON-serialisable as recorded


def test_dense_record_is_the_baseline(records):
    d = records[0]
    assert (d["label"], d["pattern"], d["method"], d["vector"]) == ("dense", "dense", "none", None)
    assert d["density"] == 1.0 and d["nonzero_fraction"] == 1.0
    assert d["expert_bytes"] == d["dense_expert_bytes"] == expected_bytes("dense")
    assert d["modelled_decode_speedup"] == 1.0
    assert d["backend_max_abs_diff"] is None


@pytest.mark.parametrize("i, density", [(1, 0.5), (2, 0.5), (3, 0.25)])
def test_pruned_density_bytes_and_speed_match_the_pattern(records, i, density):
    r = records[i]
    assert r["density"] == density
    assert r["nonzero_fraction"] == pytest.approx(density, abs=1e-6)  # random weights: no exact zeros
    want = expected_bytes(r["pattern"], r["vector"])
    assert r["expert_bytes"] == want
    assert r["modelled_decode_speedup"] == pytest.approx(expected_bytes("dense") / want, rel=1e-12)
    assert r["backend_max_abs_diff"] < 1e-4  # the compressed operands compute what was evaluated


def test_pruning_changes_perplexity_and_methods_differ(records):
    dense = records[0]["heldout_ppl"]["overall"]
    assert all(r["heldout_ppl"]["overall"] != dense for r in records[1:])
    # magnitude and Wanda choose different masks, so (almost surely) different perplexities; which is
    # lower on a random model is not asserted
    assert records[1]["heldout_ppl"]["overall"] != records[2]["heldout_ppl"]["overall"]


def test_labels_and_default_configs():
    cfgs = default_configs()
    assert cfgs[0] == {"pattern": "dense"} and len(cfgs) == 1 + 2 + 3 * 2
    assert {c.get("vector") for c in cfgs if c["pattern"] == "samoyeds"} == {32, 64, 128}
    assert [config_label(c) for c in cfgs[:3]] == ["dense", "2:4 · magnitude", "2:4 · wanda"]
    assert config_label({"pattern": "samoyeds", "vector": 64}) == "Samoyeds V=64 · magnitude"
    n = normalize_config({"pattern": "samoyeds", "method": "wanda", "vector": 128})
    assert normalize_config(n) == n  # a normalised config round-trips


# ---------------------------------------------------------------------------------------------- pieces
def test_calibration_windows_are_seeded_and_take_domains_in_turn():
    texts = {"a": bytes(range(65, 91)) * 4, "b": b"0123456789" * 10}
    w = calibration_windows(texts, 50, 7, seed=3)
    assert w.shape == (8, 7) and w.dtype == torch.int64  # ceil(50 / 7)
    assert torch.equal(w, calibration_windows(texts, 50, 7, seed=3))
    assert bool((w[0::2] >= 65).all()) and bool((w[1::2] < 65).all())


def test_wanda_is_sequential_and_needs_calibration(model_dir):
    m = TinyMoEForCausalLM.from_pretrained(model_dir)
    with pytest.raises(ValueError, match="calib"):
        prune_model(m, {"pattern": "2:4", "method": "wanda"})
    calib = torch.randint(0, 256, (3, SEQ))
    a = TinyMoEForCausalLM.from_pretrained(model_dir)
    prune_model(a, {"pattern": "2:4", "method": "wanda"}, calib)
    b = TinyMoEForCausalLM.from_pretrained(model_dir)
    prune_model(b, {"pattern": "2:4", "method": "magnitude"})
    masks_a = [(p != 0) for _, blk in a.moe_blocks() for p in blk.experts.weights().values()]
    masks_b = [(p != 0) for _, blk in b.moe_blocks() for p in blk.experts.weights().values()]
    assert any(not torch.equal(x, y) for x, y in zip(masks_a, masks_b))
    assert all(blk.is_sparsified for _, blk in a.moe_blocks())


def test_expert_bytes_before_and_after_pruning(model_dir):
    m = TinyMoEForCausalLM.from_pretrained(model_dir)
    assert expert_bytes(m) == dense_expert_bytes(m) == expected_bytes("dense")
    assert dense_expert_bytes(m, torch.float32) == 2 * expected_bytes("dense")
    prune_model(m, {"pattern": "samoyeds", "vector": 32})
    assert expert_bytes(m) == expected_bytes("samoyeds", 32)


def test_recovery_keeps_the_masks(model_dir):
    m = TinyMoEForCausalLM.from_pretrained(model_dir)
    prune_model(m, {"pattern": "samoyeds", "vector": 32})
    masks = expert_masks(m)
    before = [p.detach().clone() for p, _ in masks]
    texts = {"x": bytes(range(256)) * 3}
    stats = recovery_finetune(m, texts, 2, masks=masks, batch=2, seq=16, lr=1e-3)
    assert stats["steps"] == 2 and math.isfinite(stats["last_loss"])
    for (p, mask), b in zip(masks, before):
        assert bool((p.detach()[~mask] == 0).all())  # pruned stay exactly zero
        assert not torch.equal(p.detach(), b)  # kept weights were trained
    # the pattern still holds: rebuilding the compressed operands leaves the weights alone
    for _, blk in m.moe_blocks():
        w = [p.detach().clone() for p in blk.experts.weights().values()]
        blk.sparsify("samoyeds", "magnitude", vector=32)
        assert all(torch.equal(x, p) for x, p in zip(w, blk.experts.weights().values()))


def test_sweep_with_recovery_evaluates_twice(model_dir):
    before = torch.get_num_threads()
    recs = sparsity_sweep(model_dir, [{"pattern": "dense"}, {"pattern": "2:4"}], calib_tokens=0, eval_tokens=24,
                          recovery_steps=1, recovery_batch=2, domains=("en",), threads=1)
    assert torch.get_num_threads() == before  # restored
    for r in recs:
        assert set(r["recovered_ppl"]) == {"en", "overall"} and r["recovery"]["steps"] == 1
    assert recs[1]["backend_max_abs_diff"] < 1e-4


# ---------------------------------------------------------------------------------------------- recorded JSON
def test_write_and_load_sweep(model_dir, tmp_path):
    out = tmp_path / "acc" / "sweep.json"
    payload = write_sweep(out, model_dir, [{"pattern": "dense"}, {"pattern": "2:4"}], calib_tokens=0,
                          eval_tokens=24, domains=("de",), check_backend=False)
    data = load_sweep(out)
    assert data == json.loads(json.dumps(payload))
    assert data["schema"] == SCHEMA and data["speed_model"] == SPEED_MODEL
    assert data["model"]["sha256"] == model_sha256(model_dir) and len(data["model"]["sha256"]) == 64
    assert data["settings"]["eval_tokens"] == 24 and data["settings"]["domains"] == ["de"]
    assert {"platform", "torch", "threads"} <= set(data["machine"]) and data["created_utc"]


def _corrupt(tmp_path, good, mutate):
    data = json.loads(json.dumps(good))
    mutate(data)
    p = tmp_path / "bad.json"
    p.write_text(json.dumps(data))
    return p


GOOD = {"schema": SCHEMA, "version": 1, "created_utc": "x", "machine": {}, "model": {}, "settings": {},
        "records": [{"label": "dense", "pattern": "dense", "method": "none", "vector": None, "density": 1.0,
                     "expert_bytes": 2, "dense_expert_bytes": 2, "modelled_decode_speedup": 1.0,
                     "heldout_ppl": {"en": 5.0, "overall": 5.0}, "recovered_ppl": None}]}


@pytest.mark.parametrize("mutate, match", [
    (lambda d: d.update(schema="other"), "schema"),
    (lambda d: d.update(version=99), "version"),
    (lambda d: d.pop("model"), "'model'"),
    (lambda d: d.update(records=[]), "records"),
    (lambda d: d["records"][0].pop("density"), "density"),
    (lambda d: d["records"][0].update(pattern="4:8"), "pattern"),
    (lambda d: d["records"][0]["heldout_ppl"].update(en=float("nan")), "heldout_ppl"),
    (lambda d: d["records"][0]["heldout_ppl"].pop("overall"), "heldout_ppl"),
    (lambda d: d["records"][0].update(modelled_decode_speedup=-1), "modelled_decode_speedup"),
])
def test_load_sweep_rejects_corrupt_files(tmp_path, mutate, match):
    load_sweep(_corrupt(tmp_path, GOOD, lambda d: None))  # the template itself is valid
    with pytest.raises(CorruptFileError, match=match):
        load_sweep(_corrupt(tmp_path, GOOD, mutate))


def test_load_sweep_missing_and_not_json(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing"):
        load_sweep(tmp_path / "nope.json")
    p = tmp_path / "x.json"
    p.write_text("{not json")
    with pytest.raises(CorruptFileError, match="JSON"):
        load_sweep(p)


# ---------------------------------------------------------------------------------------------- bad inputs
@pytest.mark.parametrize("config, exc, match", [
    ("2:4", TypeError, "config"),
    ({"pattern": "4:8"}, ValueError, "pattern"),
    ({"pattern": None}, ValueError, "pattern"),
    ({"pattern": "dense", "method": "wanda"}, ValueError, "method"),
    ({"pattern": "2:4", "method": "sparsegpt"}, ValueError, "method"),  # obs is a method now
    ({"pattern": "2:4", "vector": 32}, ValueError, "vector"),
    ({"pattern": "samoyeds"}, ValueError, "vector"),
    ({"pattern": "samoyeds", "vector": 30}, ValueError, "multiple of 4"),
    ({"pattern": "samoyeds", "vector": 64}, ValueError, "hidden=96"),
    ({"pattern": "samoyeds", "vector": 48}, ValueError, "intermediate=160"),
    ({"pattern": "samoyeds", "vector": 32.0}, TypeError, "vector"),
    ({"pattern": "2:4", "sparsity": 0.5}, TypeError, "sparsity"),
    ({"pattern": "2:4", "n": 1}, ValueError, "'n'"),
])
def test_bad_configs(config, exc, match):
    with pytest.raises(exc, match=match):
        normalize_config(config, hidden=H, intermediate=I)


@pytest.mark.parametrize("configs, kwargs, exc, match", [
    ([], {}, ValueError, "configs"),
    ([{"pattern": "2:4", "method": "wanda"}], {"calib_tokens": 0}, ValueError, "calib_tokens"),
    ([{"pattern": "samoyeds", "vector": 64}], {}, ValueError, "hidden=96"),
    ([{"pattern": "dense"}], {"eval_tokens": 0}, ValueError, "eval_tokens"),
    ([{"pattern": "dense"}], {"calib_tokens": -1}, ValueError, "calib_tokens"),
    ([{"pattern": "dense"}], {"recovery_steps": 1.5}, TypeError, "recovery_steps"),
    ([{"pattern": "dense"}], {"seq": SEQ + 1}, ValueError, "seq"),
    ([{"pattern": "dense"}], {"threads": 0}, ValueError, "threads"),
])
def test_bad_sweep_arguments_fail_before_running(model_dir, configs, kwargs, exc, match):
    kw = {"calib_tokens": 24, "eval_tokens": 24, **kwargs}
    with pytest.raises(exc, match=match):
        sparsity_sweep(model_dir, configs, **kw)


def test_missing_model_dir(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json|model.safetensors"):
        sparsity_sweep(tmp_path, [{"pattern": "dense"}], calib_tokens=0, eval_tokens=8)
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        model_sha256(tmp_path)


def test_cli_accuracy_writes_a_loadable_sweep(model_dir, tmp_path, capsys):
    from samoyeds_lab import cli
    from samoyeds_lab.moe.accuracy import load_sweep

    out = tmp_path / "sweep.json"
    assert cli.main(["accuracy", "--model", str(model_dir), "--out", str(out), "--calib-tokens", "96",
                     "--eval-tokens", "48", "--recovery-steps", "0", "--vectors", "32", "--methods", "magnitude"]) == 0
    payload = load_sweep(out)
    assert [r["pattern"] for r in payload["records"]][0] == "dense"
    assert "wrote" in capsys.readouterr().out
