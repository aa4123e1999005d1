"""Shipped routing traces: the recording recipe on a tiny random model, loading, and the files in data/traces."""

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from samoyeds_lab.corpus import DOMAINS, load_corpus
from samoyeds_lab.errors import CorruptFileError
from samoyeds_lab.moe import TinyMoEConfig, TinyMoEForCausalLM
from samoyeds_lab.routing import RoutingTrace, record_routing
from samoyeds_lab.routing.ship import (
    DEFAULT_TOKENS_PER_DOMAIN,
    heldout_windows,
    load_shipped_trace,
    main,
    model_fingerprint,
    record_shipped_traces,
    shipped_trace_path,
    traces_dir,
)

REPO = Path(__file__).resolve().parents[2]
SHIPPED_MODEL = REPO / "data" / "tiny_moe"


# ---------------------------------------------------------------------------------------------- references
def windows_reference(text: bytes, tokens: int, window: int):
    """The documented recipe, written out: N = ceil(tokens/W) windows, window i starts at floor(i·|x|/N)."""
    n = -(-tokens // window)
    starts = [(i * len(text)) // n for i in range(n)]
    lengths = [window] * (n - 1) + [tokens - (n - 1) * window]
    return [list(text[s : s + w]) for s, w in zip(starts, lengths)], starts


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    """A random tiny MoE (2 layers, E=5, k=2, max_seq=16) saved like data/tiny_moe."""
    torch.manual_seed(0)
    cfg = TinyMoEConfig(hidden=32, intermediate=48, layers=2, heads=2, num_experts=5, top_k=2, max_seq=16)
    model = TinyMoEForCausalLM(cfg)
    d = tmp_path_factory.mktemp("tiny")
    model.save_pretrained(d)
    return d


@pytest.fixture(scope="module")
def recorded(tiny_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("traces")
    made = record_shipped_traces(tiny_dir, out, 37, command="pytest recipe")  # 3 windows: 16 + 16 + 5
    return out, made


# ---------------------------------------------------------------------------------------------- windows
@pytest.mark.parametrize("length, tokens, window", [(100, 37, 16), (1000, 900, 19), (64, 64, 16), (50, 1, 7),
                                                   (99, 99, 99), (20, 19, 256)])
def test_heldout_windows_follow_the_documented_recipe(length, tokens, window):
    text = bytes((7 * i + 3) % 256 for i in range(length))
    wins, starts = heldout_windows(text, tokens, window)
    ref, ref_starts = windows_reference(text, tokens, window)
    assert starts == ref_starts
    assert [w.tolist() for w in wins] == ref
    assert all(w.dtype == torch.int64 for w in wins)
    assert sum(w.numel() for w in wins) == tokens
    ends = [s + w.numel() for s, w in zip(starts, wins)]
    assert all(e <= s for e, s in zip(ends, starts[1:]))  # disjoint, in order
    assert ends[-1] <= length


@pytest.mark.parametrize("args, err, match", [
    ((b"abc", 4, 2), ValueError, "tokens"), ((b"abcdefgh", 7, 3), ValueError, "tokens"), ((bytes(1000), 989, 19), ValueError, "overlapping"),
    ((b"abc", 0, 2), ValueError, "tokens"), ((b"abc", 2, 0), ValueError, "window"),
    (("abc", 2, 2), TypeError, "text"), ((b"abc", 2.0, 2), TypeError, "tokens"),
])
def test_heldout_windows_rejects_bad_arguments(args, err, match):
    with pytest.raises(err, match=match):
        heldout_windows(*args)


# ---------------------------------------------------------------------------------------------- recording
def test_record_writes_one_valid_trace_per_domain(recorded, tiny_dir):
    out, made = recorded
    assert set(made) == set(DOMAINS)
    held = load_corpus("heldout")
    model = TinyMoEForCausalLM.from_pretrained(tiny_dir)
    for d in DOMAINS:
        path = made[d]
        assert path == shipped_trace_path(d, out) and path.name == f"tiny_moe_{d}.npz"
        tr = load_shipped_trace(d, trace_dir=out)
        assert isinstance(tr, RoutingTrace)
        assert (tr.num_layers, tr.num_tokens, tr.top_k, tr.num_experts) == (2, 37, 2, 5)
        assert tr.sequence_lengths.tolist() == [16, 16, 5]
        assert tr.logits is not None and tr.logits.dtype == torch.float16
        ref, starts = windows_reference(held[d], 37, 16)
        assert tr.token_ids.tolist() == [b for w in ref for b in w]
        m = tr.meta
        assert m["domain"] == d and m["corpus_split"] == "heldout" and m["window"] == 16
        assert m["window_starts"] == starts and m["tokens"] == 37 and m["command"] == "pytest recipe"
        assert m["corpus_text_sha256"] == hashlib.sha256(held[d]).hexdigest()
        assert m["model_sha256"] == hashlib.sha256((tiny_dir / "model.safetensors").read_bytes()).hexdigest()
        assert m["final"] is False and m["logits_dtype"] == "float16"
        # the same decisions as recording each window directly (windows are independent sequences)
        for i, w in enumerate(ref):
            direct = record_routing(model, torch.tensor(w))
            a = sum(len(x) for x in ref[:i])
            assert torch.equal(tr.topk_ids[:, a : a + len(w)], direct.topk_ids)
            torch.testing.assert_close(tr.weights[:, a : a + len(w)], direct.weights, rtol=1e-5, atol=1e-6)
            # fp16 logits: within fp16 rounding of the fp32 ones (relative 2^-11)
            torch.testing.assert_close(tr.logits[:, a : a + len(w)].float(), direct.logits, rtol=1e-3, atol=1e-3)


def test_readme_says_how_the_traces_were_made(recorded, tiny_dir):
    out, made = recorded
    text = (out / "README.md").read_text()
    fp = model_fingerprint(tiny_dir)
    assert fp["model_sha256"] in text and fp["config_sha256"] in text
    assert "pytest recipe" in text and "heldout" in text and "intermediate" in text
    for d, path in made.items():
        assert path.name in text
        assert hashlib.sha256(path.read_bytes()).hexdigest()[:16] in text


def test_main_is_the_same_recipe(tiny_dir, tmp_path, capsys):
    assert main(["--model-dir", str(tiny_dir), "--out", str(tmp_path), "--tokens", "20", "--domains", "code"]) == 0
    tr = load_shipped_trace("code", trace_dir=tmp_path)
    assert tr.num_tokens == 20 and tr.sequence_lengths.tolist() == [16, 4]
    assert tr.meta["command"].startswith("python -m samoyeds_lab.routing.ship --model-dir")
    assert "--domains code" in tr.meta["command"]
    assert not (tmp_path / "tiny_moe_en.npz").exists()
    assert "code:" in capsys.readouterr().out


def test_fingerprint_reads_training_status(tiny_dir, tmp_path):
    d = tmp_path / "ckpt"
    d.mkdir()
    for name in ("model.safetensors", "config.json"):
        (d / name).write_bytes((tiny_dir / name).read_bytes())
    (d / "train_log.jsonl").write_text('{"event": "train", "step": 10}\nnot json\n{"event": "eval", "step": 20}\n')
    fp = model_fingerprint(d)
    assert fp["final"] is False and fp["last_logged_step"] == 20 and fp["steps"] is None
    (d / "metrics.json").write_text(json.dumps({"status": "done", "steps": 25}))
    fp = model_fingerprint(d)
    assert fp["final"] is True and fp["steps"] == 25
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        model_fingerprint(tmp_path)


@pytest.mark.parametrize("kwargs, err, match", [
    (dict(tokens_per_domain=1), ValueError, "tokens_per_domain"),
    (dict(tokens_per_domain=10**7), ValueError, "tokens"),
    (dict(domains=("fr",)), ValueError, "domain"),
    (dict(domains=("en", "en")), ValueError, "domains"),
    (dict(logits_dtype=torch.bfloat16), TypeError, "logits_dtype"),
])
def test_record_rejects_bad_arguments(tiny_dir, tmp_path, kwargs, err, match):
    with pytest.raises(err, match=match):
        record_shipped_traces(tiny_dir, tmp_path, **{"tokens_per_domain": 20, **kwargs})


def test_record_needs_a_checkpoint(tmp_path):
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        record_shipped_traces(tmp_path / "nowhere", tmp_path / "out", 20)


# ---------------------------------------------------------------------------------------------- loading
def test_load_errors(recorded, tmp_path):
    out, made = recorded
    with pytest.raises(ValueError, match="domain"):
        load_shipped_trace("fr", trace_dir=out)
    with pytest.raises(FileNotFoundError, match="samoyeds-lab trace"):
        load_shipped_trace("en", trace_dir=tmp_path)
    # a trace of another domain under this domain's name
    (tmp_path / "tiny_moe_en.npz").write_bytes(made["de"].read_bytes())
    with pytest.raises(CorruptFileError, match="domain"):
        load_shipped_trace("en", trace_dir=tmp_path)
    (tmp_path / "tiny_moe_de.npz").write_bytes(made["de"].read_bytes()[:500])  # truncated
    with pytest.raises(CorruptFileError, match="tiny_moe_de.npz"):
        load_shipped_trace("de", trace_dir=tmp_path)


def test_traces_dir_env_override(monkeypatch, tmp_path):
    assert traces_dir() == REPO / "data" / "traces"
    monkeypatch.setenv("SAMOYEDS_LAB_TRACES", str(tmp_path))
    assert traces_dir() == tmp_path
    assert shipped_trace_path("code") == tmp_path / "tiny_moe_code.npz"


# ---------------------------------------------------------------------------------------------- data/traces
@pytest.fixture(scope="module")
def shipped():
    return {d: load_shipped_trace(d, trace_dir=REPO / "data" / "traces") for d in DOMAINS}


def test_shipped_traces_come_from_the_shipped_final_checkpoint(shipped):
    fp = model_fingerprint(SHIPPED_MODEL)
    for d, tr in shipped.items():
        assert tr.meta["model_sha256"] == fp["model_sha256"], \
            f"{d}: data/traces is stale; re-run `samoyeds-lab trace` (python -m samoyeds_lab.routing.ship)"
        assert tr.meta["config_sha256"] == fp["config_sha256"]
        assert tr.meta["final"] is True, "record the traces from the final checkpoint (metrics.json present)"
    readme = (REPO / "data" / "traces" / "README.md").read_text()
    assert fp["model_sha256"] in readme and "final" in readme


def test_shipped_traces_match_the_heldout_corpus(shipped):
    held = load_corpus("heldout")
    for d, tr in shipped.items():
        assert (tr.num_layers, tr.num_tokens, tr.top_k, tr.num_experts) == (4, DEFAULT_TOKENS_PER_DOMAIN, 2, 8)
        assert tr.logits.dtype == torch.float16
        assert tr.meta["corpus_text_sha256"] == hashlib.sha256(held[d]).hexdigest()
        ref, starts = windows_reference(held[d], tr.meta["tokens"], tr.meta["window"])
        assert tr.meta["window_starts"] == starts
        assert tr.token_ids.tolist() == [b for w in ref for b in w]
        # Mixtral-style routing: the first choice is the arg-max of the logits (up to fp16 near-ties)
        agree = (tr.logits.float().argmax(-1) == tr.topk_ids[..., 0]).double().mean()
        assert float(agree) > 0.995


def test_shipped_trace_reproduces_from_the_checkpoint(shipped):
    """Re-running the shipped model on the first window of each domain gives the shipped decisions."""
    model = TinyMoEForCausalLM.from_pretrained(SHIPPED_MODEL)
    for d, tr in shipped.items():
        w = tr.meta["window"]
        again = record_routing(model, tr.token_ids[:w])
        same = (again.topk_ids == tr.topk_ids[:, :w]).all(-1).double().mean()
        assert float(same) > 0.99, (d, float(same))  # thread count may flip a rare near-tie
        np.testing.assert_allclose(again.logits.numpy(), tr.logits[:, :w].float().numpy(), rtol=2e-3, atol=2e-3)
