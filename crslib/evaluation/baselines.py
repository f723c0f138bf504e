"""Non-neural reference rankers, scored by the same evaluation code as GCRS.

* ``Popularity``: items ranked by how often they are mentioned in the training dialogs
  (ties broken by catalog order, so the ranking is deterministic).
* ``Repeat``: the items already mentioned in the dialog, most recent first, then popularity —
  the repetition shortcut (NOTES.md §9): under the paper's protocol, repeats count as hits.
* ``TextRetrieval``: cosine similarity between the dialog context and the item texts, both
  embedded by the frozen sentence encoder the SIDs were built with (protocol in its docstring).

``Popularity`` and ``Repeat`` rank from a case's ``context_items``; ``TextRetrieval`` ranks whole
cases (``rank_cases``), all contexts encoded in one batched, cached call.
"""
from __future__ import annotations

from collections import Counter
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np

from crslib.data import Catalog, Dialog
from crslib.format.serialize import Example, display_text
from crslib.ids import encode
from crslib.ids.semantic_ids import SemanticIDs


class Popularity:
    name = "popularity"

    def __init__(self, catalog_ids: Sequence[str]):
        self.catalog_ids = list(catalog_ids)

    def fit(self, dialogs: Iterable[Dialog]) -> "Popularity":
        counts = Counter(i for d in dialogs for t in d.turns for i in t.items)
        order = {iid: k for k, iid in enumerate(self.catalog_ids)}
        self.ranking_ = sorted(self.catalog_ids, key=lambda i: (-counts[i], order[i]))
        self.counts_ = counts
        return self

    def rank(self, context_items: Sequence[str], k: int | None = None) -> list[str]:
        return self.ranking_[:k]


class Repeat(Popularity):
    name = "repeat"

    def rank(self, context_items: Sequence[str], k: int | None = None) -> list[str]:
        recent = list(dict.fromkeys(reversed(list(context_items))))
        seen = set(recent)
        out = recent + [i for i in self.ranking_ if i not in seen]
        return out[:k]


class TextRetrieval:
    """Items ranked by cosine similarity between their text and the dialog context.

    Protocol: the context of a case is its last ``max_context_turns`` turns before the
    recommendation turn (``None``: all), one line each, ``User: …`` / ``Assistant: …``, with
    every item mention written as the item's title and year (``Item.name``), not its SID. Items
    are embedded from ``Item.text()`` — the text their SIDs were built from — by the same frozen
    encoder (the SID config's ``encoder``; ``None``: :data:`crslib.ids.encode.DEFAULT_ENCODER`), via
    :func:`crslib.ids.encode.encode_texts` (cached). Every catalog item is scored; nothing is
    excluded, so items already mentioned can be ranked first (and count as hits under the
    ``paper`` protocol). Equal scores are ordered by popularity (training mentions, then catalog
    order); a case without context turns gets the popularity ranking. Nothing is trained but the
    popularity counts.

    ``max_context_turns=3`` was chosen on INSPIRED dev (320 cases, all-MiniLM-L6-v2; for 1, 2, 3,
    4, 6 and all turns Recall@1 0.06, 0.07, 0.08, 0.07, 0.06, 0.03 and Recall@10 0.14, 0.18,
    0.19, 0.20, 0.19, 0.14; the encoder keeps the first 256 tokens, so long contexts lose the
    latest turns).
    ``encode``: ``texts -> (n, dim) array`` to use instead of the sentence encoder (tests).
    """

    name = "text-retrieval"

    def __init__(self, catalog: Catalog, sids: SemanticIDs, encoder: str | None = None,
                 max_context_turns: int | None = 3,
                 encode: Callable[[list[str]], np.ndarray] | None = None):
        self.catalog = catalog
        self.sids = sids
        self.encoder = encoder
        self.max_context_turns = max_context_turns
        self.encode = encode

    def fit(self, dialogs: Iterable[Dialog]) -> "TextRetrieval":
        n = self.max_context_turns
        if n is not None and n < 1:
            raise ValueError(f"max_context_turns must be >= 1 or None, got {n}")
        unknown = [i for i in self.sids.item_ids if i not in self.catalog]
        if unknown:
            raise ValueError(f"{len(unknown)} items with a SID are not in the catalog, "
                             f"e.g. {unknown[:3]}")
        self.popularity_ = Popularity(self.catalog.ids).fit(dialogs)
        self.items_ = self.popularity_.ranking_  # embedding rows in popularity order
        self.item_emb_ = self._embed([self.catalog[i].text() for i in self.items_])
        return self

    def describe(self) -> dict:
        """What a result file records about this ranker."""
        return {"encoder": self.encoder or encode.DEFAULT_ENCODER,
                "max_context_turns": self.max_context_turns,
                "context": "last turns, 'User: '/'Assistant: ' lines, mentions as titles",
                "score": "cosine(context, Item.text()); ties and empty context: popularity"}

    def context_text(self, ex: Example) -> str:
        """The text a case is ranked from ("" when the case has no context turns)."""
        n = self.max_context_turns
        turns = ex.context if n is None else ex.context[-n:]
        try:
            return "\n".join(f"{'User' if role == 'user' else 'Assistant'}: "
                             f"{display_text(text, self.sids, self.catalog)}"
                             for role, text in turns)
        except ValueError as e:
            raise ValueError(f"case {ex.dialog_id}:{ex.turn_index}: {e}") from None

    def rank_cases(self, cases: Sequence[Example], k: int | None = None) -> Iterator[list[str]]:
        """Top ``k`` items (all with ``None``) of each case, in order; the contexts are read and
        encoded now, the rankings made lazily (a full ranking per case is large)."""
        for ex in cases:
            bad = [i for i in ex.context_items if i not in self.catalog]
            if bad:
                raise ValueError(f"case {ex.dialog_id}:{ex.turn_index}: context items {bad} are "
                                 "not in the catalog")
        return self.rank_texts([self.context_text(ex) for ex in cases], k)

    def rank_texts(self, texts: Sequence[str], k: int | None = None) -> Iterator[list[str]]:
        """Top ``k`` items for each context text ("" gets the popularity ranking)."""
        if not hasattr(self, "item_emb_"):
            raise RuntimeError("TextRetrieval is not fitted; call fit(dialogs) first")
        texts = list(texts)
        todo = [t for t in texts if t]
        emb = iter(self._embed(todo)) if todo else iter(())
        queries = [next(emb) if t else None for t in texts]  # embedded now, ranked lazily
        return (self.items_[:k] if q is None else self._rank(q, k) for q in queries)

    def _rank(self, query: np.ndarray, k: int | None) -> list[str]:
        order = np.argsort(-(self.item_emb_ @ query), kind="stable")  # stable: popularity ties
        return [self.items_[j] for j in order[:k]]

    def _embed(self, texts: list[str]) -> np.ndarray:
        """Unit-length rows, one per text."""
        if self.encode is not None:
            x = self.encode(texts)
        else:
            x = encode.encode_texts(texts, self.encoder or encode.DEFAULT_ENCODER)
        x = np.asarray(x, dtype=np.float32)
        if x.shape[0] != len(texts):
            raise ValueError(f"encoder returned {x.shape[0]} rows for {len(texts)} texts")
        norms = np.linalg.norm(x, axis=1, keepdims=True)
        if not (norms > 0).all():
            raise ValueError("encoder returned a zero vector; cosine is undefined")
        return x / norms
