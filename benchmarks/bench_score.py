"""Paper-protocol scoring cost of a pretrained run: seconds per ReDial test case, the shared
beam (``crslib.decoding.beam_search.sid_beam_search``) against the path it replaced; print one JSON
object.

    python benchmarks/bench_score.py [--run runs/smollm2/redial/gcrs] [--dialogs 12] [--threads 1]

Cases: every recommendation case of a seeded sample of whole test dialogs (as a full-split
scoring sees them: turns of one dialog share prefixes, turns with several gold items repeat a
prompt). The old path (``reference_beam.old_sid_beam_search``: one prompt per row, batches of
the run's ``eval.batch_size`` in dialog order, no sharing) and the new one run in this process,
one after the other, on the same cases and thread count, so the ratio is measured in one run.
Parity: the share of cases whose gold rank is the same under both, and of identical top-50s.
"""
from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # the frozen reference next to this script


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--run", default="runs/smollm2/redial/gcrs")
    p.add_argument("--data-root", default=None)
    p.add_argument("--dialogs", type=int, default=12, help="seeded sample of test dialogs")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="3 dialogs (a check that it runs)")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)

    import torch
    from crslib import data
    from crslib.format import serialize
    from crslib.decoding import beam_search, trie
    from crslib.training import runtime
    from crslib.evaluation import recommenders
    from crslib.report import emit_json
    from reference_beam import old_sid_beam_search

    torch.set_num_threads(args.threads)
    rec = recommenders.GenerativeRecommender.load(args.run, "cpu")
    rc = rec.config
    ds = data.load(rc.dataset, args.data_root)
    n_dialogs = 3 if args.quick else args.dialogs
    dialogs = random.Random(args.seed).sample(list(ds["test"]), n_dialogs)
    cases = [ex for ex in serialize.serialize_all(dialogs, rec.sids, rc.format) if ex.mode == "rec"]
    prompts = [serialize.rec_prompt_ids(ex, rec.tokenizer, rec.max_context_tokens) for ex in cases]
    vocab = trie.SIDVocab.build(rec.sids, rec.tokenizer)
    pad = rec.tokenizer.pad_token_id or 0
    with runtime.flush_denormals():
        t = time.perf_counter()
        old = old_sid_beam_search(rec.model, vocab, prompts, k=rec.num_beams,
                                  num_beams=rec.num_beams, batch_size=rec.batch_size, pad=pad)
        old_s = time.perf_counter() - t
        t = time.perf_counter()
        new = beam_search.sid_beam_search(rec.model, rec.tokenizer, prompts, vocab, k=rec.num_beams,
                                   num_beams=rec.num_beams, batch_size=rec.batch_size)
        new_s = time.perf_counter() - t
    same_rank = sum((o.items.index(ex.item) if ex.item in o.items else None) ==
                    (n.items.index(ex.item) if ex.item in n.items else None)
                    for o, n, ex in zip(old, new, cases))
    same_top = sum(o.items == n.items for o, n in zip(old, new))
    report = {
        "run": args.run, "dataset": rc.dataset, "dialogs": n_dialogs, "cases": len(cases),
        "distinct_prompts": len({tuple(q) for q in prompts}),
        "prompt_tokens": sum(map(len, prompts)), "threads": args.threads,
        "num_beams": rec.num_beams, "old_batch_size": rec.batch_size, "quick": args.quick,
        "old_s_per_case": old_s / len(cases), "s_per_case": new_s / len(cases),
        "speedup": old_s / new_s,
        "same_gold_rank_share": same_rank / len(cases), "same_top50_share": same_top / len(cases),
    }
    emit_json(report, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
