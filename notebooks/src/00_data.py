# %% tags=["parameters"]
profile = "smoke"  # smoke | cpu | paper | paper-dry: which run profile (data loading is the same for all)
data_root = None  # folder with redial/ and inspired/; None: $CRSLIB_DATA, else data/ in the repo

# %% [markdown]
# # 00 — The data
# What the loaders read from the official ReDial and INSPIRED files, counted the way the paper
# counts samples (NOTES.md §3, §6): every assistant turn is a sample, and a turn that mentions
# several items gives one recommendation instance per item. The shared offline copy has the
# complete test splits but only part of the training splits, so the train counts are smaller
# than the paper's; the table below says by how much.

# %%
import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns

from crslib import data, report
from crslib.data import stats

datasets = {name: data.load(name, data_root) for name in data.DATASETS}
summary = {name: stats.dataset_stats(ds) for name, ds in datasets.items()}
rows = [{"dataset": name, "split": split, **counts}
        for name, s in summary.items() for split, counts in s["splits"].items()]
report.save_table(rows, "data_stats", profile, meta={"skipped": {n: s["skipped"] for n, s in summary.items()}})

# %%
# NBVAL_CHECK_OUTPUT
pd.DataFrame(rows).set_index(["dataset", "split"]).round(3)

# %% [markdown]
# ## Beside the paper's sizes
# `paper` columns are read from `crslib/paper_results.json` (the paper's §6 table). INSPIRED
# train is the paper's 801 train + 99 dev dialogs; here `train` + `dev`.

# %%
# NBVAL_CHECK_OUTPUT
paper = report.paper_results()["datasets"]
def train_dialogs(s):
    return sum(v["dialogs"] for k, v in s["splits"].items() if k in ("train", "dev"))
compare = [{"dataset": n,
            "train dialogs (ours)": train_dialogs(s), "train dialogs (paper)": paper[n]["train_dialogs"],
            "test dialogs (ours)": s["splits"]["test"]["dialogs"], "test dialogs (paper)": paper[n]["test_dialogs"],
            "items (ours)": s["catalog_items"], "items (paper)": paper[n]["items"],
            "items with plot": s["items_with_plot"]}
           for n, s in summary.items()]
report.save_table(compare, "data_vs_paper", profile)
pd.DataFrame(compare).set_index("dataset")

# %% [markdown]
# Records the loaders skipped or repaired, by reason (nothing is dropped silently):

# %%
# NBVAL_CHECK_OUTPUT
{name: s["skipped"] for name, s in summary.items()}

# %% [markdown]
# ## Recommendation instances and the repetition shortcut
# `repeat_rate` is the share of recommendation instances whose item was already mentioned
# earlier in the same dialog — the cases a "repeat what was said" ranker gets for free
# (NOTES.md §9).

# %%
df = pd.DataFrame(rows)
fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
sns.barplot(data=df, x="dataset", y="rec_instances", hue="split", ax=axes[0])
axes[0].set_title("recommendation instances")
sns.barplot(data=df, x="dataset", y="repeat_rate", hue="split", ax=axes[1])
axes[1].set_title("share of instances already mentioned")
fig.tight_layout()
out = report.FIGURES / profile / "00_data.png"
out.parent.mkdir(parents=True, exist_ok=True)
fig.savefig(out, dpi=120)
