"""What a training step minimises (:class:`Objective`; GCRS: :class:`TokenObjective`) and one
step's backward pass, split into micro-batches under a token budget."""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Protocol, Sequence

import torch

from crslib.config import TrainConfig
from crslib.format import packing
from crslib.training.newrows import Embeddings, packed_loss


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
