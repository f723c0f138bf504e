"""Requests as constraints, measured against what people asked (issue 22, beyond the paper).

The chat can restrict a recommendation list to the items a message asks for (genres, a decade,
genres refused: :mod:`crslib.data.request`), by running the paper's constrained beam over the
filtered catalog's sub-trie (``trie.SIDVocab.restricted``). :func:`measure` checks what that
buys and costs on validation turns (INSPIRED ``dev``, ReDial ``valid``; never a test split)
whose last user message asks for something checkable:

* ``satisfied@5``: the share of the top 5 that satisfies the request, with and without the
  constraint (popularity's top 5 beside, filtered the same way);
* ``recall@10``: whether the gold item (what the dataset's assistant recommended) is in the top
  10, with and without: the constraint can help (the model's list moves toward the asked kind)
  or hurt (the gold item itself does not satisfy the parsed request, or has no metadata);
* ``gold_satisfies``: how often the gold item satisfies the request: the ceiling of a
  constraint that only keeps what was asked.

The evaluation protocols stay unconstrained; this measures a chat option.
"""
from __future__ import annotations

from crslib import data
from crslib.data import genres, request as request_mod
from crslib.decoding import beam_search, trie
from crslib.evaluation import evaluate as ev_mod, recommenders, result_files
from crslib.format import serialize
from crslib.studies import experiments

LIMIT = 150  # validation request turns (a seeded sample)


def kind(r: request_mod.Request) -> str:
    """The request's kinds, e.g. ``genre+years`` (``genre``, ``refused``, ``years``)."""
    parts = [name for name, on in (("genre", r.wanted), ("refused", r.unwanted),
                                   ("years", r.years)) if on]
    return "+".join(parts)


def measure(profile: str, dataset: str, variant: str, data_root=None, limit: int | None = LIMIT,
            reuse: bool = True) -> dict:
    """The module's measurements for one run; saved as
    ``results/<profile>/<dataset>/<variant>.constraints.json`` and reused for the same weights
    and sample."""
    folder, cfg, split = experiments.validation_run(profile, dataset, variant)

    def compute() -> dict:
        ds = data.load(dataset, data_root)
        rec = recommenders.load_recommender(folder)
        sids = rec.sids
        cat = ds.catalog
        words = genres.vocabulary(cat)
        cases, asks = [], []
        for ex in ev_mod.rec_cases(ds, sids, split, cfg.format):
            if not ex.context or ex.context[-1][0] != "user":
                continue
            r = request_mod.parse(ex.context[-1][1], cat, words)
            if r and request_mod.allowed(cat, r):
                cases.append(ex)
                asks.append(r)
        keep = ev_mod.sample_indices(cases, limit)
        cases, asks = [cases[j] for j in keep], [asks[j] for j in keep]
        free = rec.top(cases, 10)
        pop = recommenders.BaselineRecommender("popularity").fit(cfg, ds, sids=sids)
        pop = pop.top(cases, len(cat))
        vocab = trie.SIDVocab.build(sids, rec.tokenizer)
        rows = []
        for ex, r, top, pop_all in zip(cases, asks, free, pop):
            allowed = [i for i in request_mod.allowed(cat, r) if i in sids]
            sub = vocab.restricted(allowed)
            prompt = ex_prompt(rec, ex)
            held = beam_search.sid_beam_search(rec.model, rec.tokenizer, prompt, sub,
                                        k=min(10, len(allowed)),
                                        num_beams=rec.num_beams).items
            ok = set(allowed)
            pop_held = [i for i in pop_all if i in ok][:5]
            rows.append({
                "kind": kind(r), "request": r.describe(), "matching": len(allowed),
                "satisfied@5": sum(i in ok for i in top[:5]) / len(top[:5]),
                "satisfied@5 constrained": sum(i in ok for i in held[:5]) / len(held[:5]),
                "popularity satisfied@5": sum(i in ok for i in pop_all[:5]) / 5,
                "popularity satisfied@5 constrained": (
                    sum(i in ok for i in pop_held) / len(pop_held) if pop_held else None),
                "recall@10": float(ex.item in top[:10]),
                "recall@10 constrained": float(ex.item in held[:10]),
                "gold_satisfies": float(ex.item in ok),
                "top5": [cat[i].name for i in top[:5]],
                "top5 constrained": [cat[i].name for i in held[:5]]})
        return summarize(rows) | {"rows": rows, "split": split, "k": 5,
                                  "coverage": request_mod.coverage(cat)}
    return result_files.scored(result_files.run_meta(profile, dataset, variant, split,
                                                     "constraints", cfg, folder),
                               limit, compute, reuse=reuse)


def ex_prompt(rec, ex) -> list[int]:
    """The paper protocol's prompt of a case (mode forced to REC, ending ``<BOI>``)."""
    return serialize.rec_prompt_ids(ex, rec.tokenizer, rec.max_context_tokens)


MEANS = ("satisfied@5", "satisfied@5 constrained", "popularity satisfied@5",
         "popularity satisfied@5 constrained", "recall@10", "recall@10 constrained",
         "gold_satisfies")


def summarize(rows: list[dict]) -> dict:
    """Means over all rows and per request kind (a key absent from a row is skipped)."""
    def means(rs):
        out = {"n_cases": len(rs)}
        for k in MEANS:
            vals = [r[k] for r in rs if r.get(k) is not None]
            out[k] = sum(vals) / len(vals) if vals else None
        return out
    kinds = sorted({r["kind"] for r in rows})
    return {"all": means(rows), "by_kind": {k: means([r for r in rows if r["kind"] == k])
                                            for k in kinds}}
