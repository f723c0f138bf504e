"""Recompute the perplexity part of saved ``dialog`` results after the restricted-ppl fix.

    python tools/rescore_ppl.py [--profile cpu] [dataset/variant ...]

Before the fix, ``dialog_eval.dialog_scores`` scored a gold token outside a run's restricted head
as its sorted neighbour in the restricted ``ppl`` (``ppl_full_vocab``, the paper's measure, was
right). For each saved ``results/<profile>/<dataset>/<variant>.dialog.json`` whose run is here
with the same ``model_hash`` (default: all of them), this reruns ``dialog_scores`` on the same
split and writes its fields (``ppl``, ``ppl_tokens``, ``ppl_tokens_outside_head``,
``ppl_full_vocab``, intent) into the result, keeping the generated-response metrics, which the
fix does not touch; the result records ``ppl_rescored: true``.
"""
import argparse
import json
import sys

import torch

from crslib import data, report
from crslib.training import run
from crslib.evaluation import dialog_eval
from crslib.studies import experiments


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--profile", default="cpu")
    ap.add_argument("runs", nargs="*", help="dataset/variant; default: every dialog result")
    ap.add_argument("--data-root", default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    root = report.RESULTS / args.profile
    paths = ([root / f"{r}.dialog.json" for r in args.runs] if args.runs
             else sorted(root.glob("*/*.dialog.json")))
    for path in paths:
        result = json.loads(path.read_text())
        folder = experiments.run_dir(args.profile, result["dataset"], result["variant"])
        if not (folder / "train_summary.json").is_file() or (
                run.model_hash(folder) != result.get("model_hash")):
            print(f"skip {path.name}: its run is not here with the same weights", flush=True)
            continue
        model, tok, sids, cfg = run.load_run(folder)
        ds = data.load(result["dataset"], args.data_root)
        head = folder / "output_vocab.json"
        scores = dialog_eval.dialog_scores(
            model, tok, sids, ds[result["split"]],
            cfg.eval.max_context_tokens,
            json.loads(head.read_text()) if head.is_file() else None,
            fmt=cfg.format)
        before = {k: result["metrics"].get(k) for k in ("ppl", "ppl_full_vocab")}
        result["ppl_tokens"] = scores.pop("ppl_tokens")
        result["metrics"].update(scores)
        result["ppl_rescored"] = True
        report.write_json(result, path)
        print(json.dumps({"result": path.name, "before": before,
                          "after": {k: scores[k] for k in ("ppl", "ppl_full_vocab",
                                                           "ppl_tokens_outside_head")}}),
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
