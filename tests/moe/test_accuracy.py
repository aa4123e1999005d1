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
    convergence_steps,
    default_configs,
    dense_expert_bytes,
    equal_density_configs,
    equal_density_study,
    pattern_label,
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
    assert cfgs[0] == {"pattern": "dense"} and len(cfgs) == 1 + 3 + 3 * 3  # magnitude, wanda, obs
    assert {c.get("vector") for c in cfgs if c["pattern"] == "samoyeds"} == {32, 64, 128}
    assert [config_label(c) for c in cfgs[:4]] == ["dense", "2:4 · magnitude", "2:4 · wanda", "2:4 · obs"]
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
    ({"pattern": "unstructured"}, ValueError, "density"),
    ({"pattern": "unstructured", "density": 1.0}, ValueError, "0 < density < 1"),
    ({"pattern": "unstructured", "density": True}, ValueError, "density"),
    ({"pattern": "1:4", "density": 0.5}, ValueError, "implies 0.25"),
    ({"pattern": "venom", "vector": 64}, ValueError, "hidden=96"),
    ({"pattern": "venom", "vector": 32, "joint": False}, ValueError, "joint"),
    ({"pattern": "unstructured", "density": 0.25, "vector": 32}, ValueError, "vector"),
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
                     "--eval-tokens", "48", "--recovery-steps", "0", "--vectors", "32", "--methods", "magnitude",
                     "--study", "sweep"]) == 0
    payload = load_sweep(out)
    assert [r["pattern"] for r in payload["records"]][0] == "dense"
    assert "wrote" in capsys.readouterr().out


def test_cli_accuracy_equal_density_resumes(model_dir, tmp_path, capsys, monkeypatch):
    from samoyeds_lab import cli
    from samoyeds_lab.moe import accuracy

    # VENOM's default 64-row blocks do not fit this model's H = 96: the CLI study with 32-row blocks
    monkeypatch.setattr(accuracy, "VENOM_V", 32)
    monkeypatch.setattr(accuracy, "equal_density_configs",
                        lambda vectors, methods: equal_density_configs(vectors, methods, independent=(), venom_v=32))
    out = tmp_path / "study.json"
    argv = ["accuracy", "--model", str(model_dir), "--out", str(out), "--calib-tokens", "48", "--eval-tokens",
            "24", "--recovery-steps", "1", "--vectors", "32", "--methods", "obs", "--threads", "1"]
    assert cli.main(argv) == 0
    data = load_sweep(out)
    assert data["status"] == "complete" and data["settings"]["recovery_steps"] == 1
    assert {r["method"] for r in data["records"]} == {"none", "obs"} and len(data["records"]) == 7
    assert "VENOM 32:2:8 · obs" in {r["label"] for r in data["records"]}
    capsys.readouterr()
    assert cli.main(argv + ["--resume"]) == 0  # everything done: nothing is run again
    captured = capsys.readouterr()
    assert ": ppl " not in captured.out.replace("held-out ppl", "") and "wrote" in captured.out


# ---------------------------------------------------------------------------------------------- equal density
# the study's patterns on this model: VENOM blocks of 32 rows (64 divides neither H=96 nor I=160)
STUDY = equal_density_configs(vectors=(32,), methods=("magnitude",), independent=(32,), venom_v=32)


def test_equal_density_configs_list_the_study():
    cfgs = equal_density_configs()
    labels = [config_label(c) for c in cfgs]
    assert labels[0] == "dense" and len(labels) == len(set(labels)) == 1 + 8 * 3 + 2 * 3
    for m in ("magnitude", "wanda", "obs"):
        for want in ("unstructured 25%", "1:4", "VENOM 64:2:8", "Samoyeds V=32", "Samoyeds V=64",
                     "Samoyeds V=128", "2:4", "unstructured 50%"):
            assert f"{want} · {m}" in labels
        assert f"Samoyeds V=32 · {m} · independent" in labels and f"Samoyeds V=128 · {m} · independent" in labels
    dens = {pattern_label(c): normalize_config(c)["density"] for c in cfgs[1:]}
    assert dens == {"unstructured 25%": 0.25, "1:4": 0.25, "VENOM 64:2:8": 0.25, "Samoyeds V=32": 0.25,
                    "Samoyeds V=64": 0.25, "Samoyeds V=128": 0.25, "2:4": 0.5, "unstructured 50%": 0.5,
                    "Samoyeds V=32 · independent": 0.25, "Samoyeds V=128 · independent": 0.25}


@pytest.mark.parametrize("config", STUDY[1:], ids=config_label)
def test_study_patterns_keep_exactly_their_density(model_dir, config):
    m = TinyMoEForCausalLM.from_pretrained(model_dir)
    cfg = prune_model(m, config)
    for _, blk in m.moe_blocks():
        for name, w in blk.experts.weights().items():
            for e in range(E):
                kept = int((w[e] != 0).sum())  # random weights: no kept weight is exactly 0
                assert kept == w[e].numel() * cfg["density"], (name, e)
                stored = blk.experts.compressed[name][e].values.numel()
                assert stored == kept


def test_convergence_steps_table():
    flat = [{"step": s, "ppl": 5.0} for s in range(0, 301, 50)]
    falling = [{"step": s, "ppl": p} for s, p in zip(range(0, 301, 50), (20, 10, 8, 7.0, 6.9, 6.85, 6.84))]
    assert convergence_steps({"a": flat}) == 100
    # 10 -> 7.0 over 100 steps is 43 % better; 8 -> 6.9 is 16 %; 7.0 -> 6.85 is 2.2 %; 6.9 -> 6.84 is 0.9 %
    assert convergence_steps({"a": falling}) == 300
    assert convergence_steps({"a": falling}, tol=0.03) == 250
    assert convergence_steps({"a": flat, "b": falling}) == 300  # every curve must be flat
    assert convergence_steps({"a": falling[:5]}) is None
    with pytest.raises(ValueError, match="tol"):
        convergence_steps({"a": flat}, tol=1.5)
    with pytest.raises(ValueError, match="curves"):
        convergence_steps({})


_SMALL = [{"pattern": "dense"}, {"pattern": "2:4", "method": "magnitude"},
          {"pattern": "samoyeds", "vector": 32, "method": "magnitude"},
          {"pattern": "samoyeds", "vector": 32, "method": "wanda"}]
_STUDY_KW = dict(calib_tokens=48, eval_tokens=24, curve_config={"pattern": "samoyeds", "vector": 32},
                 curve_steps=2, curve_every=1, curve_eval_tokens=24, curve_window=1, curve_tol=0.5,
                 recovery_batch=2, domains=("en",), threads=1)


class _Interrupt(Exception):
    pass


def test_study_records_curve_recovery_and_resumes(model_dir, tmp_path):
    out = tmp_path / "study.json"
    lines = []

    def stop_on_third_one_shot(msg):
        lines.append(msg)
        if sum(": ppl " in m and not m.startswith("curve") for m in lines) == 3:
            raise _Interrupt

    with pytest.raises(_Interrupt):
        equal_density_study(out, model_dir, _SMALL, progress=stop_on_third_one_shot, **_STUDY_KW)
    part = json.loads(out.read_text())
    assert part["status"] == "partial" and [r["label"] for r in part["records"]] == ["dense", "2:4 · magnitude"]
    assert part["convergence"]["complete"] and set(part["convergence"]["curves"]) == {"dense", "Samoyeds V=32 · magnitude"}
    assert [p["step"] for p in part["convergence"]["curves"]["dense"]] == [0, 1, 2]
    with pytest.raises(ValueError, match="settings"):
        equal_density_study(out, model_dir, _SMALL, progress=False, resume=True, **{**_STUDY_KW, "seed": 9})
    again = []
    payload = equal_density_study(out, model_dir, _SMALL, progress=again.append, resume=True, **_STUDY_KW)
    # resumed: no curve again, only the two configurations left one-shot, then the recoveries
    assert not any(m.startswith("curve") for m in again)
    assert [m.split(":")[0] for m in again if ": ppl " in m and not m.startswith("curve")] == ["Samoyeds V=32 · magnitude", "Samoyeds V=32 · wanda"]
    assert payload["status"] == "complete" and load_sweep(out)["records"] == payload["records"]
    steps = payload["convergence"]["chosen_steps"]
    assert steps in (1, 2) and payload["settings"]["recovery_steps"] == steps
    rec = {r["label"]: r for r in payload["records"]}
    best = min(("Samoyeds V=32 · magnitude", "Samoyeds V=32 · wanda"), key=lambda k: rec[k]["heldout_ppl"]["overall"])
    recovered = {k for k, r in rec.items() if r["recovered_ppl"] is not None}
    assert recovered == {"dense", "2:4 · magnitude", best}  # dense + the best method of each pattern
    assert all(rec[k]["recovery"]["steps"] == steps for k in recovered)  # the dense model got the same steps
    for key in ("created_utc", "updated_utc", "machine", "model", "settings", "elapsed_s", "speed_model"):
        assert key in payload
    assert payload["model"]["sha256"] == model_sha256(model_dir)


def test_study_resume_with_new_fine_tune_settings_keeps_one_shot(model_dir, tmp_path):
    out = tmp_path / "study.json"
    first = equal_density_study(out, model_dir, _SMALL[:3], progress=False, **_STUDY_KW)
    one_shot = {r["label"]: r["heldout_ppl"] for r in first["records"]}
    lines = []
    kw = {**_STUDY_KW, "curve_steps": 3}
    payload = equal_density_study(out, model_dir, _SMALL[:3], progress=lines.append, resume=True, **kw)
    assert any("fine-tune settings changed (curve_steps)" in m for m in lines)
    # no configuration pruned and evaluated one-shot again; the curve and the recoveries redone
    assert not [m for m in lines if ": ppl " in m and not m.startswith("curve")]
    assert [p["step"] for p in payload["convergence"]["curves"]["dense"]] == [0, 1, 2, 3]
    assert {r["label"]: r["heldout_ppl"] for r in payload["records"]} == one_shot
    steps = payload["convergence"]["chosen_steps"]
    assert payload["settings"]["curve_steps"] == 3 and payload["settings"]["recovery_steps"] == steps
    assert all(r["recovery"]["steps"] == steps for r in payload["records"] if r["recovered_ppl"] is not None)
    assert sum(r["recovered_ppl"] is not None for r in payload["records"]) == 3
    with pytest.raises(ValueError, match="calib_tokens"):  # a one-shot setting still refuses to resume
        equal_density_study(out, model_dir, _SMALL[:3], progress=False, resume=True, **{**kw, "calib_tokens": 40})


def test_study_progress_bar_on_stderr_lines_on_stdout(model_dir, tmp_path, capsys):
    equal_density_study(tmp_path / "s.json", model_dir, _SMALL[:2], progress=True, recovery_steps=0,
                        **{k: v for k, v in _STUDY_KW.items() if not k.startswith("curve")})
    captured = capsys.readouterr()
    err = captured.err
    assert "equal-density study" in err and "2/2" in err  # tqdm: the dense and one pruned configuration
    assert "2:4 · magnitude: ppl" in captured.out  # tqdm.write: one line per finished item


@pytest.mark.parametrize("kwargs, match", [
    ({"configs": [{"pattern": "2:4"}]}, "dense baseline"),
    ({"configs": [{"pattern": "dense"}, {"pattern": "2:4"}, {"pattern": "2:4"}]}, "distinct"),
    ({"recover": "some"}, "recover"),
    ({"curve_steps": 0}, "curve_steps"),
    ({"resume": "yes"}, "resume"),
])
def test_bad_study_arguments(model_dir, tmp_path, kwargs, match):
    kw = {"configs": _SMALL[:2], **kwargs}
    with pytest.raises((TypeError, ValueError), match=match):
        equal_density_study(tmp_path / "x.json", model_dir, progress=False, **kw)


# ---------------------------------------------------------------------------------------------- the shipped file
def test_recorded_study_is_complete_with_provenance():
    """data/accuracy/tiny_moe_sparsity.json: the study Lab 05 and Lab 08 read, as the code defines it."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    data = load_sweep(root / "data" / "accuracy" / "tiny_moe_sparsity.json")
    assert data["version"] == 2 and data["study"] == "equal-density" and data["status"] == "complete"
    for key in ("created_utc", "updated_utc", "machine", "model", "settings", "speed_model", "elapsed_s"):
        assert key in data, key
    assert {"platform", "torch", "threads", "cpu_count"} <= set(data["machine"])
    assert data["model"]["sha256"] == model_sha256(root / "data" / "tiny_moe")
    labels = [r["label"] for r in data["records"]]
    assert labels == [config_label(c) for c in equal_density_configs()]  # every configuration, in order
    # the convergence curve, and the steps chosen from it, used for every recovery
    conv = data["convergence"]
    assert conv["complete"] and set(conv["curves"]) == {"dense", data["settings"]["curve_config"]}
    assert all(p["step"] % conv["every"] == 0 for pts in conv["curves"].values() for p in pts)
    steps = data["settings"]["recovery_steps"]
    assert steps == conv["chosen_steps"] == (conv["converged_at"] or conv["steps"])
    assert convergence_steps(conv["curves"], window=conv["window"], tol=conv["tol"]) == conv["converged_at"]
    by = {r["label"]: r for r in data["records"]}
    assert by["dense"]["recovery"]["steps"] == steps  # the dense model was given the same steps
    recovered = [r for r in data["records"] if r["recovered_ppl"] is not None]
    assert all(r["recovery"]["steps"] == steps for r in recovered)
    # one recovery per joint pattern: its best one-shot method
    groups = {}
    for r in data["records"][1:]:
        if r.get("joint") is not False:
            groups.setdefault(r["label"].replace(f" · {r['method']}", ""), []).append(r)
    for key, rs in groups.items():
        best = min(rs, key=lambda r: r["heldout_ppl"]["overall"])
        assert [r["label"] for r in rs if r["recovered_ppl"]] == [best["label"]], key
    for r in data["records"]:
        assert r["density"] == pytest.approx(r["nominal_density"], abs=1e-12), r["label"]
        assert set(r["heldout_ppl"]) == {"en", "de", "code", "overall"}


@pytest.mark.parametrize("config, want", [
    ({"pattern": "dense"}, "dense"),
    ({"pattern": "venom", "method": "obs"}, "VENOM 64:2:8"),
    ({"pattern": "unstructured", "density": 0.5, "method": "wanda"}, "unstructured 50%"),
    ({"pattern": "samoyeds", "vector": 128, "joint": False}, "Samoyeds V=128 · independent"),
    # a record (label, measured density, None fields) reads like its configuration
    ({"label": "unstructured 25% · obs", "pattern": "unstructured", "method": "obs", "vector": None,
      "joint": None, "density": 0.25, "nominal_density": 0.25}, "unstructured 25%"),
    ({"label": "1:4 · wanda", "pattern": "1:4", "method": "wanda", "vector": None, "joint": None,
      "density": 0.25}, "1:4"),
])
def test_pattern_label(config, want):
    assert pattern_label(config) == want
