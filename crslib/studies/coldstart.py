"""Cold start (NOTES.md §8): are items that no training dialog mentions ever recommended?

The paper claims semantic IDs generalise to new items (an unseen item shares code prefixes,
hence trained tokens, with similar seen items) but never tests it. Here a seeded share of the
items that are gold targets in the test split is *held out*: every training dialog that
mentions one of them is removed (config key ``"holdout": {"fraction": f, "seed": s}``, applied
by :func:`crslib.training.run.training_dialogs`); their SIDs still exist, so constrained decoding
can produce them. The test cases are then split by their gold item:

* ``heldout``: the gold item was held out (no training dialog mentions it);
* ``seen``: the gold item is mentioned in a training dialog the run actually used;
* ``unseen``: neither — the item is not held out but no used training dialog mentions it
  either (naturally cold: INSPIRED's catalog is long-tailed, and the ``smoke`` profile trains on
  40 dialogs).

The same hold-out is trained with GCRS SIDs (variant ``coldstart_gcrs``) and with atomic IDs
(``coldstart_atomic``, :func:`crslib.ids.semantic_ids.atomic_ids`: one new token per item, so an
unseen item's token never occurs in a training target). Ranks are the paper protocol's
(:mod:`crslib.evaluation.evaluate`: gold mode forced, constrained beam search, width 50).
"""
from __future__ import annotations

from typing import Iterable, Sequence

from crslib import data
# the hold-out itself is data-level (crslib.data); its names are reached here too
from crslib.data import Dataset, holdout_items, mentioned_items, remove_items, target_items
from crslib.evaluation import evaluate, recommenders, result_files
from crslib.format import serialize
from crslib.studies import experiments
from crslib.training import run

GROUPS = ("heldout", "seen", "unseen")


def holdout_summary(cfg: dict, ds: Dataset) -> dict:
    """What a run's ``holdout`` did: held-out items, candidate items, dialogs removed from the
    training pool (before ``max_dialogs``), dialogs trained on."""
    rc = cfg
    h = rc.holdout
    pool = [d for s in rc.splits for d in ds[s]]
    held = holdout_items(ds, h.fraction, h.seed) if h else frozenset()
    return {"fraction": h.fraction if h else 0.0, "seed": h.seed if h else None,
            "candidate_items": len(target_items(ds)), "heldout_items": len(held),
            "pool_dialogs": len(pool), "removed_dialogs": len(pool) - len(remove_items(pool, held)),
            "train_dialogs": len(run.training_dialogs(cfg, ds))}


# ----------------------------------------------------------------------------- metrics
def split_ranks(cases: Sequence[serialize.Example], ranks: Sequence[int | None],
                heldout: Iterable[str], trained: Iterable[str] | None = None,
                protocol: str = "paper") -> dict[str, dict]:
    """Ranking metrics per group of cases, keyed by group (see module docstring).

    ``heldout``: cases whose gold item is in ``heldout``. Without ``trained`` every other case
    is ``seen``; with ``trained`` (the items the training dialogs mention) ``seen`` keeps those
    whose gold item is in ``trained`` and the rest are ``unseen``. Each group: ``n_cases``,
    ``metrics`` and ``ci95`` (:func:`crslib.evaluation.evaluate.ranking_result`; empty dicts for an
    empty group) and ``repeat_share`` (cases whose gold item was mentioned earlier in the dialog).
    """
    if len(cases) != len(ranks):
        raise ValueError(f"{len(cases)} cases but {len(ranks)} ranks")
    heldout = set(heldout)
    trained = None if trained is None else set(trained)

    def group(ex) -> str:
        if ex.item in heldout:
            return "heldout"
        return "seen" if trained is None or ex.item in trained else "unseen"

    names = GROUPS if trained is not None else GROUPS[:2]
    out = {}
    for name in names:
        idx = [k for k, ex in enumerate(cases) if group(ex) == name]
        if not idx:
            out[name] = {"n_cases": 0, "metrics": {}, "ci95": {}, "repeat_share": None}
            continue
        r = evaluate.ranking_result([ranks[k] for k in idx], protocol)
        repeats = sum(cases[k].item in cases[k].context_items for k in idx)
        out[name] = {"n_cases": len(idx), "metrics": r["metrics"], "ci95": r["ci95"],
                     "repeat_share": repeats / len(idx)}
    return out


# ----------------------------------------------------------------------------- a run
def result_path(profile: str, dataset: str, variant: str):
    return result_files.result_path(profile, dataset, variant, "coldstart")


def evaluate_split(profile: str, dataset: str, variant: str, data_root=None,
                   split: str = "test", limit: int | None = None, save: bool = True,
                   reuse: bool = True) -> dict:
    """Held-out vs seen (vs unseen) metrics of the trained run ``runs/<profile>/<dataset>/
    <variant>``, saved as ``results/<profile>/<dataset>/<variant>.coldstart.json``.

    Cases: every recommendation instance of ``split`` (``limit``: a seeded sample, default the
    config's ``eval.coldstart_limit``, else all — the held-out group is small), ranked under the
    ``paper`` protocol. The held-out set is recomputed from the run's ``holdout`` key; a run
    without one has an empty ``heldout`` group. ``metrics``/``ci95`` hold one sub-dict per group
    (``metrics[g]`` with ``n_cases``). A saved result with the same config hash, split and limit
    is reused.
    """
    folder = experiments.run_dir(profile, dataset, variant)
    cfg = run.saved_config(folder) if (folder / "config.json").is_file() else None
    if cfg is None or not (folder / "train_summary.json").is_file():
        raise FileNotFoundError(f"{folder}: not a finished run; train it first "
                                f"(crslib.studies.experiments.train({profile!r}, {dataset!r}, "
                                f"{variant!r}))")
    rc = cfg
    ev = rc.eval
    limit = ev.coldstart_limit if limit is None else limit

    def score() -> dict:
        rec = recommenders.load_recommender(folder)
        sids = rec.sids
        ds = data.load(dataset, data_root)
        held = (holdout_items(ds, rc.holdout.fraction, rc.holdout.seed) if rc.holdout
                else frozenset())
        trained = set().union(*map(mentioned_items, run.training_dialogs(rc, ds)))
        cases = evaluate.rec_cases(ds, sids, split, rc.format, limit=limit)
        ranks = evaluate.evaluate(rec, cases, "paper")["case_ranks"]  # the one scoring call
        groups = split_ranks(cases, ranks, held, trained)
        everything = evaluate.ranking_result(ranks, "paper")
        repeats = sum(ex.item in ex.context_items for ex in cases) / len(cases) if cases else None
        groups = {"all": {"n_cases": len(ranks), "metrics": everything["metrics"],
                          "ci95": everything["ci95"], "repeat_share": repeats}, **groups}
        return {"n_cases": len(cases),
                "metrics": {g: {"n_cases": v["n_cases"], **v["metrics"]} for g, v in groups.items()},
                "ci95": {g: v["ci95"] for g, v in groups.items()},
                "repeat_share": {g: v["repeat_share"] for g, v in groups.items()},
                "holdout": {**holdout_summary(cfg, ds), "items": sorted(held)},
                "sids": {"method": sids.config.get("method"), "levels": sids.levels,
                         "codebook_size": sids.codebook_size},
                "note": "paper protocol (gold mode forced, constrained beam width 50) on every "
                        "rec case of the split (or a seeded sample of `limit`), grouped by gold "
                        "item: heldout = no training dialog mentions it; seen = a training "
                        "dialog the run used mentions it; unseen = neither; repeat_share = gold "
                        "item mentioned earlier in the dialog"}
    meta = {"dataset": dataset, "split": split, "profile": profile, "variant": variant,
            "seeds": [rc.train.seed], **result_files.identity(cfg, folder), "protocol": "coldstart"}
    return result_files.scored(meta, limit, score, reuse=reuse, save=save)


def rows(results: Sequence[dict], keys: Sequence[str] = ("recall@1", "recall@10", "recall@20",
                                                         "ndcg@10"),
         ci_key: str = "recall@20") -> list[dict]:
    """One row per (result, group) for a table: variant, SID shape, group, cases, metrics in %
    and the 95% interval of ``ci_key``."""
    out = []
    for r in results:
        s = r["sids"]
        for g, m in r["metrics"].items():
            row = {"variant": r["variant"], "ids": f"{s['method']} {s['levels']}x{s['codebook_size']}",
                   "group": g, "cases": m["n_cases"]}
            row.update({k: None if m.get(k) is None else round(100 * m[k], 2) for k in keys})
            ci = r["ci95"][g].get(ci_key)
            row[f"{ci_key} 95% CI"] = (f"[{100 * ci[0]:.2f}, {100 * ci[1]:.2f}]" if ci else None)
            out.append(row)
    return out
