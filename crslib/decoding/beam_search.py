"""The paper's recommendation decoder (NOTES.md §5): beam search over the SID prefix tree after
``<BOI>`` (width 50), items ranked by their summed per-level log-probabilities (the item score of
:mod:`crslib.decoding.trie`). :func:`recommend` runs ``transformers``' ``generate`` with
:class:`~crslib.decoding.trie.SIDConstraint`; :func:`sid_beam_search` is the same beam written
for throughput: identical prompts once, prompts sharing a prefix packed into one row."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from transformers import LogitsProcessorList

from crslib.decoding.batching import (as_id_lists, as_vocab, cache_of, check_boi,
                                      kv_bytes_per_token, left_pad, neutral_generation_config,
                                      pinned_generation_config, prompt_batches)
from crslib.decoding.trie import Ranked, SIDConstraint, SIDVocab, level_log_probs
from crslib.ids.semantic_ids import SemanticIDs

DEFAULT_BEAM = 50


@torch.no_grad()
def recommend(model, tokenizer, prompts, sids: SemanticIDs | SIDVocab, k: int = 10, *,
              num_beams: int | None = None, constrained: bool = True, batch_size: int = 8,
              max_cache_bytes: int = 1 << 30):
    """Top-``k`` items per prompt by beam search over SIDs (width ``max(k, 50)`` by default).

    ``prompts``: one or several prompts (text or token ids) that end with ``<BOI>`` (see
    ``serialize.rec_prompt_ids``), batched up to ``batch_size`` at a time with left padding,
    fewer when the beams' KV cache would exceed ``max_cache_bytes``. Each prompt is run once
    and its KV cache copied to the beams, then ``model.generate`` decodes L tokens with
    :class:`SIDConstraint` and :func:`pinned_generation_config` (the checkpoint's generation
    config is ignored). Returns a :class:`Ranked` (a list of them
    for several prompts) of up to ``k`` distinct items; ``constrained=False`` is the ablation
    without the processor, whose outputs may be no item (None).
    """
    vocab = as_vocab(sids, tokenizer)
    beams = num_beams or max(k, DEFAULT_BEAM)
    if beams < k:
        raise ValueError(f"num_beams={beams} < k={k}")
    ids_list, single = as_id_lists(prompts, tokenizer)
    check_boi(ids_list, vocab)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    processors = LogitsProcessorList([SIDConstraint(vocab)] if constrained else [])
    config = pinned_generation_config(beams, vocab.levels, pad if pad is not None else 0)
    out: list[Ranked] = []
    row_bytes = beams * kv_bytes_per_token(model)
    for batch in prompt_batches(ids_list, batch_size, row_bytes, max_cache_bytes):
        input_ids, mask = left_pad(batch, config.pad_token_id, model.device)
        cache = None
        if input_ids.shape[1] > 1:  # run the prompt once; generate() then only sees <BOI>
            position = (mask.cumsum(-1) - 1).clamp(min=0)
            prefill = model.get_decoder()(input_ids=input_ids[:, :-1], attention_mask=mask[:, :-1],
                                          position_ids=position[:, :-1], use_cache=True)
            cache = cache_of(prefill)
            cache.batch_repeat_interleave(beams)
        with neutral_generation_config(model):
            gen = model.generate(input_ids=input_ids, attention_mask=mask, cache=cache,
                                 generation_config=config, logits_processor=processors)
        new = gen.sequences[:, input_ids.shape[1]:].view(len(input_ids), beams, -1).tolist()
        scores = gen.sequences_scores.view(len(input_ids), beams).tolist()
        for seqs, sc in zip(new, scores):
            out.append(_collect(seqs, sc, vocab, k, constrained))
    return out[0] if single else out


def _collect(seqs: list[list[int]], scores: list[float], vocab: SIDVocab, k: int,
             constrained: bool) -> Ranked:
    """Best-first beams -> up to k results. Constrained: distinct items only; beams that
    transformers seeds with a -1e9 placeholder score (they repeat items when fewer valid
    prefixes than beams exist) are dropped. Unconstrained: the top k beams, None where a beam
    is no item."""
    items, kept = [], []
    for seq, score in zip(seqs, scores):
        item = vocab.item_of_tokens(seq[:vocab.levels]) if len(seq) >= vocab.levels else None
        if constrained and (item is None or item in items or score < -1e8):
            continue
        items.append(item)
        kept.append(score)
        if len(items) == k:
            break
    return Ranked(items, kept)


@torch.no_grad()
def sid_beam_search(model, tokenizer, prompts, sids: SemanticIDs | SIDVocab, k: int = 50, *,
                    num_beams: int | None = None, batch_size: int = 16,
                    max_row_tokens: int = 2048):
    """The same constrained beam search as :func:`recommend`, written for SIDs, with the work
    of many prompts shared.

    * Identical prompts (a turn with several gold items is several cases) are decoded once.
    * Prompts are sorted, so those sharing a prefix (the turns of one dialog) sit side by side,
      and packed into rows of at most ``batch_size`` prompts and ``max_row_tokens`` tokens
      (prompt tokens + beam tokens). A row holds the token trie of its prompts: each shared
      prefix once, every token attending to its own ancestors (a 4-D mask; position = depth).
      One row is one forward pass, so nothing is padded.
    * The beams are then appended to the row's cache, level by level: the beams of every
      prompt of the row in one chunk, each attending to its own prompt and its own path only.
      The prompt's cache is never copied per beam, and only the K head rows of the level are
      applied (``generate`` copies the cache 50 times and scores the whole vocabulary).

    Scores are :func:`recommend`'s (per-level normalised, invalid tuples masked); with the same
    width both return the same items (tested), up to float rounding on exact ties.
    """
    vocab = as_vocab(sids, tokenizer)
    beams = num_beams or max(k, DEFAULT_BEAM)
    ids_list, single = as_id_lists(prompts, tokenizer)
    check_boi(ids_list, vocab)
    per_prompt = (vocab.levels - 1) * beams  # beam tokens a prompt adds to its row
    done: dict[tuple[int, ...], Ranked] = {}
    for row in pack_rows(sorted({tuple(p) for p in ids_list}), batch_size, max_row_tokens,
                          per_prompt):
        done.update(zip(row, _beam_row(model, vocab, row, beams, k)))
    out = [done[tuple(p)] for p in ids_list]
    return out[0] if single else out


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def pack_rows(prompts: list[tuple[int, ...]], max_prompts: int, max_tokens: int,
               per_prompt: int):
    """Consecutive runs of the sorted distinct ``prompts``, each within ``max_prompts`` and
    ``max_tokens`` (the trie's tokens plus ``per_prompt`` beam tokens each; a prompt that
    alone exceeds it gets a row of its own)."""
    row: list[tuple[int, ...]] = []
    tokens = 0
    for p in prompts:
        new = len(p) - (common_prefix(p, row[-1]) if row else 0) + per_prompt
        if row and (len(row) >= max_prompts or tokens + new > max_tokens):
            yield row
            row, tokens, new = [], 0, len(p) + per_prompt
        row.append(p)
        tokens += new
    if row:
        yield row


def prompt_trie(prompts: Sequence[Sequence[int]]):
    """The token trie of sorted prompts, laid out depth-first: ``(ids, depth, ancestors,
    last)`` with ``ancestors[j, i]`` true when token ``i`` is on token ``j``'s path (itself
    included) and ``last[p]`` the position of prompt ``p``'s last token. Prompt ``p``'s tokens
    are exactly the ancestors of ``last[p]``, in depth order."""
    ids: list[int] = []
    parent: list[int] = []
    path: list[int] = []
    last: list[int] = []
    prev: Sequence[int] = ()
    for p in prompts:
        path = path[:common_prefix(p, prev)]
        for t in p[len(path):]:
            parent.append(path[-1] if path else -1)
            ids.append(int(t))
            path.append(len(ids) - 1)
        last.append(path[-1])
        prev = p
    T = len(ids)
    anc = np.zeros((T, T), dtype=bool)
    depth = np.zeros(T, dtype=np.int64)
    for j, q in enumerate(parent):
        if q >= 0:
            anc[j] = anc[q]
            depth[j] = depth[q] + 1
        anc[j, j] = True
    return ids, depth, anc, last


def _beam_row(model, vocab: SIDVocab, prompts: list[tuple[int, ...]], beams: int, k: int
              ) -> list[Ranked]:
    decoder = model.get_decoder()
    dev = model.get_output_embeddings().weight.device
    ids, depth, anc, last = prompt_trie(prompts)
    o = decoder(input_ids=torch.tensor([ids], device=dev),
                attention_mask=torch.from_numpy(anc)[None, None].to(dev),
                position_ids=torch.from_numpy(depth)[None].to(dev), use_cache=True)
    return expand_beams(model, vocab, cache_of(o), o.last_hidden_state[0, last],
                        torch.from_numpy(anc[last]), torch.from_numpy(depth[last]), beams, k)


@torch.no_grad()
def expand_beams(model, vocab: SIDVocab, cache, hidden: torch.Tensor, visible: torch.Tensor,
                 pos0: torch.Tensor, beams: int, k: int) -> list[Ranked]:
    """The constrained beam of :func:`sid_beam_search` for ``m`` prompts already in ``cache``
    (one row): ``hidden`` ``(m, d)`` the state after each prompt's ``<BOI>``, ``visible``
    ``(m, T)`` the cache positions each prompt consists of (``T``: the cache's length), ``pos0``
    ``(m,)`` the position of each ``<BOI>``. Appends the beam tokens to ``cache`` (a caller
    that keeps the cache crops it back, e.g. the chat's conversation cache)."""
    head, decoder = model.get_output_embeddings(), model.get_decoder()
    dev = head.weight.device
    m, T = visible.shape
    h = hidden.reshape(m, 1, -1)
    node = torch.zeros(m, 1, dtype=torch.long)
    score = torch.zeros(m, 1)
    path = torch.zeros(m, 1, 0, dtype=torch.long)  # cache positions of each beam's tokens
    L, K = vocab.level_tokens.shape
    length = T
    for level in range(L):
        nb = node.shape[1]
        lp = level_log_probs(head, h.reshape(m * nb, -1), vocab.level_tokens[level]).cpu()
        child = vocab.trie.children[level][node]  # (m, nb, K), -1 where no item
        cand = (score.unsqueeze(-1) + lp.view(m, nb, K)).masked_fill(child < 0, float("-inf"))
        top = cand.view(m, -1).topk(min(beams, nb * K), dim=1)
        parent = torch.div(top.indices, K, rounding_mode="floor")
        node, score = child.view(m, -1).gather(1, top.indices), top.values
        if level == L - 1:
            break
        n = node.shape[1]
        path = path.gather(1, parent.unsqueeze(-1).expand(-1, -1, path.shape[2]))
        here = length + torch.arange(m * n).view(m, n)  # this level's tokens, prompt-major
        path = torch.cat([path, here.unsqueeze(-1)], dim=2)
        attend = torch.zeros(m, n, length + m * n, dtype=torch.bool)
        attend[:, :, :T] = visible.unsqueeze(1)
        attend.scatter_(2, path, True)  # own path (and itself)
        tokens = vocab.level_tokens[level][top.indices % K]
        pos = (pos0 + level + 1).unsqueeze(1).expand(m, n)
        o = decoder(input_ids=tokens.reshape(1, -1).to(dev),
                    attention_mask=attend.reshape(1, 1, m * n, -1).to(dev),
                    position_ids=pos.reshape(1, -1).to(dev), cache=cache, use_cache=True)
        cache, h = cache_of(o), o.last_hidden_state.view(m, n, -1)
        length += m * n
    out = []
    for b in range(m):
        keep = score[b] > float("-inf")
        items = [vocab.sids.item_ids[int(i)] for i in node[b][keep][:k]]
        out.append(Ranked(items, score[b][keep][:k].tolist()))
    return out
