# %% tags=["parameters"]
profile = "smoke"  # smoke | cpu | paper | paper-dry: which runs are scored
data_root = None  # folder with redial/ and inspired/; None: $CRSLIB_DATA, else data/ in the repo
datasets = ["redial", "inspired"]  # Table 3 has both

# %% [markdown]
# # 04 — Dialog quality: Table 3
# Metrics of NOTES.md §5 (`crslib.evaluation.evaluate`, protocol `dialog`):
# * **PPL**: corpus perplexity weighted by tokens on the gold responses of every test turn (the
#   tokens after `<RESP>` and the end-of-sequence token, gold mode and item given). A `cpu` run
#   uses a restricted softmax (the tokens its targets contain), so its `ppl` is over that
#   vocabulary; `ppl_full_vocab` is the same tokens under a softmax over the whole vocabulary,
#   the paper's definition (the `paper` profile trains with the full one, so both agree there).
# * **BLEU** (SacreBLEU x100) and **Distinct-1..4** over free-mode generations (greedy, SIDs
#   constrained to items) for a seeded sample of test turns, items shown as one `<movie>` token.
#   Distinct = unique / total word n-grams over the corpus (the paper's definition); the
#   unique / #responses variant is in the JSON as `distinct_per_response@n`.
# * **item mention share**: how many generated responses mention an item; **intent**: accuracy
#   and F1 of the model's own choice of `<MODE=REC>` vs `<MODE=CHAT>` (the paper never measures it).

# %%
import pandas as pd

from crslib import report
from crslib.studies import experiments, result_tables

experiments.quiet()

METRICS = ["ppl", "ppl_full_vocab", "bleu", "distinct@1", "distinct@2", "distinct@3", "distinct@4",
           "item_mention_share", "intent_accuracy", "intent_f1"]
rows = []
for ds in datasets:
    experiments.train(profile, ds, "gcrs", data_root)
    r = experiments.evaluate(profile, ds, "gcrs", "dialog", data_root)
    rows.append({"dataset": ds, "model": "gcrs", "source": f"ours ({profile})",
                 "generated turns": r["n_cases"], "ppl tokens": r["ppl_tokens"],
                 **{k: r["metrics"].get(k) for k in METRICS}})
paper = report.paper_results()["table3_dialog"]
for ds in datasets:
    for name, vals in paper[ds].items():
        rows.append({"dataset": ds, "model": name, "source": "reported in the paper",
                     **{k: vals.get(k) for k in METRICS}})
report.save_table(rows, "table3_dialog", profile)
pd.DataFrame(rows).set_index(["dataset", "model", "source"]).round(4)

# %% [markdown]
# A few generated responses beside the gold ones (the first five of the seeded sample):

# %%
pd.DataFrame([{"dataset": ds, **e} for ds in datasets
              for e in result_tables.load_result(profile, ds, "gcrs", "dialog")["examples"]])
