"""Chat with a trained GCRS run (NOTES.md §3 inference modes), from Python or as a widget.

:class:`ChatSession` keeps the dialog as serialized turns (the training format) and answers
each user message in one of the paper's three inference modes:

* ``free``: the model picks the intent — ``<MODE=REC>`` vs ``<MODE=CHAT>`` after
  ``Assistant:``, REC when its logit exceeds CHAT's by more than ``intent_cut`` (0, the
  paper's rule, unless a cut chosen on validation turns is given:
  :func:`crslib.studies.freemode.intent_cut`); ``Reply.p_rec`` is their two-way softmax;
* ``rec`` / ``chat`` (guided): the mode token is supplied;
* ``item`` (item-conditioned): ``<MODE=REC><BOI>`` + the given item's SID + ``<EOI><RESP>`` is
  supplied and the model writes the response about that item.

A recommendation turn ranks items by the constrained beam search of the evaluation
(``trie.sid_beam_search``, width 50, summed per-level log-probabilities) and shows the top
``top_k``; its response is written after the top item's SID, in the paper's order (mode, item,
text). Responses are decoded with the session's :class:`crslib.decoding.generation.ResponseDecoding`
(the setting :func:`crslib.evaluation.evaluate.generate_responses` measures; greedy unless told) and end
at the end of their turn: item mentions inside them are constrained to catalog SIDs
(``trie.SIDConstraint``), outside a mention no control or SID token may be written, and a model
trained with a restricted softmax (the run's ``output_vocab.json``) keeps to that vocabulary
(``evaluate.OnlyTokens``), as in ``evaluate.generate_responses``.

Titles typed as plain text ("I loved The Shining") are linked to catalog items by
:class:`crslib.data.titles.TitleLinker` (its rule: case-insensitive, year optional, ambiguity resolved
by year, then the dataset's mention count) and enter the context as ``<BOI>SID<EOI>``, exactly
as dataset mentions do. With ``exclude_named`` (the default) a recommendation never repeats an
item the user named in the conversation; turn it off to allow them. With ``exclude_recommended``
(the default) it never repeats an item the assistant already mentioned either, so asking "something
else?" brings new titles. Both are chat-only options: the evaluation protocols are unchanged.
A list never shows one film twice under two catalog entries (:meth:`ChatSession.same_film`),
nor, under those options, another entry of a film already named or shown.

User text is whitespace-collapsed (a typed newline cannot open a fake ``Assistant:`` line),
rendered like dataset text (``serialize.render_text``: ``@<item id>`` becomes a mention,
token-like literals such as ``<MODE=REC>`` are escaped) and the tokenizer's own special tokens
(``<|im_end|>``…) are broken with a zero-width space, so typed text never becomes a control
token. Empty or over-long messages raise :class:`InputError` (a ``ValueError``) with a message
meant for people; the widget shows it.
"""
from __future__ import annotations

import dataclasses
import html
import json
import math
import re
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple, Sequence

import torch
from transformers import LogitsProcessor, LogitsProcessorList

from crslib import data
from crslib.config import resolve
from crslib.data import genres, request as request_mod
from crslib.data.titles import TitleLinker
from crslib.decoding import trie
from crslib.decoding.generation import (GREEDY, ResponseDecoding, close_punctuation,
                                        trim_unfinished, turn_end_ids)
from crslib.evaluation import evaluate
from crslib.format import serialize
from crslib.ids.semantic_ids import SemanticIDs
from crslib.metrics import repeats_ngram
from crslib.training import run

INFERENCE_MODES = ("free", "rec", "chat", "item")
MODE_LABELS = {"free": "free (model decides)", "rec": "guided: recommend",
               "chat": "guided: chat", "item": "item-conditioned"}
MAX_CHARS = 1000
SAMPLE_CANDIDATES = 4  # draws per reply when the chat samples (ChatSession.candidates)
_ZWSP = "\u200b"


# "Why that one?", "tell me more about it": a question about the item just recommended
FOLLOW_UP = re.compile(
    r"\bwhy\b[^.?!]*\b(that|this|it|one|pick|picked|choose|chose|recommend|recommended|suggest)\b"
    r"|\b(what'?s|what is|tell me( more)?|more|anything)\s+(else\s+)?about\s+(it|that|this)\b"
    r"|\bwhat('?s| is) (it|that|this)( one| movie| film)? (about|like)\b", re.IGNORECASE)
_NEW_REQUEST = re.compile(r"\b(another|else|other|others|different|instead|something|anything)\b"
                          r"(?!\s+(else\s+)?about)", re.IGNORECASE)


def is_follow_up(text: str) -> bool:
    """Does ``text`` ask about the item just recommended, rather than for a new one?"""
    return bool(FOLLOW_UP.search(text)) and not _NEW_REQUEST.search(
        FOLLOW_UP.sub(" ", text))


class InputError(ValueError):
    """A user message that cannot be answered (empty, too long, unknown item); the message
    is written for people."""


class Recommendation(NamedTuple):
    item_id: str
    title: str
    score: float  # summed per-level log-probability of the item's SID (trie module docstring)
    sid: str  # '<a_17><b_63><c_0><d_25>'


@dataclass(frozen=True)
class Reply:
    """One assistant turn.

    ``requested`` is the inference mode asked for, ``mode`` the intent used (``rec``/``chat``);
    ``recommendations`` best first (``top_k`` in rec mode, the given item in item mode, empty
    for chat); ``item`` the item the response was written after; ``text`` the response for
    people (mentions as titles); ``serialized`` the response as it enters the history (mentions
    as SIDs, literals escaped); ``raw`` the whole target as tokens, and ``tokens`` its ids;
    ``p_rec`` the free-mode probability of ``<MODE=REC>`` against ``<MODE=CHAT>``;
    ``truncated``: ``max_new_tokens`` was reached before the end-of-turn token;
    ``request``: what the message asked for, in words (:mod:`crslib.data.request`; empty when
    nothing checkable), and ``matching`` how many catalog items satisfy it when the list was
    restricted to them (``only_asked``), else None; ``reason``: the decision in words.
    """

    requested: str
    mode: str
    recommendations: list[Recommendation]
    item: str | None
    text: str
    serialized: str
    raw: str
    tokens: tuple[int, ...]
    mentions: tuple[str, ...] = ()
    p_rec: float | None = None
    truncated: bool = False
    seconds: float = 0.0
    request: str = ""
    matching: int | None = None
    reason: str = ""  # the decision in words, for the badge


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


@dataclass(eq=False, repr=False)
class ChatSession:
    """A conversation with a GCRS model; see the module docstring.

    ``turns`` is the dialog so far as ``(role, serialized text)``, the prompt's context (left-
    truncated to ``max_context_tokens`` by ``serialize.prompt_ids``); ``replies`` the replies.
    """

    model: object
    tokenizer: object
    sids: SemanticIDs
    catalog: data.Catalog | None = None
    max_context_tokens: int = serialize.MAX_CONTEXT_TOKENS
    head_ids: Sequence[int] | None = None
    max_new_tokens: int = 40
    top_k: int = 5
    num_beams: int = trie.DEFAULT_BEAM
    max_chars: int = MAX_CHARS
    template: str = "plain"
    decoding: ResponseDecoding = GREEDY
    candidates: int = SAMPLE_CANDIDATES  # a sampling decoding draws this many responses per
                                         # reply and keeps the likeliest (sample-and-rank)
    intent_cut: float = 0.0  # free mode recommends when logit(REC) - logit(CHAT) > intent_cut
    exclude_named: bool = True
    exclude_recommended: bool = True
    only_asked: bool = True  # a request's genres/years restrict the list (crslib.data.request)
    reuse_cache: bool = True  # keep the conversation's KV cache (False: encode every time)
    turns: list[tuple[str, str]] = field(default_factory=list)
    replies: list[Reply] = field(default_factory=list)

    def __post_init__(self):
        tok = self.tokenizer
        self.vocab = trie.SIDVocab.build(self.sids, tok)
        names = list(serialize.CONTROL_TOKENS)
        self._id = ids = dict(zip(names, tok.convert_tokens_to_ids(names)))
        self._eos = tok.eos_token_id
        self._pad = tok.pad_token_id if tok.pad_token_id is not None else (self._eos or 0)
        ours = set(serialize.special_tokens(self.sids))
        # the tokenizer's own special tokens, longest first so that none hides inside another
        self._foreign = sorted((t for t in tok.all_special_tokens if t not in ours and t),
                               key=len, reverse=True)
        banned = ([i for t, i in ids.items() if t != serialize.BOI]
                  + self.vocab.level_tokens.flatten().tolist())
        size = self.model.get_output_embeddings().weight.shape[0]
        self._processors = [trie.SIDConstraint(self.vocab), ResponseGrammar(self.vocab, banned)]
        if self.head_ids is not None:
            self._processors.append(evaluate.OnlyTokens(self.head_ids, size))
        self._turn_end = turn_end_ids(tok)
        self.linker = TitleLinker(self.catalog, tok, self.sids.item_ids) if self.catalog else None
        self._genre_words = genres.vocabulary(self.catalog) if self.catalog else {}
        self._cache, self._cached = None, []  # the conversation's KV cache and its token ids

    def __repr__(self) -> str:
        return (f"ChatSession({len(self.sids)} items, {len(self.turns)} turns, "
                f"max_context_tokens={self.max_context_tokens}, top_k={self.top_k})")

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_run(cls, path, data_root=None, merge_lora: bool = True, **kwargs) -> "ChatSession":
        """A session over the run folder ``path`` (``run.load_run``): its restricted output
        vocabulary when it has one, the evaluation context length, titles from the dataset's
        catalog (item ids when the data is not found). Loads nothing from the internet.

        ``merge_lora``: a LoRA run's adapters are merged into the base weights (peft's
        ``merge_and_unload``), so each linear layer is one matmul instead of three and a
        decoded token costs less; the merged weights equal base + adapter up to float
        rounding. The evaluation protocols score the unmerged model, as trained."""
        model, tok, sids, cfg = run.load_run(path)
        if merge_lora and hasattr(model, "merge_and_unload"):
            model = model.merge_and_unload().eval()
        vocab_file = Path(path) / "output_vocab.json"
        head_ids = json.loads(vocab_file.read_text()) if vocab_file.is_file() else None
        rc = resolve(cfg)
        kwargs = {"head_ids": head_ids, "max_context_tokens": rc.eval.max_context_tokens,
                  "decoding": ResponseDecoding(no_repeat_ngram_size=3),  # a person never sees
                  "template": rc.template, **kwargs}                     # loops: no 3-gram twice
        return cls(model, tok, sids, load_catalog(rc.dataset, data_root), **kwargs)

    def fresh(self) -> "ChatSession":
        """A new, empty conversation with the same model and settings (the widget's own: an
        example conversation played above it stays apart)."""
        return dataclasses.replace(self, turns=[], replies=[])

    # ------------------------------------------------------------------ state
    def reset(self) -> None:
        """Forget the conversation."""
        self.turns.clear()
        self.replies.clear()
        self._cache, self._cached = None, []

    @property
    def history(self) -> list[tuple[str, str]]:
        """``(role, text for people)`` of every turn, mentions as titles."""
        return [(role, self._for_people(text, tidy=role == "assistant"))
                for role, text in self.turns]

    def _for_people(self, serialized: str, tidy: bool = True) -> str:
        """A serialized turn as a person reads it: titles for mentions; with ``tidy`` (the
        model's turns, not the user's words) no space before a punctuation mark."""
        text = serialize.display_text(serialized, self.sids, self.catalog).replace(_ZWSP, "")
        return close_punctuation(text) if tidy else text

    def named_items(self, turns: Sequence[tuple[str, str]] | None = None,
                    role: str = "user") -> set[str]:
        """Items ``role`` mentioned in ``turns`` (default: the user, in the history)."""
        return {iid for who, text in (self.turns if turns is None else turns) if who == role
                for iid in serialize.mentioned_items(text, self.sids)}

    def shown_items(self) -> set[str]:
        """Items the assistant has put before the user: every recommendation listed in a
        reply, and every item its responses mention."""
        return {x.item_id for r in self.replies for x in r.recommendations} | self.named_items(
            role="assistant")

    def excluded_items(self, turns: Sequence[tuple[str, str]] | None = None) -> set[str]:
        """Items a recommendation may not repeat: named by the user in ``turns``
        (``exclude_named``) or already shown by the assistant (``exclude_recommended``)."""
        out = self.named_items(turns) if self.exclude_named else set()
        return out | (self.shown_items() if self.exclude_recommended else set())

    def same_film(self, a: str, b: str) -> bool:
        """Whether catalog items ``a`` and ``b`` name one film: the same id, or the same title
        (:func:`crslib.data.normalize_title`) where the years agree or one has none (ReDial
        lists "The Exorcist" and "The Exorcist (1973)" apart). A recommendation list shows one
        of them, and not one the user named; "It (1990)" and "It (2017)" stay two films."""
        if a == b:
            return True
        c = self.catalog
        if c is None or a not in c or b not in c:
            return False
        x, y = c[a], c[b]
        return (data.normalize_title(x.title) == data.normalize_title(y.title)
                and (x.year == y.year or not x.year or not y.year))

    def title(self, item_id: str) -> str:
        if self.catalog is not None and item_id in self.catalog:
            return self.catalog[item_id].name
        return item_id

    def find_item(self, query: str) -> str:
        """Item id from an id, a name as :meth:`title` writes it, or a unique title."""
        q = query.strip()
        if q in self.sids:
            return q
        if self.catalog is not None:
            m = re.fullmatch(r"(.*) \((\d{4})\)", q)
            found = self.catalog.find(*(m.groups() if m else (q,)))
            if found is not None and found in self.sids:
                return found
        raise InputError(f"Unknown item {query!r}: give an item id or a title from the catalog.")

    # ------------------------------------------------------------------ text
    def user_text(self, text: str) -> str:
        """The user's message as a serialized turn (see the module docstring); raises
        :class:`InputError` when it is empty or longer than ``max_chars``."""
        if not isinstance(text, str):
            raise InputError(f"A message must be text, not {type(text).__name__}.")
        text = " ".join(text.split())
        if not text:
            raise InputError("Please type a message first.")
        if len(text) > self.max_chars:
            raise InputError(f"That message is {len(text)} characters long; "
                             f"please keep it to {self.max_chars} at most.")
        if self.linker is not None:
            text = self.linker.link(text)
        out = serialize.render_text(text, self.sids)
        for tok in self._foreign:
            out = out.replace(tok, tok[0] + _ZWSP + tok[1:])
        return out

    def prompt_ids(self, turns: Sequence[tuple[str, str]] | None = None) -> list[int]:
        """Token ids of the prompt for ``turns`` (default: the history), ending ``Assistant:``."""
        ctx = tuple(self.turns if turns is None else turns)
        ex = serialize.Example("chat", len(ctx), "gcrs", "", "", "chat", None, (), "",
                               context=ctx, template=self.template)
        return serialize.prompt_ids(ex, self.tokenizer, self.max_context_tokens)

    # ------------------------------------------------------------------ reply
    @torch.no_grad()
    def reply(self, text: str, mode: str = "free", item: str | None = None) -> Reply:
        """Answer ``text`` in inference ``mode`` (``item``: id or title, for mode ``item``)
        and add both turns to the history. Raises :class:`InputError` (history unchanged)."""
        t0 = time.perf_counter()
        if mode not in INFERENCE_MODES:
            raise InputError(f"Unknown mode {mode!r}; choose from {', '.join(INFERENCE_MODES)}.")
        if mode == "item" and not item:
            raise InputError("Item-conditioned mode needs an item: pick one first.")
        requested = mode
        if mode == "free" and self.replies and self.replies[-1].item and is_follow_up(text):
            mode, item = "item", self.replies[-1].item  # the paper's item-conditioned mode
        item_id = self.find_item(item) if mode == "item" else None
        turns = self.turns + [("user", self.user_text(text))]
        prompt = self.prompt_ids(turns)
        p_rec, recs = None, []
        intent = {"free": None, "rec": "rec", "chat": "chat", "item": "rec"}[mode]
        h_prompt = self._encode(prompt)  # one encoding of the turn, from the kept cache
        if intent is None:
            margin = self._margin(h_prompt)
            p_rec = 1 / (1 + math.exp(-margin)) if margin > -700 else 0.0
            intent = "rec" if margin > self.intent_cut else "chat"
        asked = (request_mod.parse(text, self.catalog, self._genre_words)
                 if self.catalog is not None else request_mod.Request())
        matching = None
        if mode == "item":
            recs = [self._recommendation(item_id, self._item_score(prompt, item_id))]
        elif intent == "rec":
            named = self.excluded_items(turns)
            vocab = self.vocab
            if asked and self.only_asked:  # the paper's constrained beam over a filtered catalog
                allowed = [i for i in request_mod.allowed(self.catalog, asked) if i in self.sids]
                matching = len(allowed)
                if not allowed:
                    raise InputError(f"No film in the catalog is {asked.describe()}; turn off "
                                     "'only what I asked for' to see the model's choice.")
                vocab = self.vocab.restricted(allowed)
            k = 2 * self.top_k + len(named)  # room for the ones left out below
            ranked = self._beam(prompt, vocab, k)
            recs = []
            for i, score in zip(ranked.items, ranked.scores):
                if len(recs) < self.top_k and i not in named and not any(
                        self.same_film(i, j) for j in [*named, *(r.item_id for r in recs)]):
                    recs.append(self._recommendation(i, score))
            if not recs:
                raise InputError("Every item the model ranks was already named in this "
                                 "conversation; allow named titles to see them again.")
            item_id = recs[0].item_id
        prefix = self._prefix(intent, item_id)
        shown = [x.item_id for x in recs] if intent == "rec" else None  # item mode: that item
        generated, truncated = self._generate(prompt + prefix,
                                              self.excluded_items(turns) - {item_id}, shown)
        serialized, mentions = self._response_text(generated)
        # an unfinished last sentence goes (its tail names no item: mentions unchanged)
        serialized = trim_unfinished(serialized, serialize.BOI)
        tokens = tuple(prefix + generated)
        reason = self._reason(requested, mode, intent, p_rec, item_id)
        out = Reply(requested, intent, recs, item_id,
                    self._for_people(serialized), serialized,
                    self.tokenizer.decode(list(tokens), skip_special_tokens=False), tokens,
                    mentions, p_rec, truncated, time.perf_counter() - t0,
                    asked.describe(), matching, reason)
        self.turns[:] = turns + [("assistant", serialized)]
        self.replies.append(out)
        return out

    @torch.no_grad()
    def continue_ids(self, ids: Sequence[int]) -> tuple[str, tuple[str, ...], bool]:
        """The response decoded after ``ids`` exactly as :meth:`reply` decodes it (greedy, same
        constraints), history untouched: ``(serialized text, items mentioned, truncated)``.
        ``ids``: a prompt plus the target prefix it needs (mode, item, ``<RESP>``), or a prompt
        alone for a format whose target is the response itself (``resp``)."""
        generated, truncated = self._generate(list(ids))
        text, mentions = self._response_text(generated)
        return text, mentions, truncated

    def _prefix(self, intent: str, item_id: str | None = None) -> list[int]:
        """Target ids supplied before the response: mode, item mention, ``<RESP>``."""
        if intent == "chat":
            return [self._id[serialize.MODE_CHAT], self._id[serialize.RESP]]
        head = [self._id[serialize.MODE_REC], self._id[serialize.BOI]]
        if item_id is None:
            return head
        codes = self.sids.code_of(item_id)
        sid = [int(self.vocab.level_tokens[lv, c]) for lv, c in enumerate(codes)]
        return head + sid + [self._id[serialize.EOI], self._id[serialize.RESP]]

    def _hidden(self, ids: list[int]) -> torch.Tensor:
        device = self.model.get_output_embeddings().weight.device
        out = self.model.get_decoder()(input_ids=torch.tensor([ids], device=device))
        return out.last_hidden_state[0]

    def _encode(self, ids: list[int]) -> torch.Tensor:
        """The hidden state after ``ids``, with the conversation's KV cache holding exactly
        ``ids`` afterwards. Only what the cache does not hold yet is run: the cache is cut back
        to the longest common prefix (a turn adds messages at the end; where the context was
        truncated at the front, little or nothing is shared) and extended."""
        from transformers import DynamicCache
        n = 0
        while n < min(len(ids), len(self._cached)) and ids[n] == self._cached[n]:
            n += 1
        n = min(n, len(ids) - 1)  # run at least the last token: its state is needed
        if self._cache is None or n == 0 or not self.reuse_cache:
            self._cache, n = DynamicCache(), 0
        else:
            self._keep(n)
        device = self.model.get_output_embeddings().weight.device
        out = self.model.get_decoder()(
            input_ids=torch.tensor([ids[n:]], device=device),
            position_ids=torch.arange(n, len(ids), device=device)[None],
            cache=self._cache, use_cache=True)
        self._cache = trie.cache_of(out)
        self._cached = list(ids)
        return out.last_hidden_state[0, -1]

    def _reason(self, requested: str, mode: str, intent: str, p_rec, item_id) -> str:
        """The decision of a reply in words (the widget's badge)."""
        if requested == "free" and mode == "item":
            return f"about {self.title(item_id)}: you asked about it (item-conditioned)"
        if mode == "item":
            return f"about {self.title(item_id)}: the item you picked (item-conditioned)"
        if requested != "free":
            return ("recommending: you asked it to (guided)" if intent == "rec"
                    else "chatting: you asked it to (guided)")
        cut = 1 / (1 + math.exp(-self.intent_cut))
        rule = ("the paper's rule, p > 0.50" if self.intent_cut == 0 else
                f"recommends from p > {cut:.2f}, a cut chosen on validation turns")
        what = "recommending" if intent == "rec" else "chatting"
        return f"{what}: the model's choice (p(recommend) = {p_rec:.2f}; {rule})"

    def _keep(self, n: int) -> None:
        """Cut the conversation's cache back to its first ``n`` tokens."""
        extra = self._cache.get_seq_length() - n
        if extra > 0:
            self._cache.crop(-extra)
        self._cached = self._cached[:n]

    def _margin(self, h: torch.Tensor) -> float:
        """``logit(<MODE=REC>) - logit(<MODE=CHAT>)`` from the state after the prompt (the
        output head's bias counted, as :func:`crslib.studies.freemode.rec_margin` does)."""
        head = self.model.get_output_embeddings()
        rows = [self._id[serialize.MODE_REC], self._id[serialize.MODE_CHAT]]
        logits = head.weight[rows] @ h
        if getattr(head, "bias", None) is not None:
            logits = logits + head.bias[rows]
        return float(logits[0] - logits[1])

    def _rec_margin(self, prompt: list[int]) -> float:
        """``logit(<MODE=REC>) - logit(<MODE=CHAT>)`` after ``prompt``."""
        return self._margin(self._encode(prompt))

    def _beam(self, prompt: list[int], vocab: trie.SIDVocab, k: int) -> trie.Ranked:
        """The constrained beam (width ``max(num_beams, k)``) after ``prompt`` +
        ``<MODE=REC><BOI>``, from the conversation's cache (then cut back to ``prompt``)."""
        ids = prompt + self._prefix("rec")
        h = self._encode(ids)
        T = len(ids)
        ranked = trie.expand_beams(self.model, vocab, self._cache, h[None],
                                   torch.ones(1, T, dtype=torch.bool), torch.tensor([T - 1]),
                                   max(self.num_beams, k), k)[0]
        self._keep(len(prompt))
        return ranked

    def _item_score(self, prompt: list[int], item_id: str) -> float:
        """The item's score (summed per-level log-probabilities) after ``<MODE=REC><BOI>``."""
        ids = prompt + self._prefix("rec", item_id)
        L = self.sids.levels
        start = len(prompt) + 1  # position of <BOI>: it predicts level 0
        h = self._hidden(ids[:start + L])[start:start + L]
        head, levels = self.model.get_output_embeddings(), self.vocab.level_tokens
        return sum(float(trie.level_log_probs(head, h[lv:lv + 1], levels[lv])[0, c])
                   for lv, c in enumerate(self.sids.code_of(item_id)))

    def _recommendation(self, item_id: str, score: float) -> Recommendation:
        return Recommendation(item_id, self.title(item_id), float(score), self.sids.tokens(item_id))

    def _inside_mention(self, input_ids: torch.Tensor) -> torch.Tensor:
        last = input_ids[:, -1].cpu()
        return (last == self.vocab.boi) | (
            self.vocab.level_of[last.clamp(0, len(self.vocab.level_of) - 1)] >= 0)

    def _generate(self, ids: list[int], excluded: set[str] = frozenset(),
                  only: Sequence[str] | None = None) -> tuple[list[int], bool]:
        """Continuation of ``ids`` (``self.decoding``) up to the end of the turn (dropped) or
        ``max_new_tokens``; an item mention cut off by the limit is dropped. ``only``: the
        items a mention may name (a recommendation turn names only what its list shows)."""
        config = self.decoding.generation_config(self.max_new_tokens, self._pad, self._turn_end)
        device = self.model.get_output_embeddings().weight.device
        input_ids = torch.tensor([ids], device=device)
        if len(ids) > 1:  # the cache holds all but the last token: generate runs only that one
            self._encode(ids[:-1])
        else:
            self._cache, self._cached = None, []
        procs = list(self._processors)
        vocab = self.vocab
        if only:  # mentions spell only these items; "already said" is decided among them too
            vocab = self.vocab.restricted(only)
            procs[0] = trie.SIDConstraint(vocab)
            excluded = {i for i in excluded if i in vocab.sids}
        procs += self.decoding.processors(len(ids), self._inside_mention)
        # a response does not bring back what the user named or was shown, nor repeat itself
        procs.append(NoMentionOf(vocab, vocab.sids, sorted(excluded), prompt_len=len(ids),
                                 end_ids=self._turn_end))
        decoding = (dataclasses.replace(self.decoding, candidates=self.candidates)
                    if self.decoding.top_p is not None else self.decoding)
        with trie.neutral_generation_config(self.model):
            out = decoding.generate(self.model, offset=len(self.replies),
                                         input_ids=input_ids,
                                         attention_mask=torch.ones_like(input_ids),
                                         cache=self._cache if len(ids) > 1 else None,
                                         generation_config=config,
                                         logits_processor=LogitsProcessorList(procs))
        if self._cache is not None:  # generate extended it: keep what is the conversation
            self._keep(len(ids) - 1)
        seq = out.sequences[0, len(ids):].tolist()
        ends = [k for k, t in enumerate(seq) if t in set(self._turn_end)]
        if ends:
            return seq[:ends[0]], False
        boi, eoi = self._id[serialize.BOI], self._id[serialize.EOI]
        last = max((k for k, t in enumerate(seq) if t == boi), default=None)
        if last is not None and eoi not in seq[last:]:
            seq = seq[:last]
        return seq, True

    def _response_text(self, ids: list[int]) -> tuple[str, tuple[str, ...]]:
        """Generated response ids -> serialized text (mentions as SIDs, literal text that looks
        like a token escaped) and the items mentioned."""
        L, boi, eoi = self.sids.levels, self._id[serialize.BOI], self._id[serialize.EOI]
        parts, plain, mentions, k = [], [], [], 0

        def flush():
            text = self.tokenizer.decode(plain, skip_special_tokens=True)
            parts.append(serialize.TOKEN_RE.sub(lambda m: serialize.escape(m.group(0)), text))
            plain.clear()

        while k < len(ids):
            item = (self.vocab.item_of_tokens(ids[k + 1:k + 1 + L])
                    if ids[k] == boi and k + L + 1 < len(ids) and ids[k + L + 1] == eoi else None)
            if item is None:
                plain.append(ids[k])
                k += 1
                continue
            flush()
            if parts and parts[-1][-1:].isalnum():  # the tokenizer drops the space before
                parts[-1] += " "                    # <BOI>: "recommend" + title, spaced
            parts.append(serialize.mention(item, self.sids))
            mentions.append(item)
            k += L + 2
            after = self.tokenizer.decode(ids[k:k + 1], skip_special_tokens=True)
            if after[:1].isalnum():
                parts.append(" ")
        flush()
        return "".join(parts), tuple(mentions)


# A conversation a person might have: titles typed as text, requests for recommendations
SCRIPT = {  # one turn per kind of request (issue 22): a genre, a decade, a follow-up about the
    # item just recommended, a refused genre, a genre with a liked title, an audience
    "redial": ("Hi! I want a scary movie for tonight. I loved The Shining.",
               "Something from the 80s maybe?",
               "Tell me why you picked that one.",
               "I don't like horror at all. A thriller instead?",
               "Do you have a comedy too? I liked Superbad (2007).",
               "What about something for the whole family?"),
    "inspired": ("Hi! I want a scary movie for tonight. I loved The Shining.",
                 "Something from the 80s maybe?",
                 "Tell me why you picked that one.",
                 "I don't like horror at all. A thriller instead?",
                 "Do you have a comedy too? I liked Superbad.",
                 "What about something for the whole family?"),
}


def run_script(session: ChatSession, script: Sequence[str]) -> list[dict]:
    """Play ``script`` in free mode from a fresh conversation; one row per turn with the checks
    a person would make: a repeated word 3-gram (a loop), the longest run of digits, the
    recommended items the user named, what the message asks for (:mod:`crslib.data.request`) and
    how many of the recommendations satisfy it, whether a recommendation turn's response names
    its item, and the seconds the reply took."""
    session.reset()
    rows = []
    for text in script:
        r = session.reply(text, mode="free")
        named = session.named_items()
        asked = (request_mod.parse(text, session.catalog, session._genre_words)
                 if session.catalog is not None else request_mod.Request())
        recs = [x.item_id for x in r.recommendations]
        ok = sum(request_mod.satisfies(session.catalog, i, asked) for i in recs) if asked else 0
        rows.append({"user": session.history[-2][1], "intent": r.mode, "why": r.reason,
                     "assistant": r.text, "recommended": [session.title(i) for i in recs],
                     "asked": asked.describe(),
                     "satisfying": f"{ok}/{len(recs)}" if asked and recs else "",
                     "named_recommended": [session.title(i) for i in recs if i in named],
                     "names_its_item": (r.item in r.mentions) if r.mode == "rec" else None,
                     "repeats_3gram": repeats_ngram(r.text, 3),
                     "longest_digit_run": max((len(m) for m in re.findall(r"\d+", r.text)),
                                              default=0),
                     "seconds": round(r.seconds, 2)})
    return rows


def load_catalog(dataset: str, data_root=None) -> data.Catalog | None:
    """The dataset's catalog (titles), or None when its files are not there."""
    root = data.data_root(data_root) / dataset
    loaders = {"redial": data.load_redial_catalog, "inspired": data.load_inspired_catalog}
    loader = loaders.get(dataset)
    try:
        return loader(root) if loader else None
    except data.DataError:
        return None


# ----------------------------------------------------------------------------- widget
def reply_html(reply: Reply, catalog: data.Catalog | None = None, details: bool = False) -> str:
    """One assistant turn as HTML (all escaped): a badge with the decision in words, the
    response, and the recommendations as a person reads them (title, year, genres); with
    ``details`` also each item's SID path and score (summed per-level log-probability)."""
    badge = (f"<span class='crslib-badge' style='font-size:85%;color:#666'>[{reply.mode.upper()}] "
             f"{html.escape(reply.reason or MODE_LABELS[reply.requested])}</span>")
    body = (f"<span class='crslib-response'>{html.escape(reply.text)}</span>" if reply.text.strip()
            else "<i>(empty response)</i>")
    note = ""
    if reply.request and reply.matching is not None:
        shown = len(reply.recommendations)
        note = (f"<div class='crslib-filter' style='font-size:85%;color:#666'>only films that are "
                f"{html.escape(reply.request)}: {reply.matching} in the catalog"
                + (f", so {shown} shown" if reply.matching < 5 else "") + "</div>")

    def row(k: int, r: Recommendation) -> str:
        it = catalog[r.item_id] if catalog is not None and r.item_id in catalog else None
        title = html.escape(it.title if it else r.title)
        year = html.escape(str(it.year)) if it and it.year else ""
        kinds = html.escape(", ".join(it.genres)) if it and it.genres else ""
        extra = (f"<td>{r.score:.3f}</td><td><code>{html.escape(r.sid)}</code></td>"
                 if details else "")
        return f"<tr><td>{k}</td><td>{title}</td><td>{year}</td><td>{kinds}</td>{extra}</tr>"
    rows = "".join(row(k, r) for k, r in enumerate(reply.recommendations, start=1))
    head = "<th>#</th><th>title</th><th>year</th><th>genres</th>" + (
        "<th>score</th><th>SID path</th>" if details else "")
    table = (f"<table class='crslib-recs' style='font-size:85%;margin:2px 0 4px 12px;line-height:1.1'>"
             f"<tr>{head}</tr>{rows}</table>") if rows else ""
    return f"<div class='crslib-assistant'><b>Assistant</b> {badge}<br>{body}{note}{table}</div>"


def transcript_html(session: ChatSession, height: str = "360px", details: bool = False) -> str:
    """The conversation as HTML, newest at the bottom, in a box that stays scrolled down."""
    parts, k = [], 0
    for role, text in session.history:
        if role == "user":
            parts.append(f"<div class='crslib-user' style='margin:4px 0'><b>You</b><br>"
                         f"{html.escape(text)}</div>")
        else:
            parts.append(reply_html(session.replies[k], session.catalog, details))
            k += 1
    inner = "".join(parts) or "<i>Say hello to start.</i>"
    # column-reverse keeps the scroll position at the newest turn
    style = (f"height:{height};overflow-y:auto;display:flex;flex-direction:column-reverse;"
             "border:1px solid #ccc;padding:6px")
    return f"<div style='{style}'><div>{inner}</div></div>"


class ChatWidget:
    """ipywidgets front end of a :class:`ChatSession`: transcript, mode selector, item picker
    (item mode), boxes "only what I asked for" (the session's ``only_asked``), "recommend
    titles I named" (``exclude_named``) and "details" (SID paths and scores in the tables), a
    text box (Enter sends), Send and Reset buttons, and a status line: "thinking…" while a reply
    is computed (Send and the text box disabled), then the seconds it took, or a message.

    It talks in its own conversation (``session.fresh()`` unless ``share=True``), so an example
    conversation played above it stays apart. :meth:`send` and :meth:`reset` are what the
    buttons and Enter call; tests call them directly.
    """

    def __init__(self, session: ChatSession, height: str = "360px", share: bool = False):
        import ipywidgets as w
        self.session, self.height = (session if share else session.fresh()), height
        session = self.session
        names = {}
        if session.catalog is not None:
            for iid in session.sids.item_ids:
                name = session.title(iid)
                names[name if name not in names else f"{name} [{iid}]"] = iid
        else:
            names = {iid: iid for iid in session.sids.item_ids}
        self.item_ids = names
        self._busy, self._done_at = False, -1e9
        self.transcript = w.HTML(transcript_html(session, height))
        self.mode = w.Dropdown(options=[(MODE_LABELS[m], m) for m in INFERENCE_MODES],
                               value="free", description="mode")
        # ensure_option off: a cleared picker reaches the kernel as "" (then item mode asks for
        # an item) instead of keeping the last valid title
        self.item = w.Combobox(options=sorted(names), placeholder="type a title",
                               ensure_option=False, description="item",
                               layout=w.Layout(display="none", width="420px"))
        self.text = w.Text(placeholder="Type a message and press Enter…",
                           layout=w.Layout(width="60%"))
        self.only_asked = w.Checkbox(value=session.only_asked, indent=False,
                                     description="only what I asked for")
        self.allow_named = w.Checkbox(value=not session.exclude_named, indent=False,
                                      description="recommend titles I named")
        self.details = w.Checkbox(value=False, indent=False, description="details")
        self.send_button = w.Button(description="Send", button_style="primary")
        self.reset_button = w.Button(description="Reset")
        self.status = w.HTML()
        self.send_button.on_click(lambda _: self.send())
        self.reset_button.on_click(lambda _: self.reset())
        with warnings.catch_warnings():  # ipywidgets 8 deprecates on_submit, but it is the
            warnings.simplefilter("ignore", DeprecationWarning)  # only Enter-only event
            self.text.on_submit(lambda _: self.send())
        self.mode.observe(self._on_mode, names="value")
        self.only_asked.observe(self._on_only_asked, names="value")
        self.allow_named.observe(self._on_allow_named, names="value")
        self.details.observe(lambda _: self._refresh(), names="value")
        self.box = w.VBox([self.transcript,
                           w.HBox([self.mode, self.item, self.only_asked, self.allow_named,
                                   self.details]),
                           w.HBox([self.text, self.send_button, self.reset_button]), self.status])

    def _on_only_asked(self, change) -> None:
        self.session.only_asked = bool(change["new"])

    def _on_allow_named(self, change) -> None:
        self.session.exclude_named = not change["new"]

    def _on_mode(self, change) -> None:
        self.item.layout.display = None if change["new"] == "item" else "none"

    def _refresh(self) -> None:
        self.transcript.value = transcript_html(self.session, self.height, self.details.value)

    def _status(self, message: str, error: bool = False) -> None:
        color = "#b00" if error else "#666"
        self.status.value = f"<span style='color:{color}'>{html.escape(message)}</span>"

    def _thinking(self, on: bool) -> None:
        self._busy = on
        self.text.disabled = self.send_button.disabled = on
        if on:
            self._status("thinking…")

    def send(self, text: str | None = None) -> Reply | None:
        """Send ``text`` (default: the text box) with the selected mode; a rejected message
        is shown in the status line and returns None. An Enter pressed while the last reply
        was being computed (queued, arriving just after it) is dropped, not answered."""
        text = self.text.value if text is None else text
        if self._busy or (not text.strip() and time.monotonic() - self._done_at < 1.5):
            return None
        item = None
        if self.mode.value == "item":
            item = self.item_ids.get(self.item.value, self.item.value) or None
        self._thinking(True)
        try:
            reply = self.session.reply(text, self.mode.value, item)
        except InputError as e:
            self._status(str(e), error=True)
            return None
        finally:
            self._busy = False
            self.text.disabled = self.send_button.disabled = False
            self._done_at = time.monotonic()
        self.text.value = ""
        self._refresh()
        self._status(f"answered in {reply.seconds:.2f} s")
        return reply

    def reset(self) -> None:
        self.session.reset()
        self._refresh()
        self._status("conversation cleared")

    def display(self):
        from IPython.display import display
        display(self.box)
        return self

    def _ipython_display_(self):
        self.display()
