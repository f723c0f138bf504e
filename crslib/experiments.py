"""The paper's experiments as reusable steps: train a variant, score a ranker, build a table.

Notebooks and ``make reproduce`` call these; each step reuses what a previous run left when its
config is unchanged (a finished run with the same ``config_hash``; a result file with the same
``config_hash`` and sample size), so a re-run only does new work. ``make clean-results`` forgets
both. Paths: runs in ``runs/<profile>/<dataset>/<variant>/``, results in
``results/<profile>/<dataset>/<ranker>.<protocol>.json`` (see :mod:`crslib.evaluate`).

Rankers: a trained *variant* (``gcrs``, ablations, ``tiger``, ``decoupled``; config file
``crslib/configs/<profile>-<dataset>-<variant>.json``) or a *baseline* (``popularity``,
``repeat``, ``text-retrieval``), which needs no training.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Sequence

from crslib import report

BASELINES = ("popularity", "repeat", "text-retrieval")
RUNS = Path(os.environ.get("CRSLIB_RUNS", report.REPO / "runs"))


def run_dir(profile: str, dataset: str, variant: str) -> Path:
    return RUNS / profile / dataset / variant


def config(profile: str, dataset: str, variant: str = "gcrs") -> dict:
    from crslib import run
    return run.load_config(run.config_path(profile, dataset, variant))


def train(profile: str, dataset: str, variant: str = "gcrs", data_root=None,
          progress: bool = False) -> dict:
    """Train (or reuse) ``runs/<profile>/<dataset>/<variant>``; the training summary."""
    from crslib import run
    cfg = config(profile, dataset, variant)
    out = run_dir(profile, dataset, variant)
    if cfg["variant"] == "decoupled":
        from crslib import decoupled
        return decoupled.train_run(cfg, out, data_root, progress=progress)
    return run.train_run(cfg, out, data_root, progress=progress)


def training_log(profile: str, dataset: str, variant: str = "gcrs") -> list[dict]:
    """The ``log.jsonl`` records of a finished run (step, loss, tokens/s, ...)."""
    path = run_dir(profile, dataset, variant) / "log.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no training log (train the run first)")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _load_ranker(profile: str, dataset: str, ranker: str, data_root=None):
    """``(kind, object, sids, cfg, ds)`` with kind ``"baseline" | "model" | "decoupled"``."""
    from crslib import baselines, data, run
    if ranker in BASELINES:
        cfg = config(profile, dataset)
        ds = data.load(dataset, data_root)
        sids = run.prepare_sids(cfg, ds.catalog)
        if ranker == "text-retrieval":  # the encoder the SIDs were built with
            obj = baselines.TextRetrieval(ds.catalog, sids, cfg["sids"].get("encoder"))
        else:
            obj = {"popularity": baselines.Popularity, "repeat": baselines.Repeat}[ranker](
                ds.catalog.ids)
        splits = cfg.get("train_splits", ["train", "dev"] if dataset == "inspired" else ["train"])
        return "baseline", obj.fit(d for s in splits for d in ds[s]), sids, cfg, ds
    return load_run_ranker(run_dir(profile, dataset, ranker), data_root)


def load_run_ranker(path, data_root=None):
    """``(kind, object, sids, cfg, ds)`` for a run folder (GCRS-family or decoupled)."""
    from crslib import data, run
    path = Path(path)
    cfg_file = path / "config.json"
    if not cfg_file.is_file():
        raise FileNotFoundError(f"{path}: not a finished run (no config.json); train it first")
    cfg = json.loads(cfg_file.read_text())
    if cfg.get("variant") == "decoupled":
        from crslib import decoupled
        obj = decoupled.load_decoupled(path)
        return "decoupled", obj, obj.sids, cfg, data.load(cfg["dataset"], data_root)
    model, tok, sids, cfg = run.load_run(path)
    head = path / "output_vocab.json"
    model.crslib_head_ids = json.loads(head.read_text()) if head.is_file() else None
    return "model", (model, tok), sids, cfg, data.load(cfg["dataset"], data_root)


def evaluate(profile: str, dataset: str, ranker: str, protocol: str = "paper", data_root=None,
             limit: int | None = None, split: str = "test", save: bool = True,
             reuse: bool = True, run_path=None) -> dict:
    """Score ``ranker`` under ``protocol`` (``paper | community | dedup | dialog``); the result
    dict, saved as ``results/<profile>/<dataset>/<ranker>.<protocol>.json``.

    ``limit``: a seeded random sample of cases (``None``: the config's ``eval.limit`` for the
    protocol, else all). A saved result with the same config hash, split and limit is reused.
    """
    from crslib import evaluate as ev_mod, run
    path = ev_mod.result_path(profile, dataset, ranker, protocol)
    if run_path is None:
        kind, obj, sids, cfg, ds = _load_ranker(profile, dataset, ranker, data_root)
    else:
        kind, obj, sids, cfg, ds = load_run_ranker(run_path, data_root)
    ev = cfg.get("eval", {})
    if limit is None:
        limit = ev.get(f"{protocol}_limit", ev.get("limit"))
    chash = run.config_hash(cfg)
    if reuse and save and path.is_file():
        old = json.loads(path.read_text())
        if (old.get("config_hash"), old.get("limit"), old.get("split")) == (chash, limit, split):
            return old
    meta = {"dataset": dataset, "split": split, "profile": profile, "variant": ranker,
            "seeds": [cfg["train"].get("seed", 0)], "config_hash": chash}
    if protocol == "dialog":
        if kind != "model":
            raise ValueError(f"{ranker}: only generative runs have dialog metrics")
        result = _dialog_result(obj, sids, ds, ev, split, limit, meta)
    else:
        from crslib import run as run_mod
        fmt = run_mod.VARIANT_FORMATS.get(cfg.get("variant"), "gcrs") if kind == "model" else "gcrs"
        cases = ev_mod.rec_cases(ds, sids, split, fmt, limit=limit)
        if kind == "baseline":
            ranks = ev_mod.baseline_ranks(obj, cases)
        elif kind == "decoupled":
            ranks = obj.ranks(cases, protocol)
        else:
            model, tok = obj
            ranks = ev_mod.model_ranks(model, tok, sids, cases, protocol,
                                       ev.get("max_context_tokens", 768), ev.get("num_beams", 50),
                                       ev.get("batch_size", 16))
        cases, ranks = ev_mod.select(cases, ranks, protocol)
        result = ev_mod.ranking_result(ranks, protocol, **meta)
        if kind == "baseline" and hasattr(obj, "describe"):
            result["ranker"] = obj.describe()
    result["limit"] = limit
    if save:
        ev_mod.save_result(result, path)
    return result


def _dialog_result(obj, sids, ds, ev: dict, split: str, limit, meta: dict) -> dict:
    from crslib import evaluate as ev_mod
    model, tok = obj
    head_ids = getattr(model, "crslib_head_ids", None)
    ctx = ev.get("max_context_tokens", 768)
    scores = ev_mod.dialog_scores(model, tok, sids, ds[split], ctx, head_ids)
    gen = ev_mod.generate_responses(model, tok, sids, ds[split], ds.catalog, ctx,
                                    head_ids=head_ids, limit=limit or ev.get("generate_limit", 500))
    examples = gen.pop("examples")
    return {**meta, "protocol": "dialog", "n_cases": gen.pop("n_turns"),
            "ppl_tokens": scores.pop("ppl_tokens"), "metrics": {**scores, **gen}, "ci95": {},
            "examples": examples,
            "note": "ppl over all test turns; generated-text metrics over a seeded sample of "
                    "n_cases turns; distinct@n = unique/total word n-grams, "
                    "distinct_per_response@n = unique n-grams / responses"}


# ----------------------------------------------------------------------------- tables
def load_result(profile: str, dataset: str, ranker: str, protocol: str) -> dict | None:
    from crslib import evaluate as ev_mod
    path = ev_mod.result_path(profile, dataset, ranker, protocol)
    return json.loads(path.read_text()) if path.is_file() else None


def ours_rows(profile: str, dataset: str, rankers: Sequence[str], protocol: str,
              metrics: Sequence[str], percent: bool = True) -> list[dict]:
    """One row per ranker with a saved result: the metrics (x100 when ``percent``, except
    ``ppl``/``bleu``), the 95% interval of the first metric, and the number of cases."""
    rows = []
    for name in rankers:
        r = load_result(profile, dataset, name, protocol)
        if r is None:
            continue
        scale = lambda k: 100.0 if percent and k not in ("ppl", "bleu", "ppl_tokens") else 1.0  # noqa: E731
        row = {"model": name, "source": f"ours ({profile})", "cases": r["n_cases"]}
        for k in metrics:
            v = r["metrics"].get(k)
            row[k] = None if v is None else round(v * scale(k), 2 if scale(k) == 100 else 4)
        first = metrics[0]
        if first in r.get("ci95", {}):
            lo, hi = r["ci95"][first]
            row[f"{first} 95% CI"] = f"[{lo * scale(first):.2f}, {hi * scale(first):.2f}]"
        rows.append(row)
    return rows


def reported_rows(table: str, metrics: Sequence[str]) -> list[dict]:
    """The paper's rows of ``table`` (a key of ``paper_results.json``), marked as reported."""
    rows = []
    for name, vals in report.paper_results()[table].items():
        if name.startswith("_") or not isinstance(vals, dict):
            continue
        rows.append({"model": name, "source": "reported in the paper",
                     **{k: vals.get(k) for k in metrics}})
    return rows


def relative_improvement(ours: float, best_other: float) -> float:
    """The paper's relative improvement, (ours - best baseline) / best baseline."""
    if best_other == 0:
        raise ValueError("relative improvement over a zero baseline is undefined")
    return (ours - best_other) / best_other
