"""Tuning runs of the `cpu` profile (not product code), selected on validation data only.

    python tools/tune_cpu.py NAME '{"train": {"lr": 0.003, "max_steps": 900}}'
    python tools/tune_cpu.py NAME '{"dataset": "inspired", "train": {...}}'
    python tools/tune_cpu.py --baselines [redial|inspired]

A run trains the `cpu` GCRS config of the dataset with the overrides, on the training dialogs
*without* the validation split (`crslib.data.VALIDATION`: INSPIRED `dev`; ReDial `valid`, a
seeded tenth of the train dialogs; so `train_splits` is forced to `["train"]` or
`["train_minus_valid"]`), then scores the validation recommendation cases under the paper
protocol (all of them; `"limit": N` for a seeded sample), split into cases whose item was already
mentioned (`in_ctx`) and the rest (`new`). Results: results/cpu/tuning/<name>.json, with the
overrides and the train summary. `--baselines` scores popularity and `repeat` (fitted on the same
dialogs) on the same validation cases: results/cpu/tuning/baselines.<dataset>.json.

History: runs A-O (2026-11-26/27, files A.json ... O.json, kept as they were) were selected on a
1,000-case ReDial *test* sample and on all INSPIRED test cases, before the validation split
existed; their numbers are test numbers and the README says so. Use this tool for any new choice.
"""
import json
import sys
import time

import torch

from crslib import data, report
from crslib.training import run
from crslib.evaluation import baselines, evaluate, recommenders

TRAIN_WITHOUT_VALID = {"redial": ["train_minus_valid"], "inspired": ["train"]}


def r10(ranks, cases, keep):
    rr = [r for r, ex in zip(ranks, cases) if keep(ex)]
    return {"recall@10": sum(1 for r in rr if r and r <= 10) / max(1, len(rr)), "cases": len(rr)}


def by_repeat(ranks, cases) -> dict:
    return {"all": r10(ranks, cases, lambda ex: True),
            "in_ctx": r10(ranks, cases, lambda ex: ex.item in ex.context_items),
            "new": r10(ranks, cases, lambda ex: ex.item not in ex.context_items),
            "recall@1": sum(1 for r in ranks if r == 1) / max(1, len(ranks))}


def main(argv: list[str]) -> None:
    torch.set_num_threads(1)
    if argv[0] == "--baselines":
        name = argv[1] if len(argv) > 1 else "redial"
        ds = data.load(name, None)
        cfg = run.load_config(run.config_path("cpu", name))
        sids = run.prepare_sids(cfg, ds.catalog)
        cases = evaluate.rec_cases(ds, sids, data.VALIDATION[name])
        fit = [d for s in TRAIN_WITHOUT_VALID[name] for d in ds[s]]
        out = {"dataset": name, "split": data.VALIDATION[name], "rankers": {}}
        for cls in (baselines.Popularity, baselines.Repeat):
            ranks = recommenders.baseline_ranks(cls(ds.catalog.ids).fit(fit), cases)
            out["rankers"][cls.name] = by_repeat(ranks, cases)
        print(json.dumps(out))
        report.write_json(out, f"results/cpu/tuning/baselines.{name}.json")
        return
    name, over = argv[0], json.loads(argv[1])
    ds_name = over.pop("dataset", "redial")
    limit = over.pop("limit", None)
    over["train_splits"] = TRAIN_WITHOUT_VALID[ds_name]
    cfg = run.load_config(run.config_path("cpu", ds_name), **over)
    out = f"runs/tuning/{name}"
    summary = run.train_run(cfg, out, None, progress=False)
    model, tok, sids, rc = run.load_run(out)
    ds = data.load(ds_name, None)
    split = data.VALIDATION[ds_name]
    cases = evaluate.rec_cases(ds, sids, split, limit=limit)
    t = time.time()
    ranks = recommenders.model_ranks(model, tok, sids, cases, "paper", rc.eval.max_context_tokens,
                                     50, 16)
    res = {"name": name, "over": over, "split": split, "limit": limit, **by_repeat(ranks, cases),
           "eval_s": time.time() - t, "train": summary}
    print("RESULT", json.dumps(res), flush=True)
    report.write_json(res, f"results/cpu/tuning/{name}.json")


if __name__ == "__main__":
    main(sys.argv[1:])
