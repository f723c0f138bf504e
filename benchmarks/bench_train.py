"""Training throughput: our loop (batching, collation, optimizer, schedule, clipping, logging,
checkpoint) vs a bare forward/backward/step over the very same pre-collated batches. Prints one
JSON object; the ratio loop/bare is measured in one run on one machine.

    CRSLIB_DATA=../shared/data python benchmarks/bench_train.py [--dialogs 300] [--steps 30]

Order: bare steps 1..n/2 on a fresh model, the loop (n steps, its own fresh model), bare steps
n/2+1..n; both sides start cold once, and the bare rate averages load before and after the
loop. Tokens are unpadded tokens, as the loop counts them. ``--quick``: 40 dialogs, 4 steps.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import resource
import tempfile
import time


def main(argv: list[str] | None = None) -> int:
    import torch

    from crslib import data, paths
    from crslib.training import batches, newrows, objectives, run, train

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", default=str(run.config_path("cpu", "redial")))
    ap.add_argument("--dialogs", type=int, default=300)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--quick", action="store_true", help="40 dialogs, 4 steps")
    ap.add_argument("--out", default=None, help="also write the JSON here")
    args = ap.parse_args(argv)
    if args.quick:
        args.dialogs, args.steps = 40, 4
    torch.set_num_threads(args.threads)
    cfg = run.load_config(args.config)
    ds = data.load(cfg.dataset)
    sids = run.prepare_sids(cfg, ds.catalog)
    dialogs = ds["train"][: args.dialogs]
    tcfg = dataclasses.replace(cfg.train, max_steps=args.steps,
                               checkpoint_every=10_000, threads=args.threads)

    # the bare side: same windows, batches, restricted head and trainable parameters
    net, tok, new_ids = run.build_model(cfg, sids, ds.catalog)
    windows = batches.build_windows(dialogs, sids, tok, tcfg.fmt, tcfg.max_context_tokens)
    head = (torch.tensor(batches.target_vocab(windows, new_ids, tok.eos_token_id))
            if tcfg.output_vocab == "targets" else None)
    groups = batches.make_batches(windows, tcfg.batch_tokens, tcfg.seed)[: args.steps]
    real = [sum(len(windows[i]) for i in b) for b in groups]
    emb = newrows.Embeddings(net, None if tcfg.embeddings == "all" else new_ids)
    objective = objectives.TokenObjective(windows, head, tok.pad_token_id or 0, emb.first,
                                     tcfg.new_token_loss_weight)
    lengths = [len(w) for w in windows]  # the loop's micro-batches, collated up front
    parts_of = [objectives.split_step(b, lengths, tcfg.micro_batch_tokens) for b in groups]
    step_batches = [[objective.batch(g) for g in parts] for parts in parts_of]
    part_weights = [[objective.weight(g) for g in parts] for parts in parts_of]
    params = [p for p in net.parameters() if p.requires_grad]
    params += [p for p in (emb.inp_rows, emb.out_rows) if p is not None]
    opt = torch.optim.AdamW(params, lr=tcfg.lr, weight_decay=tcfg.weight_decay)
    net.train()
    bare = {"tokens": 0, "seconds": 0.0}

    def bare_steps(ks) -> None:
        t0 = time.perf_counter()
        for k in ks:
            parts, weights = (step_batches[k % len(step_batches)],
                              part_weights[k % len(step_batches)])
            opt.zero_grad(set_to_none=True)
            for b, w in zip(parts, weights):
                loss, _ = newrows.packed_loss(net, emb, b, head, tcfg.new_token_loss_weight)
                (loss * (w / sum(weights))).backward()
            opt.step()
            bare["tokens"] += real[k % len(step_batches)]
        bare["seconds"] += time.perf_counter() - t0

    half = args.steps // 2
    bare_steps(range(half))
    net2, tok2, new_ids2 = run.build_model(cfg, sids, ds.catalog)
    with tempfile.TemporaryDirectory() as tmp:
        loop = train.train(net2, tok2, sids, dialogs, tcfg, tmp, new_ids2, progress=False)
    bare_steps(range(half, args.steps))
    bare_rate = bare["tokens"] / bare["seconds"]
    result = {"config": os.path.relpath(args.config, paths.REPO), "dialogs": args.dialogs,
              "steps": args.steps, "threads": args.threads, "quick": args.quick,
              "windows": len(windows), "batch_tokens": tcfg.batch_tokens,
              "model": cfg.to_dict()["model"], "loop_tokens": loop["tokens"],
              "bare_tokens": bare["tokens"],
              "loop_tokens_per_s": round(loop["tokens_per_s"]),
              "bare_tokens_per_s": round(bare_rate),
              "ratio": round(loop["tokens_per_s"] / bare_rate, 3),
              "micro_batch_tokens": tcfg.micro_batch_tokens,
              "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}
    print(json.dumps(result, indent=1))
    if args.out:
        from crslib.report import write_json
        write_json(result, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
