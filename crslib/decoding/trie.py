"""Constrained decoding over semantic IDs (NOTES.md §1, §5): prefix tree, logits processor,
beam-search recommendation and exact scoring of every item.

Item score (one definition everywhere): the sum over the L levels of the log-probability of
the item's code, each level's distribution normalised over the K tokens of that level (the SID
grammar: after ``<BOI>`` only level-0 tokens are well-formed, and so on). The item-validity
constraint then masks code tuples that are no item *without* renormalising, so scores of
different items are comparable, beam search (:func:`recommend`) and exact scoring
(:func:`score_all_items`) agree, and a brute-force forward pass per item reproduces both. For a
trained model, whose mass after ``<BOI>`` lies on SID tokens, this is the full-vocabulary
log-probability; normalising per level is what lets exact scoring use only the SID rows of the
output head.

The constraint is on by default; ``recommend(..., constrained=False)`` is the named ablation
and reports how many of its outputs are no item (``Ranked.invalid``).
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch
from transformers import GenerationConfig, LogitsProcessor, LogitsProcessorList

from crslib.format.serialize import BOI, EOI
from crslib.ids.semantic_ids import SemanticIDs, sid_token

DEFAULT_BEAM = 50


# ----------------------------------------------------------------------------- prefix tree
class SIDTrie:
    """Prefix tree over the code tuples of a catalog; nodes of depth d are the distinct
    d-prefixes in lexicographic order, the depth-L nodes are the items in catalog order.

    ``children[d]`` (``(n_nodes(d), K)``, int64): the depth-(d+1) node reached by code ``c``
    from node ``n``, or -1 when no item has that prefix. ``parent[d]`` and ``last_code[d]`` give
    each depth-d node's parent and its last code (d >= 1).
    """

    def __init__(self, codes: np.ndarray, codebook_size: int):
        codes = np.asarray(codes, dtype=np.int64)
        if codes.ndim != 2 or len(codes) == 0:
            raise ValueError(f"codes must be a non-empty (items, levels) array, got {codes.shape}")
        if len({tuple(r) for r in codes.tolist()}) != len(codes):
            raise ValueError("code tuples are not unique")
        self.levels, self.codebook_size = int(codes.shape[1]), int(codebook_size)
        self.children: list[torch.Tensor] = []
        self.parent: list[np.ndarray] = [np.zeros(0, dtype=np.int64)]
        self.last_code: list[np.ndarray] = [np.zeros(0, dtype=np.int64)]
        node = np.zeros(len(codes), dtype=np.int64)  # each item's node at the current depth
        n_nodes = 1
        for d in range(1, self.levels + 1):
            if d < self.levels:
                prefixes, inv = np.unique(codes[:, :d], axis=0, return_inverse=True)
                inv = inv.reshape(-1)
            else:
                prefixes, inv = codes, np.arange(len(codes))
            table = np.full((n_nodes, self.codebook_size), -1, dtype=np.int64)
            table[node, codes[:, d - 1]] = inv
            parent = np.empty(len(prefixes), dtype=np.int64)
            parent[inv] = node
            self.children.append(torch.from_numpy(table))
            self.parent.append(parent)
            self.last_code.append(np.ascontiguousarray(prefixes[:, -1]))
            node, n_nodes = inv, len(prefixes)

    @classmethod
    def from_sids(cls, sids: SemanticIDs) -> "SIDTrie":
        return cls(sids.codes, sids.codebook_size)

    def n_nodes(self, depth: int) -> int:
        return 1 if depth == 0 else len(self.parent[depth])

    def node(self, prefix: Sequence[int]) -> int | None:
        """The node of ``prefix`` (its item row when complete), or None if no item has it."""
        if len(prefix) > self.levels:
            return None
        n = 0
        for d, c in enumerate(prefix):
            if not 0 <= int(c) < self.codebook_size:
                return None
            n = int(self.children[d][n, int(c)])
            if n < 0:
                return None
        return n

    def allowed_next(self, prefix: Sequence[int]) -> tuple[int, ...]:
        """Codes that extend ``prefix`` towards at least one item; () when complete or invalid."""
        n = self.node(prefix)
        if n is None or len(prefix) == self.levels:
            return ()
        return tuple(int(c) for c in torch.nonzero(self.children[len(prefix)][n] >= 0).flatten())


# ----------------------------------------------------------------------------- token view
@dataclass
class SIDVocab:
    """The catalog's SIDs seen through one tokenizer: token ids of every level, lookups from
    token id to (level, code), and the prefix tree. Build with :meth:`build`."""

    sids: SemanticIDs
    trie: SIDTrie
    boi: int
    eoi: int
    level_tokens: torch.Tensor  # (L, K) token id of code c at level l
    level_of: torch.Tensor = field(repr=False)  # (V,) level of a SID token, else -1
    code_of: torch.Tensor = field(repr=False)  # (V,) code of a SID token, else -1

    @classmethod
    def build(cls, sids: SemanticIDs, tokenizer) -> "SIDVocab":
        L, K = sids.levels, sids.codebook_size
        names = [BOI, EOI] + [sid_token(level, c) for level in range(L) for c in range(K)]
        ids = tokenizer.convert_tokens_to_ids(names)
        unk = tokenizer.unk_token_id
        missing = [n for n, i in zip(names, ids) if i is None or (unk is not None and i == unk)]
        if missing:
            raise ValueError(f"tokenizer lacks {len(missing)} SID/control tokens (e.g. "
                             f"{missing[:3]}); run serialize.add_special_tokens first")
        level_tokens = torch.tensor(ids[2:], dtype=torch.long).view(L, K)
        size = max(len(tokenizer), max(ids) + 1)
        level_of = torch.full((size,), -1, dtype=torch.long)
        code_of = torch.full((size,), -1, dtype=torch.long)
        level_of[level_tokens] = torch.arange(L).unsqueeze(1).expand(L, K)
        code_of[level_tokens] = torch.arange(K).unsqueeze(0).expand(L, K)
        return cls(sids, SIDTrie.from_sids(sids), ids[0], ids[1], level_tokens, level_of, code_of)

    @property
    def levels(self) -> int:
        return self.trie.levels

    def restricted(self, item_ids) -> "SIDVocab":
        """The same tokens over a sub-catalog: a beam or constraint built from it can only
        reach ``item_ids`` (a filtered catalog, e.g. what a chat message asks for). Raises
        ``ValueError`` for an empty set or an unknown item."""
        keep = list(dict.fromkeys(item_ids))
        if not keep:
            raise ValueError("no item left to decode")
        missing = [i for i in keep if i not in self.sids]
        if missing:
            raise ValueError(f"{len(missing)} unknown items, e.g. {missing[:3]}")
        sub = SemanticIDs(keep, np.array([self.sids.code_of(i) for i in keep]),
                          self.sids.codebook_size, self.sids.config)
        return SIDVocab(sub, SIDTrie.from_sids(sub), self.boi, self.eoi, self.level_tokens,
                        self.level_of, self.code_of)

    def item_of_tokens(self, tokens: Sequence[int]) -> str | None:
        """Item id of L SID token ids, or None when they are no item."""
        t = torch.as_tensor(list(tokens), dtype=torch.long)
        if len(t) != self.levels or bool(((t < 0) | (t >= len(self.code_of))).any()):
            return None
        if not torch.equal(self.level_of[t], torch.arange(self.levels)):
            return None
        return self.sids.item_of(self.code_of[t].tolist())


# ----------------------------------------------------------------------------- processor
class SIDConstraint(LogitsProcessor):
    """Stateless: reads its position from ``input_ids`` (tokens since the last ``<BOI>`` in the
    last L+1 tokens, inactive once ``<EOI>`` follows it). While active it keeps only the codes
    that extend the prefix towards an item (full tuples, not per-level sets), as per-level
    log-probabilities (module docstring), forces ``<EOI>`` (score 0) after level L, and raises
    ``ValueError`` when the prefix is no SID prefix or nothing is allowed. Rows outside a
    mention pass through unchanged. Active rows are rewritten in place (``generate`` passes a
    fresh tensor; a new 50 x vocabulary tensor per step would cost more than the masking)."""

    def __init__(self, vocab: SIDVocab):
        self.vocab = vocab
        L, K = vocab.level_tokens.shape
        # candidate tokens per position; position L: <EOI> first, then distinct filler tokens
        end = torch.cat([torch.tensor([vocab.eoi]), vocab.level_tokens[0, :K - 1]])
        self.candidates = torch.cat([vocab.level_tokens, end.unsqueeze(0)])  # (L+1, K)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        v, L = self.vocab, self.vocab.levels
        window = input_ids[:, -(L + 1):]
        W = window.shape[1]
        is_boi = window == v.boi
        if not bool(is_boi.any()):
            return scores
        pos = torch.arange(W, device=window.device)
        last = torch.where(is_boi, pos, -1).max(dim=1).values
        closed = ((window == v.eoi) & (pos > last.unsqueeze(1))).any(dim=1)
        rows = torch.nonzero((last >= 0) & ~closed).flatten()
        if len(rows) == 0:
            return scores
        window, depth = window[rows].cpu(), (W - 1 - last[rows]).cpu()
        node = torch.zeros(len(rows), dtype=torch.long)
        for level in range(L):
            here = depth > level
            if not bool(here.any()):
                break
            tok = window.gather(1, (W - depth + level).clamp(max=W - 1).unsqueeze(1)).squeeze(1)
            tok = tok.clamp(0, len(v.code_of) - 1)
            code = torch.where(v.level_of[tok] == level, v.code_of[tok], -1)
            nxt = v.trie.children[level][node, code.clamp(min=0)]
            bad = here & ((code < 0) | (nxt < 0))
            if bool(bad.any()):
                b = int(torch.nonzero(bad)[0, 0])
                tail = input_ids[int(rows[b]), -int(depth[b]):].tolist()
                raise ValueError(f"row {int(rows[b])}: tokens after <BOI> {tail} are no prefix "
                                 "of an item's SID")
            node = torch.where(here, nxt, node)
        allowed = torch.zeros(len(rows), self.candidates.shape[1], dtype=torch.bool)
        for level in range(L):
            at = depth == level
            if bool(at.any()):
                allowed[at] = v.trie.children[level][node[at]] >= 0
        done = depth == L
        allowed[done, 0] = True
        if not bool(allowed.any(dim=1).all()):
            raise ValueError("no SID code is allowed after <BOI> for some row")
        cand = self.candidates[depth].to(scores.device)
        rows_d = rows.to(scores.device).unsqueeze(1)
        vals = scores[rows_d, cand]
        vals = vals - torch.logsumexp(vals, dim=1, keepdim=True)
        vals = vals.masked_fill(~allowed.to(scores.device), float("-inf"))
        vals[done.to(scores.device), 0] = 0.0
        if len(rows) == len(scores):  # in place: generate() hands over a fresh tensor
            scores.fill_(float("-inf"))
        else:
            scores[rows_d.squeeze(1)] = float("-inf")
        scores[rows_d, cand] = vals
        return scores


# ----------------------------------------------------------------------------- helpers
@dataclass(frozen=True)
class Ranked:
    """Items best first with their scores (summed per-level log-probabilities). ``items`` holds
    None for an unconstrained output that is no item; ``invalid`` counts those."""

    items: list[str | None]
    scores: list[float]

    @property
    def invalid(self) -> int:
        return sum(i is None for i in self.items)


def _as_vocab(sids: SemanticIDs | SIDVocab, tokenizer) -> SIDVocab:
    return sids if isinstance(sids, SIDVocab) else SIDVocab.build(sids, tokenizer)


def _as_id_lists(prompts, tokenizer) -> tuple[list[list[int]], bool]:
    """Prompts as token-id lists (strings tokenized with ``add_special_tokens=False``)."""
    single = isinstance(prompts, str) or (len(prompts) > 0 and isinstance(prompts[0], int))
    items = [prompts] if single else list(prompts)
    out = [list(tokenizer(p, add_special_tokens=False)["input_ids"]) if isinstance(p, str)
           else [int(t) for t in p] for p in items]
    return out, single


def _check_boi(ids_list: list[list[int]], vocab: SIDVocab) -> None:
    for k, ids in enumerate(ids_list):
        if not ids or ids[-1] != vocab.boi:
            raise ValueError(f"prompt {k} must end with {BOI} (ends with token ids {ids[-5:]})")


def cache_of(output):
    """The KV cache a decoder call returned (``cache`` or ``past_key_values``)."""
    cache = getattr(output, "cache", None)
    return cache if cache is not None else output.past_key_values


@contextlib.contextmanager
def neutral_generation_config(model):
    """Hide the checkpoint's generation config, whose values fill every field a passed config
    leaves unset (``do_sample=True``, repetition penalties, suppressed tokens, ...)."""
    saved = model.generation_config
    model.generation_config = GenerationConfig()
    try:
        yield
    finally:
        model.generation_config = saved


def pinned_generation_config(num_beams: int, max_new_tokens: int, pad_token_id: int
                             ) -> GenerationConfig:
    """Deterministic beam search: no sampling, no penalties, summed log-probs as scores."""
    return GenerationConfig(
        do_sample=False, num_beams=num_beams, num_return_sequences=num_beams,
        max_new_tokens=max_new_tokens, min_new_tokens=0, length_penalty=0.0, early_stopping=True,
        temperature=1.0, top_k=None, top_p=1.0, repetition_penalty=1.0, no_repeat_ngram_size=0,
        output_scores=True, return_dict_in_generate=True, pad_token_id=pad_token_id,
        eos_token_id=None, bos_token_id=None, use_cache=True)


def _kv_bytes_per_token(model) -> int:
    """Bytes of keys and values one token adds to the cache (0 when the config is unusual)."""
    cfg = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    try:
        heads = cfg.num_attention_heads
        kv_heads = getattr(cfg, "num_key_value_heads", None) or heads
        head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // heads
        return 2 * cfg.num_hidden_layers * kv_heads * head_dim * model.dtype.itemsize
    except (AttributeError, TypeError):
        return 0


def _batches(ids_list: list[list[int]], batch_size: int, row_bytes: int, budget: int):
    """Consecutive slices of at most ``batch_size`` prompts whose beam-expanded cache
    (prompts x max length x ``row_bytes``) stays within ``budget`` bytes (at least one prompt)."""
    s = 0
    while s < len(ids_list):
        e, longest = s + 1, len(ids_list[s])
        while e < len(ids_list) and e - s < batch_size:
            longest = max(longest, len(ids_list[e]))
            if (e + 1 - s) * longest * row_bytes > budget:
                break
            e += 1
        yield ids_list[s:e]
        s = e


def left_pad(batch: list[list[int]], pad: int, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(input_ids, attention_mask)`` of the prompts, left-padded, on ``device``."""
    if device is not None and torch.device(device).type != "cpu":
        return tuple(t.to(device) for t in left_pad(batch, pad))
    T = max(len(ids) for ids in batch)
    input_ids = torch.full((len(batch), T), pad, dtype=torch.long)
    mask = torch.zeros((len(batch), T), dtype=torch.long)
    for r, ids in enumerate(batch):
        input_ids[r, T - len(ids):] = torch.tensor(ids)
        mask[r, T - len(ids):] = 1
    return input_ids, mask


# ----------------------------------------------------------------------------- beam search
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
    vocab = _as_vocab(sids, tokenizer)
    beams = num_beams or max(k, DEFAULT_BEAM)
    if beams < k:
        raise ValueError(f"num_beams={beams} < k={k}")
    ids_list, single = _as_id_lists(prompts, tokenizer)
    _check_boi(ids_list, vocab)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    processors = LogitsProcessorList([SIDConstraint(vocab)] if constrained else [])
    config = pinned_generation_config(beams, vocab.levels, pad if pad is not None else 0)
    out: list[Ranked] = []
    row_bytes = beams * _kv_bytes_per_token(model)
    for batch in _batches(ids_list, batch_size, row_bytes, max_cache_bytes):
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
    vocab = _as_vocab(sids, tokenizer)
    beams = num_beams or max(k, DEFAULT_BEAM)
    ids_list, single = _as_id_lists(prompts, tokenizer)
    _check_boi(ids_list, vocab)
    per_prompt = (vocab.levels - 1) * beams  # beam tokens a prompt adds to its row
    done: dict[tuple[int, ...], Ranked] = {}
    for row in _pack_rows(sorted({tuple(p) for p in ids_list}), batch_size, max_row_tokens,
                          per_prompt):
        done.update(zip(row, _beam_row(model, vocab, row, beams, k)))
    out = [done[tuple(p)] for p in ids_list]
    return out[0] if single else out


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def _pack_rows(prompts: list[tuple[int, ...]], max_prompts: int, max_tokens: int,
               per_prompt: int):
    """Consecutive runs of the sorted distinct ``prompts``, each within ``max_prompts`` and
    ``max_tokens`` (the trie's tokens plus ``per_prompt`` beam tokens each; a prompt that
    alone exceeds it gets a row of its own)."""
    row: list[tuple[int, ...]] = []
    tokens = 0
    for p in prompts:
        new = len(p) - (_common_prefix(p, row[-1]) if row else 0) + per_prompt
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
        path = path[:_common_prefix(p, prev)]
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


# ----------------------------------------------------------------------------- exact scoring
@torch.no_grad()
def score_all_items(model, tokenizer, prompts, sids: SemanticIDs | SIDVocab, *,
                    chunk_size: int = 256):
    """Exact score of every item (module docstring) for each prompt ending with ``<BOI>``:
    a :class:`Ranked` over the whole catalog (ties in catalog order); a list for several.

    The prompt runs once; then each trie depth d = 1..L-1 is run as batches of ``chunk_size``
    nodes, each node one token attending to the prompt's KV cache and its own ancestors' cached
    keys/values (a 4-D attention mask over [prompt | ancestors | chunk]), and only the K rows of
    the output head for level d's tokens are applied. Assumes ``logits = lm_head(hidden)``.
    """
    vocab = _as_vocab(sids, tokenizer)
    ids_list, single = _as_id_lists(prompts, tokenizer)
    _check_boi(ids_list, vocab)
    out = []
    for ids in ids_list:
        scores = item_log_probs(model, vocab, ids, chunk_size=chunk_size)
        order = torch.sort(scores, descending=True, stable=True).indices.tolist()
        out.append(Ranked([vocab.sids.item_ids[i] for i in order], scores[order].tolist()))
    return out[0] if single else out


def level_log_probs(head, hidden: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    bias = head.bias[tokens] if getattr(head, "bias", None) is not None else None
    logits = torch.nn.functional.linear(hidden, head.weight[tokens], bias)
    return torch.log_softmax(logits.float(), dim=-1)


@torch.no_grad()
def item_log_probs(model, vocab: SIDVocab, prompt: Sequence[int], chunk_size: int = 256
                   ) -> torch.Tensor:
    """``(n_items,)`` scores in catalog order for one prompt (token ids ending with ``<BOI>``)."""
    body, head, trie = model.get_decoder(), model.get_output_embeddings(), vocab.trie
    device = head.weight.device
    first = body(input_ids=torch.tensor([list(prompt)], device=device), use_cache=True)
    prompt_kv = [(layer.keys, layer.values) for layer in cache_of(first).layers]
    logp = level_log_probs(head, first.last_hidden_state[:, -1], vocab.level_tokens[0]).cpu()
    score = logp[0, torch.from_numpy(trie.last_code[1])]  # scores of the depth-1 nodes
    node_kv: dict[int, list[tuple[torch.Tensor, torch.Tensor]]] = {}  # depth -> per layer K, V
    for d in range(1, trie.levels):
        n = trie.n_nodes(d)
        ancestors = {d: np.arange(n)}
        for j in range(d - 1, 0, -1):
            ancestors[j] = trie.parent[j + 1][ancestors[j + 1]]
        logp = torch.empty(n, trie.codebook_size)
        chunks = []
        for s in range(0, n, chunk_size):
            e = min(n, s + chunk_size)
            hidden, kv = _run_nodes(body, vocab, prompt_kv, node_kv,
                                    {j: a[s:e] for j, a in ancestors.items()}, d)
            logp[s:e] = level_log_probs(head, hidden, vocab.level_tokens[d]).cpu()
            if d < trie.levels - 1:
                chunks.append(kv)
        if chunks:
            node_kv[d] = [(torch.cat([c[layer][0] for c in chunks], dim=2),
                           torch.cat([c[layer][1] for c in chunks], dim=2))
                          for layer in range(len(prompt_kv))]
        parent = torch.from_numpy(trie.parent[d + 1])
        score = score[parent] + logp[parent, torch.from_numpy(trie.last_code[d + 1])]
    return score


def _run_nodes(body, vocab: SIDVocab, prompt_kv, node_kv, ancestors: dict[int, np.ndarray],
               d: int):
    """Run the last token of a chunk of depth-d nodes; ``ancestors[j]`` are their depth-j
    ancestors (``ancestors[d]`` the nodes). Returns hidden states (C, H) and the chunk's new
    per-layer keys/values (1, kv_heads, C, head_dim)."""
    from transformers import DynamicCache

    nodes = ancestors[d]
    C, P = len(nodes), prompt_kv[0][0].shape[2]
    dtype, device = prompt_kv[0][0].dtype, prompt_kv[0][0].device
    neg = torch.finfo(dtype).min
    blocks = [torch.zeros(C, P)]
    kv = [([k], [v]) for k, v in prompt_kv]
    for j in range(1, d):  # distinct ancestors of the chunk at depth j
        uniq, inv = np.unique(ancestors[j], return_inverse=True)
        block = torch.full((C, len(uniq)), neg)
        block[torch.arange(C), torch.from_numpy(inv.reshape(-1))] = 0.0
        blocks.append(block)
        u = torch.from_numpy(uniq).to(device)
        for layer, (ks, vs) in enumerate(kv):
            ks.append(node_kv[j][layer][0][:, :, u])
            vs.append(node_kv[j][layer][1][:, :, u])
    blocks.append(torch.full((C, C), neg).fill_diagonal_(0.0))
    mask = torch.cat(blocks, dim=1).to(device=device, dtype=dtype)[None, None]
    cache = DynamicCache([(torch.cat(ks, dim=2), torch.cat(vs, dim=2)) for ks, vs in kv])
    tokens = vocab.level_tokens[d - 1][torch.from_numpy(vocab.trie.last_code[d][nodes])]
    res = body(input_ids=tokens[None].to(device), attention_mask=mask, cache=cache,
               position_ids=torch.full((1, C), P + d - 1, device=device), use_cache=True)
    new = [(layer.keys[:, :, -C:].clone(), layer.values[:, :, -C:].clone())
           for layer in cache_of(res).layers]
    return res.last_hidden_state[0], new
