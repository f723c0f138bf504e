"""Calibration runs of the `cpu` profile (not product code): train the cpu ReDial config with
overrides, then score a seeded 1,000-case test sample under the paper protocol, splitting cases
whose item was already mentioned (`in_ctx`) from the rest (`new`). Results in
results/cpu/tuning/<name>.json. Usage:
    python tools/tune_cpu.py NAME '{"train": {"lr": 0.003, "max_steps": 900}}'
(runs A-O predate step budgets: their files record the time budgets they had)
Runs A-J of 2026-11-26 (A/B/E/F: batch 4096 tokens, C/D: 1024/512, G: context 128, H: 4 layers,
I/J: 17 min alone with context 64/128; K/L: 15 min, two at a time, with the tiger windows
added to training (`aux_formats`), context 256/128; M/N: copy warm-up (`copy_warmup_steps`
300 on ReDial, 18 min; 200 on INSPIRED, 5 min, all 304 test cases, `"limit": 400`); O: the
shipped ReDial config (no overrides) retrained after `train.flush_denormals`, beside `make bench`
and the CI run (2026-11-27);
E onwards with the distinct SID-row initialisation) were run two at a time on the 2-core machine,
with the cpu ReDial config of that moment plus the overrides in each file's "over"; the
baselines on the same sample are in results/cpu/tuning/baselines.json (`--baselines`).
`--full RUN NAME` scores a finished run on the whole ReDial test split (paper protocol), split
into cases whose item was already mentioned and the rest: results/cpu/tuning/NAME.full.json
(with the same split of results/cpu/redial/{gcrs,popularity,repeat}.paper.json's per-case ranks).
"""
import json, sys, time, os

import torch
torch.set_num_threads(1)
from crslib import run, data, evaluate, baselines
if sys.argv[1] == "--baselines":
    ds = data.load("redial", None)
    cfg = run.load_config(run.config_path("cpu", "redial"))
    sids = run.prepare_sids(cfg, ds.catalog)
    cases = evaluate.rec_cases(ds, sids, "test", limit=1000)
    out = {}
    for R in (baselines.Popularity, baselines.Repeat):
        ranks = evaluate.baseline_ranks(R(ds.catalog.ids).fit(ds["train"]), cases)
        out[R.name] = sum(1 for r in ranks if r and r <= 10) / len(ranks)
    out["cases_item_in_context"] = sum(ex.item in ex.context_items for ex in cases)
    print(json.dumps(out))
    open("results/cpu/tuning/baselines.json", "w").write(json.dumps({"recall@10": out, "limit": 1000}))
    sys.exit(0)
if sys.argv[1] == "--full":  # score a finished run on the whole ReDial test split, split by repeat
    path, name = sys.argv[2], sys.argv[3]
    model, tok, sids, cfg = run.load_run(path)
    ds = data.load("redial", None)
    cases = evaluate.rec_cases(ds, sids, "test")
    ev = cfg["eval"]
    ranks = evaluate.model_ranks(model, tok, sids, cases, "paper", ev["max_context_tokens"], 50, 16)
    rep = [ex.item in ex.context_items for ex in cases]

    def split(ranks):  # recall@10 and case count: all cases, item already mentioned, new item
        def r10(sel):
            rr = [r for r, s in zip(ranks, sel) if s]
            return sum(1 for r in rr if r and r <= 10) / max(1, len(rr)), len(rr)
        return {"all": r10([True] * len(cases)), "in_ctx": r10(rep), "new": r10([not x for x in rep])}
    res = {"run": path, "config_hash": cfg.get("config_hash"), "split": "test", "protocol": "paper",
           "recall@10": split(ranks), "train": json.loads(open(f"{path}/train_summary.json").read()),
           "shipped_results": {}}
    # the same split for the shipped baselines, from their per-case ranks (same case order)
    for ranker in ("gcrs", "popularity", "repeat"):
        saved = json.loads(open(f"results/cpu/redial/{ranker}.paper.json").read())
        assert saved["n_cases"] == len(cases), (ranker, saved["n_cases"], len(cases))
        res["shipped_results"][ranker] = split(saved["case_ranks"])
    print("RESULT", json.dumps(res["recall@10"]), flush=True)
    open(f"results/cpu/tuning/{name}.full.json", "w").write(json.dumps(res, indent=1))
    sys.exit(0)
name, over = sys.argv[1], json.loads(sys.argv[2])
ds_name = over.pop("dataset", "redial")
limit = over.pop("limit", 1000)
cfg = run.load_config(run.config_path("cpu", ds_name), **over)
out = f"runs/tuning/{name}"
t = time.time()
summ = run.train_run(cfg, out, None, progress=False)
print(name, "train", json.dumps(summ), flush=True)
model, tok, sids, cfg = run.load_run(out)
ds = data.load(ds_name, None)
cases = evaluate.rec_cases(ds, sids, "test", limit=limit)
ev = cfg["eval"]
t = time.time()
ranks = evaluate.model_ranks(model, tok, sids, cases, "paper", ev["max_context_tokens"], 50, 16)
el = time.time() - t
rep = [ex.item in ex.context_items for ex in cases]
def r10(sel): 
    rr=[r for r,s in zip(ranks,sel) if s]; return sum(1 for r in rr if r and r<=10)/max(1,len(rr)), len(rr)
res = {"name": name, "over": over, "all": r10([True]*len(cases)), "in_ctx": r10(rep), "new": r10([not x for x in rep]),
       "r1": sum(1 for r in ranks if r == 1)/len(ranks), "eval_s": el, "train": summ}
# train-split check
tc = evaluate.rec_cases(ds, sids, "train", limit=50)
tr = evaluate.model_ranks(model, tok, sids, tc, "paper", ev["max_context_tokens"], 50, 16)
res["train_r10"] = sum(1 for r in tr if r and r <= 10)/len(tr)
print("RESULT", json.dumps(res), flush=True)
open(f"results/cpu/tuning/{name}.json","w").write(json.dumps(res))
