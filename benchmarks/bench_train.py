"""Training throughput: our loop (batching, collation, optimizer, logging, checkpoint) vs a bare
forward/backward/step over the very same pre-collated batches. Prints one JSON object; the
ratio loop/bare is measured in one run on one machine.

    CRSLIB_DATA=../shared/data python benchmarks/bench_train.py [--dialogs 300] [--steps 30]
"""
import argparse
import json
import tempfile
import time

import torch

from crslib import data, packing, run, train


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default=str(run.config_path("cpu", "redial")))
    ap.add_argument("--dialogs", type=int, default=300)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=None, help="also write the JSON here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cfg = run.load_config(args.config)
    ds = data.load(cfg["dataset"])
    sids = run.prepare_sids(cfg, ds.catalog)
    dialogs = ds["train"][: args.dialogs]
    tcfg = train.TrainConfig.from_dict({**cfg["train"], "max_minutes": None, "max_steps": args.steps,
                                        "checkpoint_every": 10_000, "threads": args.threads})

    net, tok, new_ids = run.build_model(cfg, sids, ds.catalog)
    with tempfile.TemporaryDirectory() as tmp:
        loop = train.train(net, tok, sids, dialogs, tcfg, tmp, new_ids, progress=False)

    net, tok, new_ids = run.build_model(cfg, sids, ds.catalog)
    windows = train.build_windows(dialogs, sids, tok, tcfg.fmt, tcfg.max_context_tokens)
    head = torch.tensor(train.target_vocab(windows, new_ids, tok.eos_token_id))
    groups = train.make_batches(windows, tcfg.batch_tokens, tcfg.seed)[: args.steps]
    batches = [packing.collate([windows[i] for i in b], tok.pad_token_id) for b in groups]
    real = [sum(len(windows[i]) for i in b) for b in groups]  # unpadded, as the loop counts
    emb = train.Embeddings(net, new_ids)
    params = [p for p in net.parameters() if p.requires_grad] + [emb.inp_rows]
    opt = torch.optim.AdamW(params, lr=tcfg.lr)
    net.train()
    tokens, t0 = 0, time.perf_counter()
    for k in range(args.steps):
        b = batches[k % len(batches)]
        loss, _ = train.packed_loss(net, emb, b, head)
        opt.zero_grad()
        loss.backward()
        opt.step()
        tokens += real[k % len(batches)]
    bare = tokens / (time.perf_counter() - t0)
    result = {"config": args.config, "dialogs": args.dialogs, "steps": args.steps,
              "threads": args.threads, "loop_tokens_per_s": round(loop["tokens_per_s"]),
              "bare_tokens_per_s": round(bare), "ratio": round(loop["tokens_per_s"] / bare, 3)}
    print(json.dumps(result, indent=1))
    if args.out:
        from crslib.report import write_json
        write_json(result, args.out)


if __name__ == "__main__":
    main()
