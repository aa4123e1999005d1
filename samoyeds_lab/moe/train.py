"""Train the lab's tiny byte-level MoE on the shipped corpus, on a CPU, in minutes (``samoyeds-lab train-tiny``).

No model hub is reachable from the lab's machines, so the project trains its own small decoder MoE
(:class:`~samoyeds_lab.moe.TinyMoEForCausalLM`) on :mod:`samoyeds_lab.corpus` — English prose, German
prose and Python code — so that its routing is *learned* and *data-aware*: the other labs trace it,
measure its load imbalance and predict its experts (SiDA) on real decisions rather than random ones.

Objective
---------
For a batch of ``B`` byte windows of length ``S+1`` (``x₀ … x_S``) the loss is next-byte cross entropy
plus the Switch/Mixtral load-balancing term over the ``L`` MoE layers:

.. math::
    \\mathcal L = \\frac{1}{BS}\\sum_{b,t} -\\log p_\\theta(x_{b,t+1} \\mid x_{b,\\le t})
                 \\;+\\; \\frac{\\alpha}{L} \\sum_{l=1}^{L} \\mathrm{LB}(z^{(l)}),
    \\qquad \\mathrm{LB}(z) = E \\sum_{e} f_e \\, P_e ,

with ``f_e`` the fraction of (token, slot) assignments routed to expert ``e`` and ``P_e`` its mean
router probability (:func:`samoyeds_lab.moe.load_balancing_loss`), computed for each layer and averaged
over the layers (as in Switch; one term over all layers at once lets a layer starve an expert while
another layer over-uses it — seen in this project's first run). ``α = 0.01`` by default: large
enough that no expert starves, small enough that routing still follows the data (per-domain expert
frequencies differ, see :func:`routing_stats`).

Optimiser: AdamW (β = 0.9, 0.95; weight decay on matrices only), gradient clipping at 1.0, learning
rate with linear warm-up then cosine decay to ``min_lr_frac · lr``:

.. math::  \\eta(s) = \\eta_{max}\\,\\frac{s}{W} \\ (s < W), \\qquad
           \\eta(s) = \\eta_{min} + \\tfrac12(\\eta_{max}-\\eta_{min})(1+\\cos(\\pi\\,\\tfrac{s-W}{N-W})).

``N`` (the schedule's total steps) is ``steps`` when given; with only a time budget (``minutes``) it is
first estimated after timing ten steps, ``N = s + 0.92 · (time left) / (seconds per step)``, then
re-estimated every 100 steps from the wall clock (evaluations and checkpoints included), so that the
cosine ends near the deadline on a machine whose load changes (the cosine then advances by
``(1 − progress) / (steps left)`` per step, so the rate never rises again); it is stored in the training state
(a resumed time-budget run re-plans it for its own budget). The run also stops at the deadline
(less a reserve for the final evaluation) whatever the step.

Files written to ``out_dir``
----------------------------
``model.safetensors`` + ``config.json``  (``save_pretrained``; loadable with ``from_pretrained``)
``train_state.safetensors``   optimizer, step, schedule, RNG states (to resume; not meant to be committed):
                     tensors in safetensors, the rest as JSON in its metadata, so resuming never
                     unpickles anything (a ``train_state.pt`` of earlier versions, a pickle, is refused)
``train_log.jsonl``  one JSON record per logged step (``"event": "train"``) or evaluation (``"eval"``)
``metrics.json``     held-out perplexity and bits/byte per domain, per-layer load imbalance and
                     per-domain expert frequencies of the trained model and of the same model at init.
"""

from __future__ import annotations

import json
import math
import os
import platform
import time
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn.functional as F

from .._checkpoint import read_state_file, write_state_file
from .._checks import check_bool, check_float, check_int
from ..corpus import DOMAINS, load_corpus
from ..errors import CorruptFileError

__all__ = ["train_tiny", "evaluate", "routing_stats", "lr_at", "STATE_FILE", "LOG_FILE", "METRICS_FILE"]

STATE_FILE = "train_state.safetensors"
#: The pickled training state of earlier versions: never loaded (unpickling runs code); resume refuses it.
OLD_STATE_FILE = "train_state.pt"
_STATE_KIND = "tiny_moe_train_state"
LOG_FILE = "train_log.jsonl"
METRICS_FILE = "metrics.json"
_CALIBRATION_STEPS = 10  # steps timed (after the first) to fix the schedule length under a time budget
_TIME_MARGIN = 0.92  # fraction of the remaining budget planned at calibration (evaluations, checkpoints)
_RESCHEDULE_EVERY = 100  # steps between re-estimates of the schedule length under a time budget


def _model_api():
    # Imported lazily so that `samoyeds_lab.moe` finishes importing before this module needs it.
    from . import TinyMoEConfig, TinyMoEForCausalLM, load_balancing_loss

    return TinyMoEConfig, TinyMoEForCausalLM, load_balancing_loss


def lr_at(step: int, *, lr: float, warmup: int, total: int | None, min_lr_frac: float) -> float:
    """Learning rate before optimizer step ``step`` (1-based): linear warm-up, then cosine to ``min_lr_frac·lr``.

    ``total=None`` (schedule length not known yet) gives the warm-up value, or ``lr`` after warm-up.
    """
    if step <= warmup:
        return lr * step / max(warmup, 1)
    if total is None:
        return lr
    return _cosine(min(1.0, (step - warmup) / max(total - warmup, 1)), lr, min_lr_frac)


def _cosine(frac: float, lr: float, min_lr_frac: float) -> float:
    lo = lr * min_lr_frac
    return lo + 0.5 * (lr - lo) * (1.0 + math.cos(math.pi * frac))


# ----------------------------------------------------------------------------------------------------
# data
# ----------------------------------------------------------------------------------------------------
class _Sampler:
    """Random byte windows, each from one domain chosen uniformly (domains are mixed in every batch)."""

    def __init__(self, texts: dict[str, bytes], seq: int, seed: int) -> None:
        self.domains = list(texts)
        self.data = [torch.frombuffer(bytearray(texts[d]), dtype=torch.uint8) for d in self.domains]
        for d, t in zip(self.domains, self.data):
            if t.numel() < seq + 2:
                raise ValueError(f"seq: expected < {t.numel() - 1} (the {d!r} training text's length), got {seq}")
        self.seq = seq
        self.gen = torch.Generator().manual_seed(seed)

    def batch(self, b: int) -> torch.Tensor:
        dom = torch.randint(len(self.data), (b,), generator=self.gen)
        u = torch.rand(b, generator=self.gen, dtype=torch.float64)
        rows = []
        for i in range(b):
            t = self.data[int(dom[i])]
            start = int(u[i] * (t.numel() - self.seq - 1))
            rows.append(t[start : start + self.seq + 1])
        return torch.stack(rows).long()


def _windows(text: bytes, seq: int, max_windows: int | None) -> torch.Tensor:
    t = torch.frombuffer(bytearray(text), dtype=torch.uint8).long()
    n = (t.numel() - 1) // seq
    if max_windows is not None:
        n = min(n, max_windows)
    if n < 1:
        raise ValueError(f"seq: expected a window shorter than the held-out text ({t.numel()} bytes), got {seq}")
    # window i predicts bytes i*seq+1 .. (i+1)*seq from i*seq .. (i+1)*seq-1
    return torch.stack([t[i * seq : (i + 1) * seq + 1] for i in range(n)])


# ----------------------------------------------------------------------------------------------------
# evaluation
# ----------------------------------------------------------------------------------------------------
def _router_ids(model) -> list[torch.Tensor]:
    out = []
    for name, block in model.moe_blocks():
        ro = block.last_router_output
        if ro is None:
            raise RuntimeError(f"{name}: no router output recorded after a forward pass")
        out.append(ro.topk_ids.detach())
    return out


@torch.no_grad()
def evaluate(
    model,
    texts: dict[str, bytes],
    *,
    seq: int | None = None,
    batch: int = 32,
    max_windows: int | None = None,
) -> dict[str, Any]:
    """Held-out next-byte loss per domain, and the routing counts behind :func:`routing_stats`.

    Each domain's text is cut into non-overlapping windows of ``seq + 1`` bytes (default the model's
    ``max_seq``); every byte after a window's first is predicted. ``ppl = exp(mean NLL)``,
    ``bits_per_byte = mean NLL / ln 2``.

    Returns
    -------
    dict
        ``{"domains": {d: {"nll", "ppl", "bits_per_byte", "tokens"}}, "overall": {...},
        "counts": LongTensor [domains, layers, E] (all top-k slots), "first": same for first choices}``.
    """
    seq = int(seq or model.config.max_seq)
    was_training = model.training
    model.eval()
    blocks = model.moe_blocks()
    E = blocks[0][1].router.num_experts if hasattr(blocks[0][1].router, "num_experts") else model.config.num_experts
    L = len(blocks)
    counts = torch.zeros(len(texts), L, E, dtype=torch.long)
    first = torch.zeros(len(texts), L, E, dtype=torch.long)
    res: dict[str, Any] = {"domains": {}}
    tot_nll, tot_n = 0.0, 0
    for di, (dom, text) in enumerate(texts.items()):
        w = _windows(text, seq, max_windows)
        nll, n = 0.0, 0
        for i in range(0, w.shape[0], batch):
            chunk = w[i : i + batch]
            logits = model(chunk[:, :-1])
            loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), chunk[:, 1:].reshape(-1), reduction="sum")
            nll += float(loss)
            n += chunk[:, 1:].numel()
            for li, ids in enumerate(_router_ids(model)):
                counts[di, li] += torch.bincount(ids.reshape(-1), minlength=E)
                first[di, li] += torch.bincount(ids[:, 0].reshape(-1), minlength=E)
        mean = nll / n
        res["domains"][dom] = {"nll": mean, "ppl": math.exp(mean), "bits_per_byte": mean / math.log(2), "tokens": n}
        tot_nll += nll
        tot_n += n
    mean = tot_nll / tot_n
    res["overall"] = {"nll": mean, "ppl": math.exp(mean), "bits_per_byte": mean / math.log(2), "tokens": tot_n}
    res["counts"], res["first"] = counts, first
    model.train(was_training)
    return res


def routing_stats(counts: torch.Tensor, domains: Sequence[str], layer_names: Sequence[str]) -> dict[str, Any]:
    """Per-layer load imbalance and domain specialisation from expert counts ``[domains, layers, E]``.

    For layer ``l`` with expert frequencies ``f_e = c_e / Σ c`` (all top-k slots, all domains):

    * ``imbalance = max_e f_e / mean_e f_e`` (1 = perfectly balanced, E = one expert takes all);
    * ``cv = std_e f_e / mean_e f_e``; ``entropy_bits = -Σ f_e log₂ f_e`` (log₂ E when uniform);
    * ``domain_mi_bits = I(expert; domain)`` from the joint counts — 0 when every domain is routed the
      same way, up to ``log₂(#domains)`` when the domains use disjoint experts;
    * ``per_domain_freq[d]`` — the frequency vector of domain ``d`` alone, and its own imbalance.
    """
    c = counts.double()
    D, L, E = c.shape
    out: dict[str, Any] = {"layers": []}
    for li in range(L):
        joint = c[:, li, :]
        tot = joint.sum()
        f = joint.sum(0) / tot
        mean = 1.0 / E
        pd = joint.sum(1) / tot
        nz = joint > 0
        pj = joint / tot
        mi = float((pj[nz] * torch.log2(pj[nz] / (pd[:, None] * f[None, :]).expand_as(pj)[nz])).sum())
        ent = float(-(f[f > 0] * torch.log2(f[f > 0])).sum())
        per = {}
        for di, d in enumerate(domains):
            fd = joint[di] / joint[di].sum().clamp_min(1)
            per[d] = {"freq": [round(float(x), 5) for x in fd], "imbalance": float(fd.max() / mean)}
        out["layers"].append(
            {
                "layer": layer_names[li],
                "freq": [round(float(x), 5) for x in f],
                "imbalance": float(f.max() / mean),
                "cv": float(f.std(unbiased=False) / mean),
                "entropy_bits": ent,
                "max_entropy_bits": math.log2(E),
                "domain_mi_bits": mi,
                "per_domain": per,
            }
        )
    return out


# ----------------------------------------------------------------------------------------------------
# training
# ----------------------------------------------------------------------------------------------------
def _check_args(out_dir, minutes, steps, seed, batch, seq, lr, aux_coef, warmup, ckpt_every, log_every, stop_at,
                *, resume=False, overwrite=False, min_lr_frac=0.1, weight_decay=0.1, eval_every=0, eval_windows=1,
                threads=None, progress=False):
    if not isinstance(out_dir, (str, os.PathLike)) or isinstance(out_dir, bytes):
        raise TypeError(f"out_dir: expected a path (str or os.PathLike), got {type(out_dir).__name__}")
    check_bool("resume", resume)
    check_bool("overwrite", overwrite)
    check_bool("progress", progress)
    if resume and overwrite:
        raise ValueError("overwrite: expected False with resume=True (resume continues the run in out_dir, "
                         "overwrite starts a new one), got both")
    if minutes is None and steps is None:
        raise ValueError("minutes/steps: expected a time budget (minutes) or a step count (steps), got neither")
    if minutes is not None:
        if isinstance(minutes, bool) or not isinstance(minutes, (int, float)) or not math.isfinite(minutes) or minutes <= 0:
            raise ValueError(f"minutes: expected a positive finite number, got {minutes!r}")
    if steps is not None:
        check_int("steps", steps, lo=1)
    check_int("seed", seed, lo=0)
    check_int("batch", batch, lo=1)
    check_int("seq", seq, lo=2)
    check_int("warmup", warmup, lo=0)
    check_int("ckpt_every", ckpt_every, lo=1)
    check_int("log_every", log_every, lo=1)
    if stop_at is not None:
        check_int("stop_at", stop_at, lo=1)
    for name, v in (("lr", lr), ("aux_coef", aux_coef)):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
            raise ValueError(f"{name}: expected a finite number >= 0, got {v!r}")
    if lr == 0:
        raise ValueError("lr: expected a positive learning rate, got 0")
    check_float("min_lr_frac", min_lr_frac, lo=0.0, hi=1.0)
    check_float("weight_decay", weight_decay, lo=0.0)
    check_int("eval_every", eval_every, lo=0)
    check_int("eval_windows", eval_windows, lo=1)
    if threads is not None:
        check_int("threads", threads, lo=1)


def _param_groups(model, weight_decay: float):
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (decay if p.ndim >= 2 and "embed" not in name else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def _save(model, opt, state: dict, out: Path) -> None:
    model.save_pretrained(out)
    payload = dict(state)
    payload["optimizer"] = opt.state_dict()
    payload["torch_rng"] = torch.get_rng_state()
    write_state_file(out / STATE_FILE, payload, kind=_STATE_KIND)


#: The fields of a training state and what each must be (checked on resume, before anything is used).
_ARG_FIELDS = {"seed": int, "batch": int, "seq": int, "lr": (int, float), "min_lr_frac": (int, float),
               "warmup": int, "weight_decay": (int, float), "aux_coef": (int, float), "domains": list}


def _load_state(path: Path) -> dict:
    """The training state at ``path``, every field checked; a bad file is a CorruptFileError naming it."""
    st = read_state_file(path, kind=_STATE_KIND)

    def bad(field: str, what: str, got: object = None) -> CorruptFileError:
        shown = "missing" if got is _MISSING else f"got {got!r}"[:120]
        return CorruptFileError(f"{path}: field {field!r}: expected {what}, {shown}")

    def need(d: dict, key: str, types, what: str, prefix: str = "", *, optional: bool = False):
        field = prefix + key
        if key not in d:
            raise bad(field, what, _MISSING)
        v = d[key]
        if v is None and optional:
            return v
        if isinstance(v, bool) and bool not in (types if isinstance(types, tuple) else (types,)):
            raise bad(field, what, v)
        if not isinstance(v, types):
            raise bad(field, what, v)
        return v

    args = need(st, "args", dict, "a dict of the run's settings")
    for k, t in _ARG_FIELDS.items():
        need(args, k, t, "a " + ("list" if t is list else "number"), "args.")
    if not all(isinstance(a, str) for a in args["domains"]):
        raise bad("args.domains", "a list of domain names", args["domains"])
    for k in ("batch", "seq"):
        if args[k] < 1:
            raise bad("args." + k, "a positive int", args[k])
    if need(st, "step", int, "an int >= 0") < 0:
        raise bad("step", "an int >= 0", st["step"])
    total = need(st, "total_steps", int, "an int or null", optional=True)
    if total is not None and total < st["step"]:
        raise bad("total_steps", f"an int >= step={st['step']}", total)
    need(st, "auto_schedule", bool, "a bool")
    need(st, "tokens", int, "an int")
    need(st, "train_seconds", (int, float), "a number")
    for k in ("sampler_rng", "torch_rng"):
        r = need(st, k, torch.Tensor, "a uint8 RNG-state tensor", optional=(k == "sampler_rng"))
        if r is not None and (r.dtype != torch.uint8 or r.ndim != 1):
            raise bad(k, "a 1-D uint8 RNG-state tensor", f"{r.dtype} of shape {tuple(r.shape)}")
    opt = need(st, "optimizer", dict, "an optimizer state dict")
    need(opt, "state", dict, "a dict of per-parameter states", "optimizer.")
    groups = need(opt, "param_groups", list, "a list of parameter groups", "optimizer.")
    if not all(isinstance(g, dict) and isinstance(g.get("params"), list) for g in groups):
        raise bad("optimizer.param_groups", "a list of dicts with 'params'", groups)
    return st


_MISSING = object()


def _restore_optimizer(opt, st: dict, path: Path) -> None:
    """Load the checked optimizer state into ``opt``; a state that does not fit the model is corrupt."""
    try:
        opt.load_state_dict(st["optimizer"])
    except (ValueError, KeyError, TypeError, RuntimeError) as exc:
        raise CorruptFileError(f"{path}: field 'optimizer': does not fit the model in {path.parent} ({exc})") from None
    for group in opt.param_groups:
        for p in group["params"]:
            for k, v in opt.state.get(p, {}).items():
                if isinstance(v, torch.Tensor) and v.ndim and tuple(v.shape) != tuple(p.shape):
                    raise CorruptFileError(f"{path}: field 'optimizer': state {k!r} of shape {tuple(v.shape)} "
                                           f"for a parameter of shape {tuple(p.shape)}")
                if isinstance(v, torch.Tensor) and v.is_floating_point() and not bool(torch.isfinite(v).all()):
                    raise CorruptFileError(f"{path}: field 'optimizer': state {k!r} holds non-finite values")


def _log(out: Path, rec: dict) -> None:
    with open(out / LOG_FILE, "a") as f:
        f.write(json.dumps(rec) + "\n")


def _trim_log(out: Path, step: int) -> None:
    """Drop log records written after the checkpoint being resumed (they will be written again)."""
    p = out / LOG_FILE
    if not p.exists():
        return
    keep = []
    for line in p.read_text().splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut by an interruption
        if rec.get("event") == "init" or rec.get("step", 0) <= step:
            keep.append(line)
    p.write_text("".join(k + "\n" for k in keep))


def train_tiny(
    out_dir: str | os.PathLike,
    *,
    minutes: float | None = 18.0,
    steps: int | None = None,
    seed: int = 0,
    resume: bool = False,
    overwrite: bool = False,
    batch: int = 8,
    seq: int = 256,
    config=None,
    lr: float = 3e-3,
    min_lr_frac: float = 0.1,
    warmup: int = 100,
    weight_decay: float = 0.1,
    aux_coef: float = 0.01,
    ckpt_every: int = 200,
    log_every: int = 10,
    eval_every: int = 500,
    eval_windows: int = 24,
    stop_at: int | None = None,
    domains: Sequence[str] = DOMAINS,
    corpus_root: str | os.PathLike | None = None,
    threads: int | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Train (or resume training) the tiny MoE; write checkpoint, log and metrics to ``out_dir``.

    Parameters
    ----------
    out_dir : path
        Where ``model.safetensors``, ``config.json``, ``train_state.safetensors``, ``train_log.jsonl`` and
        ``metrics.json`` go (created if missing).
    minutes : float or None
        Wall-clock budget of this call (training + final evaluation). With ``steps=None`` the schedule
        length is fixed from the measured speed (see the module docstring).
    steps : int or None
        Total optimizer steps of the schedule (takes precedence over the budget for the schedule; the
        budget, if given too, can still stop the run early).
    seed : int
        Seeds the initial weights and the data sampler; with ``steps`` the run is deterministic.
    resume : bool
        Continue from ``out_dir/train_state.safetensors`` (model, optimizer, step, schedule and RNG states).
        ``steps`` given on resume replaces the stored schedule length.
    overwrite : bool
        Allow a fresh run into a directory that already holds a training state.
    batch, seq : int
        Windows per step and their length in bytes (tokens per step = ``batch · seq``); ``seq`` must
        not exceed the model's ``max_seq``.
    config : TinyMoEConfig or dict, optional
        Model configuration; default ``TinyMoEConfig()`` (4 layers, 8 experts, top-2, hidden 128).
        Ignored on resume (the checkpoint's config is used).
    lr, min_lr_frac, warmup, weight_decay, aux_coef : float/int
        Peak learning rate, final fraction of it, warm-up steps, AdamW decay, load-balancing weight ``α``.
    ckpt_every, log_every, eval_every, eval_windows : int
        Checkpoint / log / quick held-out evaluation (``eval_windows`` windows per domain) intervals.
    stop_at : int, optional
        Stop after this step (checkpoint written, no final evaluation) without finishing the schedule —
        to train in several sittings; continue with ``resume=True``.
    domains : sequence of str
        Corpus domains mixed in training (uniformly) and evaluated.
    corpus_root : path, optional
        Directory of the corpus files (default ``data/corpus``).
    threads : int, optional
        ``torch.set_num_threads`` for this run.
    progress : bool
        Show a tqdm progress bar.

    Returns
    -------
    dict
        The metrics written to ``metrics.json`` (``"status": "done"``), or ``{"status": "stopped",
        "step": …}`` when ``stop_at`` ended the call.
    """
    _check_args(out_dir, minutes, steps, seed, batch, seq, lr, aux_coef, warmup, ckpt_every, log_every, stop_at,
                resume=resume, overwrite=overwrite, min_lr_frac=min_lr_frac, weight_decay=weight_decay,
                eval_every=eval_every, eval_windows=eval_windows, threads=threads, progress=progress)
    t_start = time.perf_counter()
    TinyMoEConfig, TinyMoEForCausalLM, load_balancing_loss = _model_api()
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"out_dir: expected a directory, got a file {out}")

    # every check (arguments, state file, configuration, corpus) comes before anything in out_dir is
    # touched, so that a bad call never deletes the log or metrics of an earlier run
    state_path, old_path = out / STATE_FILE, out / OLD_STATE_FILE
    if resume:
        if not state_path.is_file():
            if old_path.is_file():
                raise CorruptFileError(
                    f"resume: {old_path} is a training state in the old pickle format, which is not loaded "
                    f"(unpickling a file can run code); start the run afresh with overwrite=True")
            raise FileNotFoundError(f"resume: expected a training state {state_path} from an earlier run, found none")
        st = _load_state(state_path)
        model = TinyMoEForCausalLM.from_pretrained(out)
        args = st["args"]
        for k, v in (("batch", batch), ("seq", seq)):
            if args[k] != v:
                raise ValueError(f"{k}: expected the resumed run's value {args[k]}, got {v}")
        if steps is not None:
            if steps <= st["step"]:
                raise ValueError(f"steps: expected more than the {st['step']} steps already done, got {steps}")
            st["total_steps"] = steps
            st["auto_schedule"] = False
        seed = args["seed"]
        cfg = model.config
    else:
        if (state_path.exists() or old_path.exists()) and not overwrite:
            held = STATE_FILE if state_path.exists() else OLD_STATE_FILE
            raise FileExistsError(
                f"out_dir: {out} already holds a training state ({held}); pass resume=True or overwrite=True"
            )
        if config is None:
            cfg = TinyMoEConfig()
        elif isinstance(config, dict):
            cfg = TinyMoEConfig.from_dict(config)
        elif isinstance(config, TinyMoEConfig):
            cfg = config
        else:
            raise TypeError(f"config: expected a TinyMoEConfig, a dict or None, got {type(config).__name__}")
    if seq > cfg.max_seq:
        raise ValueError(f"seq: expected <= the model's max_seq={cfg.max_seq}, got {seq}")
    train_txt = load_corpus("train", domains, root=corpus_root)
    held_txt = load_corpus("heldout", domains, root=corpus_root)
    sampler = _Sampler(train_txt, seq, seed)

    deadline = t_start + minutes * 60.0 if minutes is not None else None
    if threads is not None:
        torch.set_num_threads(threads)
    if not resume:
        out.mkdir(parents=True, exist_ok=True)
        for f in (LOG_FILE, METRICS_FILE, OLD_STATE_FILE):
            (out / f).unlink(missing_ok=True)
        torch.manual_seed(seed)
        model = TinyMoEForCausalLM(cfg)
        args = {
            "seed": seed, "batch": batch, "seq": seq, "lr": lr, "min_lr_frac": min_lr_frac, "warmup": warmup,
            "weight_decay": weight_decay, "aux_coef": aux_coef, "domains": list(domains), "minutes": minutes,
            "steps": steps,
        }
        st = {"args": args, "step": 0, "total_steps": steps, "auto_schedule": steps is None, "tokens": 0,
              "train_seconds": 0.0, "sampler_rng": None}
    if st.get("sampler_rng") is not None:
        try:
            sampler.gen.set_state(st["sampler_rng"])
        except RuntimeError as exc:
            raise CorruptFileError(f"{state_path}: field 'sampler_rng': not a generator state ({exc})") from None
    opt = torch.optim.AdamW(_param_groups(model, args["weight_decay"]), lr=args["lr"], betas=(0.9, 0.95), eps=1e-8)
    if resume:
        _restore_optimizer(opt, st, state_path)
        try:
            torch.set_rng_state(st["torch_rng"])
        except RuntimeError as exc:
            raise CorruptFileError(f"{state_path}: field 'torch_rng': not a generator state ({exc})") from None
        _trim_log(out, st["step"])
    layer_names = [n for n, _ in model.moe_blocks()]
    doms = list(held_txt)

    if not resume:
        init_eval = evaluate(model, held_txt, max_windows=eval_windows)
        st["init"] = {
            "heldout": {d: init_eval["domains"][d] for d in doms},
            "routing": routing_stats(init_eval["counts"], doms, layer_names),
        }
        _log(out, {"event": "init", "step": 0, "heldout_ppl": {d: init_eval["domains"][d]["ppl"] for d in doms},
                   "imbalance": [l["imbalance"] for l in st["init"]["routing"]["layers"]]})

    model.train()
    tokens_per_step = batch * seq
    pbar = None
    if progress:
        from tqdm.auto import tqdm

        pbar = tqdm(total=st["total_steps"], initial=st["step"], desc="train-tiny", unit="step", dynamic_ncols=True)
    calib_t0, calib_step = None, 0
    reserve = _reserve_s(held_txt)
    t_seg = time.perf_counter()
    seg_tokens = 0
    stopped = False
    timed_out = False
    while True:
        step = st["step"] + 1
        if st["total_steps"] is not None and step > st["total_steps"]:
            break
        if deadline is not None and time.perf_counter() >= deadline - reserve:
            timed_out = True
            break
        if st.get("auto_schedule") and st["total_steps"] is not None and step > args["warmup"]:
            # time budget: the schedule length is re-estimated as the machine's speed changes, so advance
            # the cosine by 1/(steps left) of what is left: the learning rate never goes back up
            left = max(st["total_steps"] - step + 1, 1)
            st["decay_progress"] = min(1.0, st.get("decay_progress", 0.0) + (1.0 - st.get("decay_progress", 0.0)) / left)
            cur_lr = _cosine(st["decay_progress"], args["lr"], args["min_lr_frac"])
        else:
            cur_lr = lr_at(step, lr=args["lr"], warmup=args["warmup"], total=st["total_steps"],
                           min_lr_frac=args["min_lr_frac"])
        for g in opt.param_groups:
            g["lr"] = cur_lr
        t0 = time.perf_counter()
        xb = sampler.batch(batch)
        logits = model(xb[:, :-1])
        ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), xb[:, 1:].reshape(-1))
        router_logits = [blk.last_router_output.logits for _, blk in model.moe_blocks()]
        # per layer, then averaged (Switch): one global term over all layers lets a layer starve experts
        # as long as another layer over-uses them
        aux = torch.stack([load_balancing_loss([z], cfg.top_k) for z in router_logits]).mean()
        loss = ce + args["aux_coef"] * aux
        opt.zero_grad(set_to_none=True)
        loss.backward()
        gnorm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0))
        opt.step()
        dt = time.perf_counter() - t0
        st["step"] = step
        st["tokens"] += tokens_per_step
        st["train_seconds"] += dt
        seg_tokens += tokens_per_step
        # a time budget with no step count: fix the schedule length from the measured speed, then
        # re-estimate it every _RESCHEDULE_EVERY steps from the wall clock (evaluations and checkpoints
        # included), so a machine that gets busier or freer still ends the cosine near the deadline
        if st.get("auto_schedule") and deadline is not None:
            new_total = None
            if st["total_steps"] is None:
                if calib_t0 is None:
                    calib_t0, calib_step = time.perf_counter(), step
                elif step == calib_step + _CALIBRATION_STEPS:
                    per_step = (time.perf_counter() - calib_t0) / _CALIBRATION_STEPS
                    new_total = step + _TIME_MARGIN * (deadline - time.perf_counter() - reserve) / per_step
                    calib_t0, calib_step = time.perf_counter(), step
            elif step - calib_step >= _RESCHEDULE_EVERY:
                per_step = (time.perf_counter() - calib_t0) / (step - calib_step)
                new_total = step + 0.97 * (deadline - time.perf_counter() - reserve) / per_step
                calib_t0, calib_step = time.perf_counter(), step
            if new_total is not None:
                st["total_steps"] = max(step + 1, int(new_total))
                if pbar is not None:
                    pbar.total = st["total_steps"]
                    pbar.refresh()
        if pbar is not None:
            pbar.update(1)
        if step % log_every == 0:
            now = time.perf_counter()
            tps = seg_tokens / max(now - t_seg, 1e-9)
            t_seg, seg_tokens = now, 0
            rec = {"event": "train", "step": step, "loss": loss.item(), "ce": ce.item(), "aux": aux.item(),
                   "lr": cur_lr, "grad_norm": gnorm, "tokens": st["tokens"], "tok_per_s": tps,
                   "elapsed_s": round(time.perf_counter() - t_start, 2)}
            _log(out, rec)
            if pbar is not None:
                pbar.set_postfix(ce=f"{ce.item():.3f}", aux=f"{aux.item():.3f}", tok_s=f"{tps:,.0f}")
        if eval_every and step % eval_every == 0:
            ev = evaluate(model, held_txt, max_windows=eval_windows)
            rs = routing_stats(ev["counts"], doms, layer_names)
            _log(out, {"event": "eval", "step": step, "heldout_ppl": {d: ev["domains"][d]["ppl"] for d in doms},
                       "imbalance": [l["imbalance"] for l in rs["layers"]],
                       "domain_mi_bits": [l["domain_mi_bits"] for l in rs["layers"]]})
            t_seg, seg_tokens = time.perf_counter(), 0  # keep evaluation out of tokens/s
        if step % ckpt_every == 0:
            st["sampler_rng"] = sampler.gen.get_state()
            _save(model, opt, st, out)
        if stop_at is not None and step >= stop_at:
            stopped = True
            break
    if pbar is not None:
        pbar.close()
    st["sampler_rng"] = sampler.gen.get_state()
    _save(model, opt, st, out)
    if stopped:
        return {"status": "stopped", "step": st["step"]}

    ev = evaluate(model, held_txt)
    rs = routing_stats(ev["counts"], doms, layer_names)
    first = routing_stats(ev["first"], doms, layer_names)
    metrics = {
        "status": "done",
        "steps": st["step"],
        "schedule_steps": st["total_steps"],
        "stopped_by_time_budget": timed_out,
        "tokens_trained": st["tokens"],
        "train_seconds": round(st["train_seconds"], 2),
        "train_tok_per_s": st["tokens"] / max(st["train_seconds"], 1e-9),
        "heldout": {d: ev["domains"][d] for d in doms},
        "heldout_overall": ev["overall"],
        "routing_heldout_all_slots": rs,
        "routing_heldout_first_choice": first,
        "init": st.get("init"),
        "model": {"config": cfg.to_dict(), "parameters": sum(p.numel() for p in model.parameters())},
        "training": dict(args),
        "machine": {"torch": torch.__version__, "threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
                    "platform": platform.platform()},
    }
    (out / METRICS_FILE).write_text(json.dumps(metrics, indent=1) + "\n")
    _log(out, {"event": "final", "step": st["step"], "heldout_ppl": {d: ev["domains"][d]["ppl"] for d in doms},
               "imbalance": [l["imbalance"] for l in rs["layers"]],
               "domain_mi_bits": [l["domain_mi_bits"] for l in rs["layers"]]})
    return metrics


def _reserve_s(held_txt: dict[str, bytes]) -> float:
    """Seconds kept free before the deadline for the final evaluation and save (3 s + 1 s per 8 kB held out:
    the full held-out pass runs at >= 8k bytes/s on a busy 2-core CPU)."""
    n = sum(len(t) for t in held_txt.values())
    return 3.0 + n / 8_000.0
