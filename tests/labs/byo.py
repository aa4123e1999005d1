"""Run a lab's bring-your-own-model cell (the code cell that sets ``HF_MODEL_PATH = None``) outside the
notebook, with ``SAMOYEDS_HF_MODEL`` pointing at a tiny random Hugging Face MoE checkpoint (or unset)."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import jupytext
import pytest
import torch


def tiny_hf_checkpoint(root: Path) -> Path:
    """A randomly initialised 2-layer Mixtral (6 experts, top-2, hidden 64, expert width 32) saved in ``root``."""
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    cfg = transformers.MixtralConfig(vocab_size=300, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                     num_key_value_heads=2, max_position_embeddings=512, intermediate_size=32,
                                     num_local_experts=6, num_experts_per_tok=2, tie_word_embeddings=False)
    path = root / "tiny-mixtral"
    transformers.AutoModelForCausalLM.from_config(cfg).save_pretrained(path)
    return path


def run_byo_cell(source: Path, checkpoint: Path | None, monkeypatch) -> tuple[str, list]:
    """``(stdout, figures shown)`` of the cell, with the environment variable set to ``checkpoint`` (None: unset)."""
    import plotly.graph_objects as go

    cells = [c.source for c in jupytext.read(source).cells
             if c.cell_type == "code" and "HF_MODEL_PATH = None" in c.source]
    assert len(cells) == 1, "expected one bring-your-own-model cell"
    if checkpoint is None:
        monkeypatch.delenv("SAMOYEDS_HF_MODEL", raising=False)
    else:
        monkeypatch.setenv("SAMOYEDS_HF_MODEL", str(checkpoint))
    shown: list = []
    monkeypatch.setattr(go.Figure, "show", lambda self, *a, **k: shown.append(self))
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        exec(compile(cells[0], f"{source.name}:byo-cell", "exec"), {"__name__": "__byo__"})
    return buf.getvalue(), shown
