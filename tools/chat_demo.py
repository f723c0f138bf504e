"""Play the scripted conversation (chat.SCRIPT) with the demo's run and commit its transcript:
``results/<profile>/chat_demo.{json,md}``. The notebook 07 plays it too but writes nothing
tracked; this is the one writer of the committed copy.

    python tools/chat_demo.py [--profile cpu]

The run, decoding, intent cut and beam width are the notebook's: ``chat_choice.best_chat_run``
among the shipped runs, the decoding chosen on validation turns, ``freemode.intent_cut``,
``chat_choice.chat_beam``.
"""
import argparse
import sys

import torch

from crslib import chat, report
from crslib.studies import chat_choice, experiments, freemode
from crslib.decoding.generation import ResponseDecoding


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--profile", default="cpu")
    p.add_argument("--data-root", default=None)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    best = chat_choice.best_chat_run(args.profile, shipped_only=True, data_root=args.data_root)
    folder = experiments.RUNS.parent / best["run"]
    ds, variant = best["dataset"], best["variant"]
    decoding = chat_choice.chat_decoding(args.profile, ds, variant, args.data_root)
    cut = freemode.intent_cut(args.profile, ds, variant, args.data_root)
    beam = chat_choice.chat_beam(args.profile, ds, variant, args.data_root)
    session = chat.ChatSession.from_run(folder, args.data_root, intent_cut=cut["cut"],
                                        num_beams=beam["chosen"],
                                        decoding=ResponseDecoding(**decoding["chosen_setting"]))
    rows = chat.run_script(session, chat.SCRIPT[ds])
    report.save_table(rows, "chat_demo", args.profile,
                      meta={"run": best["run"], "decoding": decoding["chosen_setting"],
                            "intent_cut": cut["cut"], "num_beams": beam["chosen"],
                            "threads": args.threads,
                            "recommendations": [[(x.title, round(x.score, 3))
                                                 for x in r.recommendations]
                                                for r in session.replies]})
    for r in rows:
        print(f"You: {r['user']}\nAssistant [{r['intent']}; {r['why']}]: {r['assistant']}\n"
              f"  {r['recommended']}  asked: {r['asked'] or '-'} {r['satisfying']}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
