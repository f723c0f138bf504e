"""The paper's claims, judged on the same cases: a paired bootstrap over dialogs, across seeds.

A claim says ranker ``a`` beats ranker ``b`` on a metric under a protocol (``paper``, or
``new_items``: new-item recall from the same lists,
:func:`crslib.evaluation.evaluate.new_item_ranks`). It is judged from the saved per-case ranks of
both (nothing is scored here):

* **the same cases**: each result's cases are named ``dialog:turn:item`` (``case_ids``; for an
  older result they are rebuilt from its dataset, SIDs, format and sample), and only the cases
  both scored are compared; a seeded sample meets the full split on the sample's cases;
* **paired**: the per-case difference ``a - b`` (hit@k, ndcg@k, ...), resampled by dialog
  (:func:`crslib.metrics.paired_bootstrap`): ``delta``, its 95% interval and a p-value;
* **seeds**: a variant's seed replicates are the configs of the profile that differ from it
  only in ``train.seed`` (``gcrs``, ``gcrs_seed1``, ...). Seed ``k`` of ``a`` is paired with
  seed ``k`` of ``b`` (a baseline, which has no seed, with every seed); the claim's own
  ``delta`` and interval are those of the seed-averaged per-case values, and each pair's test is
  listed under ``pairs``;
* **verdict**: ``holds`` only when every pair's interval lies above 0; ``reversed`` when every
  pair's lies below; else ``not shown``; ``not run`` while a result is missing.

:func:`write` saves ``results/<profile>/claims.json`` (the claims and the settings that made
them); the README and the notebooks render it with :func:`markdown`.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Sequence

import numpy as np

from crslib import config, data, metrics, report
from crslib.evaluation import evaluate as ev_mod
from crslib.studies import align_choice, experiments, result_tables
from crslib.training import run

N_BOOT = 10_000
SEED = 0


@dataclass(frozen=True)
class Claim:
    claim: str
    dataset: str
    a: str
    b: str
    metric: str
    protocol: str = "paper"


def _claims(rows) -> tuple[Claim, ...]:
    return tuple(Claim(*r) for r in rows)


NAMES = {"inspired": "INSPIRED", "redial": "ReDial"}
RANKER_NAMES = {"gcrs": "GCRS"}  # how a claim names a ranker (else by its name)
_VS_BASELINES = [(f"GCRS beats {b} on {NAMES[ds]} {'new-item ' if p == 'new_items' else ''}"
                  "Recall@10",
                  ds, "gcrs", b, "recall@10", p)
                 for ds in ("inspired", "redial") for b in ("popularity", "repeat")
                 for p in ("paper", "new_items")]
# What each profile claims (issue 21): the paper's headline, its ablation order, and the bars a
# recommender must clear here (popularity, and recommending again what the dialog mentioned).
_PAPER_SCALE = _claims([
    ("the paper's headline: GCRS beats TIGER on INSPIRED Recall@1",
     "inspired", "gcrs", "tiger", "recall@1", "paper"),
    ("GCRS beats TIGER on ReDial Recall@10", "redial", "gcrs", "tiger", "recall@10", "paper"),
    *[(f"the full model beats the {name} ablation (INSPIRED {m})",
       "inspired", "gcrs", v, metric, "paper")
      for v, name in (("sid", "SID-only"), ("mode_resp", "MODE+RESP"), ("resp", "RESP-only"))
      for metric, m in (("recall@1", "Recall@1"), ("ndcg@10", "NDCG@10"))],
    *_VS_BASELINES,
])
# beyond the paper (issue 24): teaching the model what each SID means (crslib.format.align).
# ALIGNED stands for each dataset's alignment variant chosen on validation
# (crslib.studies.align_choice.chosen_variant; gcrs_align, ratio 1, until a choice is saved)
ALIGNED = "gcrs_align"
_ALIGNMENT = _claims(
    [(f"beyond the paper: alignment beats {RANKER_NAMES.get(b, b)} on {NAMES[ds]} {m}",
      ds, ALIGNED, b, metric, protocol)
     for ds in ("inspired", "redial")
     for protocol, metric, m in (("new_items", "recall@10", "new-item Recall@10"),
                                 ("paper", "recall@1", "Recall@1"),
                                 ("paper", "recall@10", "Recall@10"))
     for b in ("gcrs", "popularity")]
    + [(f"beyond the paper: alignment follows asked genres more often than "
        f"{RANKER_NAMES.get(b, b)} ({NAMES[ds]} validation requests, top 10)",
        ds, ALIGNED, b, "share@10", "request")
       for ds in ("inspired", "redial") for b in ("gcrs", "popularity")]
    + [(f"beyond the paper: alignment names an item's SID from its text more often than GCRS "
        f"({NAMES[ds]} catalog sample, Recall@10)", ds, ALIGNED, "gcrs", "recall@10",
        "id_knowledge")  # crslib.studies.id_knowledge: did the run learn what its IDs mean?
       for ds in ("inspired", "redial")])
CLAIMS: dict[str, tuple[Claim, ...]] = {
    "smollm2": _PAPER_SCALE + _ALIGNMENT,
    "paper": _PAPER_SCALE,  # the paper's scale: its claims (it defines no gcrs_align)
    "cpu": _claims([
        ("the paper's headline: GCRS beats TIGER on INSPIRED Recall@1",
         "inspired", "gcrs", "tiger", "recall@1", "paper"),
        *[(f"the full model beats the {name} ablation (INSPIRED Recall@1)",
           "inspired", "gcrs", v, "recall@1", "paper")
          for v, name in (("resp", "RESP-only"), ("mode_resp", "MODE+RESP"), ("sid", "SID-only"))],
        ("GCRS beats popularity on ReDial Recall@10", "redial", "gcrs", "popularity",
         "recall@10", "paper"),
        ("GCRS beats repeat on ReDial Recall@10", "redial", "gcrs", "repeat", "recall@10", "paper"),
        ("GCRS beats popularity on ReDial Recall@10 without repeats (dedup, exact ranks)",
         "redial", "gcrs", "popularity", "recall@10", "dedup"),
        ("a pretrained backbone beats the compact one (INSPIRED Recall@10)",
         "inspired", "backbone_smollm2_135m", "gcrs", "recall@10", "paper"),
        ("a pretrained backbone beats the compact one (ReDial Recall@10, its 1,000-case sample)",
         "redial", "backbone_smollm2_135m", "gcrs", "recall@10", "paper"),
        *[(f"SmolLM2 GCRS beats {b} on {NAMES[ds]} Recall@10", ds, "backbone_smollm2_135m", b,
           "recall@10", "paper") for ds in ("inspired", "redial") for b in ("popularity", "repeat")],
    ]),
}


def profile_claims(profile: str) -> tuple[Claim, ...]:
    """The claims of ``profile`` (a derived profile, e.g. ``paper-dry``, has its base's), the
    alignment claims about each dataset's variant chosen on validation (:data:`ALIGNED`)."""
    return tuple(replace(c, a=align_choice.chosen_variant(profile, c.dataset, ALIGNED))
                 if c.a == ALIGNED else c for c in CLAIMS[run.base_profile(profile)])


# ----------------------------------------------------------------------------- per-case values
def replicates(profile: str, dataset: str, variant: str) -> list[tuple[int | None, str]]:
    """``(seed, variant)`` of ``variant`` and every config of the profile that differs from it
    only in ``train.seed`` (its seed replicates), by seed; a ranker without a config of its own
    (a baseline): ``[(None, name)]``."""
    if not run.config_path(profile, dataset, variant).is_file():
        return [(None, variant)]
    def key(rc: config.RunConfig) -> str:
        ident = rc.identity()
        ident.pop("variant")
        ident["train"] = {k: v for k, v in ident["train"].items() if k != "seed"}
        return json.dumps(ident, sort_keys=True)
    mine = config.load(run.config_path(profile, dataset, variant))
    out = []
    for path in sorted(run.CONFIGS.glob(f"{run.base_profile(profile)}-{dataset}-*.json")):
        rc = config.load(path)
        if key(rc) == key(mine):
            out.append((rc.train.seed, rc.variant))
    return sorted(out, key=lambda sv: sv[0])


def _rebuilt_ids(profile: str, dataset: str, variant: str, result: dict, data_root) -> list[str]:
    """``case_ids`` of a result saved before they were kept: its cases rebuilt from the data."""
    ds = data.load(dataset, data_root)
    cfg, sids = experiments.result_sids(profile, dataset, result, catalog=ds.catalog)
    cases = ev_mod.rec_cases(ds, sids, result["split"], cfg.format,
                             limit=result.get("limit"))
    if result["protocol"] in ("dedup", "new_items"):
        cases, _ = ev_mod.select(cases, [None] * len(cases), "dedup")
    if len(cases) != len(result["case_ranks"]):
        raise ValueError(f"{profile}/{dataset}/{variant}.{result['protocol']}: "
                         f"{len(result['case_ranks'])} ranks, but its cases rebuild to "
                         f"{len(cases)}")
    return ev_mod.case_ids(cases)


def per_case(profile: str, dataset: str, variant: str, metric: str, protocol: str,
             data_root=None, host: str | None = None) -> dict[str, float] | None:
    """``{case id: value of metric}`` from a saved result; None when it is missing. Protocol
    ``request`` (:func:`crslib.studies.chat_choice.request_following`, metric ``share@k``): each
    validation case's share of the run's top ``k`` carrying an asked genre; a baseline's shares
    (``variant`` a baseline name) are read from the check of the run ``host``, which scores it on
    the same cases."""
    if protocol == "request":
        source = host or variant
        r = result_tables.load_result(profile, dataset, source, "request")
        if r is None or "case_shares" not in r:
            return None
        if metric != f"share@{r['k']}":
            raise ValueError(f"{source}.request: saved for share@{r['k']}, not {metric}")
        who = "run" if host is None else variant
        if who not in r["case_shares"]:
            raise ValueError(f"{host}.request: it holds no shares of {variant!r} "
                             f"(only {sorted(r['case_shares'])})")
        return dict(zip(r["case_ids"], r["case_shares"][who]))
    r = result_tables.load_result(profile, dataset, variant, protocol)
    if r is None and protocol == "new_items":
        paper = result_tables.load_result(profile, dataset, variant, "paper")
        if paper is not None and "case_new_ranks" in paper:
            r = {**paper, "protocol": "new_items", **ev_mod.new_items_result(paper)}
    if r is None:
        return None
    ids = r.get("case_ids") or _rebuilt_ids(profile, dataset, variant, r, data_root)
    return ev_mod.case_values(r["case_ranks"], ids, metric)


# ----------------------------------------------------------------------------- judging
def judge(profile: str, c: Claim, data_root=None, n_boot: int = N_BOOT, seed: int = SEED
          ) -> dict:
    """One claim, judged (the keys of ``claims.json``)."""
    out = {"claim": c.claim, "dataset": c.dataset, "metric": c.metric, "protocol": c.protocol,
           "a": c.a, "b": c.b}
    sides = {}
    for name in (c.a, c.b):
        reps = replicates(profile, c.dataset, name)
        # a baseline's request shares live in the check of the run it is compared with
        host = c.a if c.protocol == "request" and reps[0][0] is None and name == c.b else None
        reps = [(s, v, per_case(profile, c.dataset, v, c.metric, c.protocol, data_root, host))
                for s, v in reps]
        sides[name] = [(s, v, vals) for s, v, vals in reps if vals is not None]
    if not sides[c.a] or not sides[c.b]:
        return {**out, "cases": 0, "delta": None, "delta_ci95": None, "p_value": None,
                "seeds": None, "verdict": "not run", "pairs": []}
    A, B = sides[c.a], sides[c.b]
    if A[0][0] is not None and B[0][0] is not None:  # both seeded: seed k with seed k
        bseed = {x[0]: x for x in B}
        pairs = [(a, bseed[a[0]]) for a in A if a[0] in bseed]
    else:
        pairs = [(a, b) for a in A for b in B]
    if not pairs:
        return {**out, "cases": 0, "delta": None, "delta_ci95": None, "p_value": None,
                "seeds": None, "verdict": "not run (no seed in common)", "pairs": []}
    a_runs = [x for x in A if any(p[0][1] == x[1] for p in pairs)]
    b_runs = [x for x in B if any(p[1][1] == x[1] for p in pairs)]
    common = sorted(set.intersection(*(set(x[2]) for x in a_runs + b_runs)))
    dialogs = [ev_mod.case_dialog(k) for k in common]
    rows = []
    for (sa, va, xa), (sb, vb, xb) in pairs:
        t = metrics.paired_bootstrap([xa[k] for k in common], [xb[k] for k in common],
                                     dialogs, n_boot, seed)
        rows.append({"a": va, "b": vb, "seed_a": sa, "seed_b": sb,
                     "value_a": float(np.mean([xa[k] for k in common])),
                     "value_b": float(np.mean([xb[k] for k in common])),
                     "delta": t["delta"], "delta_ci95": t["ci95"], "p_value": t["p_value"]})
    mean_a = [float(np.mean([x[2][k] for x in a_runs])) for k in common]
    mean_b = [float(np.mean([x[2][k] for x in b_runs])) for k in common]
    t = metrics.paired_bootstrap(mean_a, mean_b, dialogs, n_boot, seed)
    if all(r["delta_ci95"][0] > 0 for r in rows):
        verdict = "holds"
    elif all(r["delta_ci95"][1] < 0 for r in rows):
        verdict = "reversed"
    else:
        verdict = "not shown"
    return {**out, "cases": len(common), "dialogs": len(set(dialogs)), "delta": t["delta"],
            "delta_ci95": t["ci95"], "p_value": t["p_value"],
            "seeds": {"a": [x[0] for x in a_runs], "b": [x[0] for x in b_runs]},
            "value_a": dict(zip(("mean", "sd"), metrics.mean_sd(
                sorted({r["a"]: r["value_a"] for r in rows}.values())))),
            "value_b": dict(zip(("mean", "sd"), metrics.mean_sd(
                sorted({r["b"]: r["value_b"] for r in rows}.values())))),
            "verdict": verdict, "pairs": rows}


def write(profile: str, data_root=None, n_boot: int = N_BOOT, seed: int = SEED,
          claims: Sequence[Claim] | None = None) -> Path:
    """Judge every claim of ``profile`` and save ``results/<profile>/claims.json``."""
    rows = [judge(profile, c, data_root, n_boot, seed) for c in (claims or profile_claims(profile))]
    return report.write_json({"profile": profile, "test": "paired bootstrap over dialogs",
                              "n_boot": n_boot, "seed": seed, "claims": rows},
                             report.RESULTS / profile / "claims.json")


def load(profile: str) -> list[dict] | None:
    path = report.RESULTS / profile / "claims.json"
    return json.loads(path.read_text())["claims"] if path.is_file() else None


def _pct(x: float) -> str:
    return f"{100 * x:+.2f}"


def markdown(profile: str) -> str:
    """The claims table of ``results/<profile>/claims.json``: a vs b (mean over seeds), Δ in
    points with its paired 95% interval and p-value, the cases, the verdict."""
    rows = load(profile)
    if rows is None:
        return f"(not judged yet: `crslib.studies.claims.write({profile!r})`)\n"
    lines = ["| claim | a vs b (%, mean over seeds) | Δ points [95% CI], p | cases (dialogs) | "
             "seeds | verdict |", "|---|---|---|---|---|---|"]
    for r in rows:
        if r["delta"] is None:
            lines.append(f"| {r['claim']} | {r['a']} vs {r['b']}: not run | - | - | - | "
                         f"{r['verdict']} |")
            continue
        va, vb = r["value_a"], r["value_b"]
        sd = (lambda v: f" ± {100 * v['sd']:.2f}" if v["sd"] else "")
        lo, hi = r["delta_ci95"]
        n_seeds = max(len(r["seeds"]["a"]), len(r["seeds"]["b"]))
        lines.append(f"| {r['claim']} | {r['a']} {100 * va['mean']:.2f}{sd(va)} vs {r['b']} "
                     f"{100 * vb['mean']:.2f}{sd(vb)} | {_pct(r['delta'])} [{_pct(lo)}, "
                     f"{_pct(hi)}], p = {r['p_value']:.3g} | {r['cases']} ({r['dialogs']}) | "
                     f"{n_seeds} | {r['verdict']} |")
    return "\n".join(lines) + "\n"
