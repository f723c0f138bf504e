"""Free mode and cost (NOTES.md §3, §8): ranking when the model chooses *when* to recommend,
and what a recommendation costs per turn.

The paper's ranking protocol forces the gold mode (``<MODE=REC>`` is supplied for every
recommendation case). In free mode the model first chooses the mode itself: after the prompt
(ending ``Assistant:``) it compares the logits of ``<MODE=REC>`` and ``<MODE=CHAT>`` (REC wins
only when strictly larger, as in :func:`crslib.evaluation.dialog_eval.dialog_scores`). A case where
it chooses CHAT recommends nothing and counts as a miss; a case where it chooses REC keeps its
forced-mode rank (in the ``gcrs`` format ``<MODE=REC>`` is always followed by ``<BOI>``, so the
beam search is the same). So free recall@k = forced recall@k restricted to the REC choices,
never higher. The cases are the paper protocol's (same seeded sample as
``experiments.evaluate(..., "paper")``).

Cost: per-turn latency of constrained beam search (``beam_search.sid_beam_search``, width 50) and of
exact scoring of every item (``item_scores.score_all_items``), one prompt at a time, on a seeded
sample; training time, tokens/s and peak memory come from the run's ``train_summary.json``.
"""
from __future__ import annotations

import json
import random
import statistics
from typing import Sequence

import torch

from crslib import data, metrics
from crslib.decoding import batching, beam_search, item_scores, trie
from crslib.evaluation import evaluate, recommenders, result_files
from crslib.format import serialize
from crslib.studies import bench, experiments
from crslib.training import run


# ----------------------------------------------------------------------------- mode choice
@torch.no_grad()
def rec_margin(model, tokenizer, cases: Sequence[serialize.Example],
               max_context_tokens: int = 768, batch_size: int = 16) -> list[float]:
    """``logit(<MODE=REC>) - logit(<MODE=CHAT>)`` right after each case's prompt (the model's
    own intent; > 0 means it recommends). Prompts are batched with left padding."""
    rec, chat = tokenizer.convert_tokens_to_ids([serialize.MODE_REC, serialize.MODE_CHAT])
    head, decoder = model.get_output_embeddings(), model.get_decoder()
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    ids = [serialize.prompt_ids(ex, tokenizer, max_context_tokens) for ex in cases]
    out: list[float] = []
    for s in range(0, len(ids), batch_size):
        input_ids, mask = batching.left_pad(ids[s:s + batch_size], pad, head.weight.device)
        position = (mask.cumsum(-1) - 1).clamp(min=0)
        h = decoder(input_ids=input_ids, attention_mask=mask,
                    position_ids=position).last_hidden_state[:, -1]
        w = head.weight[[rec, chat]]
        logits = h @ w.T
        if getattr(head, "bias", None) is not None:
            logits = logits + head.bias[[rec, chat]]
        out += (logits[:, 0] - logits[:, 1]).float().tolist()
    return out


def free_ranks(forced_ranks: Sequence[int | None], margins: Sequence[float]) -> list[int | None]:
    """Free-mode ranks: the forced rank where the model chose REC (margin > 0), else None (a
    miss: it recommended nothing)."""
    if len(forced_ranks) != len(margins):
        raise ValueError(f"{len(forced_ranks)} ranks but {len(margins)} margins")
    return [r if m > 0 else None for r, m in zip(forced_ranks, margins)]


def choose_cut(margins: Sequence[float], gold_rec: Sequence[bool]) -> dict:
    """The cut on the REC-minus-CHAT margin (:func:`rec_margin`) that best tells the turns that
    recommend from the others, for a model whose intent is miscalibrated; the paper's rule is
    the cut 0. Meant for validation turns: the cut with the highest intent F1 (REC positive,
    REC predicted when the margin is above the cut); the candidates are 0 and the midpoints
    between consecutive distinct margins (every distinct split of the turns); ties go to the cut
    nearest 0. Returns ``{"cut", "f1", "f1_at_zero", "rec_share", "gold_rec_share",
    "n_turns"}`` (``rec_share``: the share of turns predicted REC at the cut)."""
    if len(margins) != len(gold_rec) or not margins:
        raise ValueError(f"{len(margins)} margins for {len(gold_rec)} turns (need the same, > 0)")
    gold = [bool(g) for g in gold_rec]

    def f1(cut: float) -> float:
        return metrics.f1(gold, [m > cut for m in margins])
    distinct = sorted(set(margins))
    cands = [0.0] + [(a + b) / 2 for a, b in zip(distinct, distinct[1:])] + [distinct[0] - 1.0]
    cut = max(cands, key=lambda c: (f1(c), -abs(c)))
    return {"cut": cut, "f1": f1(cut), "f1_at_zero": f1(0.0),
            "rec_share": sum(m > cut for m in margins) / len(margins),
            "gold_rec_share": sum(gold) / len(gold), "n_turns": len(margins)}


def forced_vs_free(model, tokenizer, sids, cases: Sequence[serialize.Example],
                   max_context_tokens: int = 768, num_beams: int = 50,
                   batch_size: int = 16, forced: Sequence[int | None] | None = None) -> dict:
    """Paper-protocol metrics of ``cases`` with the mode forced and chosen by the model:
    ``{"forced": {metrics, ci95}, "free": {metrics, ci95}, "rec_share", "rec_share_ci95",
    "ranks": {"forced", "free"}}`` (``rec_share``: cases where the model chose REC).
    ``forced``: the paper-protocol ranks of these cases when already scored (by the same
    weights), so only the mode choice is computed."""
    if forced is None:
        forced = recommenders.model_ranks(model, tokenizer, sids, cases, "paper",
                                          max_context_tokens, num_beams, batch_size)
    elif len(forced) != len(cases):
        raise ValueError(f"{len(forced)} forced ranks for {len(cases)} cases")
    margins = rec_margin(model, tokenizer, cases, max_context_tokens, batch_size)
    free = free_ranks(forced, margins)
    chose = [float(m > 0) for m in margins]
    out = {"rec_share": sum(chose) / len(chose) if chose else float("nan"),
           "rec_share_ci95": list(metrics.bootstrap_ci(chose)),
           "ranks": {"forced": forced, "free": free}}
    for name, ranks in (("forced", forced), ("free", free)):
        r = evaluate.ranking_result(ranks, "paper")
        out[name] = {"metrics": r["metrics"], "ci95": r["ci95"]}
    return out


def result_path(profile: str, dataset: str, variant: str = "gcrs"):
    return result_files.result_path(profile, dataset, variant, "freemode")


def evaluate_free(profile: str, dataset: str, variant: str = "gcrs", data_root=None,
                  split: str = "test", limit: int | None = None, save: bool = True,
                  reuse: bool = True) -> dict:
    """:func:`forced_vs_free` for the run ``runs/<profile>/<dataset>/<variant>`` on the paper
    protocol's cases (``limit``: default the config's ``eval.paper_limit``/``eval.limit``, as
    ``experiments.evaluate``), saved as ``results/<profile>/<dataset>/<variant>.freemode.json``
    with ``metrics = {"forced": {...}, "free": {..., "rec_share"}}`` and ``ci95`` alike. A saved
    result with the same config hash, split and limit is reused."""
    folder = experiments.run_dir(profile, dataset, variant)
    if not (folder / "train_summary.json").is_file():
        raise FileNotFoundError(f"{folder}: not a finished run; train it first "
                                f"(crslib.studies.experiments.train({profile!r}, {dataset!r}, "
                                f"{variant!r}))")
    cfg = run.saved_config(folder)
    rc = cfg
    if rc.format != "gcrs" or rc.ranker != "generative":
        raise ValueError(f"{variant}: free mode needs a run in the gcrs format (mode token, then item)")
    ev = rc.eval
    if limit is None:
        limit = ev.protocol_limit("paper")
    who = result_files.identity(cfg, folder)

    def score() -> dict:
        rec = recommenders.load_recommender(folder)
        sids = rec.sids
        ds = data.load(dataset, data_root)
        cases = evaluate.rec_cases(ds, sids, split, "gcrs", limit=limit)
        paper = result_files.saved_result(result_files.result_path(profile, dataset, variant,
                                                                   "paper"), who, limit, split,
                                          say=lambda _: None)  # its ranks, if any
        forced = (paper["case_ranks"] if paper  # the one scoring call, or its saved ranks
                  else evaluate.evaluate(rec, cases, "paper")["case_ranks"])
        r = forced_vs_free(rec.model, rec.tokenizer, sids, cases, ev.max_context_tokens,
                           ev.num_beams, ev.batch_size, forced=forced)
        return {"n_cases": len(cases),
                "metrics": {"forced": r["forced"]["metrics"],
                            "free": {**r["free"]["metrics"], "rec_share": r["rec_share"]}},
                "ci95": {"forced": r["forced"]["ci95"],
                         "free": {**r["free"]["ci95"], "rec_share": r["rec_share_ci95"]}},
                "note": "paper-protocol rec cases (seeded sample of `limit`); forced: <MODE=REC> "
                        "given (the paper's protocol); free: the model first picks REC or CHAT "
                        "(logit comparison after 'Assistant:'), a CHAT choice is a miss; "
                        "rec_share = share of cases where it picked REC"}
    meta = {"dataset": dataset, "split": split, "profile": profile, "variant": variant,
            "protocol": "freemode", "seeds": [rc.train.seed], **who}
    return result_files.scored(meta, limit, score, reuse=reuse, save=save)


# ----------------------------------------------------------------------------- cost
INTENT_LIMIT = 300  # validation turns the chat's intent cut is chosen on (a seeded sample)


def intent_cut(profile: str, dataset: str, variant: str = "gcrs", data_root=None,
               limit: int | None = INTENT_LIMIT, reuse: bool = True) -> dict:
    """The chat's intent cut for the run (:func:`choose_cut`), chosen on a seeded sample of
    ``limit`` assistant turns of the validation split (:data:`crslib.data.VALIDATION`; gold
    REC when the turn mentions an item), saved as
    ``results/<profile>/<dataset>/<variant>.intent.json`` and reused for the same weights. The
    evaluation protocols keep the paper's rule (cut 0); only the chat uses this cut."""
    folder, cfg, split = experiments.validation_run(profile, dataset, variant)
    rc = cfg
    if rc.format != "gcrs" or rc.ranker != "generative":
        raise ValueError(f"{variant}: an intent cut needs a run in the gcrs format")

    def choose() -> dict:
        rec = recommenders.load_recommender(folder)
        sids = rec.sids
        ds = data.load(dataset, data_root)
        turns = serialize.serialize_all(ds[split], sids, "gcrs")
        turns = [turns[j] for j in evaluate.sample_indices(turns, limit)]
        margins = rec_margin(rec.model, rec.tokenizer, turns, rc.eval.max_context_tokens,
                             rc.eval.batch_size)
        return {**choose_cut(margins, [ex.mode == "rec" for ex in turns]),
                "note": "intent F1 (REC positive) of 'margin > cut' on validation assistant "
                        "turns; the paper's rule is cut 0 (free mode in the protocols keeps it)"}
    meta = {"dataset": dataset, "split": split, "profile": profile, "variant": variant,
            **result_files.identity(cfg, folder), "protocol": "intent"}
    return result_files.scored(meta, limit, choose, reuse=reuse)


def latency(model, tokenizer, sids, cases: Sequence[serialize.Example], n: int = 10,
            seed: int = 0, max_context_tokens: int = 768, num_beams: int = 50) -> dict:
    """Per-turn decode latency on a seeded sample of ``n`` cases, one prompt at a time (after
    one untimed warm-up call of each): the mode choice (:func:`rec_margin`), constrained beam
    search (``beam_search.sid_beam_search``, width ``num_beams``) and exact scoring of every item
    (``item_scores.score_all_items``). Medians and means in ms, the mean prompt length, and
    ``top1_agree``: share of prompts where both put the same item first."""
    sample = random.Random(seed).sample(list(cases), min(n, len(cases)))
    if not sample:
        raise ValueError("latency needs at least one case")
    vocab = trie.SIDVocab.build(sids, tokenizer)
    prompts = [serialize.rec_prompt_ids(ex, tokenizer, max_context_tokens) for ex in sample]
    beam_search.sid_beam_search(model, tokenizer, prompts[0], vocab, k=num_beams,
                                num_beams=num_beams)
    item_scores.score_all_items(model, tokenizer, prompts[0], vocab)
    rec_margin(model, tokenizer, sample[:1], max_context_tokens)
    mode_ms, beam_ms, exact_ms, agree = [], [], [], 0
    for ex, p in zip(sample, prompts):
        mode_ms.append(bench.timed_ms(rec_margin, model, tokenizer, [ex], max_context_tokens)[1])
        beam, ms = bench.timed_ms(beam_search.sid_beam_search, model, tokenizer, p, vocab,
                                  k=num_beams, num_beams=num_beams)
        beam_ms.append(ms)
        exact, ms = bench.timed_ms(item_scores.score_all_items, model, tokenizer, p, vocab)
        exact_ms.append(ms)
        agree += beam.items[:1] == exact.items[:1]
    out = {"prompts": len(sample), "prompt_tokens_mean": sum(map(len, prompts)) / len(prompts)}
    for name, xs in (("mode", mode_ms), ("beam", beam_ms), ("exact", exact_ms)):
        out[f"{name}_ms_median"] = statistics.median(xs)
        out[f"{name}_ms_mean"] = statistics.fmean(xs)
    out["top1_agree"] = agree / len(sample)
    return out


def cost_row(profile: str, dataset: str, variant: str, data_root=None, n: int = 10,
             seed: int = 0, split: str = "test") -> dict:
    """One row of the cost table for a finished run: SID shape and new tokens, training
    seconds / steps / tokens per second / peak RSS (``train_summary.json``; ``peak_rss_mb`` is
    the training *process*'s maximum so far, so runs trained one after another in one process
    report a running maximum), and :func:`latency` on ``n`` seeded rec cases of ``split``."""
    folder = experiments.run_dir(profile, dataset, variant)
    summary = json.loads((folder / "train_summary.json").read_text())
    model, tok, sids, cfg = run.load_run(folder)
    ds = data.load(dataset, data_root)
    rc = cfg
    cases = evaluate.rec_cases(ds, sids, split, rc.format)
    lat = latency(model, tok, sids, cases, n, seed, rc.eval.max_context_tokens,
                  rc.eval.num_beams)
    return {"variant": variant,
            "ids": f"{sids.config.get('method')} {sids.levels}x{sids.codebook_size}",
            "new tokens": len(serialize.special_tokens(sids)),
            "params (M)": round(sum(p.numel() for p in model.parameters()) / 1e6, 2),
            "train s": summary.get("seconds"), "steps": summary.get("steps"),
            "tokens/s": round(summary.get("tokens_per_s", 0.0)),
            "peak RSS MB": round(summary.get("peak_rss_mb", 0.0)),
            "prompts": lat["prompts"], "prompt tokens": round(lat["prompt_tokens_mean"], 1),
            "mode ms": round(lat["mode_ms_median"], 2),
            "beam ms": round(lat["beam_ms_median"], 2),
            "exact ms": round(lat["exact_ms_median"], 2),
            "top-1 agree": lat["top1_agree"]}
