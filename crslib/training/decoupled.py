"""The ``decoupled`` baseline: the backbone reads the context, a separate classifier recommends.

This is the design the paper argues against (UniCRS-style systems): the same backbone and
tokenizer as GCRS (the GCRS tokens added, so context mentions are SIDs exactly as GCRS sees
them) encodes the prompt ``… Assistant:``, and a linear head over every catalog item
(``Linear(hidden, n_items)``, row k = ``sids.item_ids[k]``) scores the items from the hidden
state of the last prompt token. The response would come from a separate generator; this
baseline only ranks.

Training reuses the tree-packed windows of the ``sid`` format (:mod:`crslib.format.packing`) built
from the recommendation instances only, so one dialog window is one forward pass. For every branch
the hidden state at its ``src`` — the last prompt token, which sees exactly the prompt — is
classified; its label is the item spelled by the branch's SID tokens (read back with
:func:`crslib.format.serialize.parse`). Loss: cross-entropy over all items. What trains: the
transformer, the head, and the new tokens' embedding rows (``embeddings="new"``, as GCRS;
``"all"``: every row). The loss is :class:`ItemHeadObjective`; the loop is GCRS's own,
:func:`crslib.training.train.fit` (optimizer, schedule, processes, checkpoints). Of
:class:`crslib.config.TrainConfig`, ``output_vocab`` and
``new_token_loss_weight`` have no effect (there is no token head). An interrupted run resumes
from ``OUT/work/checkpoint`` with the same config, as GCRS runs do.

Run folder: a GCRS run folder (:mod:`crslib.training.run`: ``config.json``, ``sids.json``,
``model/``, ``train_summary.json``, ``log.jsonl``) plus ``head.safetensors`` (``weight``, ``bias``);
:func:`load_decoupled` reloads it in one call.

Ranking (:mod:`crslib.evaluation.evaluate`): every catalog item is scored exactly, so ``community``
and ``dedup`` use the full ranking and ``paper`` its top 50 (a gold item ranked lower counts as a
miss, as outside a width-50 beam). Equal scores are ordered by catalog order.
"""
from __future__ import annotations

import dataclasses
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F

from crslib import config, report
from crslib.decoding import batching
from crslib.format import packing, serialize
from crslib.ids.semantic_ids import SemanticIDs
from crslib.metrics import PROTOCOLS
from crslib.training import model as backbones, newrows, runbase, runtime, train

PAPER_TOP_K = 50  # length of the ranked list under the paper protocol


class DecoupledRecommender(torch.nn.Module):
    """``lm`` (a causal LM with the GCRS tokens; only its decoder is used) + an item head."""

    def __init__(self, lm, tokenizer, item_ids: Sequence[str], max_context_tokens: int = 768,
                 seed: int = 0, batch_size: int = 16):
        super().__init__()
        self.lm = lm
        self.tokenizer = tokenizer
        self.item_ids = list(item_ids)
        self.max_context_tokens = max_context_tokens
        self.batch_size = batch_size
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            self.head = torch.nn.Linear(lm.config.hidden_size, len(self.item_ids))

    def hidden(self, **inputs) -> torch.Tensor:
        """Last hidden states of the decoder (``input_ids`` or ``inputs_embeds``, masks…)."""
        return self.lm.get_decoder()(**inputs).last_hidden_state

    def prompt_states(self, prompts: Sequence[Sequence[int]]) -> torch.Tensor:
        """Hidden state of the last token of each prompt, one right-padded batch: positions
        start at 0 and real tokens never see the padding after them."""
        device = self.head.weight.device
        lens = torch.tensor([len(p) for p in prompts])
        ids, mask = batching.pad_batch(prompts, self.tokenizer.pad_token_id or 0, device, "right")
        h = self.hidden(input_ids=ids, attention_mask=mask)
        return h[torch.arange(len(prompts)), (lens - 1).to(device)]

    @torch.no_grad()
    def scores(self, prompts: Sequence[Sequence[int]], batch_size: int = 16) -> torch.Tensor:
        """``(n, n_items)`` item scores; prompts (token ids ending ``Assistant:``) are batched
        by length."""
        order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
        out = torch.empty(len(prompts), len(self.item_ids))
        for s in range(0, len(order), batch_size):
            idx = order[s:s + batch_size]
            out[idx] = self.head(self.prompt_states([prompts[i] for i in idx])).float().cpu()
        return out

    def ranks(self, cases: Sequence[serialize.Example], protocol: str = "paper",
              batch_size: int | None = None) -> list[int | None]:
        """1-based rank of each case's gold item among all items (``paper``: None below the
        top 50). Prompts are the cases' own (:func:`crslib.format.serialize.prompt_ids`)."""
        if protocol not in PROTOCOLS:
            raise ValueError(f"unknown protocol {protocol!r}; choose from {PROTOCOLS}")
        index = {iid: k for k, iid in enumerate(self.item_ids)}
        out = []
        for s in range(0, len(cases), 256):
            chunk = cases[s:s + 256]
            sc = self.scores([serialize.prompt_ids(ex, self.tokenizer, self.max_context_tokens)
                              for ex in chunk], batch_size or self.batch_size)
            gold = torch.tensor([index[ex.item] for ex in chunk])
            g = sc[torch.arange(len(chunk)), gold][:, None]
            ahead = (sc > g) | ((sc == g) & (torch.arange(sc.shape[1])[None] < gold[:, None]))
            out += [r if protocol != "paper" or r <= PAPER_TOP_K else None
                    for r in (ahead.sum(1) + 1).tolist()]
        return out

    @classmethod
    def load(cls, path: str | os.PathLike, device=None) -> "DecoupledRecommender":
        """The saved run ``path`` (:func:`load_decoupled`), with its config's evaluation
        settings; :meth:`save` writes it back."""
        rec, _, sids, rc = load_decoupled(path, device)
        rec.batch_size = rc.eval.batch_size
        rec.sids, rec.config = sids, rc
        return rec

    def save(self, out: str | os.PathLike) -> None:
        """A run folder :meth:`load` reads (:func:`save_decoupled`); needs the ``sids`` and
        ``config`` of a loaded or trained run."""
        if getattr(self, "config", None) is None:
            raise ValueError("save needs the run's sids and config: load or train the run")
        save_decoupled(out, self, self.sids, self.config)

    def top(self, cases: Sequence[serialize.Example], k: int = 10) -> list[list[str]]:
        """Each case's ``k`` best-scored items (ties in catalog order, as :meth:`ranks`)."""
        out = []
        for s in range(0, len(cases), 256):
            sc = self.scores([serialize.prompt_ids(ex, self.tokenizer, self.max_context_tokens)
                              for ex in cases[s:s + 256]], self.batch_size)
            order = torch.sort(-sc, dim=1, stable=True).indices[:, :k]
            out += [[self.item_ids[j] for j in row] for row in order.tolist()]
        return out


# ----------------------------------------------------------------------------- training data
def build_windows(dialogs, sids: SemanticIDs, tokenizer, max_context_tokens: int
                  ) -> tuple[list[packing.Packed], list[list[tuple[int, int]]]]:
    """Packed ``sid``-format windows of the recommendation instances, and for each window its
    branches' ``(src, item index)``."""
    index = {iid: k for k, iid in enumerate(sids.item_ids)}
    windows, labels = [], []
    for d in dialogs:
        recs = [ex for ex in serialize.serialize(d, sids, "sid") if ex.mode == "rec"]
        for w in packing.pack_dialog(d, sids, tokenizer, "sid", max_context_tokens, recs):
            windows.append(w)
            labels.append([(src, index[item]) for src, item in branch_items(w, tokenizer, sids)])
    return windows, labels


def branch_items(w: packing.Packed, tokenizer, sids: SemanticIDs) -> list[tuple[int, str]]:
    """``(src, item)`` of each recommendation branch of ``w``: a branch starts at a loss pair
    whose source is a plain token; its targets are read back as a ``sid`` target."""
    starts = [k for k, s in enumerate(w.src) if w.branch[s] == -1]
    out = []
    for a, b in zip(starts, starts[1:] + [len(w.src)]):
        text = "".join(tokenizer.convert_ids_to_tokens(w.tgt[a:b]))
        item = serialize.parse(text, sids, "sid", eos=tokenizer.eos_token).item
        if item is not None:
            out.append((w.src[a], item))
    return out


def packed_states(rec: DecoupledRecommender, windows, labels, embed=None
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Hidden states at every branch's ``src`` of one collated batch, and the item labels."""
    objective = ItemHeadObjective(windows, labels, rec.tokenizer.pad_token_id or 0)
    batch = {k: v.to(rec.head.weight.device)
             for k, v in objective.batch(range(len(windows))).items()}
    return objective.states(rec, embed, batch), batch["y"]


@dataclass
class ItemHeadObjective:
    """The decoupled baseline's :class:`crslib.training.objectives.Objective`: cross-entropy over
    all items of the item head at each recommendation branch's ``src``, the mean over the step's
    branches. ``labels[k]``: the ``(src, item index)`` of window ``k``'s branches."""
    windows: Sequence[packing.Packed]
    labels: Sequence[Sequence[tuple[int, int]]]
    pad_id: int
    head_ids: None = None  # no token head (the copy warm-up then scores the added tokens only)

    def weight(self, idx: Sequence[int]) -> float:
        return float(self.count(idx))

    def count(self, idx: Sequence[int]) -> int:
        return sum(len(self.labels[i]) for i in idx)

    def batch(self, idx: Sequence[int]) -> dict[str, torch.Tensor]:
        idx = list(idx)
        batch = packing.collate([self.windows[i] for i in idx], self.pad_id)
        labels = [self.labels[i] for i in idx]
        batch["rows"] = torch.tensor([r for r, lab in enumerate(labels) for _ in lab],
                                     dtype=torch.long)
        batch["src"] = torch.tensor([s for lab in labels for s, _ in lab], dtype=torch.long)
        batch["y"] = torch.tensor([i for lab in labels for _, i in lab], dtype=torch.long)
        return batch

    @staticmethod
    def states(rec: DecoupledRecommender, embed, batch: dict) -> torch.Tensor:
        ids = batch["input_ids"]
        x = embed(ids) if embed is not None else rec.lm.get_input_embeddings()(ids)
        h = rec.hidden(inputs_embeds=x, position_ids=batch["position_ids"],
                       attention_mask=batch["attention_mask"])
        return h[batch["rows"], batch["src"]]

    def loss(self, rec: DecoupledRecommender, emb: newrows.Embeddings, batch: dict) -> torch.Tensor:
        device = rec.head.weight.device
        batch = {k: v.to(device) for k, v in batch.items()}
        return F.cross_entropy(rec.head(self.states(rec, emb.embed, batch)).float(), batch["y"])


# ----------------------------------------------------------------------------- training
def fit(rec: DecoupledRecommender, sids: SemanticIDs, dialogs, cfg: config.TrainConfig,
        out: str | os.PathLike, new_ids: Sequence[int], extra_config: dict | None = None,
        progress: bool = True) -> dict:
    """Train ``rec`` in place with :func:`crslib.training.train.fit` (checkpoint and ``log.jsonl``
    in ``out``); return a summary."""
    if cfg.aux_formats:
        raise ValueError("the decoupled baseline trains an item head only: aux_formats must be "
                         f"empty, not {list(cfg.aux_formats)}")
    with runtime.num_threads(cfg.threads):
        windows, labels = build_windows(dialogs, sids, rec.tokenizer, cfg.max_context_tokens)
    if not windows:
        raise ValueError("no training instances: the dialogs recommend no item with a SID")
    emb = newrows.Embeddings(rec.lm, None if cfg.embeddings == "all" else new_ids)
    objective = ItemHeadObjective(windows, labels, rec.tokenizer.pad_token_id or 0)
    return train.fit(rec, emb, objective, cfg, out, new_ids, extra_config, progress,
                     desc="train decoupled")


# ----------------------------------------------------------------------------- run folder
def train_head(t: runbase.Trainee):
    """The decoupled baseline's trainer for the one run driver
    (:func:`crslib.training.run.train_run`): an item head on the backbone, trained by
    :func:`fit` on the recommendation branches, saved by :func:`save_decoupled`."""
    rec = DecoupledRecommender(t.net, t.tokenizer, t.sids.item_ids,
                               t.rc.eval.max_context_tokens, t.rc.train.seed)
    tcfg = dataclasses.replace(t.rc.train, fmt="sid")  # the head learns from the recommendations
    summary = fit(rec, t.sids, t.dialogs, tcfg, t.work, t.new_ids, extra_config=t.rc.saved_form(),
                  progress=t.progress)

    def save():
        save_decoupled(t.out, rec, t.sids, t.rc)
        shutil.copyfile(t.work / "log.jsonl", t.out / "log.jsonl")
    return summary, save


def save_decoupled(out: str | os.PathLike, rec: DecoupledRecommender, sids: SemanticIDs,
                   rc: config.RunConfig) -> None:
    """A run folder (:func:`crslib.training.runbase.save_run`) plus ``head.safetensors``."""
    from safetensors.torch import save_file
    if list(sids.item_ids) != rec.item_ids:
        raise ValueError("the head's items are not the SIDs' items, in the same order")
    out = Path(out)
    runbase.save_run(out, rec.lm, rec.tokenizer, sids, rc)
    with report.atomic(out / "head.safetensors") as tmp:
        save_file({k: v.detach().contiguous().cpu() for k, v in rec.head.state_dict().items()},
                  str(tmp))


def load_decoupled(path: str | os.PathLike, device=None):
    """``(recommender, tokenizer, sids, config)`` of a saved decoupled run, in eval mode on
    ``device`` (default: the CPU)."""
    from safetensors.torch import load_file
    path = Path(path)
    if not (path / "head.safetensors").is_file() or not (path / "model").is_dir():
        raise FileNotFoundError(f"{path}: not a finished decoupled run (no head.safetensors "
                                "or model/)")
    rc = runbase.saved_config(path)
    sids = SemanticIDs.load(path / "sids.json")
    lm, tok = backbones.load_model(path / "model", rc, device)
    rec = DecoupledRecommender(lm, tok, sids.item_ids, rc.eval.max_context_tokens)
    rec.head.load_state_dict(load_file(str(path / "head.safetensors")))
    rec.head.to(lm.device)
    return rec.eval(), tok, sids, rc
