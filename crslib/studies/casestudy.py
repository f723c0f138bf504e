"""Case studies (beyond the paper, NOTES.md §8): test cases chosen by a rule, and what each
model answers on them.

Cases are the paper protocol's (:func:`crslib.evaluation.evaluate.rec_cases`: an assistant turn that
mentions an item with a SID, one case per item, its preceding dialog as input); every format
yields the same cases in the same order (:func:`same_cases` checks it by
``(dialog_id, turn_index, item)``). On a case a run gives an :class:`Answer`:

* ``top``: its top ``k`` of the paper protocol's ranking — mode forced to REC, constrained beam
  search of width 50 (``beam_search.sid_beam_search``, as ``recommenders.model_ranks``), score =
  summed per-level log-probability of the SID — whatever mode the run would pick itself;
  ``gold_rank``: the gold item's 1-based rank in that top 50 (None: not in it);
* ``mode``: what the run does when left free. ``gcrs`` (and ``mode_resp``, ``sid``) compare
  the logits of ``<MODE=REC>`` and ``<MODE=CHAT>`` after ``Assistant:`` (``p_rec`` is their
  two-way softmax; REC when the REC logit is larger, as ``crslib.studies.freemode``); ``resp`` has
  no mode token: ``rec`` when its free response mentions an item (as ``serialize.parse``);
  ``tiger`` always recommends;
* ``response``: decoded greedily as ``chat.ChatSession`` decodes (mentions constrained to
  catalog SIDs, no control tokens outside them), shown with titles. ``gcrs`` writes it after
  the mode it picked and, for REC, after its top item's SID (the paper's order: mode, item,
  text); ``mode_resp`` after the mode; ``resp`` straight after the prompt; ``tiger`` and ``sid``
  write none (``""``).

Selection (:func:`select_cases`) is a :class:`Rule` over the gold ranks several rankers gave
the same cases — a written predicate, not a choice by hand: the matching cases ordered by the
rule's key, ties in a seeded random order, the first ``n``. :func:`wins` and :func:`fails` build
the two rules notebook 08 uses.
"""
from __future__ import annotations

import html
import json
import math
import random
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Mapping, NamedTuple, Sequence

import torch

from crslib import chat
from crslib.data import Catalog, Dataset
from crslib.decoding import beam_search, trie
from crslib.evaluation import evaluate, recommenders
from crslib.format import serialize
from crslib.ids.semantic_ids import SemanticIDs
from crslib.studies import freemode
from crslib.training import run

Ranks = Mapping[str, "int | None"]  # one case: ranker -> 1-based gold rank (None: not ranked)


# ----------------------------------------------------------------------------- answers
class TopItem(NamedTuple):
    item_id: str
    title: str
    score: float  # summed per-level log-probability of the item's SID


@dataclass(frozen=True)
class Answer:
    """One run's answer on one case (module docstring). ``item``: the item the response was
    written after (``gcrs`` REC); ``mentions``: items the response mentions; ``truncated``: the
    response hit ``max_new_tokens``."""

    model: str
    fmt: str
    mode: str
    top: tuple[TopItem, ...]
    gold_rank: int | None
    response: str = ""
    item: str | None = None
    mentions: tuple[str, ...] = ()
    p_rec: float | None = None
    truncated: bool = False

    def as_dict(self) -> dict:
        d = asdict(self)
        d["top"] = [t._asdict() for t in self.top]
        return d


def case_key(ex: serialize.Example) -> tuple[str, int, str | None]:
    return ex.dialog_id, ex.turn_index, ex.item


def same_cases(case_lists: Mapping[str, Sequence[serialize.Example]]) -> list[tuple]:
    """The common ``(dialog_id, turn_index, item)`` keys of several case lists; raises
    ``ValueError`` naming the first list and position that differ."""
    names = list(case_lists)
    if not names:
        return []
    keys = [case_key(ex) for ex in case_lists[names[0]]]
    for name in names[1:]:
        other = [case_key(ex) for ex in case_lists[name]]
        if other != keys:
            at = next((k for k, (a, b) in enumerate(zip(keys, other)) if a != b),
                      min(len(keys), len(other)))
            raise ValueError(f"case lists differ: {names[0]} has {len(keys)} cases, {name} "
                             f"{len(other)}; first difference at position {at}")
    return keys


def gold_ranks(cases: Sequence[serialize.Example], ranked: Sequence[trie.Ranked]
               ) -> list[int | None]:
    """1-based rank of each case's gold item in its ranking (None: not in it)."""
    return [r.items.index(ex.item) + 1 if ex.item in r.items else None
            for ex, r in zip(cases, ranked)]


def baseline_ranks(name: str, cfg: dict, ds: Dataset, cases: Sequence[serialize.Example],
                   sids: SemanticIDs | None = None) -> list[int | None]:
    """Gold ranks of a baseline (``popularity``, ``repeat``; ``text-retrieval`` needs
    ``sids``) fitted exactly as ``experiments.evaluate`` fits it (the config's training
    splits), on ``cases``."""
    return recommenders.BaselineRecommender(name).fit(cfg, ds, sids=sids).ranks(cases, "paper")


@dataclass(eq=False, repr=False)
class CaseRunner:
    """A loaded run that ranks and answers cases of its own format (module docstring)."""

    model: object
    tokenizer: object
    sids: SemanticIDs
    fmt: str = "gcrs"
    catalog: Catalog | None = None
    name: str = "model"
    max_context_tokens: int = serialize.MAX_CONTEXT_TOKENS
    num_beams: int = beam_search.DEFAULT_BEAM
    batch_size: int = 16
    head_ids: Sequence[int] | None = None
    max_new_tokens: int = 40

    def __post_init__(self):
        if self.fmt not in serialize.FORMATS:
            raise ValueError(f"unknown format {self.fmt!r}; choose from {serialize.FORMATS}")
        self.has_mode = self.fmt in ("gcrs", "mode_resp", "sid")
        self.writes = self.fmt in ("gcrs", "mode_resp", "resp")
        self._session = chat.ChatSession(
            self.model, self.tokenizer, self.sids, self.catalog,
            max_context_tokens=self.max_context_tokens, head_ids=self.head_ids,
            max_new_tokens=self.max_new_tokens) if self.writes else None

    def __repr__(self) -> str:
        return f"CaseRunner({self.name!r}, fmt={self.fmt!r}, {len(self.sids)} items)"

    @classmethod
    def from_run(cls, path, catalog: Catalog | None = None, **kwargs) -> "CaseRunner":
        """The run folder ``path`` (``run.load_run``), loaded once: its format, evaluation
        context length and beam width, and its restricted output vocabulary if it has one."""
        rc = run.saved_config(path)
        if rc.ranker != "generative":
            raise ValueError(f"{path}: the decoupled baseline is no language model; it has no "
                             "answers to show")
        rec = recommenders.GenerativeRecommender.load(path)
        model, tok, sids = rec.model, rec.tokenizer, rec.sids
        vocab_file = Path(path) / "output_vocab.json"
        kwargs = {"fmt": rc.format, "name": rc.variant,
                  "max_context_tokens": rc.eval.max_context_tokens,
                  "num_beams": rc.eval.num_beams, "batch_size": rc.eval.batch_size,
                  "head_ids": json.loads(vocab_file.read_text()) if vocab_file.is_file() else None,
                  **kwargs}
        return cls(model, tok, sids, catalog=catalog, **kwargs)

    def title(self, item_id: str) -> str:
        return self.catalog[item_id].name if self.catalog is not None and item_id in self.catalog \
            else item_id

    def cases(self, ds: Dataset, split: str = "test", limit: int | None = None
              ) -> list[serialize.Example]:
        """The paper protocol's cases of ``split`` in this run's format."""
        return evaluate.rec_cases(ds, self.sids, split, self.fmt, limit=limit)

    def _check(self, cases: Sequence[serialize.Example]) -> None:
        bad = next((ex for ex in cases if ex.fmt != self.fmt or ex.item is None), None)
        if bad is not None:
            raise ValueError(f"{self.name} answers recommendation cases in format {self.fmt!r}; "
                             f"got a {bad.fmt!r} {bad.mode} case ({bad.dialog_id}, turn "
                             f"{bad.turn_index}); build them with CaseRunner.cases")

    @torch.no_grad()
    def rank(self, cases: Sequence[serialize.Example]) -> list[trie.Ranked]:
        """The paper protocol's top ``num_beams`` of each case (mode forced to REC)."""
        self._check(cases)
        return recommenders.GenerativeRecommender(self.model, self.tokenizer, self.sids,
                                              self.max_context_tokens, self.num_beams,
                                              self.batch_size).ranked(cases)

    @torch.no_grad()
    def answers(self, cases: Sequence[serialize.Example],
                ranked: Sequence[trie.Ranked] | None = None, k: int = 5) -> list[Answer]:
        """An :class:`Answer` per case; ``ranked``: this run's :meth:`rank` of ``cases``
        when already computed (so the shown top ``k`` is the ranking the rule saw)."""
        self._check(cases)
        ranked = self.rank(cases) if ranked is None else list(ranked)
        if len(ranked) != len(cases):
            raise ValueError(f"{len(cases)} cases but {len(ranked)} rankings")
        margins = (freemode.rec_margin(self.model, self.tokenizer, cases, self.max_context_tokens,
                                       self.batch_size) if self.has_mode else [None] * len(cases))
        out = []
        for ex, r, margin in zip(cases, ranked, margins):
            top = tuple(TopItem(i, self.title(i), float(s)) for i, s in zip(r.items[:k], r.scores))
            mode = "rec" if margin is None or margin > 0 else "chat"
            p_rec = None if margin is None else float(torch.sigmoid(torch.tensor(margin)))
            item = r.items[0] if self.fmt == "gcrs" and mode == "rec" and r.items else None
            text, mentions, truncated = "", (), False
            if self.writes:
                prefix = ""
                if self.fmt != "resp":
                    seg = serialize.mention(item, self.sids) if item is not None else ""
                    prefix = serialize.MODES[mode] + seg + serialize.RESP
                ids = serialize.prompt_ids(ex, self.tokenizer, self.max_context_tokens, prefix)
                text, mentions, truncated = self._session.continue_ids(ids)
                text = serialize.display_text(text, self.sids, self.catalog).strip()
                if self.fmt == "resp":
                    mode = "rec" if mentions else "chat"
            out.append(Answer(self.name, self.fmt, mode, top, gold_ranks([ex], [r])[0], text,
                              item, mentions, p_rec, truncated))
        return out


def answers(run_path, cases: Sequence[serialize.Example], catalog: Catalog | None = None,
            k: int = 5, **kwargs) -> list[Answer]:
    """:meth:`CaseRunner.answers` of the run folder ``run_path`` (loaded once) on ``cases``
    (in the run's format: ``CaseRunner.cases``)."""
    return CaseRunner.from_run(run_path, catalog, **kwargs).answers(cases, k=k)


# ----------------------------------------------------------------------------- rules
def within(rank: int | None, k: int) -> bool:
    """Is a 1-based rank (None: not ranked) in the top ``k``?"""
    return rank is not None and rank <= k


class Rule(NamedTuple):
    """A case-selection rule: ``match`` and ``key`` read one case's ranks (ranker -> rank);
    ``models`` are the rankers it reads; ``text`` says it in words."""

    name: str
    text: str
    models: tuple[str, ...]
    match: Callable[[Ranks], bool]
    key: Callable[[Ranks], tuple]


def _rank_key(rank: int | None) -> float:
    return math.inf if rank is None else rank


def wins(model: str = "gcrs", k: int = 5, others: Sequence[str] = ("resp", "tiger"),
         others_k: int = 10) -> Rule:
    """Gold item in ``model``'s top ``k`` and in none of ``others``' top ``others_k``; the
    best ``model`` ranks first."""
    others = tuple(others)
    return Rule(f"{model} wins",
                f"gold item in {model}'s top {k} and in neither {' nor '.join(others)}'s "
                f"top {others_k}; best {model} rank first",
                (model, *others),
                lambda r: within(r[model], k) and not any(within(r[o], others_k) for o in others),
                lambda r: (_rank_key(r[model]),))


def fails(model: str = "gcrs", k: int = 50, others: Sequence[str] = ("resp", "tiger", "repeat"),
          others_k: int = 10) -> Rule:
    """Gold item in the top ``others_k`` of at least one of ``others`` but not in ``model``'s
    top ``k``; first the cases most of ``others`` got right, then the best rank among them."""
    others = tuple(others)
    return Rule(f"{model} fails",
                f"gold item in the top {others_k} of {' or '.join(others)} but not in "
                f"{model}'s top {k}; first the cases most of them got, then their best rank",
                (model, *others),
                lambda r: not within(r[model], k) and any(within(r[o], others_k) for o in others),
                lambda r: (-sum(within(r[o], others_k) for o in others),
                           min(_rank_key(r[o]) for o in others)))


def select_cases(ranks_by_model: Mapping[str, Sequence[int | None]], rule: Rule, n: int,
                 seed: int = 0) -> list[int]:
    """Indices of up to ``n`` cases that match ``rule``, in the rule's order (its key; equal
    keys in a random order seeded by ``seed``); ``[]`` when none matches. ``ranks_by_model``:
    ranker -> gold rank of every case, all over the same cases."""
    missing = [m for m in rule.models if m not in ranks_by_model]
    if missing:
        raise KeyError(f"rule {rule.name!r} reads ranks of {missing}, which were not given "
                       f"(given: {sorted(ranks_by_model)})")
    lengths = {m: len(r) for m, r in ranks_by_model.items()}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"rank lists of different lengths: {lengths}")
    n_cases = next(iter(lengths.values()), 0)
    rows = [{m: r[c] for m, r in ranks_by_model.items()} for c in range(n_cases)]
    hits = [c for c, row in enumerate(rows) if rule.match(row)]
    random.Random(seed).shuffle(hits)
    hits.sort(key=lambda c: rule.key(rows[c]))  # stable: ties keep the seeded order
    return hits[:n]


# ----------------------------------------------------------------------------- display
def case_record(ex: serialize.Example, sids: SemanticIDs, catalog: Catalog | None = None,
                context_turns: int = 4) -> dict:
    """A case for people: its last ``context_turns`` context turns, gold response and gold
    item with titles instead of SIDs; ``repeat``: the gold item was mentioned before."""
    def title(i: str) -> str:
        return catalog[i].name if catalog is not None and i in catalog else i
    context = ex.context[-context_turns:] if context_turns else ()
    return {"dialog_id": ex.dialog_id, "turn_index": ex.turn_index,
            "context_turns": len(ex.context),
            "context": [[role, serialize.display_text(text, sids, catalog)]
                        for role, text in context],
            "gold_response": serialize.display_text(serialize.render_text(ex.response, sids), sids,
                                                    catalog),
            "gold_item": ex.item, "gold_title": title(ex.item),
            "repeat": ex.item in ex.context_items}


def side_by_side(answers_by_model: Mapping[str, Answer], gold: str | None = None) -> list[dict]:
    """One row per model: mode (with p(REC) where the model has a mode token), the gold
    rank, the top items as ``title (score)`` (``gold`` starred) and the response."""
    rows = []
    for name, a in answers_by_model.items():
        mode = a.mode if a.p_rec is None else f"{a.mode} (p={a.p_rec:.2f})"
        top = "; ".join(f"{k}. {t.title}{' *' if t.item_id == gold else ''} ({t.score:.2f})"
                        for k, t in enumerate(a.top, start=1))
        rows.append({"model": name, "mode": mode, "gold rank": a.gold_rank, "top": top,
                     "response": a.response if a.fmt not in ("tiger", "sid") else "(writes none)"})
    return rows


COLUMNS = ["model", "mode", "gold rank", "top", "response"]


def case_html(record: dict) -> str:
    """One case for people, as HTML (all text escaped): a :func:`case_record` with ``table``
    (:func:`side_by_side` rows) and, when present, ``case`` (its number) and ``ranks``."""
    e = html.escape
    heading = f"case {record.get('case', '')}: dialog {record['dialog_id']}, turn " \
              f"{record['turn_index']}"
    if record.get("ranks"):
        heading += " — gold ranks: " + ", ".join(f"{m} {'-' if k is None else k}"
                                                 for m, k in record["ranks"].items())
    ctx = "".join(f"<div><b>{'User' if role == 'user' else 'Assistant'}:</b> {e(text)}</div>"
                  for role, text in record["context"])
    skipped = record["context_turns"] - len(record["context"])
    more = f"<div style='color:#666'>({skipped} earlier turns)</div>" if skipped > 0 else ""
    repeat = " (mentioned earlier in the dialog)" if record["repeat"] else ""
    return (f"<h4>{e(heading)}</h4><div style='font-size:90%'>{more}{ctx}</div>"
            f"<div><b>Gold response:</b> {e(record['gold_response'])}</div>"
            f"<div><b>Gold item:</b> {e(record['gold_title'])}{repeat}</div>"
            + _table_html(record["table"]))


def cases_html(records: Sequence[dict], empty: str = "No case matches the rule.") -> str:
    """:func:`case_html` of each record; ``empty`` and an empty table when there is none."""
    if not records:
        return f"<p>{html.escape(empty)}</p>" + _table_html([])
    return "<hr>".join(case_html(r) for r in records)


def _table_html(rows: Sequence[dict]) -> str:
    cell = "<td style='text-align:left;vertical-align:top'>{}</td>"
    head = "".join(f"<th style='text-align:left'>{c}</th>" for c in COLUMNS)
    body = "".join("<tr>" + "".join(cell.format(html.escape("-" if r[c] is None else str(r[c])))
                                    for c in COLUMNS) + "</tr>" for r in rows)
    return f"<table style='font-size:85%'><tr>{head}</tr>{body}</table>"
