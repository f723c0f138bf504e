"""Does a run know what its semantic IDs stand for? (beyond the paper, issue 24)

The alignment instances (:mod:`crslib.format.align`) teach item text → SID. This check asks the
recommender itself, through the one scoring path: for a seeded sample of catalog items, the
prompt of the ``text_to_sid`` instance (``Item: <title (year)> | <genres> | <plot, cut>``, made
with the default :class:`crslib.config.AlignConfig` for every run, so every run reads the same
cases) is ranked by the ``paper`` protocol's constrained beam (mode forced to REC), and the
item's own rank is kept: Recall@k is how often the run names the item's SID from its text.

A run without alignment meets item text only through the dialogs' mentions, so the result is
also split by whether the item is mentioned in the run's training dialogs. The items are the
catalog's: for an aligned run they are training data too, so this measures what a run has
learned about its IDs, not how it generalizes; whether that knowledge reaches recommendation
is what the new-item claims measure.

Saved as ``results/<profile>/<dataset>/<variant>.id_knowledge.json`` (per-case ranks and ids,
so :mod:`crslib.studies.claims` pairs two runs on the same items) and reused for the same
weights and sample.
"""
from __future__ import annotations

import dataclasses

from crslib import data, report
from crslib.config import AlignConfig
from crslib.evaluation import evaluate as ev_mod, recommenders, result_files
from crslib.format import align, serialize
from crslib.studies import result_tables
from crslib.studies.experiments import run_dir
from crslib.training import run

PROTOCOL = "id_knowledge"
LIMIT = 300  # catalog items in the seeded sample
SPLIT = "catalog"  # what the cases are drawn from (no dialog split)


def cases(catalog: data.Catalog, sids, fmt: str = "gcrs", template: str = "plain",
          limit: int | None = LIMIT, seed: int = 0) -> list[serialize.Example]:
    """The ``text_to_sid`` instance of a seeded sample of ``limit`` catalog items that have a
    SID, in catalog order; each item is a dialog of its own (``item-<id>``), so a paired test
    resamples items."""
    items = [i for i in catalog.ids if i in sids]
    cfg = AlignConfig(tasks=("text_to_sid",))
    out = [dataclasses.replace(align.instance("text_to_sid", catalog[i], sids, cfg, fmt,
                                              template),
                               dialog_id=f"item-{i}", context_items=())
           for i in items]
    return [out[j] for j in sorted(ev_mod.sample_indices(out, limit, seed))]


def trained_items(ds: data.Dataset, splits) -> set[str]:
    """Every item mentioned in the dialogs of ``splits``."""
    return {i for s in splits for d in ds[s] for i in data.mentioned_items(d)}


def check(profile: str, dataset: str, variant: str, data_root=None, limit: int | None = LIMIT,
          reuse: bool = True) -> dict:
    """Recall@k of naming each sampled item's SID from its text (:func:`cases`), overall and
    by whether the run's training dialogs mention the item (``by_training``)."""
    folder = run_dir(profile, dataset, variant)
    cfg = run.saved_config(folder)

    def compute() -> dict:
        ds = data.load(dataset, data_root)
        rec = recommenders.load_recommender(folder)
        cs = cases(ds.catalog, rec.sids, cfg.format, cfg.template, limit)
        out = ev_mod.evaluate(rec, cs, "paper")
        seen = trained_items(ds, cfg.splits)
        groups = {"mentioned in training dialogs": [], "not mentioned": []}
        for ex, r in zip(cs, out["case_ranks"]):
            where = "mentioned in training dialogs" if ex.item in seen else "not mentioned"
            groups[where].append(r)
        return {"n_cases": out["n_cases"], "metrics": out["metrics"], "ci95": out["ci95"],
                "case_ranks": out["case_ranks"], "case_ids": out["case_ids"],
                "by_training": {g: ev_mod.ranking_result(rs, "paper") if rs else None
                                for g, rs in groups.items()},
                "note": ("the item's rank in the paper protocol's constrained beam for the "
                         "prompt 'Item: <title (year)> | <genres> | <plot, cut>' "
                         "(crslib.format.align text_to_sid), a seeded sample of catalog items")}
    meta = result_files.run_meta(profile, dataset, variant, SPLIT, PROTOCOL, cfg, folder)
    return result_files.scored(meta, limit, compute, reuse=reuse)


def markdown(profile: str, dataset: str, variants) -> str:
    """One row per variant with a saved check: Recall@1/@10 in percent (@10 with its 95%
    interval), and Recall@10 on the items the training dialogs mention and on the others."""
    rows = []
    for v in variants:
        r = result_tables.load_result(profile, dataset, v, PROTOCOL)
        if r is None:
            continue
        by = {g: (f"{100 * x['metrics']['recall@10']:.2f} ({x['n_cases']})" if x else "-")
              for g, x in r["by_training"].items()}
        rows.append({"variant": v, "items": r["n_cases"],
                     "recall@1": f"{100 * r['metrics']['recall@1']:.2f}",
                     "recall@10 [95% CI]": report.percent_ci(r["metrics"]["recall@10"],
                                                             r["ci95"]["recall@10"]),
                     **{f"recall@10, {g} (items)": t for g, t in by.items()}})
    return (report.markdown_table(rows) if rows
            else "(not measured yet: `crslib.studies.id_knowledge.check`)\n")
