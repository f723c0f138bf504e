"""The chat's settings chosen on validation data, never on a test split: which run talks
(:func:`best_chat_run`), its response decoding (:func:`chat_decoding`), its beam width
(:func:`chat_beam`), and how well its lists follow a request (:func:`request_following`)."""
from __future__ import annotations

import json
from typing import Sequence

from crslib import data, report
from crslib.data import genres
from crslib.decoding import beam_search, trie
from crslib.evaluation import dialog_eval, evaluate as ev_mod, recommenders, result_files
from crslib.format import serialize
from crslib.studies import experiments
from crslib.studies.experiments import validation_run
from crslib.studies.run_inventory import shipped_runs
from crslib.training import run


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
        for summary in sorted((experiments.RUNS / profile / ds).glob("*/train_summary.json")):
            folder = summary.parent
            if shipped_only and folder.resolve() not in shipped:
                continue
            rc = run.saved_config(folder)
            if rc.format != "gcrs" or rc.ranker != "generative":  # it must talk
                continue
            dec = chat_decoding(profile, ds, rc.variant, data_root)
            row = next(r for r in dec["rows"] if r["decoding"] == dec["chosen"])
            req = request_following(profile, ds, rc.variant, data_root)["share"]
            cands.append({"run": report.shown(folder), "dataset": ds, "variant": rc.variant,
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
    :func:`crslib.evaluation.dialog_eval.decoding_sweep` (a seeded sample of ``limit`` turns of the
    dataset's validation split, :data:`crslib.data.VALIDATION`: INSPIRED ``dev``, ReDial ``valid``;
    default: the config's ``eval.decoding_limit``, else 60), saved
    as ``results/<profile>/<dataset>/<variant>.decoding.json`` and reused for the same weights.
    The result says whether the run trained on those dialogs (``validation_in_training``): runs
    that follow the paper's INSPIRED recipe train on ``dev`` too, so for them the choice is made
    on seen dialogs, and says so."""
    folder, cfg, split = validation_run(profile, dataset, variant)
    limit = cfg.eval.decoding_limit if limit is None else limit

    def sweep() -> dict:  # data and model are loaded only when nothing can be reused
        ds = data.load(dataset, data_root)
        model, tok, sids, _ = run.load_run(folder)
        head = folder / "output_vocab.json"
        out = dialog_eval.decoding_sweep(model, tok, sids, ds[split], catalog=ds.catalog,
                                    max_context_tokens=cfg.eval.max_context_tokens,
                                    head_ids=json.loads(head.read_text()) if head.is_file()
                                    else None, limit=limit)
        seen = {d.id for d in run.training_dialogs(cfg, ds)} & {d.id for d in ds[split]}
        return {"validation_in_training": bool(seen), **out}
    return result_files.scored(result_files.run_meta(profile, dataset, variant, split, "decoding",
                                                     cfg, folder),
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
        rec = recommenders.load_recommender(folder)
        sids = rec.sids
        cases = ev_mod.rec_cases(ds, sids, split, cfg.format, limit=limit)
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
    return result_files.scored(result_files.run_meta(profile, dataset, variant, split, "chat_beam",
                                                     cfg, folder),
                               limit, compute, reuse=reuse)


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
        rec = recommenders.load_recommender(folder)
        sids = rec.sids
        vocab = genres.vocabulary(ds.catalog)
        cases = [ex for ex in ev_mod.rec_cases(ds, sids, split, cfg.format)
                 if ex.context and genres.asked_genres(ex.context[-1][1], vocab)]
        cases = [cases[j] for j in ev_mod.sample_indices(cases, limit)]
        asked = [genres.asked_genres(ex.context[-1][1], vocab) for ex in cases]
        pop = recommenders.BaselineRecommender("popularity").fit(cfg, ds, sids=sids)
        tops = {"run": rec.top(cases, k), "popularity": pop.top(cases, k)}
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
    return result_files.scored(result_files.run_meta(profile, dataset, variant, split, "request",
                                                     cfg, folder),
                               limit, check, reuse=reuse)
