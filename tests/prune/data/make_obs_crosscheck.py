"""Generate ``obs_crosscheck.json``: llm-compressor's SparseGPT on one seeded layer and calibration batch.

Run once, in a throwaway environment that has llm-compressor (not a dependency of samoyeds-lab)::

    python -m venv /tmp/llmc && /tmp/llmc/bin/pip install llmcompressor
    /tmp/llmc/bin/python tests/prune/data/make_obs_crosscheck.py

The test ``tests/prune/test_obs.py`` rebuilds the same inputs with :func:`crosscheck_inputs` (this file
imports nothing from samoyeds_lab, so both environments can load it) and compares its own masks and
reconstruction errors with the recorded ones; it never needs llm-compressor.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import pathlib

import torch

SEED = 13
ROWS, COLS, TOKENS = 96, 384, 512
BLOCKSIZE, PERCDAMP = 128, 0.01
#: (case name, our pattern spelling, our kwargs, llm-compressor's sparsity, prune_n (= pruned), prune_m)
CASES = [
    ("2:4", "2:4", {}, 0.5, 2, 4),
    ("4:8", "4:8", {}, 0.5, 4, 8),
    ("unstructured-0.5", "unstructured", {"density": 0.5}, 0.5, 0, 0),
]


def crosscheck_inputs() -> tuple[torch.Tensor, torch.Tensor]:
    """``(w [ROWS, COLS], x [TOKENS, COLS])`` fp32: a Gaussian weight, correlated inputs of unequal scale."""
    g = torch.Generator().manual_seed(SEED)
    w = torch.randn(ROWS, COLS, generator=g)
    mix = torch.eye(COLS) + 0.5 * torch.randn(COLS, COLS, generator=g) / COLS**0.5
    scale = torch.exp(0.5 * torch.randn(COLS, generator=g))
    x = (torch.randn(TOKENS, COLS, generator=g) @ mix) * scale
    return w, x


def tensor_sha256(t: torch.Tensor) -> str:
    return hashlib.sha256(t.contiguous().numpy().tobytes()).hexdigest()


def mask_hex(mask: torch.Tensor) -> str:
    """Row-major bits of a bool mask, 8 per byte, most significant first, as hex."""
    bits = mask.reshape(-1).to(torch.uint8)
    pad = (-bits.numel()) % 8
    bits = torch.cat([bits, torch.zeros(pad, dtype=torch.uint8)]).view(-1, 8)
    weights = torch.tensor([128, 64, 32, 16, 8, 4, 2, 1], dtype=torch.uint8)
    return bytes((bits * weights).sum(1).to(torch.uint8).tolist()).hex()


def output_error(w: torch.Tensor, w_new: torch.Tensor, x: torch.Tensor) -> float:
    """``||(W − Ŵ) Xᵀ||_F / ||W Xᵀ||_F`` in fp64."""
    w, w_new, x = w.double(), w_new.double(), x.double()
    return float(torch.linalg.vector_norm((w - w_new) @ x.T) / torch.linalg.vector_norm(w @ x.T))


def main() -> None:  # pragma: no cover - needs llm-compressor
    from importlib.metadata import version

    from llmcompressor.modifiers.pruning.sparsegpt import sgpt_sparsify as sg

    w, x = crosscheck_inputs()
    out = {
        "provenance": {
            "generator": "tests/prune/data/make_obs_crosscheck.py",
            "package": "llmcompressor",
            "version": version("llmcompressor"),
            "function": "llmcompressor.modifiers.pruning.sparsegpt.sgpt_sparsify.sparsify_weight",
            "torch": torch.__version__,
            "date": datetime.date.today().isoformat(),
        },
        "inputs": {
            "seed": SEED, "rows": ROWS, "cols": COLS, "tokens": TOKENS,
            "blocksize": BLOCKSIZE, "percdamp": PERCDAMP,
            "w_sha256": tensor_sha256(w), "x_sha256": tensor_sha256(x),
        },
        "cases": [],
    }
    for name, pattern, kwargs, sparsity, prune_n, prune_m in CASES:
        layer = torch.nn.Linear(COLS, ROWS, bias=False)
        with torch.no_grad():
            layer.weight.copy_(w)
        h = sg.make_empty_hessian(layer)
        # [tokens, 1, cols]: every token counts as one sample, so H = 2 XᵀX / tokens
        h, _ = sg.accumulate_hessian(x.reshape(TOKENS, 1, COLS), layer, h, 0)
        _, w_new = sg.sparsify_weight(
            layer, {layer: h}, sparsity, prune_n, prune_m, BLOCKSIZE, PERCDAMP, False
        )
        mask = w_new != 0
        out["cases"].append({
            "name": name, "pattern": pattern, "kwargs": kwargs,
            "llmc_args": {"sparsity": sparsity, "prune_n": prune_n, "prune_m": prune_m},
            "kept": int(mask.sum()),
            "mask_sha256": hashlib.sha256(mask_hex(mask).encode()).hexdigest(),
            "mask_hex": mask_hex(mask),
            "error": output_error(w, w_new.detach(), x),
        })
    path = pathlib.Path(__file__).with_name("obs_crosscheck.json")
    path.write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
