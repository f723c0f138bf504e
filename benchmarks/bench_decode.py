"""Decoding cost on one model and one set of test prompts; print one JSON object.

    python benchmarks/bench_decode.py [--backbone tiny | --run runs/cpu/redial/gcrs] [--prompts 32]

Per prompt: constrained beam search (``generate`` + the trie processor), the unconstrained
ablation of the same width, the cache-sharing ``sid_beam_search`` used by evaluation, and exact
scoring of every item; ratios within one run (see ``crslib/studies/bench.py``). Same numbers as
``python -m crslib bench decode``; this script adds ``--run``, ``--quick`` and ``--out``.
"""
from __future__ import annotations

import argparse


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dataset", choices=["redial", "inspired"], default="redial")
    p.add_argument("--data-root", default=None, help="default: $CRSLIB_DATA or data/")
    p.add_argument("--backbone", default="tiny", help="tiny | smollm2-135m | HF name or path")
    p.add_argument("--run", default=None, help="a trained run folder (its model and SIDs)")
    p.add_argument("--prompts", type=int, default=32, help="test prompts timed (seeded sample)")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="8 prompts (a check that it runs)")
    p.add_argument("--out", default=None, help="also write the JSON here")
    args = p.parse_args(argv)

    from crslib.studies import bench
    from crslib.report import emit_json

    report = bench.bench_decode(args.dataset, args.backbone, 8 if args.quick else args.prompts,
                                batch_size=args.batch_size, data_root=args.data_root,
                                seed=args.seed, threads=args.threads, run=args.run)
    report["quick"] = args.quick
    emit_json(report, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
