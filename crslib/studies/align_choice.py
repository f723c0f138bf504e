"""The alignment recipe (beyond the paper), chosen once per dataset on its validation data.

A profile's alignment candidates are its configs of one dataset with a ``train.align`` block
(:mod:`crslib.format.align`), which differ only in ``train.align.ratio`` and ``items`` (and their
names). Each trained candidate is scored under the paper protocol on the dataset's validation
split (:data:`crslib.data.VALIDATION`: INSPIRED ``dev``, ReDial's held-out ``valid`` slice of its
train dialogs; no run trains on either), with its new-item recall from the same lists;
:func:`choose` picks the candidate with the best validation new-item ``metric`` (what alignment
is for), ties to the smaller ratio, then to every catalog item, and saves the table as
``results/<profile>/<dataset>/align_choice.json``. GCRS without alignment and popularity are
scored beside them as references, not as candidates. A dataset with no choice of its own takes
INSPIRED's (:func:`chosen_variant`), as it takes the step budget (:mod:`crslib.studies.curve`).
Never a test split.
"""
from __future__ import annotations

import json

from crslib import config, data, report
from crslib.evaluation import result_files
from crslib.studies import experiments
from crslib.training import run

METRIC = "recall@10"
REFERENCES = ("gcrs", "popularity")


def candidates(profile: str, dataset: str) -> dict[str, dict]:
    """``{variant: {"ratio": r, "items": pool}}`` of the profile's configs of ``dataset`` that
    train with alignment under GCRS's budget (its steps of its batch tokens: a learning-curve
    run of another budget is no candidate), by ratio, then pool, then name."""
    gcrs = config.load(run.config_path(profile, dataset, "gcrs")).train
    out = {}
    for path in sorted(run.CONFIGS.glob(f"{run.base_profile(profile)}-{dataset}-*.json")):
        rc = config.load(path)
        same_budget = (rc.train.max_steps, rc.train.batch_tokens) == (gcrs.max_steps,
                                                                      gcrs.batch_tokens)
        if rc.train.align is not None and same_budget:
            out[rc.variant] = {"ratio": rc.train.align.ratio, "items": rc.train.align.items}
    return dict(sorted(out.items(), key=lambda kv: (kv[1]["ratio"], _pool_order(kv[1]), kv[0])))


def _pool_order(row: dict) -> int:
    return 0 if row.get("items", "catalog") == "catalog" else 1  # rows saved before pools: catalog


def pick(rows: list[dict], metric: str = METRIC) -> dict:
    """The candidate row with the best validation new-item ``metric``; among equals, the
    smallest ratio, then every catalog item (the least change to the paper's recipe)."""
    cands = [r for r in rows if r["ratio"] is not None]
    if not cands:
        raise ValueError("no alignment candidate to choose from")
    return min(cands, key=lambda r: (-r[f"new_items {metric}"], r["ratio"], _pool_order(r)))


def choose(profile: str, dataset: str = "inspired", metric: str = METRIC, data_root=None,
           cands: dict[str, dict] | None = None, references=REFERENCES, say=print) -> dict:
    """Score every alignment candidate of ``dataset`` (``cands``, default :func:`candidates`)
    and the ``references`` on its validation split, pick one (:func:`pick`) and save the
    table."""
    split = data.VALIDATION[dataset]
    cands = candidates(profile, dataset) if cands is None else cands
    if not cands:
        raise FileNotFoundError(f"{profile}/{dataset}: no config with a train.align block")
    rows = []
    for variant in (*cands, *references):
        paper = experiments.evaluate(profile, dataset, variant, "paper", data_root, split=split)
        new = experiments.evaluate(profile, dataset, variant, "new_items", data_root,
                                   split=split)
        recipe = cands.get(variant, {"ratio": None, "items": None})
        rows.append({"variant": variant, "ratio": recipe["ratio"], "items": recipe["items"],
                     "model_hash": paper["model_hash"], "cases": paper["n_cases"],
                     "new_item_cases": new["n_cases"],
                     **{k: paper["metrics"][k] for k in ("recall@1", "recall@10", "ndcg@10")},
                     f"new_items {metric}": new["metrics"][metric],
                     f"new_items {metric} 95% CI": new["ci95"][metric]})
        say(f"{variant}: {split} R@10 {100 * paper['metrics']['recall@10']:.2f}, new-item "
            f"{metric} {100 * new['metrics'][metric]:.2f} on {new['n_cases']} cases")
    best = pick(rows, metric)
    out = {"profile": profile, "dataset": dataset, "split": split, "metric": f"new_items {metric}",
           "rule": f"the candidate with the best {split} new-item {metric}; ties to the smaller "
                   "ratio, then to every catalog item",
           "rows": rows, "chosen_variant": best["variant"], "chosen_ratio": best["ratio"],
           "chosen_items": best["items"]}
    report.write_json(out, report.RESULTS / profile / dataset / "align_choice.json")
    return out


def load(profile: str, dataset: str = "inspired") -> dict | None:
    path = report.RESULTS / profile / dataset / "align_choice.json"
    return json.loads(path.read_text()) if path.is_file() else None


def chosen_variant(profile: str, dataset: str, default: str | None = None) -> str | None:
    """The alignment variant that stands for ``dataset``: its own validation choice, else
    INSPIRED's, else ``default``."""
    for ds in dict.fromkeys((dataset, "inspired")):
        choice = load(profile, ds)
        if choice is not None:
            return choice["chosen_variant"]
    return default


def label(recipe: dict, short: bool = False) -> str:
    """A table label for a candidate's ``{"ratio", "items"}``: ``GCRS + item-ID alignment,
    ratio 0.25 (beyond the paper)``, or the short tick ``GCRS + align 0.25``; a pool of the
    dialogs' items is named."""
    pool = ", dialog items" if recipe.get("items", "catalog") == "dialogs" else ""
    if short:
        return f"GCRS + align {recipe['ratio']:g}{pool}"
    return f"GCRS + item-ID alignment, ratio {recipe['ratio']:g}{pool} (beyond the paper)"


def held_out(profile: str, dataset: str = "inspired") -> list[dict]:
    """Each row of the saved choice whose test-split new-item result is already on disk, from
    the same model (same model hash), beside its validation figure: did the validation order
    hold on test? Reads saved files only and never scores the test split."""
    c = load(profile, dataset)
    if c is None:
        return []
    metric, out = c["metric"], []
    for r in c["rows"]:
        path = result_files.result_path(profile, dataset, r["variant"], "new_items")
        if not path.is_file():
            continue
        test = json.loads(path.read_text())
        if test.get("model_hash") != r["model_hash"] or test.get("limit") is not None:
            continue  # another model's (or a sample's) result says nothing about this row
        name = metric.removeprefix("new_items ")
        out.append({"variant": r["variant"], "chosen": r["variant"] == c["chosen_variant"],
                    c["split"]: r[metric], f"{c['split']} 95% CI": r[f"{metric} 95% CI"],
                    "test": test["metrics"][name], "test 95% CI": test["ci95"][name],
                    "test cases": test["n_cases"]})
    return out


def _held_out_markdown(profile: str, dataset: str, split: str) -> str:
    rows = held_out(profile, dataset)
    if not rows:
        return ""
    table = [{"variant": r["variant"] + (" (chosen)" if r["chosen"] else ""),
              f"{split} new-item recall@10": report.percent_ci(r[split], r[f"{split} 95% CI"]),
              "test new-item recall@10 (cases)": (
                  f"{report.percent_ci(r['test'], r['test 95% CI'])} ({r['test cases']})")}
             for r in rows]
    return (f"\nThe rows already scored on test (read from their saved results, same model):\n\n"
            + report.markdown_table(table)
            + f"\n{split} order: {_order(rows, split)}; test order: {_order(rows, 'test')}.\n")


def _order(rows: list[dict], key: str) -> str:
    """``a > b = c``: the variants from the best ``key`` down, equal values (as printed, in
    percent to two decimals) joined by ``=``."""
    ranked = sorted(rows, key=lambda r: -r[key])
    out = ranked[0]["variant"]
    for prev, r in zip(ranked, ranked[1:]):
        same = f"{100 * prev[key]:.2f}" == f"{100 * r[key]:.2f}"
        out += (" = " if same else " > ") + r["variant"]
    return out


def markdown(profile: str, dataset: str = "inspired") -> str:
    """The saved choice as a table: each row's validation scores in percent (new-item recall
    with its 95% interval), the chosen ratio marked; the references (no ratio) last."""
    c = load(profile, dataset)
    if c is None:
        return "(not chosen yet: `crslib.studies.align_choice.choose`)\n"
    metric = c["metric"]
    rows = [{"variant": r["variant"],
             "ratio": "-" if r["ratio"] is None else f"{r['ratio']:g}",
             "items": "-" if r["ratio"] is None else r.get("items", "catalog"),
             "cases": r["cases"],
             **{k: f"{100 * r[k]:.2f}" for k in ("recall@1", "recall@10", "ndcg@10")},
             f"{metric} (cases)": (f"{report.percent_ci(r[metric], r[f'{metric} 95% CI'])} "
                                   f"({r['new_item_cases']})"),
             "chosen": "yes" if r["variant"] == c["chosen_variant"] else ""}
            for r in c["rows"]]
    return (report.markdown_table(rows) + f"\n{c['split']} split; rule: {c['rule']}.\n"
            + _held_out_markdown(profile, dataset, c["split"]))
