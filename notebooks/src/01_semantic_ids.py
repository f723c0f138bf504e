# %% tags=["parameters"]
profile = "smoke"  # smoke | cpu | paper | paper-dry: which run profile (its configs pick quantizer, encoder)
data_root = None  # folder with redial/ and inspired/; None: $CRSLIB_DATA, else data/ in the repo

# %% [markdown]
# # 01 — Semantic IDs
# Every catalog item gets a semantic ID (SID) of L codes, one token per level:
# `<a_17><b_63><c_0><d_25>` (NOTES.md §2). The item text `title | year | genres | keywords |
# plot` is embedded by a frozen sentence encoder, a residual quantizer turns each embedding
# into L codes, and colliding items are re-assigned until every SID is unique and still exactly
# L tokens (paper App. A). The profile's config (`crslib/configs/<profile>-<dataset>-gcrs.json`)
# chooses quantizer and encoder: `smoke` uses residual k-means (training-free), `cpu` the
# RQ-VAE with a small encoder, `paper` the RQ-VAE with the paper's encoders. SIDs are built
# once and reused from `cache/sids/`; the training notebooks read the same files.

# %%
import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns

from crslib import data, report
from crslib.ids import encode, semantic_ids
from crslib.training import run

datasets = {name: data.load(name, data_root) for name in data.DATASETS}
configs = {name: run.load_config(run.config_path(profile, name), profile=profile) for name in datasets}
sids = {name: run.prepare_sids(configs[name], ds.catalog) for name, ds in datasets.items()}
rows = [{"dataset": name, **semantic_ids.describe(s)} for name, s in sids.items()]
report.save_table(rows, "semantic_ids", profile,
                  meta={"sid_config": {name: s.config for name, s in sids.items()}})

# %% [markdown]
# ## Utilisation and collisions
# `utilization x`: share of the codebook's codes that some item uses at level x.
# `collisions_before`: items whose greedy (nearest-codeword) SID repeats an earlier item's;
# `moved_items`: items the App. A re-assignment gave another SID (`backtracked_items`: those
# that needed an earlier level changed because the last level had no free code);
# `collisions_after` must be 0 and `unique` equal to `items`.

# %%
# NBVAL_CHECK_OUTPUT
pd.DataFrame(rows).set_index("dataset").round(3)

# %% [markdown]
# How the items spread over prefixes: for prefixes of the first m codes, how many distinct
# prefixes occur and how many items share the fullest / an average one (m = L: full SIDs).

# %%
# NBVAL_CHECK_OUTPUT
load = [{"dataset": name, **p} for name, s in sids.items()
        for p in semantic_ids.code_stats(s.codes, s.codebook_size)["items_per_prefix"]]
report.save_table(load, "semantic_ids_prefix_load", profile)
pd.DataFrame(load).set_index(["dataset", "prefix_len"]).round(2)

# %% [markdown]
# ## A map of the item embeddings
# The embeddings the SIDs were built from (same encoder, read from the embedding cache),
# projected to 2-D by PCA. Left: every item coloured by its first code (64 hues, too many to
# tell apart, but the mix shows how evenly the codes cover the space). Right: the eight most
# populated first codes in distinct colours, the rest in grey. A 2-D projection keeps only
# part of what the quantizer splits on, so groups overlap here even when they are coherent.

# %%
for name, s in sids.items():
    emb = encode.encode_items(datasets[name].catalog, s.config["encoder"], progress=False)
    xy = pd.DataFrame(semantic_ids.embedding_map(emb), columns=["PC 1", "PC 2"])
    xy["first code"] = s.codes[:, 0]
    xy["top first codes"] = semantic_ids.prefix_labels(s, prefix_len=1, top=8)
    top = xy[xy["top first codes"] != "other"]
    fig, axes = plt.subplots(1, 2, figsize=(12, 5), sharex=True, sharey=True)
    sns.scatterplot(data=xy, x="PC 1", y="PC 2", hue="first code", palette="husl", s=8,
                    linewidth=0, antialiased=False, legend=False, ax=axes[0])
    axes[0].set_title(f"{name}: {len(s)} items, colour = first code (of {s.codebook_size})")
    axes[1].scatter(xy["PC 1"], xy["PC 2"], s=4, color="0.85", linewidths=0, antialiased=False)
    ranked = [semantic_ids.prefix_tokens(p) for p in list(semantic_ids.prefix_groups(s))[:8]]
    sns.scatterplot(data=top, x="PC 1", y="PC 2", hue="top first codes", hue_order=ranked,
                    palette="tab10", s=10, linewidth=0, antialiased=False, ax=axes[1])
    axes[1].set_title("the 8 most populated first codes (grey: the rest)")
    axes[1].legend(title="first code", fontsize=8, markerscale=2)
    fig.tight_layout()
    out = report.FIGURES / profile / f"01_semantic_ids_{name}.png"
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)  # no antialiasing, 100 dpi: small PNGs in git

# %% [markdown]
# ## What a prefix means
# The three most populated first codes of each dataset and five of their items (listed in
# SID order). Items that share a prefix should be alike — that is what lets the model
# generate an item token by token.

# %%
# NBVAL_CHECK_OUTPUT
examples = [{"dataset": name, **r} for name, s in sids.items()
            for r in semantic_ids.items_by_prefix(s, datasets[name].catalog, prefix_len=1,
                                                  top=3, per_prefix=5)]
report.save_table(examples, "semantic_ids_examples", profile)
pd.DataFrame(examples).set_index(["dataset", "prefix"])
