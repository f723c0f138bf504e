"""``python -m crslib bench decode``: cost of constrained decoding and exact scoring.

Prompts are real test prompts of the dataset in the ``gcrs`` format, mode forced to REC, then
``<BOI>`` (``serialize.rec_prompt_ids``), context truncated to 768 tokens; SIDs are random
(:func:`random_sids`, 4 x 64 by default) unless a SID file is given. On one model and one set of
prompts it times, per prompt: constrained beam search (``constrained_ms``), the unconstrained
ablation with the same width and L new tokens (``unconstrained_ms``) and exact scoring of every
item (``exact_ms``). Each batch runs both beam searches, in alternating order, so that both see
the same load; ratios are taken within one run. ``sid_beam_ms`` times
:func:`~crslib.decoding.beam_search.sid_beam_search`, the cache-sharing constrained beam that
evaluation uses.

With ``run=<run folder>`` the trained model, tokenizer and SIDs of that run are used instead
of ``backbone`` and random SIDs, with the run's evaluation context length.
"""
from __future__ import annotations

import os
import time

import numpy as np
import torch

from crslib import data
from crslib.decoding import beam_search, item_scores, trie
from crslib.format import serialize
from crslib.ids.semantic_ids import SemanticIDs
from crslib.pretrained import load_backbone
from crslib.training.run import load_run


def random_sids(item_ids: list[str], levels: int = 4, codebook_size: int = 64,
                seed: int = 0) -> SemanticIDs:
    """Unique code tuples drawn uniformly without replacement (seeded), one per item."""
    space = codebook_size ** levels
    if len(item_ids) > space:
        raise ValueError(f"{len(item_ids)} items do not fit {codebook_size}^{levels} code tuples")
    rng = np.random.default_rng(seed)
    flat = rng.choice(space, size=len(item_ids), replace=False)
    codes = np.stack([(flat // codebook_size ** (levels - 1 - lv)) % codebook_size
                      for lv in range(levels)], axis=1)
    return SemanticIDs(list(item_ids), codes, codebook_size, {"kind": "random", "seed": seed})


def rec_prompts(dataset: data.Dataset, sids: SemanticIDs, tokenizer, split: str = "test",
                template: str = "plain", max_context_tokens: int = 768) -> list[list[int]]:
    """Token ids of every recommendation instance of ``split`` (gcrs, REC forced, ``<BOI>``)."""
    examples = [ex for ex in serialize.serialize_all(dataset[split], sids, "gcrs", template=template,
                                                     tokenizer=tokenizer) if ex.mode == "rec"]
    return [serialize.rec_prompt_ids(ex, tokenizer, max_context_tokens) for ex in examples]


def timed_ms(fn, *args, **kwargs) -> tuple[object, float]:
    """``(fn(*args, **kwargs), milliseconds it took)``."""
    t = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, (time.perf_counter() - t) * 1000.0


def check_prompts(model, tokenizer, prompts: list[list[int]], vocab: trie.SIDVocab, k: int = 50,
                  batch_size: int = 8) -> dict:
    """Constrained top-k for every prompt: shares of valid outputs and of prompts with k
    distinct items."""
    valid = distinct = outputs = 0
    for s in range(0, len(prompts), batch_size):
        for r in beam_search.recommend(model, tokenizer, prompts[s:s + batch_size], vocab, k,
                                batch_size=batch_size):
            ok = [i for i in r.items if i is not None and i in vocab.sids]
            valid += len(ok)
            outputs += len(r.items)
            distinct += len(set(ok)) == k
    return {"checked_prompts": len(prompts), "valid_share": valid / max(outputs, 1),
            "distinct_share": distinct / max(len(prompts), 1)}


def bench_decode(dataset: str = "redial", backbone: str = "tiny", n_prompts: int = 16,
                 sids_path: str | None = None, batch_size: int = 4, k: int = 50,
                 chunk_size: int = 256, template: str = "plain", check_all: bool = False,
                 data_root: str | None = None, seed: int = 0, threads: int | None = None,
                 dtype: str = "float32", run: str | None = None,
                 max_context_tokens: int = 768) -> dict:
    """Run the decode benchmark and return its JSON-able report (module docstring)."""
    if threads:
        torch.set_num_threads(threads)
    if run:
        model, tokenizer, sids, cfg = load_run(run)
        if cfg.dataset != dataset:
            raise ValueError(f"{run} was trained on {cfg.dataset}, not {dataset}")
        backbone, sids_path = f"run {run}", f"{run}/sids.json"
        max_context_tokens = cfg.eval.max_context_tokens
    loader = {"redial": data.load_redial, "inspired": data.load_inspired}[dataset]
    ds = loader(data_root, splits=("test",))
    if not run:
        sids = SemanticIDs.load(sids_path) if sids_path else random_sids(ds.catalog.ids, seed=seed)
        model, tokenizer = load_backbone(backbone, seed=seed)
        serialize.add_special_tokens(tokenizer, model, sids)
    model.to(getattr(torch, dtype))
    vocab = trie.SIDVocab.build(sids, tokenizer)
    all_prompts = rec_prompts(ds, sids, tokenizer, template=template,
                              max_context_tokens=max_context_tokens)
    rng = np.random.default_rng(seed)
    pick = sorted(rng.choice(len(all_prompts), size=min(n_prompts, len(all_prompts)), replace=False))
    prompts = [all_prompts[i] for i in pick]

    # warm-up (first calls allocate and build kernels); not timed
    beam_search.recommend(model, tokenizer, prompts[:batch_size], vocab, k, batch_size=batch_size)
    beam_search.recommend(model, tokenizer, prompts[:batch_size], vocab, k, batch_size=batch_size,
                   constrained=False)
    item_scores.score_all_items(model, tokenizer, prompts[0], vocab, chunk_size=chunk_size)
    beam_search.sid_beam_search(model, tokenizer, prompts[:batch_size], vocab, k,
                                batch_size=batch_size)

    cons_ms = uncons_ms = exact_ms = sid_ms = 0.0
    valid = outputs = distinct = invalid_unc = outputs_unc = 0
    for b, s in enumerate(range(0, len(prompts), batch_size)):
        batch = prompts[s:s + batch_size]
        runs = {}
        for constrained in ((True, False) if b % 2 == 0 else (False, True)):  # alternate order
            runs[constrained] = timed_ms(beam_search.recommend, model, tokenizer, batch, vocab, k,
                                       batch_size=batch_size, constrained=constrained)
        (ranked, ms_c), (free, ms_u) = runs[True], runs[False]
        cons_ms += ms_c
        uncons_ms += ms_u
        for r in ranked:
            ok = [i for i in r.items if i is not None and i in sids]
            valid += len(ok)
            outputs += len(r.items)
            distinct += len(set(ok)) == k
        invalid_unc += sum(r.invalid for r in free)
        outputs_unc += sum(len(r.items) for r in free)
    for p in prompts:
        _, ms = timed_ms(item_scores.score_all_items, model, tokenizer, p, vocab,
                         chunk_size=chunk_size)
        exact_ms += ms
    for s in range(0, len(prompts), batch_size):
        _, ms = timed_ms(beam_search.sid_beam_search, model, tokenizer, prompts[s:s + batch_size],
                         vocab, k, batch_size=batch_size)
        sid_ms += ms
    n = len(prompts)
    report = {
        "dataset": dataset, "backbone": backbone, "template": template, "prompts": n,
        "prompt_tokens_mean": float(np.mean([len(p) for p in prompts])),
        "items": len(sids), "levels": sids.levels, "codebook_size": sids.codebook_size,
        "sids": sids_path or f"random (seed {seed})", "k": k,
        "num_beams": max(k, beam_search.DEFAULT_BEAM),
        "batch_size": batch_size, "chunk_size": chunk_size, "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(), "device": str(model.device), "dtype": dtype,
        "constrained_ms": cons_ms / n, "unconstrained_ms": uncons_ms / n,
        "max_context_tokens": max_context_tokens,
        "ratio": cons_ms / uncons_ms, "exact_ms": exact_ms / n, "exact_ratio": exact_ms / cons_ms,
        "sid_beam_ms": sid_ms / n, "sid_beam_ratio": sid_ms / cons_ms,
        "valid_share": valid / max(outputs, 1), "distinct_share": distinct / n,
        "unconstrained_invalid_share": invalid_unc / max(outputs_unc, 1),
    }
    if check_all:
        report["check_all"] = check_prompts(model, tokenizer, all_prompts, vocab, k, batch_size)
    return report
