"""Training: tree-packed dialogs (``crslib.format.packing``), loss only at target positions.

One loop for every profile and every kind of run, :func:`fit`, run through ``accelerate``
(device placement, bfloat16 autocast, data parallelism under ``accelerate launch``); what differs
between kinds of run is their loss, an :class:`Objective` (GCRS: :class:`TokenObjective`; the
decoupled baseline: :class:`crslib.training.decoupled.ItemHeadObjective`). What trains (NOTES.md §4): the transformer (LoRA adapters, or all
weights for small models), and among the embeddings **only the new tokens' rows**, input and
output side (``embeddings="all"`` is the paper's "all embeddings trained" ablation). The loss
is the cross-entropy of each target token given its instance's prompt, computed only at target
positions; with ``output_vocab="targets"`` (the ``cpu`` profile) the softmax runs over the
tokens that occur in training targets plus the new tokens instead of the whole vocabulary —
exact for those tokens' relative scores, and what keeps a 49k-token head cheap on a CPU.

The run folder holds ``config.json`` (the resolved config), ``checkpoint/`` (weights, optimizer,
step, random state; replaced atomically), ``log.jsonl`` (loss and tokens/s per logging step).
An interrupted run resumes from its checkpoint with the same config.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import random
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Protocol, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from accelerate import Accelerator
from accelerate.utils import broadcast

from crslib import report
from crslib.config import TrainConfig
from crslib.data import Catalog, Dialog
from crslib.format import align, packing
from crslib.ids.semantic_ids import SemanticIDs
from crslib.pretrained import process_state


@dataclass
class TrainState:
    step: int = 0
    epoch: int = 0
    tokens: int = 0
    seconds: float = 0.0
    losses: list = field(default_factory=list)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


# ----------------------------------------------------------------------------- data
def build_windows(dialogs: Sequence[Dialog], sids: SemanticIDs, tokenizer, fmt: str,
                  max_context_tokens: int) -> list[packing.Packed]:
    return [w for d in dialogs
            for w in packing.pack_dialog(d, sids, tokenizer, fmt, max_context_tokens)]


def make_batches(windows: Sequence[packing.Packed], batch_tokens: int, seed: int
                 ) -> list[list[int]]:
    """Indices of windows grouped by similar length so padding is small; batch order shuffled.

    A batch holds as many windows as fit ``batch_tokens`` padded tokens (at least one).
    """
    rng = random.Random(seed)
    order = sorted(range(len(windows)), key=lambda i: (len(windows[i]), rng.random()))
    batches, cur, longest = [], [], 0
    for i in order:
        n = len(windows[i])
        if cur and max(longest, n) * (len(cur) + 1) > batch_tokens:
            batches.append(cur)
            cur, longest = [], 0
        cur.append(i)
        longest = max(longest, n)
    if cur:
        batches.append(cur)
    rng.shuffle(batches)
    return batches


def target_vocab(windows: Sequence[packing.Packed], new_ids: Sequence[int], eos: int | None
                 ) -> list[int]:
    """Token ids the restricted head scores: every training target token and the new tokens."""
    ids = {t for w in windows for t in w.tgt} | set(new_ids)
    if eos is not None:
        ids.add(eos)
    return sorted(ids)


# ----------------------------------------------------------------------------- model parts
class Embeddings(torch.nn.Module):
    """The model's input and output embeddings with only the new tokens' rows trainable.

    ``rows``: ids of the rows that train (the added tokens, contiguous at the end of the
    vocabulary), or None for all rows (the "all embeddings trained" ablation). The frozen matrix
    stays in the model and is never copied; the trainable rows live here (input side, and output
    side when the head is not tied) and are written back by :meth:`merge`.
    """

    def __init__(self, model, rows: Sequence[int] | None):
        super().__init__()
        self.model = [model]  # a plain reference, not a submodule
        inp = model.get_input_embeddings().weight
        head = model.get_output_embeddings()
        out = head.weight if head is not None else inp
        self.tied = out.data_ptr() == inp.data_ptr()
        self.inp_rows = self.out_rows = None
        if rows is None:
            self.first = None
            inp.requires_grad_(True)
            out.requires_grad_(True)
            return
        rows = sorted(rows)
        if rows != list(range(rows[0], rows[0] + len(rows))) or rows[-1] != inp.shape[0] - 1:
            raise ValueError("the trainable rows must be the last rows of the vocabulary")
        self.first = rows[0]
        inp.requires_grad_(False)
        out.requires_grad_(False)
        # float32 even under a bfloat16 backbone: AdamW updates of these rows need the precision
        self.inp_rows = torch.nn.Parameter(inp.data[self.first:].float().clone())
        if not self.tied:
            self.out_rows = torch.nn.Parameter(out.data[self.first:].float().clone())

    def _weights(self):
        m = self.model[0]
        inp = m.get_input_embeddings().weight
        head = m.get_output_embeddings()
        return inp, (head.weight if head is not None else inp)

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        inp, _ = self._weights()
        if self.first is None:
            return F.embedding(ids, inp)
        new = ids >= self.first
        x = F.embedding(ids.clamp(max=self.first - 1), inp)
        y = F.embedding((ids - self.first).clamp(min=0), self.inp_rows).to(x.dtype)
        return torch.where(new[..., None], y, x)

    def logits(self, h: torch.Tensor, head_ids: torch.Tensor | None = None) -> torch.Tensor:
        """Logits over ``head_ids`` (all tokens when None), in that order."""
        _, out = self._weights()
        if self.first is None:
            return h @ (out if head_ids is None else out[head_ids]).T
        new_w = (self.inp_rows if self.tied else self.out_rows).to(h.dtype)
        if head_ids is None:
            return torch.cat([h @ out[:self.first].T, h @ new_w.T], dim=-1)
        old = head_ids[head_ids < self.first]
        new = head_ids[head_ids >= self.first] - self.first
        return torch.cat([h @ out[old].T, h @ new_w[new].T], dim=-1)  # head_ids is sorted

    @torch.no_grad()
    def merge(self) -> None:
        """Write the trained rows back into the model's embedding matrices."""
        if self.first is None:
            return
        inp, out = self._weights()
        inp[self.first:] = self.inp_rows.data
        if not self.tied:
            out[self.first:] = self.out_rows.data


def packed_loss(model, emb: Embeddings, batch: dict, head_ids: torch.Tensor | None,
                new_token_weight: float = 1.0) -> tuple[torch.Tensor, int]:
    """Mean target-token cross-entropy of a collated batch, and the number of target tokens.

    ``head_ids`` (sorted) restricts the softmax to those tokens; None uses the whole vocabulary.
    ``new_token_weight``: targets that are added tokens (``emb.first`` and above: mode, SID and
    boundary tokens) count this many times in the weighted mean (1.0: the plain mean).
    """
    device = next(model.parameters()).device
    x = emb.embed(batch["input_ids"].to(device))
    h = model.get_decoder()(inputs_embeds=x, position_ids=batch["position_ids"].to(device),
                            attention_mask=batch["attention_mask"].to(device)).last_hidden_state
    hs = h[batch["loss_rows"].to(device), batch["loss_src"].to(device)]
    tgt = batch["loss_tgt"].to(device)
    if head_ids is not None:
        head_ids = head_ids.to(device)
        tgt = torch.searchsorted(head_ids, tgt)
        if (tgt >= len(head_ids)).any() or (head_ids[tgt.clamp(max=len(head_ids) - 1)]
                                             != batch["loss_tgt"].to(device)).any():
            raise ValueError("a target token is outside the restricted output vocabulary")
    raw_tgt = batch["loss_tgt"].to(device)
    ce = F.cross_entropy(emb.logits(hs, head_ids).float(), tgt, reduction="none")
    if new_token_weight == 1.0 or emb.first is None:
        return ce.mean(), int(len(tgt))
    w = torch.where(raw_tgt >= emb.first, new_token_weight, 1.0)
    return (ce * w).sum() / w.sum(), int(len(tgt))


# ----------------------------------------------------------------------------- objectives
class Objective(Protocol):
    """What one kind of run minimises; :func:`fit` owns the rest (optimizer, schedule,
    micro-batches, processes, checkpoints, log). A step is a list of indices into ``windows``;
    its loss is the weighted mean over all the step's targets. RecBole's ``calculate_loss`` and
    the ``compute_loss`` hook of HF's ``Trainer`` play this part there."""
    windows: Sequence[packing.Packed]  # the training units, batched by length
    head_ids: torch.Tensor | None      # the restricted output head (the copy warm-up uses it)

    def weight(self, idx: Sequence[int]) -> float:
        """The total weight of these windows' targets in a step's weighted mean."""

    def count(self, idx: Sequence[int]) -> int:
        """The training instances (examples) in these windows, for the examples/s figure."""

    def batch(self, idx: Sequence[int]) -> dict[str, torch.Tensor]:
        """These windows collated: the tensors the loss reads."""

    def loss(self, net, emb: "Embeddings", batch: dict) -> torch.Tensor:
        """The weighted mean loss of one collated batch."""


@dataclass
class TokenObjective:
    """GCRS and its ablations: next-token cross-entropy at the target positions of tree-packed
    windows (:func:`packed_loss`), over ``head_ids`` (sorted) or the whole vocabulary; targets
    from ``first_new`` on (the added tokens) weigh ``new_token_weight``."""
    windows: Sequence[packing.Packed]
    head_ids: torch.Tensor | None
    pad_id: int
    first_new: int | None = None
    new_token_weight: float = 1.0

    def weight(self, idx: Sequence[int]) -> float:
        tgt = [t for i in idx for t in self.windows[i].tgt]
        if self.new_token_weight == 1.0 or self.first_new is None:
            return float(len(tgt))
        n_new = sum(t >= self.first_new for t in tgt)
        return float(len(tgt) - n_new + self.new_token_weight * n_new)

    def count(self, idx: Sequence[int]) -> int:
        return sum(self.windows[i].n_branches for i in idx)

    def batch(self, idx: Sequence[int]) -> dict[str, torch.Tensor]:
        return packing.collate([self.windows[i] for i in idx], self.pad_id)

    def loss(self, net, emb: "Embeddings", batch: dict) -> torch.Tensor:
        return packed_loss(net, emb, batch, self.head_ids, self.new_token_weight)[0]


class Trainable(torch.nn.Module):
    """``net`` (the model, or the decoupled recommender) and the trainable embedding rows as
    one module whose forward is the objective's loss: what ``accelerate`` places on the device
    and, with several processes, wraps for data parallelism (its gradients are all-reduced)."""

    def __init__(self, net, emb: "Embeddings", objective: Objective):
        super().__init__()
        self.net, self.emb, self.objective = net, emb, objective

    def forward(self, batch: dict) -> torch.Tensor:
        return self.objective.loss(self.net, self.emb, batch)


def split_step(idx: Sequence[int], lengths: Sequence[int], max_tokens: int | None,
               parts: int = 1) -> list[list[int]]:
    """A step's windows ``idx`` in groups: consecutive groups of at most ``max_tokens`` padded
    tokens each (a longer window is a group of its own; None: one group), then the largest
    group halved until there are ``parts`` groups (one per process) or none can be split."""
    groups, cur, longest = [], [], 0
    for i in idx:
        n = lengths[i]
        if cur and max_tokens and max(longest, n) * (len(cur) + 1) > max_tokens:
            groups.append(cur)
            cur, longest = [], 0
        cur.append(i)
        longest = max(longest, n)
    groups = groups + [cur] if cur else groups
    while len(groups) < parts:
        k = max(range(len(groups)), key=lambda g: len(groups[g]))
        if len(groups[k]) < 2:
            break
        half = len(groups[k]) // 2
        groups[k:k + 1] = [groups[k][:half], groups[k][half:]]
    return groups


def step_backward(acc, trainable: torch.nn.Module, objective: Objective, idx: Sequence[int],
                  cfg: TrainConfig) -> float:
    """Accumulate the gradient of one optimizer step's loss (the weighted mean over all its
    targets) and return the loss. The step's windows go through the model in groups
    (:func:`split_step`): micro-batches of at most ``cfg.micro_batch_tokens`` padded tokens,
    shared out over the ``acc.num_processes`` processes. Each group's loss is scaled by its
    share of the step's target weight (and by the process count, which the all-reduce's mean
    divides out), so every split gives the gradient of one pass over the whole step: the same
    model on one process or several, with activation memory bounded by the micro-batch (a 135M
    backbone at 4,096 tokens per step needs ~14 GB in one pass on a CPU, ~4 GB in 1,024-token
    micro-batches). A process left without a group runs one at weight 0, as data parallelism
    needs every process to take part in each backward pass."""
    lengths = [len(w) for w in objective.windows]
    groups = split_step(idx, lengths, cfg.micro_batch_tokens, acc.num_processes)
    weights = [objective.weight(g) for g in groups]
    total = sum(weights)
    mine = [(groups[k], weights[k]) for k in range(acc.process_index, len(groups),
                                                   acc.num_processes)] or [(groups[0], 0.0)]
    autocast = torch.autocast(acc.device.type, dtype=torch.bfloat16,
                              enabled=cfg.mixed_precision == "bf16")
    value = 0.0
    for j, (group, w) in enumerate(mine):
        sync = acc.no_sync(trainable) if j < len(mine) - 1 else contextlib.nullcontext()
        with sync:
            with autocast:
                scaled = trainable(objective.batch(group)) * (w / total)
            acc.backward(scaled * acc.num_processes)
        value += float(scaled.detach())
    if acc.num_processes > 1:
        value = float(acc.reduce(torch.tensor(value, device=acc.device), "sum"))
    return value


# ----------------------------------------------------------------------------- copy warm-up
def copy_batch(pool: torch.Tensor, new_pool: torch.Tensor, n_seq: int, half: int,
               gen: torch.Generator) -> torch.Tensor:
    """``n_seq`` sequences of ``half`` random tokens written twice; each token is drawn from
    ``new_pool`` (the added tokens) or ``pool`` (words) with equal probability."""
    words = pool[torch.randint(len(pool), (n_seq, half), generator=gen)]
    new = new_pool[torch.randint(len(new_pool), (n_seq, half), generator=gen)]
    first = torch.where(torch.rand(n_seq, half, generator=gen) < 0.5, new, words)
    return torch.cat([first, first], dim=1)


def copy_warmup(model, emb: "Embeddings", head_ids: torch.Tensor | None, new_ids: Sequence[int],
                cfg: TrainConfig, half: int = 64) -> dict:
    """Train ``cfg.copy_warmup_steps`` steps on the induction task: random token strings
    written twice, loss on the second copy, which is predictable only by finding the earlier
    occurrence of the current token and copying its successor (an induction head, Olsson et al.
    2022). A small model trained from scratch on dialogs does not find this circuit within a CPU
    budget, yet GCRS needs it: a context mention ``<BOI><a_3><b_7>…`` is recommended again by
    copying it. The paper's pretrained backbones bring the circuit with them.

    Half the tokens are words (from ``head_ids``, or the whole vocabulary), half are the added
    tokens; the loss is taken where the next token is an added one, over the added tokens only
    (cheap: a few hundred output rows). A fresh AdamW at ``cfg.lr`` after a short ramp."""
    device = next(model.parameters()).device
    vocab = model.get_input_embeddings().weight.shape[0]
    new_pool = torch.as_tensor(sorted(new_ids))
    pool = head_ids if head_ids is not None else torch.arange(vocab)
    pool = pool[~torch.isin(pool, new_pool)]
    params = [p for p in model.parameters() if p.requires_grad] + [
        p for p in (emb.inp_rows, emb.out_rows) if p is not None]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    ramp = max(1, min(cfg.warmup_steps, cfg.copy_warmup_steps // 4))
    gen = torch.Generator().manual_seed(cfg.seed)
    n_seq = max(1, cfg.batch_tokens // (2 * half))
    position = torch.arange(2 * half, device=device).expand(n_seq, -1)
    head = new_pool.to(device)
    losses, t0 = [], time.perf_counter()
    for step in range(cfg.copy_warmup_steps):
        for g in opt.param_groups:
            g["lr"] = cfg.lr * min(1.0, (step + 1) / ramp)
        ids = copy_batch(pool, new_pool, n_seq, half, gen).to(device)
        h = model.get_decoder()(inputs_embeds=emb.embed(ids), position_ids=position).last_hidden_state
        tgt = ids[:, half + 1:]                  # the second copy, after its first token
        keep = torch.isin(tgt, head)             # predicted where the next token is an added one
        logits = emb.logits(h[:, half:-1][keep], head)
        loss = F.cross_entropy(logits.float(), torch.searchsorted(head, tgt[keep].contiguous()))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        opt.step()
        losses.append(float(loss.detach()))
    k = max(1, min(20, len(losses) // 5))
    return {"steps": cfg.copy_warmup_steps, "seconds": round(time.perf_counter() - t0, 1),
            "first_loss": float(np.mean(losses[:k])), "final_loss": float(np.mean(losses[-k:])),
            "chance_loss": math.log(len(head)),
            "curve": [round(float(np.mean(losses[i:i + 25])), 4) for i in range(0, len(losses), 25)]}


def copy_warmup_once(out: Path, model, emb: "Embeddings", head_ids: torch.Tensor | None,
                     new_ids: Sequence[int], cfg: TrainConfig, state: "TrainState",
                     write: bool = True) -> dict | None:
    """:func:`copy_warmup` at the start of a fresh run (a resumed run has it in its weights);
    its seconds count in the run's ``seconds``. Returns the warm-up record kept in
    ``out/copy_warmup.json`` (also for a resumed run), or None without a warm-up."""
    path = out / "copy_warmup.json"
    if cfg.copy_warmup_steps and state.step == 0:
        warm = copy_warmup(model, emb, head_ids, new_ids, cfg)
        state.seconds = warm["seconds"]
        if not write:  # another process writes the record
            return warm
        path.write_text(json.dumps(warm))
    return json.loads(path.read_text()) if path.is_file() else None


# ----------------------------------------------------------------------------- loop
def _lr_lambda(cfg: TrainConfig, total: int):
    """Linear warm-up, then cosine decay to 0 over the ``total`` steps. A function of the step
    alone: a busy machine trains the same model more slowly, never a different one."""
    def f(step: int) -> float:
        if step < cfg.warmup_steps:
            return (step + 1) / max(1, cfg.warmup_steps)
        progress = (step - cfg.warmup_steps) / max(1, total - cfg.warmup_steps)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return f


class TrainingTimeLimit(RuntimeError):
    """A run passed its ``time_limit_minutes`` safety stop: its checkpoint is saved, it is not
    finished, and running it again resumes it."""


def check_time_limit(cfg: TrainConfig, state: "TrainState", out: Path, total: int,
                     over: bool) -> None:
    """Raise :class:`TrainingTimeLimit` (naming the run and the steps done) when the safety
    stop ``time_limit_minutes`` was passed (``over``, decided by the main process) before the
    last step; call it after saving a checkpoint."""
    if over and state.step < total:
        raise TrainingTimeLimit(
            f"{out}: stopped by the safety limit time_limit_minutes={cfg.time_limit_minutes} "
            f"after {state.step} of {total} steps ({state.seconds:.0f} s); the checkpoint is "
            "saved and the run is NOT finished: run it again to resume, or raise the limit")


_FLUSH_DEPTH = 0


@contextlib.contextmanager
def flush_denormals():
    """Flush denormal floats to zero inside (a context manager and a decorator; nests).

    Once the copy warm-up has sharpened attention, softmax probabilities and their gradients
    fall into the denormal range (below ~1e-38), where x86 arithmetic is many times slower: a
    dialog training step of the compact `cpu` model took twice as long after the warm-up as
    before it, and the same after it with this on (`benchmarks/bench_train.py`). Values that
    small are set to zero, which changes no loss or score measurably. Applies to the calling
    thread (the `cpu` profile runs one thread per process); restores the default (off) on exit.
    """
    global _FLUSH_DEPTH
    if _FLUSH_DEPTH == 0:
        torch.set_flush_denormal(True)
    _FLUSH_DEPTH += 1
    try:
        yield
    finally:
        _FLUSH_DEPTH -= 1
        if _FLUSH_DEPTH == 0:
            torch.set_flush_denormal(False)


@flush_denormals()
def train(model, tokenizer, sids: SemanticIDs, dialogs: Sequence[Dialog], cfg: TrainConfig,
          out: str | os.PathLike, new_ids: Sequence[int], extra_config: dict | None = None,
          progress: bool = True, on_snapshot=None, catalog: Catalog | None = None) -> dict:
    """Train ``model`` (GCRS, format ``cfg.fmt``) in place with :func:`fit`; write the run
    folder ``out``; return a summary dict.

    ``new_ids``: ids of the added tokens (their rows train). Resumes from ``out/checkpoint``
    when it exists and its config matches. ``on_snapshot``: see :func:`fit`. ``catalog``: the
    items whose alignment instances ``cfg.align`` mixes in (:mod:`crslib.format.align`).
    """
    out = Path(out)
    with num_threads(cfg.threads):
        windows = build_windows(dialogs, sids, tokenizer, cfg.fmt, cfg.max_context_tokens)
        for aux in cfg.aux_formats:
            if aux == cfg.fmt:
                raise ValueError(f"aux_formats repeats the main format {aux!r}")
            windows += build_windows(dialogs, sids, tokenizer, aux, cfg.max_context_tokens)
        if not windows:
            raise ValueError("no training instances: the dialogs have no assistant turns")
        n_align = 0
        if cfg.align is not None:
            if catalog is None:
                raise ValueError("train.align needs the catalog: train(..., catalog=...)")
            extra = align.mix(align.pool(catalog, sids, cfg.align, cfg.fmt),
                              sum(w.n_branches for w in windows), cfg.align)
            windows += packing.pack_examples(extra, tokenizer, cfg.max_context_tokens)
            n_align = len(extra)
        head_ids = None
        if cfg.output_vocab == "targets":
            head_ids = torch.tensor(target_vocab(windows, new_ids, tokenizer.eos_token_id))
            if is_main_process():
                out.mkdir(parents=True, exist_ok=True)
                (out / "output_vocab.json").write_text(json.dumps(head_ids.tolist()))
        emb = Embeddings(model, None if cfg.embeddings == "all" else new_ids)
        objective = TokenObjective(windows, head_ids, tokenizer.pad_token_id or 0, emb.first,
                                   cfg.new_token_loss_weight)
        summary = fit(model, emb, objective, cfg, out, new_ids, extra_config, progress,
                      on_snapshot=on_snapshot)
        return {**summary, "align_instances": n_align} if cfg.align is not None else summary


@contextlib.contextmanager
def num_threads(n: int | None):
    """Run the block with ``n`` torch threads (None: unchanged), restoring the count after. On
    a CPU the thread count is part of what makes a run repeatable: reductions split over more
    threads add in another order, so the ``cpu`` and ``smoke`` configs fix ``threads: 1``."""
    before = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def is_main_process() -> bool:
    """Is this the process that writes (the only one, or rank 0 of ``accelerate launch``)?"""
    return process_state().is_main_process


@flush_denormals()
def fit(net, emb: Embeddings, objective: Objective, cfg: TrainConfig, out: str | os.PathLike,
        new_ids: Sequence[int], extra_config: dict | None = None, progress: bool = True,
        desc: str = "train", on_snapshot=None) -> dict:
    """The training loop of every run — GCRS, its ablations and the decoupled baseline differ
    only in their :class:`Objective`. Trains ``net`` and ``emb`` in place, writes the work
    folder ``out`` and returns a summary.

    The loop runs through ``accelerate``: the model is on the process's device (put there by
    :func:`crslib.training.runbase.build_model`), and under ``accelerate launch`` each optimizer step's
    windows are shared out over the processes (:func:`step_backward`), so N processes train the
    model one process would, N times faster; only the main process writes. ``cfg.mixed_precision="bf16"`` autocasts the forward pass.
    AdamW (the new embedding rows at ``new_rows_lr``), linear warm-up then cosine decay over
    the step budget, gradient clipping; a checkpoint every ``checkpoint_every`` steps from which
    an interrupted run resumes, with the same result as an uninterrupted one.

    ``on_snapshot(step, state)``, called by the main process every ``cfg.snapshot_every`` steps
    after the trained rows are written into the model (:meth:`Embeddings.merge`: training
    never reads those rows of the model's matrices, so this changes nothing in the run), saves
    the model as it is at that step (a learning curve, :func:`crslib.training.run.train_run`).
    """
    with num_threads(cfg.threads):
        return _fit(net, emb, objective, cfg, Path(out), new_ids, extra_config, progress, desc,
                    on_snapshot)


def _fit(net, emb, objective: Objective, cfg: TrainConfig, out: Path, new_ids, extra_config,
         progress: bool, desc: str, on_snapshot=None) -> dict:
    from tqdm.auto import tqdm

    acc = Accelerator()
    main = acc.is_main_process
    out.mkdir(parents=True, exist_ok=True)
    seed_everything(cfg.seed)
    full_config = {"train": asdict(cfg), **(extra_config or {})}
    check_resume_config(out, full_config)
    if cfg.activation_checkpointing:
        emb.model[0].gradient_checkpointing_enable(
            gradient_checkpointing_kwargs={"use_reentrant": False})
    # already on the process's device (runbase.build_model: a 4-bit model is loaded there
    # and cannot be moved), so accelerate only wraps it for data parallelism
    trainable = acc.prepare_model(Trainable(net, emb, objective), device_placement=False)
    body = [p for p in net.parameters() if p.requires_grad]
    rows = [p for p in (emb.inp_rows, emb.out_rows) if p is not None]
    groups = [{"params": body, "lr": cfg.lr}]
    if rows:
        groups.append({"params": rows, "lr": cfg.new_rows_lr or cfg.lr})
    opt = torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
    windows = objective.windows
    per_epoch = len(make_batches(windows, cfg.batch_tokens, cfg.seed))
    total = cfg.max_steps or max(1, int(math.ceil(cfg.epochs * per_epoch)))
    state = TrainState()
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(cfg, total))
    opt = acc.prepare_optimizer(opt)  # the schedule is stepped by hand: once per global step
    _load_checkpoint(out, net, emb, opt, sched, state)
    n_inst = objective.count(range(len(windows)))
    if main:
        write_config(out, {**full_config, "steps_total": total, "steps_per_epoch": per_epoch,
                           "windows": len(windows), "instances": n_inst})
    trainable.train()
    warm = copy_warmup_once(out, emb.model[0], emb, objective.head_ids, new_ids, cfg, state, main)
    bar = tqdm(total=total, initial=state.step, disable=not (progress and main), desc=desc)
    t_start = time.perf_counter() - state.seconds
    examples, seconds0 = 0, state.seconds  # examples/s counts this session (resume-safe)
    log = (out / "log.jsonl").open("a") if main else None
    stop = False
    while state.step < total and not stop:
        batches = make_batches(windows, cfg.batch_tokens, cfg.seed + state.epoch)
        skip = state.step - state.epoch * per_epoch  # resume inside an epoch
        for b in batches[max(0, skip):]:
            opt.zero_grad(set_to_none=True)
            loss = step_backward(acc, trainable, objective, b, cfg)
            acc.clip_grad_norm_(body + rows, cfg.grad_clip)
            opt.step()
            sched.step()
            state.step += 1
            state.tokens += int(sum(len(windows[i]) for i in b))
            examples += objective.count(b)
            state.seconds = time.perf_counter() - t_start
            state.losses.append(loss)
            bar.update(1)
            if main and (state.step % cfg.log_every == 0 or state.step == total):
                rec = {"step": state.step, "epoch": state.epoch, "loss": float(np.mean(
                    state.losses[-cfg.log_every:])), "tokens_per_s": state.tokens / state.seconds,
                    "examples_per_s": examples / max(state.seconds - seconds0, 1e-9),
                    "lr": sched.get_last_lr()[0], "seconds": round(state.seconds, 1)}
                log.write(json.dumps(rec) + "\n")
                log.flush()
                bar.set_postfix(loss=f"{rec['loss']:.3f}", tok_s=f"{rec['tokens_per_s']:.0f}")
            if main and on_snapshot and cfg.snapshot_every and \
                    state.step % cfg.snapshot_every == 0:
                emb.merge()
                on_snapshot(state.step, {"step": state.step, "tokens": state.tokens,
                                         "epochs": state.step / per_epoch,
                                         "seconds": round(state.seconds, 1)})
            over = _main_decides(acc, bool(cfg.time_limit_minutes and
                                           state.seconds > 60 * cfg.time_limit_minutes))
            if state.step % cfg.checkpoint_every == 0 or (over and state.step < total):
                if main:
                    _save_checkpoint(out, net, emb, opt, sched, state)
                acc.wait_for_everyone()
                check_time_limit(cfg, state, out, total, over)
            if state.step >= total:
                stop = True
                break
        else:
            state.epoch += 1
    bar.close()
    if log:
        log.close()
    if main:
        _save_checkpoint(out, net, emb, opt, sched, state)
    acc.wait_for_everyone()
    emb.merge()
    net.eval()
    loop_s = state.seconds - (warm["seconds"] if warm else 0.0)
    return {"steps": state.step, "epochs": state.step / per_epoch, "tokens": state.tokens,
            "seconds": round(state.seconds, 1), "copy_warmup": warm,
            "tokens_per_s": state.tokens / max(loop_s, 1e-9),
            "examples_per_s": examples / max(state.seconds - seconds0, 1e-9),
            "final_loss": float(np.mean(state.losses[-cfg.log_every:])) if state.losses else None,
            "windows": len(windows), "instances": n_inst, "steps_total": total,
            "processes": acc.num_processes, "device": str(acc.device)}


def _main_decides(acc, flag: bool) -> bool:
    """``flag`` as the main process sees it, on every process (a decision that depends on the
    clock must be the same everywhere, or the processes stop at different steps)."""
    if acc.num_processes == 1:
        return flag
    return bool(broadcast(torch.tensor([int(flag)], device=acc.device))[0])


# ----------------------------------------------------------------------------- persistence
RUNTIME_KEYS = TrainConfig.RUNTIME  # how a run is executed, not what it trains


def write_config(out: Path, config: dict) -> None:
    report.write_text(json.dumps(config, indent=1, default=str), out / "config.json")


def check_resume_config(out: Path, config: dict) -> None:
    """Refuse to resume the checkpoint in ``out`` under another training config. A key the
    checkpoint's config lacks counts as equal when the new value is the default (a field added
    to :class:`TrainConfig` later, set to what the old code did)."""
    path = out / "config.json"
    if (out / "checkpoint").is_dir() and path.is_file():
        old = json.loads(path.read_text())
        old_train = {k: v for k, v in old.get("train", {}).items() if k not in RUNTIME_KEYS}
        defaults = json.loads(json.dumps(asdict(TrainConfig()), default=str))
        new_train = {k: v for k, v in json.loads(json.dumps(config["train"], default=str)).items()
                     if k not in RUNTIME_KEYS  # as written (tuples become lists)
                     and (k in old_train or v != defaults.get(k))}
        if old_train != new_train:
            raise ValueError(f"{out}: holds a checkpoint of a different config; use a new --out "
                             "or delete the folder")


def _save_checkpoint(out: Path, model, emb, opt, sched, state: TrainState) -> None:
    tmp = out / "checkpoint.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    trainable = {n: p.detach().cpu() for n, p in model.named_parameters() if p.requires_grad}
    rng = {"torch": torch.get_rng_state(), "python": random.getstate(),
           "numpy": np.random.get_state()}
    if torch.cuda.is_available():  # dropout on a GPU draws from its own generator
        rng["cuda"] = torch.cuda.get_rng_state_all()
    torch.save({"trainable": trainable, "emb": {k: v.cpu() for k, v in emb.state_dict().items()},
                "opt": opt.state_dict(), "sched": sched.state_dict(), "state": asdict(state),
                "rng": rng}, tmp / "state.pt")
    final = out / "checkpoint"
    old = out / "checkpoint.old"
    if final.exists():
        os.replace(final, old)
    os.replace(tmp, final)
    if old.exists():
        shutil.rmtree(old)


def _load_checkpoint(out: Path, model, emb, opt, sched, state: TrainState) -> None:
    path = out / "checkpoint" / "state.pt"
    if not path.is_file():
        return
    ck = torch.load(path, weights_only=False, map_location="cpu")
    params = dict(model.named_parameters())
    with torch.no_grad():
        for n, v in ck["trainable"].items():
            params[n].copy_(v)
    emb.load_state_dict(ck["emb"])
    opt.load_state_dict(ck["opt"])
    sched.load_state_dict(ck["sched"])
    for k, v in ck["state"].items():
        setattr(state, k, v)
    torch.set_rng_state(ck["rng"]["torch"])
    random.setstate(ck["rng"]["python"])
    np.random.set_state(ck["rng"]["numpy"])
    if "cuda" in ck["rng"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(ck["rng"]["cuda"])
