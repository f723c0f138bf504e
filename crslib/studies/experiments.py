"""The paper's experiments as reusable steps: train a variant, score a ranker (tables from
the saved results: :mod:`crslib.studies.result_tables`).

Notebooks and ``make reproduce`` call these; each step reuses what a previous run left when it
is still valid (a finished run with the same ``config_hash``; a result file with the same
``config_hash``, sample and split that was scored on the very weights now on disk: its
``model_hash``, :func:`crslib.training.run.model_hash`), so a re-run only does new work, and a
retrained model never shows another model's numbers. ``make clean-results`` forgets both.
Paths: runs in ``runs/<profile>/<dataset>/<variant>/``, results in
``results/<profile>/<dataset>/<ranker>.<protocol>.json`` (see
:mod:`crslib.evaluation.result_files`).

Rankers: a trained *variant* (``gcrs``, ablations, ``tiger``, ``decoupled``; config file
``crslib/configs/<profile>-<dataset>-<variant>.json``) or a *baseline* (``popularity``,
``repeat``, ``text-retrieval``), which needs no training.
"""
from __future__ import annotations

import json
import os
import random
from pathlib import Path
from typing import Sequence

from crslib import data, paths, report
from crslib.config import EvalConfig
from crslib.evaluation import dialog_eval, evaluate as ev_mod, recommenders, result_files
from crslib.evaluation.result_files import identity
from crslib.ids.semantic_ids import SemanticIDs
from crslib.training import run

RUNS = paths.RUNS


def quiet() -> None:
    """Hide Hugging Face progress bars and warnings in notebook output (results stay in files)."""
    import transformers
    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()


def run_dir(profile: str, dataset: str, variant: str) -> Path:
    return RUNS / profile / dataset / variant


def validation_run(profile: str, dataset: str, variant: str) -> tuple[Path, dict, str]:
    """``(run folder, its saved config, the dataset's validation split)``: what a study of a
    trained run on validation turns starts from."""
    folder = run_dir(profile, dataset, variant)
    return folder, run.saved_config(folder), data.VALIDATION[dataset]


def config(profile: str, dataset: str, variant: str = "gcrs") -> dict:
    """The config of ``variant`` on ``dataset`` under ``profile`` (a derived profile such as
    ``paper-dry``: its base profile's file, transformed;
    :func:`crslib.training.run.load_config`)."""
    return run.load_config(run.config_path(profile, dataset, variant), profile=profile)


def train(profile: str, dataset: str, variant: str = "gcrs", data_root=None,
          progress: bool = False) -> dict:
    """Train (or reuse) ``runs/<profile>/<dataset>/<variant>``; the training summary. Says
    which it did (a notebook shows whether its numbers come from a run trained just now)."""
    cfg, folder = config(profile, dataset, variant), run_dir(profile, dataset, variant)
    reused = run.is_finished(cfg, folder)
    summary = run.train_run(cfg, folder, data_root, progress=progress)
    print(_trained_line(folder, summary, reused), flush=True)
    return summary


def _trained_line(folder: Path, s: dict, reused: bool) -> str:
    what = "reusing the finished run" if reused else "trained"
    return (f"{what} {report.shown(folder)}: {s['steps']} steps, {s['tokens']:,} tokens, "
            f"{s['seconds']:.0f} s of training, model {s.get('model_hash')}")


def _train_job(job: tuple) -> dict:
    import torch
    torch.set_num_threads(1)  # one core per process: on a busy CPU more threads are slower
    profile, dataset, variant, data_root = job
    return train(profile, dataset, variant, data_root)


def train_many(profile: str, jobs: Sequence[tuple[str, str]], data_root=None,
               workers: int | None = None) -> dict[tuple[str, str], dict]:
    """Train (or reuse) several ``(dataset, variant)`` runs, ``workers`` at a time in separate
    processes with one torch thread each (default: ``$CRSLIB_WORKERS``, else the CPU count).
    Runs are independent, so this only changes wall time, never a result."""
    workers = workers or int(os.environ.get("CRSLIB_WORKERS", os.cpu_count() or 1))
    todo = [(profile, ds, v, data_root) for ds, v in jobs]
    if workers <= 1 or len(todo) <= 1:
        return {(j[1], j[2]): train(*j) for j in todo}
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor
    reused = {j: run.is_finished(config(*j[:3]), run_dir(*j[:3])) for j in todo}
    with ProcessPoolExecutor(min(workers, len(todo)), mp_context=mp.get_context("spawn")) as pool:
        out = {(j[1], j[2]): r for j, r in zip(todo, pool.map(_train_job, todo))}
    for j in todo:
        print(_trained_line(run_dir(*j[:3]), out[(j[1], j[2])], reused[j]), flush=True)
    return out


def training_log(profile: str, dataset: str, variant: str = "gcrs") -> list[dict]:
    """The ``log.jsonl`` records of a finished run (step, loss, tokens/s, ...)."""
    path = run_dir(profile, dataset, variant) / "log.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no training log (train the run first)")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def scored_config(profile: str | None, dataset: str | None, ranker: str,
                  run_path=None) -> tuple[dict, Path | None]:
    """What ranker ``ranker`` is scored under: ``(config, run folder)``. A baseline
    (:data:`crslib.evaluation.recommenders.BASELINES`) has no folder and the profile's ``gcrs``
    config of ``dataset`` (its SIDs, its training splits); a trained variant, its folder
    ``runs/<profile>/<dataset>/<ranker>`` (or ``run_path``) and the config saved there."""
    if run_path is None and ranker in recommenders.BASELINES:
        if not (profile and dataset):
            raise ValueError(f"baseline {ranker!r} needs a profile and a dataset")
        return config(profile, dataset), None
    run_path = Path(run_path) if run_path else run_dir(profile, dataset, ranker)
    if not (run_path / "config.json").is_file():
        raise FileNotFoundError(f"{run_path}: not a finished run (no config.json); train it "
                                "first")
    return run.saved_config(run_path), run_path


def scored_sids(cfg, run_path, catalog) -> SemanticIDs:
    """The SIDs a ranker's cases are written with (its :func:`scored_config`): its run's
    ``sids.json`` (no weights loaded), or, without a run folder (a baseline), those its config
    builds."""
    return (SemanticIDs.load(Path(run_path) / "sids.json") if run_path is not None
            else run.prepare_sids(cfg, catalog))


def result_sids(profile: str, dataset: str, result: dict, data_root=None, catalog=None):
    """``(config, SIDs)`` of the ranker that saved ``result``: a result without weights
    (``model_hash`` None: a baseline) was scored under the profile's ``gcrs`` config, any other
    under its run's."""
    baseline = result.get("model_hash") is None
    cfg, where = (config(profile, dataset), None) if baseline else scored_config(
        profile, dataset, result["variant"])
    catalog = catalog if catalog is not None else data.load(dataset, data_root).catalog
    return cfg, scored_sids(cfg, where, catalog)


def evaluate(profile: str | None = None, dataset: str | None = None, ranker: str = "gcrs",
             protocol: str = "paper", data_root=None, limit: int | None = None,
             split: str = "test", save: bool = True, reuse: bool = True, run_path=None,
             out=None) -> dict:
    """Score a ranker under ``protocol`` (``paper | community | dedup | new_items | dialog``);
    the result dict, saved as ``results/<profile>/<dataset>/<ranker>.<protocol>.json`` (or
    ``out``; on a ``split`` other than ``test``, in that split's folder:
    :func:`crslib.evaluation.result_files.result_path`).

    The ranker is a baseline name (needs ``profile`` and ``dataset``: its config gives SIDs and
    training splits), a variant trained under ``runs/<profile>/<dataset>/``, or ``run_path``
    (any run folder; profile, dataset and variant then come from its config). ``limit``: a
    seeded random sample of cases (``None``: the config's ``eval.<protocol>_limit`` or
    ``eval.limit``, else all). A saved result with the same config hash, split and limit is
    returned without recomputing when ``reuse``. Result files keep the per-case ranks
    (``case_ranks``, in :func:`crslib.evaluation.evaluate.rec_cases` order, and ``case_ids``);
    ``dedup`` is computed from the ``community`` ranks, ``new_items`` from the ``paper`` lists.
    """
    cfg, run_path = scored_config(profile, dataset, ranker, run_path)
    variant = ranker if run_path is None else cfg.variant
    if run_path is None and protocol == "dialog":
        raise ValueError(f"baseline {ranker!r} only ranks; use paper, community, dedup or "
                         "new_items")
    rc = cfg
    profile, dataset, ev = rc.profile, rc.dataset, rc.eval
    if limit is None:  # dedup is drawn from the community sample
        limit = ev.protocol_limit(protocol)
    who = identity(cfg, run_path)
    meta = {"dataset": dataset, "split": split, "profile": profile, "variant": variant,
            "seeds": [rc.train.seed], **who, "protocol": protocol}
    fmt = rc.format  # a baseline reads the gcrs config's cases
    if protocol == "dialog" and rc.ranker == "item_head":
        raise ValueError("the decoupled baseline only ranks (its responses come from a "
                         "separate generator); use paper, community or dedup")

    def dedup() -> dict:  # the community ranks without the repeated items: no new scoring
        full = evaluate(profile, dataset, ranker, "community", data_root, limit, split, save,
                        reuse, run_path)
        ds = data.load(dataset, data_root)
        cases = ev_mod.rec_cases(ds, scored_sids(cfg, run_path, ds.catalog), split, fmt,
                                 limit=limit)
        if len(cases) != len(full["case_ranks"]):
            raise ValueError(f"{variant}: the community result does not match the cases; "
                             "re-run it")
        _, ranks = ev_mod.select(cases, full["case_ranks"], "dedup")
        return {**ev_mod.ranking_result(ranks, protocol), "case_ranks": ranks}

    def new_items() -> dict:  # from the paper protocol's lists: no new scoring
        paper = evaluate(profile, dataset, ranker, "paper", data_root, limit, split, save,
                         reuse, run_path)
        if "case_new_ranks" not in paper:
            print(f"{variant}: its paper result predates new-item ranks; scoring it again")
            paper = evaluate(profile, dataset, ranker, "paper", data_root, limit, split, save,
                             False, run_path)
        return ev_mod.new_items_result(paper)

    def score() -> dict:
        ds = data.load(dataset, data_root)
        rec = recommenders.load_recommender(run_path or ranker, dataset, profile,
                                            data_root=data_root)
        sids = rec.sids
        if protocol == "dialog":
            head = run_path / "output_vocab.json"
            head_ids = json.loads(head.read_text()) if head.is_file() else None
            return _dialog_result(rec.model, rec.tokenizer, sids, ds, ev, split, limit,
                                  head_ids, fmt)
        cases = ev_mod.rec_cases(ds, sids, split, fmt, limit=limit)
        out = ev_mod.evaluate(rec, cases, protocol)  # the one scoring path of every ranker
        if hasattr(getattr(rec, "ranker", None), "describe"):
            out["ranker"] = rec.ranker.describe()
        return out
    compute = {"dedup": dedup, "new_items": new_items}.get(protocol, score)
    path = Path(out) if out else result_files.result_path(profile, dataset, variant, protocol,
                                                          split)
    return result_files.scored(meta, limit, compute, path, reuse, save)


def _dialog_result(model, tok, sids, ds, ev: EvalConfig, split: str, limit, head_ids,
                   fmt: str) -> dict:
    """PPL and intent over every dialog of ``split`` (``eval.ppl_dialogs``: a seeded sample of
    that many dialogs, in split order), generated-text metrics over a seeded sample of turns."""
    ctx = ev.max_context_tokens
    dialogs, n_ppl = ds[split], ev.ppl_dialogs
    if n_ppl is not None and n_ppl < len(dialogs):
        dialogs = [dialogs[j] for j in sorted(random.Random(0).sample(range(len(dialogs)), n_ppl))]
    scores = dialog_eval.dialog_scores(model, tok, sids, dialogs, ctx, head_ids, fmt=fmt)
    gen = dialog_eval.generate_responses(model, tok, sids, ds[split], ds.catalog, ctx,
                                    head_ids=head_ids, fmt=fmt,
                                    limit=limit or ev.generate_limit)
    examples = gen.pop("examples")
    return {"n_cases": gen.pop("n_turns"),
            "ppl_tokens": scores.pop("ppl_tokens"), "metrics": {**scores, **gen}, "ci95": {},
            "examples": examples,
            **({"ppl_dialogs": len(dialogs)} if n_ppl is not None else {}),
            "note": ("ppl over all test turns" if n_ppl is None else
                     "ppl over the turns of a seeded sample of ppl_dialogs test dialogs")
                    + "; generated-text metrics over a seeded sample of "
                    "n_cases turns; distinct@n = unique/total word n-grams, "
                    "distinct_per_response@n = unique n-grams / responses"}
