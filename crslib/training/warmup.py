"""The copy warm-up: before the loop, the new rows learn to copy their item's SID (a short
self-supervised task), once per run folder."""
from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from crslib.config import TrainConfig
from crslib.training.checkpoint import TrainState
from crslib.training.newrows import Embeddings


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
