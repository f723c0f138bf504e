"""Constrained decoding over semantic IDs (NOTES.md §1, §5): the prefix tree of valid SIDs
(:class:`SIDTrie`), its token view (:class:`SIDVocab`), the logits processor that keeps a beam
inside it (:class:`SIDConstraint`), and the item score both decoders rank by. The decoders:
beam search (:mod:`crslib.decoding.beam_search`) and exact scoring of every item
(:mod:`crslib.decoding.item_scores`).

Item score (one definition everywhere): the sum over the L levels of the log-probability of
the item's code, each level's distribution normalised over the K tokens of that level (the SID
grammar: after ``<BOI>`` only level-0 tokens are well-formed, and so on). The item-validity
constraint then masks code tuples that are no item *without* renormalising, so scores of
different items are comparable, beam search (:func:`~crslib.decoding.beam_search.recommend`)
and exact scoring (:func:`~crslib.decoding.item_scores.score_all_items`) agree, and a brute-force
forward pass per item reproduces both. For a trained model, whose mass after ``<BOI>`` lies on SID
tokens, this is the full-vocabulary log-probability; normalising per level is what lets exact
scoring use only the SID rows of the output head.

The constraint is on by default; ``recommend(..., constrained=False)`` is the named ablation
and reports how many of its outputs are no item (``Ranked.invalid``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch
from transformers import LogitsProcessor

from crslib.format.serialize import BOI, EOI
from crslib.ids.semantic_ids import SemanticIDs, sid_token


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


def level_log_probs(head, hidden: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    bias = head.bias[tokens] if getattr(head, "bias", None) is not None else None
    logits = torch.nn.functional.linear(hidden, head.weight[tokens], bias)
    return torch.log_softmax(logits.float(), dim=-1)


@dataclass(frozen=True)
class Ranked:
    """Items best first with their scores (summed per-level log-probabilities). ``items`` holds
    None for an unconstrained output that is no item; ``invalid`` counts those."""

    items: list[str | None]
    scores: list[float]

    @property
    def invalid(self) -> int:
        return sum(i is None for i in self.items)
