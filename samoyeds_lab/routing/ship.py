"""The routing traces shipped in ``data/traces``: how they are recorded, and how a lab loads them.

The labs study *real* routing decisions without running a model in every cell: the tiny MoE
(``data/tiny_moe``, trained by :mod:`samoyeds_lab.moe.train`) is run once over held-out text of each
corpus domain and its decisions are stored as :class:`~samoyeds_lab.routing.RoutingTrace` ``.npz``
files, one per domain, with the router logits in float16 (so that SiDA's predictor can later distil
from the full router distribution, not only from the top-k ids)::

    record_shipped_traces()                 # what `samoyeds-lab trace` runs; rewrites data/traces/
    trace = load_shipped_trace("code")      # RoutingTrace(layers=4, tokens=8192, k=2, ...)

What is recorded
----------------
For a domain with held-out text ``x`` (:func:`samoyeds_lab.corpus.load_corpus` ``(split="heldout")``,
``|x|`` bytes) and ``N = ceil(tokens / W)`` windows of ``W = max_seq`` bytes, window ``i`` starts at

.. math::  s_i = \\lfloor i \\cdot |x| / N \\rfloor, \\qquad i = 0 … N-1,

and holds ``W`` bytes (the last one ``tokens − (N−1)·W``), so the windows are disjoint and spread over
the whole held-out split (every document region is sampled, not only the first file). Each window is
one sequence: the model sees it without any preceding context, exactly as in training, and the
trace's ``sequence_lengths`` keep consecutive-token statistics inside windows. The model runs in eval
mode in its stored dtype; recording never changes its outputs (hooks only read).

The trace's ``meta`` says exactly how it was made: model checkpoint SHA-256 (``model.safetensors``
and ``config.json``), training status (``metrics.json`` present or not, last logged step), corpus
split, domain text SHA-256, window starts, torch version and the command; ``data/traces/README.md``
repeats it in prose.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import math
import os
import shlex
import sys
from pathlib import Path
from typing import Any, Sequence

import torch

from .._checks import check_int
from ..corpus import DOMAINS, load_corpus
from .record import record_routing
from .trace import RoutingTrace

__all__ = [
    "DEFAULT_TOKENS_PER_DOMAIN",
    "TRACE_FILE_TEMPLATE",
    "heldout_windows",
    "load_shipped_trace",
    "model_fingerprint",
    "record_shipped_traces",
    "shipped_trace_path",
    "traces_dir",
]

#: Tokens (bytes) recorded per domain by default: 32 windows of 256 bytes.
DEFAULT_TOKENS_PER_DOMAIN = 8192
#: File name of a domain's trace inside the traces directory.
TRACE_FILE_TEMPLATE = "tiny_moe_{domain}.npz"
_REPO = Path(__file__).resolve().parents[2]
_BATCH_WINDOWS = 16  # windows per forward pass while recording (bounds activation memory)


def traces_dir() -> Path:
    """Directory of the shipped traces, ``<repo>/data/traces``; ``SAMOYEDS_LAB_TRACES`` overrides it."""
    env = os.environ.get("SAMOYEDS_LAB_TRACES")
    return Path(env) if env else _REPO / "data" / "traces"


def _default_model_dir() -> Path:
    return _REPO / "data" / "tiny_moe"


def _check_domain(domain: object) -> str:
    if not isinstance(domain, str) or domain not in DOMAINS:
        raise ValueError(f"domain: expected one of {DOMAINS}, got {domain!r}")
    return domain


def shipped_trace_path(domain: str, trace_dir: str | os.PathLike | None = None) -> Path:
    """Path of ``domain``'s trace: ``<trace_dir>/tiny_moe_<domain>.npz`` (default :func:`traces_dir`)."""
    domain = _check_domain(domain)
    root = Path(trace_dir) if trace_dir is not None else traces_dir()
    return root / TRACE_FILE_TEMPLATE.format(domain=domain)


def heldout_windows(text: bytes, tokens: int, window: int) -> tuple[list[torch.Tensor], list[int]]:
    """Cut ``tokens`` bytes out of ``text`` as disjoint windows spread evenly over it.

    With ``N = ceil(tokens / window)``, window ``i`` starts at ``s_i = floor(i·len(text)/N)`` and has
    ``window`` bytes, except the last which has ``tokens − (N−1)·window``.

    Parameters
    ----------
    text : bytes
        The held-out text of one domain.
    tokens : int
        Total bytes to take, ``1 <= tokens <= len(text)``; the windows must fit without overlapping
        (``s_i + window <= s_{i+1}``, the last inside ``text``; checked).
    window : int
        Bytes per window (the model's ``max_seq``), ``>= 1``.

    Returns
    -------
    windows : list of torch.Tensor
        int64 ``[window]`` byte ids (the last may be shorter).
    starts : list of int
        Byte offset of each window in ``text``.
    """
    if not isinstance(text, (bytes, bytearray)):
        raise TypeError(f"text: expected bytes, got {type(text).__name__}")
    window = check_int("window", window, lo=1)
    tokens = check_int("tokens", tokens, lo=1)
    n = math.ceil(tokens / window)
    starts = [i * len(text) // n for i in range(n)]
    lengths = [window] * (n - 1) + [tokens - (n - 1) * window]
    ends = [s + w for s, w in zip(starts, lengths)]
    if tokens > len(text) or any(e > s for e, s in zip(ends, starts[1:] + [len(text)])):
        raise ValueError(f"tokens: expected windows of {window} bytes that fit the held-out text ({len(text)} bytes) "
                         f"without overlapping (about {len(text) // window * window} tokens at most), got {tokens}")
    data = torch.frombuffer(bytearray(text), dtype=torch.uint8)
    windows = [data[s : s + w].to(torch.int64) for s, w in zip(starts, lengths)]
    return windows, starts


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def model_fingerprint(model_dir: str | os.PathLike | None = None) -> dict[str, Any]:
    """What identifies a tiny-MoE checkpoint directory (no model is loaded).

    Returns
    -------
    dict
        ``{"model_dir", "model_sha256", "config_sha256", "final": metrics.json exists,
        "last_logged_step": last ``step`` in ``train_log.jsonl`` or None, "steps": metrics' ``steps`` or None}``.
    """
    d = Path(model_dir) if model_dir is not None else _default_model_dir()
    weights, config = d / "model.safetensors", d / "config.json"
    for p in (weights, config):
        if not p.is_file():
            raise FileNotFoundError(f"{p}: missing (expected a checkpoint written by TinyMoEForCausalLM.save_pretrained)")
    last_step = None
    log = d / "train_log.jsonl"
    if log.is_file():
        for line in log.read_text().splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(rec, dict) and isinstance(rec.get("step"), int):
                last_step = rec["step"]
    steps = None
    metrics = d / "metrics.json"
    if metrics.is_file():
        try:
            steps = json.loads(metrics.read_text()).get("steps")
        except (json.JSONDecodeError, AttributeError):
            steps = None
    try:
        shown = str(d.resolve().relative_to(_REPO))
    except ValueError:
        shown = str(d)
    return {"model_dir": shown, "model_sha256": _sha256(weights), "config_sha256": _sha256(config),
            "final": metrics.is_file(), "last_logged_step": last_step, "steps": steps}


def record_shipped_traces(
    model_dir: str | os.PathLike | None = None,
    out_dir: str | os.PathLike | None = None,
    tokens_per_domain: int = DEFAULT_TOKENS_PER_DOMAIN,
    *,
    domains: Sequence[str] = DOMAINS,
    logits_dtype: torch.dtype = torch.float16,
    corpus_root: str | os.PathLike | None = None,
    command: str | None = None,
    write_readme: bool = True,
) -> dict[str, Path]:
    """Run the tiny MoE over held-out text of each domain and write one routing trace per domain.

    Parameters
    ----------
    model_dir : path, optional
        Checkpoint directory (``config.json`` + ``model.safetensors``); default ``<repo>/data/tiny_moe``.
    out_dir : path, optional
        Where the traces go (created if missing); default :func:`traces_dir` (``<repo>/data/traces``).
    tokens_per_domain : int
        Bytes recorded per domain, in windows of the model's ``max_seq`` (see :func:`heldout_windows`).
    domains : sequence of str
        Corpus domains to record (default all: ``en``, ``de``, ``code``).
    logits_dtype : torch.dtype
        ``torch.float16`` (default, half the bytes) or ``torch.float32`` for the stored router logits.
    corpus_root : path, optional
        Corpus directory (default the shipped ``data/corpus``).
    command : str, optional
        The command line recorded in ``meta`` and the README (default: this process's ``sys.argv``).
    write_readme : bool
        Also (re)write ``<out_dir>/README.md`` describing the files.

    Returns
    -------
    dict[str, Path]
        ``{domain: path of its .npz}``.
    """
    from ..moe import TinyMoEForCausalLM

    tokens_per_domain = check_int("tokens_per_domain", tokens_per_domain, lo=2)
    if isinstance(domains, str):
        domains = (domains,)
    domains = tuple(_check_domain(d) for d in domains)
    if not domains or len(set(domains)) != len(domains):
        raise ValueError(f"domains: expected distinct names from {DOMAINS}, got {list(domains)}")
    if logits_dtype not in (torch.float16, torch.float32):
        raise TypeError(f"logits_dtype: expected torch.float16 or torch.float32, got {logits_dtype}")
    mdir = Path(model_dir) if model_dir is not None else _default_model_dir()
    out = Path(out_dir) if out_dir is not None else traces_dir()
    fingerprint = model_fingerprint(mdir)
    model = TinyMoEForCausalLM.from_pretrained(mdir)
    model.eval()
    window = int(model.config.max_seq)
    texts = load_corpus("heldout", domains, root=corpus_root)
    if command is None:
        command = " ".join(shlex.quote(a) for a in [Path(sys.argv[0]).name, *sys.argv[1:]]) if sys.argv else ""
    made: dict[str, Path] = {}
    summary: dict[str, dict[str, Any]] = {}
    for domain in domains:
        text = texts[domain]
        windows, starts = heldout_windows(text, tokens_per_domain, window)
        parts = []
        full = [w for w in windows if w.numel() == window]
        for i in range(0, len(full), _BATCH_WINDOWS):
            parts.append(record_routing(model, torch.stack(full[i : i + _BATCH_WINDOWS]), logits_dtype=logits_dtype))
        if windows[-1].numel() != window:
            parts.append(record_routing(model, windows[-1].unsqueeze(0), logits_dtype=logits_dtype))
        meta = {
            "model": type(model).__name__,
            **fingerprint,
            "domain": domain,
            "corpus_split": "heldout",
            "corpus_text_bytes": len(text),
            "corpus_text_sha256": hashlib.sha256(text).hexdigest(),
            "tokens": tokens_per_domain,
            "window": window,
            "window_starts": starts,
            "logits_dtype": str(logits_dtype).replace("torch.", ""),
            "torch": torch.__version__,
            "recorded_utc": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "command": command,
        }
        trace = RoutingTrace.concat(parts, meta=meta)
        path = trace.save(shipped_trace_path(domain, out))
        made[domain] = path
        summary[domain] = {"file": path.name, "tokens": trace.num_tokens, "windows": len(starts),
                           "text_bytes": len(text), "text_sha256": meta["corpus_text_sha256"],
                           "file_sha256": _sha256(path), "file_bytes": path.stat().st_size}
    if write_readme:
        (out / "README.md").write_text(_readme(fingerprint, summary, window, tokens_per_domain, logits_dtype,
                                               command, model.config.num_experts, model.config.top_k,
                                               model.config.layers))
    return made


def load_shipped_trace(domain: str, *, trace_dir: str | os.PathLike | None = None) -> RoutingTrace:
    """Load the shipped trace of one corpus domain (``"en"``, ``"de"`` or ``"code"``).

    Raises
    ------
    ValueError
        Unknown ``domain``.
    FileNotFoundError
        No trace recorded for it (the message says how to make one: ``samoyeds-lab trace``).
    CorruptFileError
        The file is not a valid trace, or it is the trace of another domain.
    """
    from ..errors import CorruptFileError

    path = shipped_trace_path(domain, trace_dir)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no shipped routing trace for domain {domain!r}; record them with "
                                f"`samoyeds-lab trace` (samoyeds_lab.routing.ship.record_shipped_traces)")
    trace = RoutingTrace.load(path)
    got = trace.meta.get("domain")
    if got != domain:
        raise CorruptFileError(f"{path}: field 'meta': expected domain {domain!r}, got {got!r}")
    return trace


def _readme(fp: dict, summary: dict, window: int, tokens: int, logits_dtype: torch.dtype, command: str,
            experts: int, top_k: int, layers: int) -> str:
    status = (f"the **final** checkpoint (`metrics.json` present, {fp['steps']} training steps)" if fp["final"]
              else f"an **intermediate** checkpoint (no `metrics.json` yet; last logged step "
                   f"{fp['last_logged_step']})")
    rows = "\n".join(
        f"| `{s['file']}` | {d} | {s['tokens']} | {s['windows']} | {s['text_bytes']} | `{s['text_sha256'][:16]}…` "
        f"| {s['file_bytes']:,} | `{s['file_sha256'][:16]}…` |"
        for d, s in summary.items())
    return f"""# data/traces — routing decisions of the tiny MoE on held-out text

One `samoyeds_lab.routing.RoutingTrace` per corpus domain (`.npz`, schema version 1, no pickles), loaded
with `samoyeds_lab.routing.ship.load_shipped_trace(domain)`. Labs 03+ read these instead of running the
model in every cell; SiDA's predictor (a later lab) distils from the stored router logits.

| file | domain | tokens | windows | held-out bytes | held-out text SHA-256 | file bytes | file SHA-256 |
|---|---|---|---|---|---|---|---|
{rows}

**Model.** `TinyMoEForCausalLM` from `{fp['model_dir']}` ({layers} MoE layers, {experts} experts, top-{top_k},
byte-level), {status}. `model.safetensors` SHA-256 `{fp['model_sha256']}`, `config.json` SHA-256
`{fp['config_sha256']}`. Run in eval mode, fp32, on the CPU.

**Text.** The `heldout` split of `samoyeds_lab.corpus` (documents whose SHA-1 is 0 mod 20, never
trained on), one byte per token. For a domain with `n` held-out bytes and `N = ceil({tokens}/{window})`
windows, window `i` starts at byte `floor(i·n/N)` and holds {window} bytes (the last one the remainder):
{tokens} tokens per domain in disjoint windows spread over the whole split. Each window is its own
sequence (no context carried over; `sequence_lengths` keeps consecutive-token statistics inside it);
the starts are in each file's `meta["window_starts"]`.

**Fields.** `topk_ids [{layers}, {tokens}, {top_k}]` (int16; column 0 = first choice), `weights` (fp32, the
renormalised routing weights the experts applied), `token_ids [{tokens}]` (the bytes), `logits
[{layers}, {tokens}, {experts}]` ({str(logits_dtype).replace('torch.', '')} router logits), `sequence_lengths`, `layer_names`,
`meta` (JSON: checkpoint hashes, corpus split and text hash, window starts, torch version, UTC time,
command).

**Command.** Regenerate (rewrites every file here and this README) from the repository root:

```bash
{command}
```

Equivalent Python: `from samoyeds_lab.routing.ship import record_shipped_traces;
record_shipped_traces("data/tiny_moe", "data/traces", tokens_per_domain={tokens})`. File hashes change
on every run (zip timestamps); the arrays are the same for the same checkpoint, torch version and
thread count (float summation order can flip a near-tie in rare cases).
"""


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m samoyeds_lab.routing.ship [--model-dir D] [--out D] [--tokens N]`` (same as ``samoyeds-lab trace``)."""
    import argparse

    ap = argparse.ArgumentParser(prog="python -m samoyeds_lab.routing.ship", description=main.__doc__)
    ap.add_argument("--model-dir", default="data/tiny_moe", help="checkpoint directory (default data/tiny_moe)")
    ap.add_argument("--out", default="data/traces", help="output directory (default data/traces)")
    ap.add_argument("--tokens", type=int, default=DEFAULT_TOKENS_PER_DOMAIN, help="tokens (bytes) per domain")
    ap.add_argument("--domains", nargs="+", default=list(DOMAINS), choices=list(DOMAINS))
    args = ap.parse_args(argv)
    cmd = "python -m samoyeds_lab.routing.ship" + "".join(
        f" {flag} {shlex.quote(str(v))}" for flag, v, default in (
            ("--model-dir", args.model_dir, "data/tiny_moe"), ("--out", args.out, "data/traces"),
            ("--tokens", args.tokens, DEFAULT_TOKENS_PER_DOMAIN)) if v != default)
    if list(args.domains) != list(DOMAINS):
        cmd += " --domains " + " ".join(args.domains)
    made = record_shipped_traces(args.model_dir, args.out, args.tokens, domains=args.domains, command=cmd)
    for domain, path in made.items():
        print(f"{domain}: {path}")
    return 0


if __name__ == "__main__":  # pragma: no cover - exercised through tests/routing/test_ship.py's subprocess test
    raise SystemExit(main())
