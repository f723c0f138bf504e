# %% tags=["parameters"]
profile = "smoke"  # smoke | cpu | paper | paper-dry: which runs and configs (smoke: toy sizes, seconds)
data_root = None  # folder with redial/ and inspired/; None: $CRSLIB_DATA, else data/ in the repo
dataset = "inspired"  # the cold-start configs exist for INSPIRED only
latency_prompts = 10  # seeded sample of test prompts timed per run (cost table)

# %% [markdown]
# # 09 — Beyond the paper
# Three questions the paper leaves open (NOTES.md §8), each answered by code in `crslib`:
#
# 1. **Cold start** (`crslib.studies.coldstart`): the paper says semantic IDs let the model generalise
#    to items it was not trained on, but never tests it. We hold out 20% of the items that are
#    recommendation targets in the test split, remove *every* training dialog that mentions one
#    of them, train, and compare how often held-out and seen items are recommended — with GCRS
#    SIDs (`coldstart_gcrs`) and with atomic IDs, one new token per item (`coldstart_atomic`).
# 2. **Free mode** (`crslib.studies.freemode`): the paper forces the gold mode before ranking. Here the
#    model chooses `<MODE=REC>` or `<MODE=CHAT>` itself; we report its intent accuracy / F1 and
#    how ranking changes when a CHAT choice counts as a miss.
# 3. **Cost**: training time, tokens/s, memory, and decode latency per turn (constrained beam
#    search vs exact scoring of every item).
#
# With `profile = "smoke"` every run trains on 40 dialogs for 2 epochs with a 1-layer, d = 64
# model: the numbers below show that the machinery runs end to end, they say nothing about the
# method. Read the `cpu` profile's results for that.

# %%
import matplotlib.pyplot as plt
import pandas as pd
import torch
import transformers

from crslib import data, report
from crslib.studies import coldstart, experiments, freemode, run_inventory

torch.set_num_threads(1)
transformers.utils.logging.disable_progress_bar()
transformers.utils.logging.set_verbosity_error()
COLD = ["coldstart_gcrs", "coldstart_atomic"]
VARIANTS = ["gcrs"] + COLD
# reuses finished runs with the same config; new ones train side by side (CRSLIB_WORKERS)
experiments.train_many(profile, [(dataset, v) for v in VARIANTS], data_root)

# %% [markdown]
# ## 1. Cold start: held-out items
# The hold-out (`"holdout": {"fraction": 0.2, "seed": 0}` in both cold-start configs, otherwise
# equal to the `gcrs` config; atomic IDs also change `sids`): `candidate_items` are the catalog
# items that are a gold target in the test split, `heldout_items` the seeded 20% of them,
# `removed_dialogs` the training dialogs that mention a held-out item anywhere (whole dialogs
# go, so the model never reads the item's tokens), `train_dialogs` what is left after
# `max_dialogs` (smoke: 40).

# %%
# NBVAL_CHECK_OUTPUT
ds = data.load(dataset, data_root)
holdout = {v: coldstart.holdout_summary(experiments.config(profile, dataset, v), ds) for v in COLD}
pd.DataFrame.from_dict(holdout, orient="index")

# %% [markdown]
# Every recommendation case of the test split (not a sample: the held-out group is small) is
# ranked under the paper protocol (gold mode forced, constrained beam search, width 50) and
# grouped by its gold item: **heldout** (no training dialog mentions it), **seen** (a training
# dialog the run used mentions it) and **unseen** (neither held out nor in the training dialogs
# used — INSPIRED's catalog is long-tailed, and smoke trains on 40 dialogs, so this group is
# large). `all` is every case. Group sizes depend only on the data and the configs:

# %%
cold = {v: coldstart.evaluate_split(profile, dataset, v, data_root) for v in COLD}  # says when it recomputes

# %%
# NBVAL_CHECK_OUTPUT
pd.DataFrame({v: {g: m["n_cases"] for g, m in r["metrics"].items()} for v, r in cold.items()}).T

# %% [markdown]
# Metrics in % with the 95% bootstrap interval of Recall@20 (`crslib.metrics`); `repeat share`
# is the share of a group's cases whose gold item was already mentioned earlier in the dialog
# (the repetition shortcut, NOTES.md §9: such a case can be solved by copying from the context,
# which needs no training on the item).

# %%
cold_rows = coldstart.rows(list(cold.values()))
for row in cold_rows:
    row["repeat share"] = cold[row["variant"]]["repeat_share"].get(row["group"])
report.save_table(cold_rows, "coldstart", profile,
                  meta={"dataset": dataset, "holdout": holdout,
                        "results": [coldstart.result_path(profile, dataset, v).name for v in COLD]})
pd.DataFrame(cold_rows).set_index(["variant", "group"])

# %%
fig, ax = plt.subplots(figsize=(7, 3.2))
groups = [g for g in ("heldout", "seen", "unseen") if g in cold[COLD[0]]["metrics"]]
width = 0.38
for j, v in enumerate(COLD):
    m, ci = cold[v]["metrics"], cold[v]["ci95"]
    ys = [100 * m[g].get("recall@20", 0.0) for g in groups]
    err = [[100 * (m[g].get("recall@20", 0.0) - ci[g].get("recall@20", [0, 0])[0]) for g in groups],
           [100 * (ci[g].get("recall@20", [0, 0])[1] - m[g].get("recall@20", 0.0)) for g in groups]]
    xs = [k + (j - 0.5) * width for k in range(len(groups))]
    ax.bar(xs, ys, width, yerr=err, capsize=3, label=v)
ax.set_xticks(range(len(groups)), [f"{g}\n(n = {cold[COLD[0]]['metrics'][g]['n_cases']})" for g in groups])
ax.set_ylabel("Recall@20 (%)")
ax.set_title(f"Cold start, {dataset} ({profile}): 95% bootstrap intervals")
ax.legend()
fig.tight_layout()
out = report.FIGURES / profile / "09_coldstart.png"
out.parent.mkdir(parents=True, exist_ok=True)
fig.savefig(out, dpi=100)

# %% [markdown]
# How to read it. A held-out item can only be ranked high if something the model *did* train on
# points to it: with SIDs, the code prefixes it shares with seen items (and their trained token
# rows); with atomic IDs, only its token row as initialised (title-derived, `crslib.training.model.
# init_new_rows`) and pushed down by the softmax during training, since it never is a target.
# So the claim "SIDs generalise" predicts `coldstart_gcrs` heldout > `coldstart_atomic` heldout,
# and a gap between seen and heldout for both. Mind the sizes: the held-out group has a few dozen
# cases, so intervals are wide — compare them before reading a difference; with the smoke
# profile all recalls are near zero and no difference means anything.

# %% [markdown]
# ## 2. The model's own choice of when to recommend (free mode)
# **Intent.** From the `dialog` protocol (`crslib.evaluation.dialog_eval.dialog_scores`): after the prompt
# `...Assistant:` of every assistant turn of the test split, REC is chosen when the logit of
# `<MODE=REC>` is above that of `<MODE=CHAT>`; gold is REC when the turn mentions an item.
# F1 / precision / recall treat REC as the positive class. `generated_*` is the same choice read
# from a free generation on a seeded sample of turns.

# %%
dialog = experiments.evaluate(profile, dataset, "gcrs", "dialog", data_root)
intent_keys = ["intent_accuracy", "intent_precision", "intent_recall", "intent_f1",
               "generated_intent_accuracy", "generated_intent_f1"]
intent = pd.DataFrame([{"turns scored (intent)": "all test assistant turns",
                        "generated turns": dialog["n_cases"],
                        **{k: round(100 * dialog["metrics"][k], 2) for k in intent_keys}}])
intent

# %% [markdown]
# **Ranking when the mode is not forced.** The paper protocol's cases (the same seeded sample as
# `experiments.evaluate(..., "paper")`): `forced` is the paper's number; in `free` the model
# first picks the mode and a CHAT pick counts as a miss, so free recall can only be lower;
# `rec_share` is how often it picked REC on turns where the gold answer recommends.

# %%
paper = experiments.evaluate(profile, dataset, "gcrs", "paper", data_root)
free = freemode.evaluate_free(profile, dataset, "gcrs", data_root)
assert free["n_cases"] == paper["n_cases"]
assert all(abs(free["metrics"]["forced"][k] - paper["metrics"][k]) < 1e-9 for k in paper["metrics"])
keys = ["recall@1", "recall@5", "recall@10", "recall@20", "ndcg@10", "mrr@10"]
free_rows = [{"mode": name, "cases": free["n_cases"],
              **{k: round(100 * free["metrics"][name][k], 2) for k in keys},
              "recall@10 95% CI": "[{:.2f}, {:.2f}]".format(*(100 * x for x in free["ci95"][name]["recall@10"])),
              "rec_share": round(100 * free["metrics"]["free"]["rec_share"], 2) if name == "free" else 100.0}
             for name in ("forced", "free")]
report.save_table(free_rows, "freemode", profile,
                  meta={"dataset": dataset, "intent": {k: dialog["metrics"][k] for k in intent_keys},
                        "result": freemode.result_path(profile, dataset).name})
pd.DataFrame(free_rows).set_index("mode")

# %% [markdown]
# The `forced` row reproduces the saved paper-protocol result exactly (checked above: same
# cases, same ranks). The drop from `forced` to `free` is the price of letting the model decide:
# it is at most `100 - rec_share` percent of cases. Intent over all turns and `rec_share` are
# different populations: `rec_share` counts only turns whose gold answer recommends (the
# recall of REC on the sampled cases), intent accuracy also counts chat turns.

# %% [markdown]
# ## 3. Cost
# Training columns come from each run's `train_summary.json` (`train s`: training-loop seconds;
# `tokens/s`: padded tokens per second; `peak RSS MB`: the maximum resident memory of the
# *process* that trained it, so runs trained one after another in one kernel report a running
# maximum, not their own peak). Latency: one prompt at a time, on a seeded sample of
# `latency_prompts` test recommendation prompts, medians in ms on this machine's CPU (one
# thread): `mode ms` the free-mode choice (one forward pass), `beam ms` constrained beam search
# (width 50, `beam_search.sid_beam_search`), `exact ms` exact scores of every item
# (`item_scores.score_all_items`); `top-1 agree` is the share of prompts where both put the same item
# first. Timings vary with machine load; they are never checked by nbval.

# %%
cost = [freemode.cost_row(profile, dataset, v, data_root, n=latency_prompts, seed=0) for v in VARIANTS]
report.save_table(cost, "cost", profile, meta={"dataset": dataset, "latency_prompts": latency_prompts,
                                               "threads": torch.get_num_threads()})
pd.DataFrame(cost).set_index("variant")

# %% [markdown]
# With 4 x 64 SIDs the beam search runs L = 4 short steps over 64-row head slices; exact
# scoring must visit every node of the prefix tree, which costs more per prompt but gives every
# item a score (the `community` protocol). Atomic IDs have one level over the whole catalog, so
# beam and exact scoring are the same single head product there, and the cost moves into the
# vocabulary (one new token, input and output row, per item) — it grows with the catalog,
# while 4 x 64 SIDs stay at 256 tokens.

# %% [markdown]
# ## 4. The runs behind every table
# Every finished run of this profile: its step budget, the seconds it took on the machine that
# trained it, and the hash of its weights (`crslib.training.run.model_hash`), which every result file
# records: a result is shown only for the weights that produced it, and a retrained model is
# re-scored. `shipped`: the run is committed to the repository, so a fresh clone reuses it;
# the others are trained by `make reproduce`.

# %%
inventory = run_inventory.runs_inventory(profile)
report.save_table(inventory, "runs", profile)
pd.DataFrame(inventory).set_index("run")
