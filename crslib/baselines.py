"""Non-neural reference rankers, scored by the same evaluation code as GCRS.

* ``Popularity``: items ranked by how often they are mentioned in the training dialogs
  (ties broken by catalog order, so the ranking is deterministic).
* ``Repeat``: the items already mentioned in the dialog, most recent first, then popularity —
  the repetition shortcut (NOTES.md §9): under the paper's protocol, repeats count as hits.
"""
from __future__ import annotations

from collections import Counter
from typing import Iterable, Sequence

from crslib.data import Dialog


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
