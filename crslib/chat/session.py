"""A conversation with a trained run: :class:`ChatSession` (the package docstring says how it
answers; :mod:`crslib.chat`)."""
from __future__ import annotations

import dataclasses
import json
import math
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import torch
from transformers import LogitsProcessorList

from crslib import data
from crslib.chat import grammar, replies, settings
from crslib.chat.cache import ConversationCache, hidden_states
from crslib.chat.grammar import NoMentionOf, ResponseGrammar
from crslib.chat.replies import (INFERENCE_MODES, MAX_CHARS, SAMPLE_CANDIDATES, InputError,
                                 Recommendation, Reply, is_follow_up)
from crslib.data import genres, request as request_mod, titles
from crslib.data.titles import TitleLinker
from crslib.decoding import batching, beam_search, trie
from crslib.decoding.generation import (GREEDY, ResponseDecoding, close_punctuation,
                                        trim_unfinished, turn_end_ids)
from crslib.evaluation import dialog_eval
from crslib.format import serialize
from crslib.ids.semantic_ids import SemanticIDs
from crslib.training import run

_ZWSP = "\u200b"


@dataclass(eq=False, repr=False)
class ChatSession:
    """A conversation with a GCRS model; see the package docstring (:mod:`crslib.chat`).

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
    num_beams: int = beam_search.DEFAULT_BEAM
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
            self._processors.append(dialog_eval.OnlyTokens(self.head_ids, size))
        self._turn_end = turn_end_ids(tok)
        self.linker = TitleLinker(self.catalog, tok, self.sids.item_ids) if self.catalog else None
        self._genre_words = genres.vocabulary(self.catalog) if self.catalog else {}
        self._conversation = ConversationCache(self.model)
        self.chosen_on_validation: tuple[str, ...] = ()  # set by from_run

    def __repr__(self) -> str:
        return (f"ChatSession({len(self.sids)} items, {len(self.turns)} turns, "
                f"max_context_tokens={self.max_context_tokens}, top_k={self.top_k})")

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_run(cls, path, data_root=None, merge_lora: bool = True, validated: bool = True,
                 **kwargs) -> "ChatSession":
        """A session over the run folder ``path`` (``run.load_run``): its restricted output
        vocabulary when it has one, the evaluation context length, titles from the dataset's
        catalog (item ids when the data is not found). Loads nothing from the internet.

        ``validated``: the decoding, intent cut and beam width chosen on validation turns for
        these weights, where saved (:func:`crslib.chat.settings.validated_settings`; else greedy
        with no word 3-gram twice, cut 0, beam 50); ``kwargs`` override both.
        ``chosen_on_validation`` names what came from validation.

        ``merge_lora``: a LoRA run's adapters are merged into the base weights (peft's
        ``merge_and_unload``), so each linear layer is one matmul instead of three and a
        decoded token costs less; the merged weights equal base + adapter up to float
        rounding. The evaluation protocols score the unmerged model, as trained."""
        chosen = settings.validated_settings(path) if validated else {}
        model, tok, sids, rc = run.load_run(path)
        if merge_lora and hasattr(model, "merge_and_unload"):
            model = model.merge_and_unload().eval()
        vocab_file = Path(path) / "output_vocab.json"
        defaults = {"head_ids": json.loads(vocab_file.read_text()) if vocab_file.is_file()
                    else None, "max_context_tokens": rc.eval.max_context_tokens,
                    "decoding": ResponseDecoding(no_repeat_ngram_size=3),  # never a loop
                    "template": rc.template}
        session = cls(model, tok, sids, data.catalog_or_none(rc.dataset, data_root),
                      **{**defaults, **chosen, **kwargs})
        session.chosen_on_validation = tuple(k for k in chosen if k not in kwargs)
        return session

    def fresh(self) -> "ChatSession":
        """A new, empty conversation with the same model and settings (the widget's own: an
        example conversation played above it stays apart)."""
        return dataclasses.replace(self, turns=[], replies=[])

    # ------------------------------------------------------------------ state
    def reset(self) -> None:
        """Forget the conversation."""
        self.turns.clear()
        self.replies.clear()
        self._conversation.clear()

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
        """Whether catalog items ``a`` and ``b`` name one film (:func:`titles.same_film`): a list
        shows one of them, and not one the user named."""
        return titles.same_film(self.catalog, a, b)

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
        """The user's message as a serialized turn (see the package docstring); raises
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
        h_prompt = self._encode_turn(prompt)  # one encoding of the turn, from the kept cache
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
        serialized, mentions = grammar.response_text(generated, self.tokenizer, self.vocab,
                                                     self.sids)
        # an unfinished last sentence goes (its tail names no item: mentions unchanged)
        serialized = trim_unfinished(serialized, serialize.BOI)
        tokens = tuple(prefix + generated)
        why = replies.reason(requested, mode, intent, p_rec, item_id and self.title(item_id),
                             self.intent_cut)
        out = Reply(requested, intent, recs, item_id,
                    self._for_people(serialized), serialized,
                    self.tokenizer.decode(list(tokens), skip_special_tokens=False), tokens,
                    mentions, p_rec, truncated, time.perf_counter() - t0,
                    asked.describe(), matching, why)
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
        text, mentions = grammar.response_text(generated, self.tokenizer, self.vocab, self.sids)
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

    def _encode_turn(self, ids: list[int]) -> torch.Tensor:
        """The state after ``ids``, from the conversation's cache (:class:`ConversationCache`)."""
        return self._conversation.encode(ids, reuse=self.reuse_cache)

    @torch.no_grad()
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
        return self._margin(self._encode_turn(prompt))

    def _beam(self, prompt: list[int], vocab: trie.SIDVocab, k: int) -> trie.Ranked:
        """The constrained beam (width ``max(num_beams, k)``) after ``prompt`` +
        ``<MODE=REC><BOI>``, from the conversation's cache (then cut back to ``prompt``)."""
        ids = prompt + self._prefix("rec")
        h = self._encode_turn(ids)
        T = len(ids)
        ranked = beam_search.expand_beams(self.model, vocab, self._conversation.kv, h[None],
                                   torch.ones(1, T, dtype=torch.bool), torch.tensor([T - 1]),
                                   max(self.num_beams, k), k)[0]
        self._conversation.keep(len(prompt))
        return ranked

    def _item_score(self, prompt: list[int], item_id: str) -> float:
        """The item's score (summed per-level log-probabilities) after ``<MODE=REC><BOI>``."""
        ids = prompt + self._prefix("rec", item_id)
        L = self.sids.levels
        start = len(prompt) + 1  # position of <BOI>: it predicts level 0
        h = hidden_states(self.model, ids[:start + L])[start:start + L]
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
            self._encode_turn(ids[:-1])
        else:
            self._conversation.clear()
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
        with batching.neutral_generation_config(self.model):
            out = decoding.generate(self.model, offset=len(self.replies),
                                         input_ids=input_ids,
                                         attention_mask=torch.ones_like(input_ids),
                                         cache=self._conversation.kv if len(ids) > 1 else None,
                                         generation_config=config,
                                         logits_processor=LogitsProcessorList(procs))
        if self._conversation.kv is not None:  # generate extended it: keep the conversation's
            self._conversation.keep(len(ids) - 1)
        seq = out.sequences[0, len(ids):].tolist()
        ends = [k for k, t in enumerate(seq) if t in set(self._turn_end)]
        if ends:
            return seq[:ends[0]], False
        boi, eoi = self._id[serialize.BOI], self._id[serialize.EOI]
        last = max((k for k, t in enumerate(seq) if t == boi), default=None)
        if last is not None and eoi not in seq[last:]:
            seq = seq[:last]
        return seq, True

