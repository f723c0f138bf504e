# %% tags=["parameters"]
profile = "smoke"  # smoke | cpu | paper | paper-dry: which config files (crslib/configs/<profile>-*.json) train
data_root = None  # folder with redial/ and inspired/; None: $CRSLIB_DATA, else data/ in the repo
datasets = ["redial", "inspired"]  # which datasets get a GCRS model

# %% [markdown]
# # 02 — Training the GCRS model
# One autoregressive model per dataset learns both jobs from the paper's structured target
# (NOTES.md §3, §4): `<MODE=REC><BOI>SID<EOI><RESP>response` for recommendation turns and
# `<MODE=CHAT><RESP>response` for chat turns, loss only on the target. The run folder
# `runs/<profile>/<dataset>/gcrs/` holds the resolved config, the SIDs, the model and the
# training log; a finished run with an unchanged config is reused (`make clean-results` forgets it).
#
# **What differs from the paper, and why.** The `paper` profile is the paper's recipe
# (Qwen2.5-7B-Instruct + LoRA r 16 on a GPU). The `cpu` profile trains a fixed number of steps
# per model (`max_steps` in its config; the seconds they took are in the table below), sized
# to a quarter of an hour or less on 2 CPU cores, so its backbone is a compact 2-layer Llama (hidden 256)
# whose word embeddings are SmolLM2-135M's, projected by PCA and frozen; only the transformer and
# the new tokens' rows train, with the softmax restricted to the tokens that occur in targets.
# Before them come `copy_warmup_steps` steps (300 on ReDial, 120 on INSPIRED, whose short run
# cannot spare 300 steps' worth) of a synthetic copying task — random token strings written
# twice — that gives it the induction heads a pretrained backbone already has: without them the
# model never learned to copy a mentioned item's SID from the context.
# The format, the SIDs, the constrained decoding and the protocol stay the paper's. The shared
# data also has only part of the training dialogs (see `00_data`). How the `cpu` GCRS model
# compares with the popularity and repeat rankers is in `03` and the README.

# %%
import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns

from crslib import report
from crslib.studies import experiments

experiments.quiet()

# independent runs train side by side, one process and one thread each (CRSLIB_WORKERS)
summaries = {ds: s for (ds, _), s in experiments.train_many(
    profile, [(ds, "gcrs") for ds in datasets], data_root).items()}
rows = [{"dataset": ds, **{k: s.get(k) for k in ("epochs", "steps", "tokens", "seconds",
                                                  "tokens_per_s", "final_loss", "instances",
                                                  "peak_rss_mb", "model_hash")}}
        for ds, s in summaries.items()]
report.save_table(rows, "train_summary", profile,
                  meta={"configs": {ds: experiments.config(profile, ds).to_dict() for ds in datasets}})
pd.DataFrame(rows).set_index("dataset").round(3)

# %% [markdown]
# Loss (mean target-token cross-entropy per logging step) and the learning rate, which follows
# a cosine schedule over the step budget: a function of the step alone, so the same seed and
# config give the same model on a busy machine (only slower).

# %%
logs = pd.concat([pd.DataFrame(experiments.training_log(profile, ds, "gcrs")).assign(dataset=ds)
                  for ds in datasets])
fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
sns.lineplot(data=logs, x="step", y="loss", hue="dataset", ax=axes[0])
axes[0].set_title("training loss (target tokens)")
sns.lineplot(data=logs, x="step", y="lr", hue="dataset", ax=axes[1])
axes[1].set_title("learning rate")
fig.tight_layout()
out = report.FIGURES / profile / "02_train.png"
out.parent.mkdir(parents=True, exist_ok=True)
fig.savefig(out, dpi=100)
