"""The paper's experiments as reusable steps: train a variant, score a ranker, build a table.

Notebooks and ``make reproduce`` call these; each step reuses what a previous run left when it
is still valid (a finished run with the same ``config_hash``; a result file with the same
``config_hash``, sample and split that was scored on the very weights now on disk: its
``model_hash``, :func:`crslib.training.run.model_hash`), so a re-run only does new work, and a retrained
model never shows another model's numbers. ``make clean-results`` forgets both. Paths: runs in ``runs/<profile>/<dataset>/<variant>/``, results in
``results/<profile>/<dataset>/<ranker>.<protocol>.json`` (see :mod:`crslib.evaluation.evaluate`).

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
from crslib.config import EvalConfig, resolve
from crslib.data import genres
from crslib.decoding import beam_search, trie
from crslib.evaluation import dialog_eval, evaluate as ev_mod, recommenders, result_files
from crslib.evaluation.result_files import identity
from crslib.format import serialize
from crslib.ids.semantic_ids import SemanticIDs
from crslib.training import run

BASELINES = recommenders.BASELINES
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
    ``paper-dry``: its base profile's file, transformed; :func:`crslib.training.run.load_config`)."""
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


def runs_inventory(profile: str) -> list[dict]:
    """One row per finished run under ``runs/<profile>/``: its steps, tokens, training seconds
    (measured on the machine that trained it), weights hash, and whether the repository ships
    it (:func:`shipped_runs`): a shipped run is reused by a fresh clone, the others are trained
    by ``make reproduce``."""
    rows, shipped = [], shipped_runs()
    for summary in sorted((RUNS / profile).glob("*/*/train_summary.json")):
        s = json.loads(summary.read_text())
        folder = summary.parent
        cfg = json.loads((folder / "config.json").read_text())
        rows.append({"run": report.shown(folder), "dataset": cfg["dataset"], "variant": cfg["variant"],
                     "steps": s["steps"],
                     "copy_warmup_steps": (s.get("copy_warmup") or {}).get("steps", 0),
                     "tokens": s["tokens"], "train_s": s["seconds"],
                     "model_hash": s.get("model_hash"), "shipped": folder.resolve() in shipped})
    return rows


def shipped_runs(root: Path | None = None) -> set[Path]:
    """Run folders under ``root`` (default :data:`RUNS`) whose ``train_summary.json`` git
    tracks in this repository (empty outside a git checkout or outside the repository)."""
    import subprocess
    try:
        out = subprocess.run(["git", "ls-files", "--", str(root or RUNS)], cwd=report.REPO,
                             capture_output=True, text=True, check=True).stdout.split()
    except (OSError, subprocess.CalledProcessError):
        return set()
    return {(report.REPO / f).parent.resolve() for f in out if f.endswith("/train_summary.json")}


def runs_markdown(profile: str) -> str:
    """The README's run inventory, from ``results/<profile>/runs.json`` (notebook 09)."""
    path = report.RESULTS / profile / "runs.json"
    if not path.is_file():
        return f"(no run inventory yet: `make reproduce PROFILE={profile}` writes {report.shown(path)})\n"
    lines = ["| run | steps (+ copy warm-up) | tokens | training min (here) | model_hash | "
             "fresh clone |", "|---|---|---|---|---|---|"]
    for r in json.loads(path.read_text())["rows"]:
        lines.append(f"| `{r['run']}` | {r['steps']:,} (+ {r['copy_warmup_steps']}) | "
                     f"{r['tokens']:,} | {r['train_s'] / 60:.1f} | `{r['model_hash']}` | "
                     f"{'reuses (shipped)' if r['shipped'] else 'trains'} |")
    return "\n".join(lines) + "\n"


def best_chat_run(profile: str, datasets: Sequence[str] = ("redial", "inspired"),
                  shipped_only: bool = True, data_root=None) -> dict:
    """The run the chat demo opens on, chosen on validation dialogs, never on test: among the
    finished runs of ``profile`` that the repository ships (:func:`shipped_runs`; all finished
    runs with ``shipped_only=False``) and write responses (the ``gcrs`` format), in this order:

    1. runs that did not train on their validation dialogs (a score on seen dialogs is no
       evidence against one on unseen ones);
    2. runs whose recommendations follow the genre the user asks for more often than
       popularity's do (:func:`request_following`): a run that talks well but ignores the
       request is no recommender;
    3. the BLEU of the run's chosen chat decoding (:func:`chat_decoding`) on its validation
       turns, then distinct@2.

    Both checks are computed or reused for the run's weights. Returns ``{"run", "dataset",
    "variant", "bleu", "distinct@2", "follows", "popularity_follows",
    "validation_in_training", "candidates"}``; raises when there is none."""
    cands, shipped = [], shipped_runs()
    for ds in datasets:
        for summary in sorted((RUNS / profile / ds).glob("*/train_summary.json")):
            folder = summary.parent
            if shipped_only and folder.resolve() not in shipped:
                continue
            rc = resolve(run.saved_config(folder))
            if rc.format != "gcrs" or rc.ranker != "generative":  # it must talk
                continue
            cfg = rc.to_dict()
            dec = chat_decoding(profile, ds, cfg["variant"], data_root)
            row = next(r for r in dec["rows"] if r["decoding"] == dec["chosen"])
            req = request_following(profile, ds, cfg["variant"], data_root)["share"]
            cands.append({"run": report.shown(folder), "dataset": ds, "variant": cfg["variant"],
                          "split": dec["split"], "decoding": dec["chosen"], "bleu": row["bleu"],
                          "distinct@2": row["distinct@2"], "follows": req["run"],
                          "popularity_follows": req["popularity"],
                          "validation_in_training": dec["validation_in_training"]})
    if not cands:
        raise FileNotFoundError(f"no finished run of profile {profile!r} to chat with; "
                                f"`make reproduce PROFILE={profile}` trains them")
    best = max(cands, key=lambda c: (not c["validation_in_training"],
                                     (c["follows"] or 0) > (c["popularity_follows"] or 0),
                                     c["bleu"], c["distinct@2"]))
    return {**best, "candidates": cands}


def chat_decoding(profile: str, dataset: str, variant: str, data_root=None,
                  limit: int | None = None, reuse: bool = True) -> dict:
    """The chat's response decoding for a run, chosen on validation dialogs by
    :func:`crslib.evaluation.dialog_eval.decoding_sweep` (a seeded sample of ``limit`` turns of the dataset's
    validation split, :data:`crslib.data.VALIDATION`: INSPIRED ``dev``, ReDial ``valid``;
    default: the config's ``eval.decoding_limit``, else 60), saved
    as ``results/<profile>/<dataset>/<variant>.decoding.json`` and reused for the same weights.
    The result says whether the run trained on those dialogs (``validation_in_training``): runs
    that follow the paper's INSPIRED recipe train on ``dev`` too, so for them the choice is made
    on seen dialogs, and says so."""
    folder, cfg, split = validation_run(profile, dataset, variant)
    limit = resolve(cfg).eval.decoding_limit if limit is None else limit

    def sweep() -> dict:  # data and model are loaded only when nothing can be reused
        ds = data.load(dataset, data_root)
        model, tok, sids, _ = run.load_run(folder)
        head = folder / "output_vocab.json"
        out = dialog_eval.decoding_sweep(model, tok, sids, ds[split], catalog=ds.catalog,
                                    max_context_tokens=resolve(cfg).eval.max_context_tokens,
                                    head_ids=json.loads(head.read_text()) if head.is_file()
                                    else None, limit=limit)
        seen = {d.id for d in run.training_dialogs(cfg, ds)} & {d.id for d in ds[split]}
        return {"validation_in_training": bool(seen), **out}
    return result_files.scored(result_files.run_meta(profile, dataset, variant, split, "decoding", cfg, folder),
                         limit, sweep, reuse=reuse)


CHAT_BEAMS = (10, 20, 50)  # the chat asks the beam for 2 x top 5 items: 10 is the least


def chat_beam(profile: str, dataset: str, variant: str, data_root=None, limit: int = 60,
              agreement: float = 0.95, widths=CHAT_BEAMS, reuse: bool = True) -> dict:
    """The chat's beam width, its own setting (the evaluation keeps the paper's 50), chosen on
    validation turns (a seeded sample of ``limit`` recommendation cases of
    :data:`crslib.data.VALIDATION`): per width, the mean share of its top 5 that width 50's
    top 5 also holds, and the seconds per turn (this machine, one row per prompt); the chosen
    width is the smallest whose mean agreement reaches ``agreement``. Saved as
    ``results/<profile>/<dataset>/<variant>.chat_beam.json``."""
    import time

    import torch
    folder, cfg, split = validation_run(profile, dataset, variant)

    def compute() -> dict:
        ds = data.load(dataset, data_root)
        rec, sids, _ = recommenders.load_recommender(folder)
        cases = ev_mod.rec_cases(ds, sids, split, resolve(cfg).format, limit=limit)
        vocab = trie.SIDVocab.build(sids, rec.tokenizer)
        prompts = [serialize.rec_prompt_ids(ex, rec.tokenizer, rec.max_context_tokens)
                   for ex in cases]
        tops, rows = {}, []
        with torch.no_grad():
            for w in sorted(set(widths) | {50}, reverse=True):
                t = time.perf_counter()
                tops[w] = [beam_search.sid_beam_search(rec.model, rec.tokenizer, p, vocab, k=10,
                                                num_beams=w).items[:5] for p in prompts]
                seconds = (time.perf_counter() - t) / len(prompts)
                agree = [len(set(a) & set(b)) / 5 for a, b in zip(tops[w], tops[50])]
                rows.append({"num_beams": w, "top5_agreement": sum(agree) / len(agree),
                             "seconds_per_turn": seconds})
        rows.sort(key=lambda r: r["num_beams"])
        chosen = min((r for r in rows if r["top5_agreement"] >= agreement),
                     key=lambda r: r["num_beams"])["num_beams"]
        return {"rows": rows, "chosen": chosen, "n_cases": len(cases),
                "rule": f"the smallest width whose top 5 agrees with width 50's on at least "
                        f"{agreement:.0%} of its items, mean over {len(cases)} {split} turns"}
    return result_files.scored(result_files.run_meta(profile, dataset, variant, split, "chat_beam", cfg, folder),
                         limit, compute, reuse=reuse)


def training_log(profile: str, dataset: str, variant: str = "gcrs") -> list[dict]:
    """The ``log.jsonl`` records of a finished run (step, loss, tokens/s, ...)."""
    path = run_dir(profile, dataset, variant) / "log.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no training log (train the run first)")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


REQUEST_LIMIT = 100  # validation cases of the genre-request check (a seeded sample)


def request_following(profile: str, dataset: str, variant: str, data_root=None,
                      limit: int | None = REQUEST_LIMIT, k: int = 10, reuse: bool = True) -> dict:
    """Does the run recommend what the user asked for? On the validation cases
    (:data:`crslib.data.VALIDATION`) whose last user message asks for a genre
    (:func:`crslib.data.genres.asked_genres`; a seeded sample of ``limit``), the share of the run's
    top ``k`` (the ``paper`` protocol's beam) that carries an asked genre, beside popularity's
    top ``k`` (fitted on the run's own training splits) and the gold items' share, the
    dataset's own answer. Saved as ``results/<profile>/<dataset>/<variant>.request.json`` and
    reused for the same weights and sample."""
    folder, cfg, split = validation_run(profile, dataset, variant)

    def check() -> dict:
        ds = data.load(dataset, data_root)
        rec, sids, _ = recommenders.load_recommender(folder)
        vocab = genres.vocabulary(ds.catalog)
        cases = [ex for ex in ev_mod.rec_cases(ds, sids, split, resolve(cfg).format)
                 if ex.context and genres.asked_genres(ex.context[-1][1], vocab)]
        cases = [cases[j] for j in ev_mod.sample_indices(cases, limit)]
        asked = [genres.asked_genres(ex.context[-1][1], vocab) for ex in cases]
        tops = {"run": rec.top(cases, k),
                "popularity": recommenders.BaselineRecommender.fit("popularity", cfg, ds,
                                                             sids).top(cases, k)}
        follows = {name: genres.following(t, asked, ds.catalog, k) for name, t in tops.items()}
        share = {name: f["share"] for name, f in follows.items()}
        share["gold"] = genres.following([[ex.item] for ex in cases], asked, ds.catalog, 1)["share"]
        return {"k": k, "n_cases": len(cases), "share": share,
                "case_ids": ev_mod.case_ids(cases),  # paired claims (crslib.studies.claims)
                "case_shares": {name: f["per_case"] for name, f in follows.items()},
                "examples": [{"asked": sorted(a), "top5": [ds.catalog[i].title for i in t[:5]],
                              "gold": ds.catalog[ex.item].title}
                             for a, t, ex in list(zip(asked, tops["run"], cases))[:5]],
                "note": (f"share of the top {k} carrying a genre the last user message asks "
                         "for (crslib.data.genres), over the validation cases that ask for one; "
                         "gold: the dataset's own answer")}
    return result_files.scored(result_files.run_meta(profile, dataset, variant, split, "request", cfg, folder),
                         limit, check, reuse=reuse)


def evaluate(profile: str | None = None, dataset: str | None = None, ranker: str = "gcrs",
             protocol: str = "paper", data_root=None, limit: int | None = None,
             split: str = "test", save: bool = True, reuse: bool = True, run_path=None,
             out=None) -> dict:
    """Score a ranker under ``protocol`` (``paper | community | dedup | new_items | dialog``);
    the result dict, saved as ``results/<profile>/<dataset>/<ranker>.<protocol>.json`` (or
    ``out``).

    The ranker is a baseline name (needs ``profile`` and ``dataset``: its config gives SIDs and
    training splits), a variant trained under ``runs/<profile>/<dataset>/``, or ``run_path``
    (any run folder; profile, dataset and variant then come from its config). ``limit``: a
    seeded random sample of cases (``None``: the config's ``eval.<protocol>_limit`` or
    ``eval.limit``, else all). A saved result with the same config hash, split and limit is
    returned without recomputing when ``reuse``. Result files keep the per-case ranks
    (``case_ranks``, in :func:`crslib.evaluation.evaluate.rec_cases` order, and ``case_ids``); ``dedup``
    is computed from the ``community`` ranks, ``new_items`` from the ``paper`` lists.
    """
    if run_path is None and ranker in BASELINES:
        if not (profile and dataset):
            raise ValueError(f"baseline {ranker!r} needs a profile and a dataset")
        if protocol == "dialog":
            raise ValueError(f"baseline {ranker!r} only ranks; use paper, community, dedup "
                             "or new_items")
        cfg, variant = config(profile, dataset), ranker
    else:
        run_path = Path(run_path) if run_path else run_dir(profile, dataset, ranker)
        if not (run_path / "config.json").is_file():
            raise FileNotFoundError(f"{run_path}: not a finished run (no config.json); train it "
                                    "first")
        cfg = run.saved_config(run_path)
        variant = cfg["variant"]
    rc = resolve(cfg)
    profile, dataset, ev = rc.profile, rc.dataset, rc.eval
    if limit is None:  # dedup is drawn from the community sample
        limit = ev.protocol_limit(protocol)
    who = identity(cfg, None if variant in BASELINES else run_path)
    meta = {"dataset": dataset, "split": split, "profile": profile, "variant": variant,
            "seeds": [rc.train.seed], **who, "protocol": protocol}
    fmt = rc.format  # a baseline reads the gcrs config's cases
    if protocol == "dialog" and rc.ranker == "item_head":
        raise ValueError("the decoupled baseline only ranks (its responses come from a "
                         "separate generator); use paper, community or dedup")

    def sids_of(ds) -> SemanticIDs:
        return (run.prepare_sids(cfg, ds.catalog) if variant in BASELINES
                else SemanticIDs.load(run_path / "sids.json"))

    def dedup() -> dict:  # the community ranks without the repeated items: no new scoring
        full = evaluate(profile, dataset, ranker, "community", data_root, limit, split, save,
                        reuse, run_path)
        ds = data.load(dataset, data_root)
        cases = ev_mod.rec_cases(ds, sids_of(ds), split, fmt, limit=limit)
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
        if variant in BASELINES:
            sids = sids_of(ds)
            rec = recommenders.BaselineRecommender.fit(variant, cfg, ds, sids)
        else:
            rec, sids, _ = recommenders.load_recommender(run_path)
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
    return result_files.scored(meta, limit, compute, Path(out) if out else None, reuse, save)


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


# ----------------------------------------------------------------------------- tables
def load_result(profile: str, dataset: str, ranker: str, protocol: str) -> dict | None:
    path = result_files.result_path(profile, dataset, ranker, protocol)
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
        def scale(k: str) -> float:
            return 100.0 if percent and not k.startswith("ppl") and k != "bleu" else 1.0
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


def on_same_cases(profile: str, dataset: str, ranker: str, reference: str,
                  protocol: str = "paper", data_root=None) -> dict:
    """``ranker``'s saved ``protocol`` result cut to the cases of ``reference``'s result, when
    the reference scored a seeded sample (``limit``) and ``ranker`` scored every case or a
    larger seeded sample that holds those cases (checked; with one seed, a sample drawn case by
    case from a large split starts with the smaller one's draws): metrics and intervals
    recomputed from ``ranker``'s
    own per-case ranks (nothing is re-scored), so a sampled run and the baselines are compared
    on exactly the same cases. ``dedup`` cuts the ``community`` ranks, then drops the repeated
    items, as :func:`evaluate` does. Both must use the same semantic IDs (the cases are defined
    by them)."""
    source = "community" if protocol == "dedup" else protocol
    ref, full = (load_result(profile, dataset, x, source) for x in (reference, ranker))
    for name, r in ((reference, ref), (ranker, full)):
        if r is None:
            raise FileNotFoundError(f"no {source} result of {name!r} for {profile}/{dataset}")
    if full["split"] != ref["split"]:
        raise ValueError(f"{ranker!r} was scored on {full['split']}, {reference!r} on "
                         f"{ref['split']}: not the same cases")
    ds = data.load(dataset, data_root)
    sids = (run.prepare_sids(config(profile, dataset), ds.catalog) if reference in BASELINES
            else SemanticIDs.load(run_dir(profile, dataset, reference) / "sids.json"))
    fmt = "gcrs" if reference in BASELINES else resolve(config(profile, dataset, reference)).format
    cases = ev_mod.rec_cases(ds, sids, ref["split"], fmt)
    have = ev_mod.sample_indices(cases, full.get("limit"))
    if len(have) != len(full["case_ranks"]):
        raise ValueError(f"{ranker!r}'s {source} result holds {len(full['case_ranks'])} ranks; "
                         f"the reference's SIDs give {len(have)} cases for its limit "
                         f"{full.get('limit')}: not the same cases")
    at = {j: k for k, j in enumerate(have)}
    idx = ev_mod.sample_indices(cases, ref.get("limit"))
    missing = [j for j in idx if j not in at]
    if missing:
        raise ValueError(f"{ranker!r} scored {len(have)} of the {len(idx)} cases {reference!r} "
                         f"scored ({len(missing)} missing): score it on every case or a larger "
                         "sample")
    ranks = [full["case_ranks"][at[j]] for j in idx]
    if protocol == "dedup":
        _, ranks = ev_mod.select([cases[j] for j in idx], ranks, "dedup")
    out = ev_mod.ranking_result(ranks, protocol, dataset=dataset, split=ref["split"],
                                profile=profile, variant=ranker)
    out.update({"limit": ref.get("limit"), "cases_of": reference, "case_ranks": ranks,
                "model_hash": full.get("model_hash"), "config_hash": full.get("config_hash")})
    return out


def backbone_table(profile: str, datasets: Sequence[str], pretrained: Sequence[str],
                   others: Sequence[str] = ("gcrs", "popularity", "repeat"),
                   data_root=None) -> list[dict]:
    """Table 6 in miniature: one row per dataset and ranker, the ``pretrained`` runs beside the
    compact ``gcrs`` and the baselines, every ranker on the cases the pretrained run scored
    (:func:`on_same_cases`: a seeded ReDial sample, all INSPIRED cases), Recall@10 without
    repeated items (``dedup``) on the pretrained run's community sample, and the dialog
    metrics of the runs that write responses. Recall and NDCG in percent."""
    rows = []
    for ds in datasets:
        for ref in pretrained:
            for name in [ref, *others]:
                r = (load_result(profile, ds, ref, "paper") if name == ref
                     else on_same_cases(profile, ds, name, ref, "paper", data_root))
                if r is None:
                    raise FileNotFoundError(f"no paper result of {ref!r} for {profile}/{ds}")
                dd = (load_result(profile, ds, ref, "dedup") if name == ref
                      else on_same_cases(profile, ds, name, ref, "dedup", data_root))
                dial = load_result(profile, ds, name, "dialog") if name not in BASELINES else None
                d = dial["metrics"] if dial else {}
                model = (config(profile, ds, name)["model"] if name not in BASELINES else {})
                lo, hi = r["ci95"]["recall@10"]
                rows.append({
                    "dataset": ds, "cases of": ref, "model": name,
                    "backbone": model.get("name") or (
                        f"compact {model['layers']}x{model['hidden']}" if model else "-"),
                    "cases": r["n_cases"],
                    **{k: round(100 * r["metrics"][k], 2) for k in ("recall@1", "recall@10")},
                    "recall@10 95% CI": f"[{100 * lo:.2f}, {100 * hi:.2f}]",
                    "ndcg@10": round(100 * r["metrics"]["ndcg@10"], 2),
                    "dedup cases": dd["n_cases"],
                    "dedup recall@10": round(100 * dd["metrics"]["recall@10"], 2),
                    **{k: (round(d[k], 4 if k.startswith("distinct") else 2) if k in d else None)
                       for k in ("ppl_full_vocab", "bleu", "distinct@2", "intent_f1",
                                 "looping_share")}})
    return rows


def relative_improvement(ours: float, best_other: float) -> float:
    """The paper's relative improvement, (ours - best baseline) / best baseline."""
    if best_other == 0:
        raise ValueError("relative improvement over a zero baseline is undefined")
    return (ours - best_other) / best_other


HEADLINE = ("recall@1", "recall@10", "ndcg@10")
HEADLINE_RANKERS = ("gcrs", "backbone_smollm2_135m", "tiger", "decoupled", "text-retrieval",
                    "popularity", "repeat")


BACKBONES = {"smollm2": "SmolLM2-135M + LoRA", "cpu": "compact 2x256, from scratch",
             "smoke": "toy", "paper": "Qwen2.5-7B + QLoRA"}


def headline_markdown(profiles: str | Sequence[str], datasets: Sequence[str] = ("redial", "inspired"),
                      rankers: dict | None = None) -> str:
    """The README's headline table: our rankers under the ``paper`` protocol (with the 95%
    interval of Recall@10, the number of cases and the backbone) beside the paper's GCRS and
    TIGER rows. ``profiles``: one profile or several, in order (the pretrained profile first,
    then the compact one); ``rankers``: per profile, which rankers to show (default:
    :data:`HEADLINE_RANKERS`)."""
    profiles = [profiles] if isinstance(profiles, str) else list(profiles)
    tables = {"redial": "table1_redial", "inspired": "table2_inspired"}
    lines = ["| dataset | model | source | backbone | cases | R@1 | R@10 [95% CI] | N@10 |",
             "|---|---|---|---|---|---|---|---|"]
    for ds in datasets:
        for profile in profiles:
            names = (rankers or {}).get(profile, HEADLINE_RANKERS)
            for r in ours_rows(profile, ds, names, "paper", ("recall@10", "recall@1", "ndcg@10")):
                backbone = ("-" if r["model"] in BASELINES else
                            "SmolLM2-135M + LoRA" if r["model"].startswith("backbone_smollm2")
                            else BACKBONES.get(run.base_profile(profile), profile))
                lines.append(f"| {ds} | {r['model']} | {r['source']} | {backbone} | "
                             f"{r['cases']} | {r['recall@1']:.2f} | {r['recall@10']:.2f} "
                             f"{r.get('recall@10 95% CI', '')} | {r['ndcg@10']:.2f} |")
        for r in reported_rows(tables[ds], HEADLINE):
            if r["model"] in ("GCRS", "TIGER"):
                lines.append(f"| {ds} | {r['model']} | reported in the paper | Qwen2.5-7B | - | "
                             f"{r['recall@1']:.2f} | {r['recall@10']:.2f} | {r['ndcg@10']:.2f} |")
    return "\n".join(lines) + "\n"


def replace_block(text: str, block: str, name: str) -> str:
    """Replace what lies between ``<!-- name:start -->`` and ``<!-- name:end -->`` in ``text``."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    if start not in text or end not in text:
        raise ValueError(f"markers {start} / {end} not found")
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    return f"{head}{start}\n{block}{end}{tail}"


def table6_markdown(profile: str) -> str:
    """The README's Table 6 in miniature, from ``results/<profile>/table6_miniature.json``
    (notebook 06)."""
    path = report.RESULTS / profile / "table6_miniature.json"
    if not path.is_file():
        return f"(not run yet: notebook 06 writes {report.shown(path)})\n"
    return report.markdown_table(json.loads(path.read_text())["rows"])
