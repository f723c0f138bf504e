"""What a response may say: the logits processors that keep a response to its grammar
(:class:`ResponseGrammar`) and away from items already named (:class:`NoMentionOf`), and the
response read back as serialized text (:func:`response_text`)."""
from __future__ import annotations

from typing import Sequence

import torch
from transformers import LogitsProcessor

from crslib.decoding import trie
from crslib.format import serialize
from crslib.ids.semantic_ids import SemanticIDs


class ResponseGrammar(LogitsProcessor):
    """Outside an item mention, only plain text, ``<BOI>`` and end-of-sequence may follow.

    Stateless: a row is inside a mention when its last token is ``<BOI>`` or a SID token (SID
    tokens occur nowhere else); such rows are left to :class:`trie.SIDConstraint`. All other
    rows lose every control token but ``<BOI>`` and every SID token.
    """

    def __init__(self, vocab: trie.SIDVocab, banned: Sequence[int]):
        self.vocab = vocab
        self.banned = torch.as_tensor(sorted(set(banned)), dtype=torch.long)

    def __call__(self, input_ids, scores):
        last = input_ids[:, -1].cpu().clamp(0, len(self.vocab.level_of) - 1)
        inside = (input_ids[:, -1].cpu() == self.vocab.boi) | (self.vocab.level_of[last] >= 0)
        rows = torch.nonzero(~inside).flatten().to(scores.device)
        if len(rows):
            scores[rows.unsqueeze(1), self.banned.to(scores.device)] = float("-inf")
        return scores


class NoMentionOf(LogitsProcessor):
    """Chat only: an item mention in a response may not spell one of ``items`` (the items the
    user named or the assistant already showed, :meth:`ChatSession.excluded_items`), nor an
    item the response already mentioned (positions from ``prompt_len`` on).

    In a row inside a mention (``<BOI>`` and k < L codes so far), every next code whose whole
    subtree holds only excluded items loses its score, so the mention turns to an item still
    allowed as early as it must (most SID prefixes lead to one item only). Should that leave
    the row nothing, it is left as it was: the mention stays well-formed. Outside a mention,
    once every item of ``sids`` is excluded or said, no mention is started that could only
    repeat one (a reply about one item names it once): where the model would open one, the
    turn ends instead (``<BOI>``'s score goes to the ``end_ids``, the turn's end tokens) rather
    than leaving it to spell a title in words or digits.
    """

    def __init__(self, vocab: trie.SIDVocab, sids: SemanticIDs, items: Sequence[str],
                 prompt_len: int | None = None, end_ids: Sequence[int] = ()):
        self.vocab, self.L, self.prompt_len = vocab, sids.levels, prompt_len
        self.end_ids = list(end_ids)
        self.total: dict[tuple[int, ...], int] = {}
        for item in sids.item_ids:
            codes = tuple(int(c) for c in sids.code_of(item))
            for k in range(1, self.L + 1):
                self.total[codes[:k]] = self.total.get(codes[:k], 0) + 1
        self.items = {tuple(int(c) for c in sids.code_of(i)) for i in items}
        self.n_items = len(sids)

    def _said(self, toks: list[int]) -> set[tuple[int, ...]]:
        """Codes of the complete mentions in the generated part of a row."""
        v, L, out = self.vocab, self.L, set()
        for k, t in enumerate(toks):
            if t == v.boi and k + L < len(toks) and all(
                    int(v.level_of[x]) == lv for lv, x in enumerate(toks[k + 1:k + 1 + L])):
                out.add(tuple(int(v.code_of[x]) for x in toks[k + 1:k + 1 + L]))
        return out

    def _nothing_left(self, toks: list[int]) -> bool:
        """Is every item excluded or already said by this row's generated part?"""
        return len(self.items | self._said(toks[self.prompt_len:])) >= self.n_items

    def __call__(self, input_ids, scores):
        v, L = self.vocab, self.L
        rows = input_ids.cpu().tolist()
        for row, toks in enumerate(rows):
            tail = toks[-L:]
            after = (tail[len(tail) - tail[::-1].index(v.boi):] if v.boi in tail else None)
            inside = after is not None and len(after) < L and all(
                int(v.level_of[t]) == k for k, t in enumerate(after))
            if not inside:
                if self.prompt_len is not None and self._nothing_left(toks):
                    kept = scores[row].clone()
                    for end in self.end_ids:
                        kept[end] = torch.maximum(kept[end], kept[v.boi])
                    kept[v.boi] = float("-inf")
                    if bool(torch.isfinite(kept).any()):
                        scores[row] = kept
                continue
            prefix = tuple(int(v.code_of[t]) for t in after)
            said = self._said(toks[self.prompt_len:]) if self.prompt_len is not None else set()
            excluded = [c for c in self.items | said if c[:len(prefix)] == prefix]
            below: dict[int, int] = {}
            for c in excluded:
                below[c[len(prefix)]] = below.get(c[len(prefix)], 0) + 1
            ban = [int(v.level_tokens[len(prefix), c]) for c, n in below.items()
                   if n == self.total[prefix + (c,)]]
            if not ban:
                continue
            kept = scores[row].clone()
            kept[ban] = float("-inf")
            if bool(torch.isfinite(kept).any()):
                scores[row] = kept
        return scores


def response_text(ids: list[int], tokenizer, vocab: trie.SIDVocab, sids: SemanticIDs
                  ) -> tuple[str, tuple[str, ...]]:
    """Generated response ids -> serialized text (mentions as SIDs, literal text that looks
    like a token escaped) and the items mentioned."""
    L, boi, eoi = sids.levels, vocab.boi, vocab.eoi
    parts, plain, mentions, k = [], [], [], 0

    def flush():
        text = tokenizer.decode(plain, skip_special_tokens=True)
        parts.append(serialize.TOKEN_RE.sub(lambda m: serialize.escape(m.group(0)), text))
        plain.clear()

    while k < len(ids):
        item = (vocab.item_of_tokens(ids[k + 1:k + 1 + L])
                if ids[k] == boi and k + L + 1 < len(ids) and ids[k + L + 1] == eoi else None)
        if item is None:
            plain.append(ids[k])
            k += 1
            continue
        flush()
        if parts and parts[-1][-1:].isalnum():  # the tokenizer drops the space before
            parts[-1] += " "                    # <BOI>: "recommend" + title, spaced
        parts.append(serialize.mention(item, sids))
        mentions.append(item)
        k += L + 2
        after = tokenizer.decode(ids[k:k + 1], skip_special_tokens=True)
        if after[:1].isalnum():
            parts.append(" ")
    flush()
    return "".join(parts), tuple(mentions)

