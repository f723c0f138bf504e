"""Training: tree-packed dialogs (``crslib.format.packing``), loss only at target positions.

One loop for every profile and every kind of run, :func:`fit`, run through ``accelerate``
(device placement, bfloat16 autocast, data parallelism under ``accelerate launch``); what differs
between kinds of run is their loss, an :class:`~crslib.training.objectives.Objective` (GCRS:
:class:`~crslib.training.objectives.TokenObjective`; the decoupled baseline:
:class:`crslib.training.decoupled.ItemHeadObjective`). What trains (NOTES.md §4): the
transformer (LoRA adapters, or all weights for small models), and among the embeddings **only
the new tokens' rows**, input and output side (``embeddings="all"`` is the paper's "all embeddings
trained" ablation). The loss is the cross-entropy of each target token given its instance's prompt,
computed only at target positions; with ``output_vocab="targets"`` (the ``cpu`` profile) the softmax
runs over the tokens that occur in training targets plus the new tokens instead of the whole
vocabulary — exact for those tokens' relative scores, and what keeps a 49k-token head cheap on a
CPU.

The run folder holds ``config.json`` (the resolved config), ``checkpoint/`` (weights, optimizer,
step, random state; replaced atomically), ``log.jsonl`` (loss and tokens/s per logging step).
An interrupted run resumes from its checkpoint with the same config.

The loop's parts: batches (:mod:`.batches`), the new rows and the packed loss (:mod:`.newrows`),
objectives and one step's backward (:mod:`.objectives`), the copy warm-up (:mod:`.warmup`), the
run folder's config and checkpoint (:mod:`.checkpoint`), threads and seeds (:mod:`.runtime`).
"""
from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import broadcast

from crslib.config import TrainConfig
from crslib.data import Catalog, Dialog
from crslib.format import align, packing
from crslib.ids.semantic_ids import SemanticIDs
from crslib.training.batches import build_windows, make_batches, target_vocab
from crslib.training.checkpoint import (TrainState, check_resume_config, load_checkpoint,
                                        save_checkpoint, write_config)
from crslib.training.newrows import Embeddings
from crslib.training.objectives import Objective, TokenObjective, Trainable, step_backward
from crslib.training.runtime import flush_denormals, is_main_process, num_threads, seed_everything
from crslib.training.warmup import copy_warmup_once


# ----------------------------------------------------------------------------- loop
def lr_lambda(cfg: TrainConfig, total: int):
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
            ids = align.item_ids(catalog, dialogs, cfg.align)
            extra = align.mix(align.pool(catalog, sids, cfg.align, cfg.fmt, ids=ids),
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


@flush_denormals()
def fit(net, emb: Embeddings, objective: Objective, cfg: TrainConfig, out: str | os.PathLike,
        new_ids: Sequence[int], extra_config: dict | None = None, progress: bool = True,
        desc: str = "train", on_snapshot=None) -> dict:
    """The training loop of every run — GCRS, its ablations and the decoupled baseline differ
    only in their :class:`Objective`. Trains ``net`` and ``emb`` in place, writes the work
    folder ``out`` and returns a summary.

    The loop runs through ``accelerate``: the model is on the process's device (put there by
    :func:`crslib.training.runbase.build_model`), and under ``accelerate launch`` each optimizer
    step's windows are shared out over the processes (:func:`step_backward`), so N processes train
    the model one process would, N times faster; only the main process writes.
    ``cfg.mixed_precision="bf16"`` autocasts the forward pass. AdamW (the new embedding rows at
    ``new_rows_lr``), linear warm-up then cosine decay over the step budget, gradient clipping; a
    checkpoint every ``checkpoint_every`` steps from which an interrupted run resumes, with the same
    result as an uninterrupted one.

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
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(cfg, total))
    opt = acc.prepare_optimizer(opt)  # the schedule is stepped by hand: once per global step
    load_checkpoint(out, net, emb, opt, sched, state)
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
                    save_checkpoint(out, net, emb, opt, sched, state)
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
        save_checkpoint(out, net, emb, opt, sched, state)
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
