"""Evaluation protocols (NOTES.md §5, §8, §9), each written into its result file.

Cases: every recommendation instance of the test split — an assistant turn that mentions an
item with a SID, one case per mentioned item, its preceding dialog as input (the paper's
expansion). Ranking protocols:

* ``paper``: the gold mode is forced (the prompt ends ``Assistant:<MODE=REC><BOI>``), the top
  50 come from constrained beam search (width 50); Recall@{1,5,10,20}, NDCG and MRR @{5,10,20}.
  Items already mentioned earlier in the dialog count as hits, as in the paper.
* ``community``: the same cases, but every catalog item is scored exactly
  (``item_scores.score_all_items``), so Recall@50 is exact; Recall@{1,10,50}, NDCG@10, MRR@10.
* ``dedup``: ``community`` without the cases whose item was mentioned earlier in the dialog
  (the repetition shortcut removed, NOTES.md §9).

Baselines (``popularity``, ``repeat``, ``text-retrieval``) produce full rankings and are scored
on the same cases by the same code. ``dialog``: token-weighted perplexity of the gold responses
(the tokens after ``<RESP>`` and the end-of-sequence token, with the gold mode and item given),
and the model's own choice of mode in free mode (intent accuracy/F1; the paper never measures
it).

Every result is one JSON file ``results/<profile>/<dataset>/<variant>.<protocol>.json`` with
``dataset, split, profile, variant, protocol, seeds, config_hash, n_cases, metrics, ci95``
(values as fractions except ``ppl``/``bleu``), written atomically.
"""
from __future__ import annotations

import random
from typing import Sequence

from crslib import metrics
from crslib.data import Dataset
from crslib.evaluation.recommenders import Recommender, rank_of
from crslib.format import serialize
from crslib.ids.semantic_ids import SemanticIDs

PAPER_KS = dict(recall_ks=(1, 5, 10, 20), cut_ks=(5, 10, 20))
COMMUNITY_KS = dict(recall_ks=(1, 10, 50), cut_ks=(10,))


def rec_cases(ds: Dataset, sids: SemanticIDs, split: str = "test", fmt: str = "gcrs",
              limit: int | None = None, seed: int = 0) -> list[serialize.Example]:
    """Recommendation instances of ``split`` (a seeded random sample of ``limit`` if given)."""
    cases = [ex for ex in serialize.serialize_all(ds[split], sids, fmt) if ex.mode == "rec"]
    return [cases[j] for j in sample_indices(cases, limit, seed)]


def sample_indices(cases: Sequence[serialize.Example], limit: int | None = None,
                   seed: int = 0) -> list[int]:
    """Positions in ``cases`` of :func:`rec_cases`' seeded sample of ``limit`` (all when
    ``limit`` is None or not smaller), in its order: so a result over all cases can be cut to
    exactly the cases a sampled result scored (``case_ranks`` are in this order)."""
    if limit is None or limit >= len(cases):
        return list(range(len(cases)))
    picked = random.Random(seed).sample(range(len(cases)), limit)
    return sorted(picked, key=lambda j: (cases[j].dialog_id, cases[j].turn_index))


# ----------------------------------------------------------------------------- recommenders


def select(cases: Sequence[serialize.Example], ranks: Sequence[int | None], protocol: str):
    """Cases and ranks that count under ``protocol`` (``dedup`` drops repeated items)."""
    if protocol != "dedup":
        return list(cases), list(ranks)
    keep = [k for k, ex in enumerate(cases) if ex.item not in ex.context_items]
    return [cases[k] for k in keep], [ranks[k] for k in keep]


PAPER_DEPTH = 50  # the paper's beam width: a ranker's list under the paper protocol


def case_ids(cases: Sequence[serialize.Example]) -> list[str]:
    """``dialog:turn:item`` of each case: what pairs two rankers' cases (claims)."""
    return [f"{ex.dialog_id}:{ex.turn_index}:{ex.item}" for ex in cases]


def case_dialog(case_id: str) -> str:
    """The dialog of a :func:`case_ids` id: the unit a paired bootstrap resamples."""
    return case_id.rsplit(":", 2)[0]


def case_values(ranks: Sequence[int | None], ids: Sequence[str], metric: str
                ) -> dict[str, float]:
    """``{case id: value of metric}`` (``recall@k`` or ``ndcg@k``) from per-case ranks."""
    k = int(metric.split("@")[1])
    values = metrics.ranking_per_case(ranks, recall_ks=(k,), cut_ks=(k,))[metric]
    return dict(zip(ids, values.tolist()))


def new_item_ranks(cases: Sequence[serialize.Example], lists: Sequence[Sequence[str]]
                   ) -> tuple[list[int], list[int | None]]:
    """New-item recommendation from the same lists: the positions of the cases whose gold item
    the dialog has not mentioned yet, and for each the gold's 1-based rank in its list with
    every mentioned item removed (None: not in the list)."""
    keep, ranks = [], []
    for k, (ex, items) in enumerate(zip(cases, lists)):
        seen = set(ex.context_items)
        if ex.item in seen:
            continue
        keep.append(k)
        ranks.append(rank_of([i for i in items if i not in seen], ex.item))
    return keep, ranks


def evaluate(recommender: Recommender, cases: Sequence[serialize.Example], protocol: str
             ) -> dict:
    """Score ``recommender`` on ``cases`` under a ranking ``protocol``: ``{"protocol",
    "n_cases", "metrics", "ci95", "case_ranks", "case_ids"}`` (ranks 1-based, None = not
    ranked, in the order of ``cases``).

    * ``paper``: each case's top :data:`PAPER_DEPTH` (the recommender's ``num_beams`` if it has
      one: a generative model's constrained beam); the result also holds the new-item ranks
      from the same lists (``new_item_cases``, ``case_new_ranks``: :func:`new_item_ranks`),
      from which the ``new_items`` protocol is derived without scoring again;
    * ``community``: the exact rank among all items;
    * ``dedup``: ``community`` ranks, then only the cases whose item the dialog had not
      mentioned (:func:`select`).

    Where the result is saved and when it is reused is :func:`scored`'s job
    (``crslib.studies.experiments.evaluate`` joins the two)."""
    if protocol == "paper":
        lists = recommender.top(cases, getattr(recommender, "num_beams", PAPER_DEPTH))
        ranks = [rank_of(items, ex.item) for items, ex in zip(lists, cases)]
        keep, new = new_item_ranks(cases, lists)
        return {**ranking_result(ranks, protocol), "case_ranks": ranks,
                "case_ids": case_ids(cases), "new_item_cases": keep, "case_new_ranks": new}
    ranks = recommender.ranks(cases, "community" if protocol == "dedup" else protocol)
    chosen, ranks = select(cases, ranks, protocol)
    return {**ranking_result(ranks, protocol), "case_ranks": ranks, "case_ids": case_ids(chosen)}


def new_items_result(paper: dict) -> dict:
    """The ``new_items`` protocol (new-item recall from the paper protocol's lists) of a saved
    ``paper`` result; raises ``ValueError`` when it predates new-item ranks."""
    if "case_new_ranks" not in paper:
        raise ValueError("this paper result has no new-item ranks (scored before they were "
                         "kept): score the paper protocol again")
    ids = paper.get("case_ids")
    return {**ranking_result(paper["case_new_ranks"], "new_items"),
            "case_ranks": paper["case_new_ranks"],
            "case_ids": [ids[k] for k in paper["new_item_cases"]] if ids else None}


def ranking_result(ranks: Sequence[int | None], protocol: str, **meta) -> dict:
    ks = PAPER_KS if protocol in ("paper", "new_items") else COMMUNITY_KS
    m, ci = metrics.ranking_with_ci(ranks, **ks)
    return {**meta, "protocol": protocol, "n_cases": len(ranks), "metrics": m, "ci95": ci}
