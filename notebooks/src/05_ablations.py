# %% tags=["parameters"]
profile = "smoke"  # smoke | cpu | smollm2 | paper | paper-dry: which runs and configs
data_root = None  # folder with redial/ and inspired/; None: $CRSLIB_DATA, else data/ in the repo
datasets = None  # None: both for paper, paper-dry and smollm2; INSPIRED only for cpu and smoke (the grid does not fit the budget twice)
variants = ["sid3x64", "sid5x64", "sid4x32", "sid4x128", "resp", "mode_resp", "sid",
            "all_embeddings", "gcrs"]  # Table 4 rows (those the profile has a config for); tools/make_configs.py
dialog = True  # also the dialog protocol (PPL, BLEU, Distinct-2) of every variant
compact = "cpu"  # for smollm2: the compact profile whose rows are shown beside (None: none)
aligned = True  # also GCRS + item-ID alignment at the ratio chosen on validation (beyond the paper; profiles that define it)

# %% [markdown]
# # 05 — Ablations: Table 4
# Each variant changes one thing against the full model (`gcrs`, 4 levels x 64 codes), everything
# else equal (its config is the `gcrs` config with that one change, `tools/make_configs.py`):
# * SID shape: 3x64, 5x64, 4x32, 4x128 (new SIDs, same encoder and quantizer);
# * target format: `resp` (response text only, items inline as SIDs), `mode_resp` (mode token +
#   response, no target-item segment), `sid` (mode + item, no response);
# * `all_embeddings`: the whole embedding matrix trains instead of only the new tokens' rows.
#
# Ranking: the `paper` protocol (for `resp` the ranking prompt ends `Assistant:<BOI>`, for
# `mode_resp` `Assistant:<MODE=REC><RESP><BOI>`: the first item the model would write).
# Dialog: PPL, BLEU, Distinct-2 (`sid` writes no response).

# %%
import pandas as pd
import matplotlib.pyplot as plt
import seaborn as sns

from crslib import report
from crslib.training import run
from crslib.studies import experiments, result_tables

experiments.quiet()
# defaults that depend on the profile are resolved here: papermill injects `profile` after the
# parameters cell. paper-dry reads the paper's configs (run.base_profile), so it runs its grid
if datasets is None:
    datasets = (["redial", "inspired"] if run.base_profile(profile) in ("paper", "smollm2")
                else ["inspired"])
defined = {ds: [v for v in variants if v in run.variants(profile, ds)] for ds in datasets}
# beyond the paper (issue 24): each dataset's alignment variant chosen on its validation split
from crslib.studies import align_choice

recipes = {}  # {variant: {"ratio", "items"}} of the chosen alignment variants
for ds in datasets if aligned else ():
    v = align_choice.chosen_variant(profile, ds)
    if v is not None and v in run.variants(profile, ds):
        defined[ds].append(v)
        recipes[v] = align_choice.candidates(profile, ds)[v]

experiments.train_many(profile, [(ds, v) for ds in datasets for v in defined[ds]], data_root)
for ds in datasets:
    for v in defined[ds]:
        experiments.evaluate(profile, ds, v, "paper", data_root)
        if v != "sid" and dialog:
            experiments.evaluate(profile, ds, v, "dialog", data_root)

# %%
LABELS = {"sid3x64": "SID 3x64", "sid5x64": "SID 5x64", "sid4x32": "SID 4x32",
          "sid4x128": "SID 4x128", "resp": "RESP only", "mode_resp": "MODE+RESP", "sid": "SID only",
          "all_embeddings": "all embeddings trained", "gcrs": "GCRS 4x64"}
LABELS.update({v: align_choice.label(r) for v, r in recipes.items()})
paper = report.paper_results()["table4_ablations"]
rows = []
sources = [profile] + ([compact] if compact and compact != profile and profile == "smollm2" else [])
for ds in datasets:
    for v, who in [(v, who) for v in defined[ds] for who in sources]:
        rank = result_tables.load_result(who, ds, v, "paper")
        if rank is None:  # the compact profile may not have run this variant
            continue
        dial = result_tables.load_result(who, ds, v, "dialog")
        row = {"dataset": ds, "variant": LABELS[v], "source": f"ours ({who})",
               "recall@1": round(100 * rank["metrics"]["recall@1"], 2),
               "recall@1 95% CI": "[{:.2f}, {:.2f}]".format(*(100 * x for x in rank["ci95"]["recall@1"])),
               "recall@10": round(100 * rank["metrics"]["recall@10"], 2),
               "ndcg@10": round(100 * rank["metrics"]["ndcg@10"], 2)}
        if dial is not None:
            row.update({k: round(dial["metrics"][k], 4) for k in ("ppl", "bleu", "distinct@2")})
        rows.append(row)
    for v in [v for v in defined[ds] if v not in recipes]:
        reported = paper[ds].get(LABELS[v], {})  # the paper has no alignment row
        rows.append({"dataset": ds, "variant": LABELS[v], "source": "reported in the paper", **reported})
report.save_table(rows, "table4_ablations", profile,
                  meta={"datasets": datasets, "units": "recall/ndcg in percent"})
table = pd.DataFrame(rows).set_index(["dataset", "variant", "source"])
table

# %% [markdown]
# ## Do the paper's ablation claims hold here?
# The paper reports the full model above `resp`, `mode_resp` and `sid` on Recall@1. Each claim is
# judged on the cases both rankers scored, with a paired bootstrap over dialogs
# (`crslib.studies.claims`): the difference Δ in points, its 95% interval and p-value. A claim "holds"
# only when the interval lies above 0 for every seed pair, is "reversed" when it lies below 0,
# and is "not shown" otherwise.

# %%
from crslib.studies import claims

judged = []
for ds in datasets:
    for v in [v for v in ("resp", "mode_resp", "sid") if v in defined[ds]]:
        c = claims.judge(profile, claims.Claim(f"full beats {LABELS[v]}", ds, "gcrs", v,
                                               "recall@1"), data_root)
        judged.append({"dataset": ds, "full beats": LABELS[v], "cases": c["cases"],
                       "Δ recall@1 (points)": None if c["delta"] is None else round(100 * c["delta"], 2),
                       "Δ 95% CI": None if c["delta"] is None else [round(100 * x, 2) for x in c["delta_ci95"]],
                       "p": c["p_value"], "verdict": c["verdict"]})
report.save_table(judged, "ablation_claims", profile)
pd.DataFrame(judged)

# %% [markdown]
# ## Table 4 as a figure
# Recall@1 and Recall@10 of each variant under the paper protocol, with 95% bootstrap intervals
# (one bar per variant; this profile's runs).

# %%
import numpy as np

ours = [r for r in rows if r["source"] == f"ours ({profile})"]
TICKS = {LABELS[v]: align_choice.label(r, short=True) for v, r in recipes.items()}  # short ticks
fig, axes = plt.subplots(1, 2 * len(datasets), figsize=(6 * len(datasets), 4), squeeze=False)
for j, ds in enumerate(datasets):
    for i, metric in enumerate(("recall@1", "recall@10")):
        ax = axes[0, 2 * j + i]
        rs = [r for r in ours if r["dataset"] == ds]
        vals, lo, hi = [], [], []
        for r in rs:
            res = result_tables.load_result(profile, ds, {lab: v for v, lab in LABELS.items()}[r["variant"]], "paper")
            a, b = (100 * x for x in res["ci95"][metric])
            vals.append(100 * res["metrics"][metric])
            lo.append(vals[-1] - a)
            hi.append(b - vals[-1])
        ax.bar(range(len(rs)), vals, yerr=[lo, hi], capsize=3,
               color=["tab:red" if r["variant"] == LABELS["gcrs"] else "tab:blue" for r in rs])
        ax.set_xticks(range(len(rs)), [TICKS.get(r["variant"], r["variant"]) for r in rs],
                      rotation=40, ha="right")
        ax.set_title(f"{ds}: {metric} (%)")
fig.suptitle(f"Table 4, {profile} profile: paper protocol, 95% intervals")
fig.tight_layout()
out = report.FIGURES / profile / "05_ablations.png"
out.parent.mkdir(parents=True, exist_ok=True)
fig.savefig(out, dpi=100)

# %% [markdown]
# ## The step budget, chosen once on validation data
# Where a profile's GCRS run kept snapshots (`train.snapshot_every`), each was scored on the
# validation split (INSPIRED `dev`, never trained on) and the budget every variant trains is
# the step with the best `dev` NDCG@10 (`crslib.studies.curve`; fewer steps on a tie).

# %%
from IPython.display import Markdown

from crslib.studies import curve

curves = {ds: curve.load(profile, ds) for ds in datasets}
curves = {ds: c for ds, c in curves.items() if c}
for ds, c in curves.items():
    curve.plot(c, report.FIGURES / profile / f"05_learning_curve_{ds}.png")
    display(pd.DataFrame(c["rows"]).drop(columns=["model_hash"]))

# %% [markdown]
# Beyond the paper (issue 24): ReDial's GCRS and alignment runs of two epochs, their snapshots
# scored on `valid` and paired step by step on the same cases, with popularity as the reference
# (does new-item recall, and alignment's effect on it, grow with the budget?).

# %%
for (prof, ds), names in curve.COMPARED.items():
    if prof == profile:
        display(Markdown(curve.compare_markdown(prof, ds, *names)))

# %% [markdown]
# ## Every claim of the profile
# The profile's claims (`crslib.studies.claims.CLAIMS`), judged from the saved per-case ranks and
# written to `results/<profile>/claims.json`, which the README renders.

# %%
if run.base_profile(profile) in claims.CLAIMS:  # smoke and cpu: the claims above only
    claims.write(profile, data_root)
    display(Markdown(claims.markdown(profile)))
