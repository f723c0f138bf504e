"""Seconds per chat reply over the scripted conversation (chat.SCRIPT): the chat as it is
(one encoding per turn from the conversation's KV cache, the chat's own beam width, the
decoding chosen on validation with sample-and-rank's draws) against the same with one draw
(``one_draw``: what sample-and-rank costs) and the path it replaced (every encoding from
scratch, three per turn, the evaluation's beam of 50, one draw), at one and at two threads;
print one JSON object.

    python benchmarks/bench_chat.py [--run runs/cpu/redial/backbone_smollm2_135m] [--rounds 2]

The paths play the same script with the same settings (the chat's decoding,
``chat_choice.chat_decoding``, the run's restricted vocabulary, "only what I asked for" on) in
this process, alternating, ``--rounds`` times each per thread count; the first reply of each round loads nothing (a warm-up reply is played
first). p50 and p95 are over every reply of every round.
"""
from __future__ import annotations

import argparse
import time


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--run", default="runs/cpu/redial/backbone_smollm2_135m")
    p.add_argument("--data-root", default=None)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--num-beams", type=int, default=None,
                   help="the chat's beam width (default: chosen on validation, "
                        "chat_choice.chat_beam)")
    p.add_argument("--thread-counts", default="1,2")
    p.add_argument("--threads", type=int, default=None, help="ignored (run_all passes it)")
    p.add_argument("--quick", action="store_true", help="one round, two turns")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)

    import numpy as np
    import torch
    from crslib import chat
    from crslib.training import run
    from crslib.studies import chat_choice
    from crslib.decoding.generation import ResponseDecoding
    from crslib.report import emit_json

    cfg = run.saved_config(args.run)
    width = args.num_beams or chat_choice.chat_beam(cfg.profile, cfg.dataset, cfg.variant,
                                                    args.data_root)["chosen"]
    decoding = chat_choice.chat_decoding(cfg.profile, cfg.dataset, cfg.variant,
                                         args.data_root)["chosen_setting"]
    session = chat.ChatSession.from_run(args.run, args.data_root,
                                        decoding=ResponseDecoding(**decoding))
    script = chat.SCRIPT[cfg.dataset][:2 if args.quick else None]
    draws = session.candidates if session.decoding.top_p is not None else 1
    paths = {"new": dict(reuse_cache=True, num_beams=width, candidates=draws),
             "one_draw": dict(reuse_cache=True, num_beams=width, candidates=1),
             "old": dict(reuse_cache=False, num_beams=50, candidates=1)}
    report = {"run": args.run, "dataset": cfg.dataset, "turns": len(script),
              "rounds": 1 if args.quick else args.rounds, "chat_num_beams": width,
              "decoding": session.decoding.name, "draws": draws, "quick": args.quick}
    for threads in [int(t) for t in args.thread_counts.split(",")]:
        torch.set_num_threads(threads)
        seconds = {name: [] for name in paths}
        session.reply("hello")  # warm-up
        for _ in range(report["rounds"]):
            for name, setting in paths.items():
                for k, v in setting.items():
                    setattr(session, k, v)
                session.reset()
                for text in script:
                    t = time.perf_counter()
                    session.reply(text)
                    seconds[name].append(time.perf_counter() - t)
        for name, xs in seconds.items():
            report[f"{name}_p50_s_{threads}t"] = float(np.percentile(xs, 50))
            report[f"{name}_p95_s_{threads}t"] = float(np.percentile(xs, 95))
        for base in ("old", "one_draw"):
            report[f"p95_{base}_over_new_{threads}t"] = (report[f"{base}_p95_s_{threads}t"]
                                                         / report[f"new_p95_s_{threads}t"])
    emit_json(report, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
