"""Bring your own model: a local Hugging Face MoE checkpoint, its routing on held-out text, for Labs 03 and 08.

:func:`byo_model_path` reads the path (an explicit value, else the ``SAMOYEDS_HF_MODEL`` environment
variable); :func:`byo_trace` loads the checkpoint with :func:`samoyeds_lab.moe.load_hf_moe` (offline, checked)
and records one routing trace with :func:`samoyeds_lab.routing.record_routing`. The text is the corpus'
held-out split, tokenized by the checkpoint's own tokenizer when the directory has one; otherwise its bytes
modulo the vocabulary stand in for token ids (routing then reflects those ids, not real text — the result
says which).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from .._checks import check_int

__all__ = ["ENV_VAR", "byo_model_path", "byo_trace"]

#: The environment variable the labs read the checkpoint path from.
ENV_VAR = "SAMOYEDS_HF_MODEL"


def byo_model_path(path: str | os.PathLike | None = None) -> Path | None:
    """``path`` if given, else ``$SAMOYEDS_HF_MODEL`` if set and non-empty, else None."""
    if path is not None and not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path: expected a str, os.PathLike or None, got {type(path).__name__}")
    if path is None:
        path = os.environ.get(ENV_VAR) or None
    return None if path is None else Path(path)


def _input_ids(root: Path, model, tokens: int, domain: str) -> tuple[torch.Tensor, str]:
    from ..corpus import load_corpus

    text = load_corpus("heldout", (domain,))[domain]
    vocab = int(getattr(model.config, "vocab_size", 0) or 0)
    if vocab < 2:
        raise ValueError(f"model: expected config.vocab_size >= 2, got {vocab}")
    try:
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(root, local_files_only=True)
        ids = tok(text[: 16 * tokens].decode("utf-8", "replace"), return_tensors="pt")["input_ids"][0][:tokens]
        if ids.numel() == tokens and int(ids.max()) < vocab:
            return ids.long().unsqueeze(0), f"{tokens} tokens of held-out {domain!r} text, the checkpoint's tokenizer"
    except Exception:  # no tokenizer files in the directory (or one that does not fit): fall back to bytes
        pass
    ids = torch.tensor(list(text[:tokens]), dtype=torch.long) % vocab
    return ids.unsqueeze(0), (f"{tokens} held-out {domain!r} bytes modulo the vocabulary ({vocab}) as token ids "
                              f"(no tokenizer in the checkpoint directory)")


def byo_trace(path: str | os.PathLike, *, tokens: int = 256, domain: str = "en"):
    """Load the local checkpoint at ``path`` and record its routing on ``tokens`` held-out tokens.

    Returns ``(model, trace, how)``: the transformers model (eval, CPU), a
    :class:`~samoyeds_lab.routing.RoutingTrace` of its MoE layers, and a sentence saying what text was routed.
    """
    from ..corpus import DOMAINS
    from ..moe import load_hf_moe
    from ..routing import record_routing

    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path: expected a str or os.PathLike checkpoint directory, got {type(path).__name__}")
    tokens = check_int("tokens", tokens, lo=2)
    if domain not in DOMAINS:
        raise ValueError(f"domain: expected one of {DOMAINS}, got {domain!r}")
    root = Path(path)
    model = load_hf_moe(root)
    ids, how = _input_ids(root, model, tokens, domain)
    trace = record_routing(model, ids, logits_dtype=None, meta={"checkpoint": str(root)})
    return model, trace, how
