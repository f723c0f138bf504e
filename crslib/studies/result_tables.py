"""Tables from saved results: our rows beside the paper's reported rows, rankers compared on the
same cases, the backbone table and the README's headline."""
from __future__ import annotations

import json
from typing import Sequence

from crslib import data, report
from crslib.evaluation import evaluate as ev_mod, result_files
from crslib.studies.experiments import config, result_sids
from crslib.training import run


def load_result(profile: str, dataset: str, ranker: str, protocol: str) -> dict | None:
    path = result_files.result_path(profile, dataset, ranker, protocol)
    return json.loads(path.read_text()) if path.is_file() else None


def ours_rows(profile: str, dataset: str, rankers: Sequence[str], protocol: str,
              metrics: Sequence[str], percent: bool = True) -> list[dict]:
    """One row per ranker with a saved result: the metrics (x100 when ``percent``, except
    ``ppl``/``bleu``), the 95% interval of the first metric, and the number of cases."""
    rows = []
    for name in rankers:
        r = load_result(profile, dataset, name, protocol)
        if r is None:
            continue
        def scale(k: str) -> float:
            return 100.0 if percent and not k.startswith("ppl") and k != "bleu" else 1.0
        row = {"model": name, "source": f"ours ({profile})", "cases": r["n_cases"]}
        for k in metrics:
            v = r["metrics"].get(k)
            row[k] = None if v is None else round(v * scale(k), 2 if scale(k) == 100 else 4)
        first = metrics[0]
        if first in r.get("ci95", {}):
            lo, hi = r["ci95"][first]
            row[f"{first} 95% CI"] = f"[{lo * scale(first):.2f}, {hi * scale(first):.2f}]"
        rows.append(row)
    return rows


def reported_rows(table: str, metrics: Sequence[str]) -> list[dict]:
    """The paper's rows of ``table`` (a key of ``paper_results.json``), marked as reported."""
    rows = []
    for name, vals in report.paper_results()[table].items():
        if name.startswith("_") or not isinstance(vals, dict):
            continue
        rows.append({"model": name, "source": "reported in the paper",
                     **{k: vals.get(k) for k in metrics}})
    return rows


def on_same_cases(profile: str, dataset: str, ranker: str, reference: str,
                  protocol: str = "paper", data_root=None) -> dict:
    """``ranker``'s saved ``protocol`` result cut to the cases of ``reference``'s result, when
    the reference scored a seeded sample (``limit``) and ``ranker`` scored every case or a
    larger seeded sample that holds those cases (checked; with one seed, a sample drawn case by
    case from a large split starts with the smaller one's draws): metrics and intervals
    recomputed from ``ranker``'s
    own per-case ranks (nothing is re-scored), so a sampled run and the baselines are compared
    on exactly the same cases. ``dedup`` cuts the ``community`` ranks, then drops the repeated
    items, as :func:`evaluate` does. Both must use the same semantic IDs (the cases are defined
    by them)."""
    source = "community" if protocol == "dedup" else protocol
    ref, full = (load_result(profile, dataset, x, source) for x in (reference, ranker))
    for name, r in ((reference, ref), (ranker, full)):
        if r is None:
            raise FileNotFoundError(f"no {source} result of {name!r} for {profile}/{dataset}")
    if full["split"] != ref["split"]:
        raise ValueError(f"{ranker!r} was scored on {full['split']}, {reference!r} on "
                         f"{ref['split']}: not the same cases")
    ds = data.load(dataset, data_root)
    cfg, sids = result_sids(profile, dataset, ref, catalog=ds.catalog)
    cases = ev_mod.rec_cases(ds, sids, ref["split"], cfg.format)
    have = ev_mod.sample_indices(cases, full.get("limit"))
    if len(have) != len(full["case_ranks"]):
        raise ValueError(f"{ranker!r}'s {source} result holds {len(full['case_ranks'])} ranks; "
                         f"the reference's SIDs give {len(have)} cases for its limit "
                         f"{full.get('limit')}: not the same cases")
    at = {j: k for k, j in enumerate(have)}
    idx = ev_mod.sample_indices(cases, ref.get("limit"))
    missing = [j for j in idx if j not in at]
    if missing:
        raise ValueError(f"{ranker!r} scored {len(have)} of the {len(idx)} cases {reference!r} "
                         f"scored ({len(missing)} missing): score it on every case or a larger "
                         "sample")
    ranks = [full["case_ranks"][at[j]] for j in idx]
    if protocol == "dedup":
        _, ranks = ev_mod.select([cases[j] for j in idx], ranks, "dedup")
    out = ev_mod.ranking_result(ranks, protocol, dataset=dataset, split=ref["split"],
                                profile=profile, variant=ranker)
    out.update({"limit": ref.get("limit"), "cases_of": reference, "case_ranks": ranks,
                "model_hash": full.get("model_hash"), "config_hash": full.get("config_hash")})
    return out


def backbone_table(profile: str, datasets: Sequence[str], pretrained: Sequence[str],
                   others: Sequence[str] = ("gcrs", "popularity", "repeat"),
                   data_root=None) -> list[dict]:
    """Table 6 in miniature: one row per dataset and ranker, the ``pretrained`` runs beside the
    compact ``gcrs`` and the baselines, every ranker on the cases the pretrained run scored
    (:func:`on_same_cases`: a seeded ReDial sample, all INSPIRED cases), Recall@10 without
    repeated items (``dedup``) on the pretrained run's community sample, and the dialog
    metrics of the runs that write responses. Recall and NDCG in percent."""
    rows = []
    for ds in datasets:
        for ref in pretrained:
            for name in [ref, *others]:
                r = (load_result(profile, ds, ref, "paper") if name == ref
                     else on_same_cases(profile, ds, name, ref, "paper", data_root))
                if r is None:
                    raise FileNotFoundError(f"no paper result of {ref!r} for {profile}/{ds}")
                dd = (load_result(profile, ds, ref, "dedup") if name == ref
                      else on_same_cases(profile, ds, name, ref, "dedup", data_root))
                trained = r.get("model_hash") is not None  # a baseline has no weights
                dial = load_result(profile, ds, name, "dialog") if trained else None
                d = dial["metrics"] if dial else {}
                model = config(profile, ds, name).model if trained else None
                lo, hi = r["ci95"]["recall@10"]
                rows.append({
                    "dataset": ds, "cases of": ref, "model": name,
                    "backbone": "-" if model is None else model.name or (
                        f"compact {model.layers}x{model.hidden}"),
                    "cases": r["n_cases"],
                    **{k: round(100 * r["metrics"][k], 2) for k in ("recall@1", "recall@10")},
                    "recall@10 95% CI": f"[{100 * lo:.2f}, {100 * hi:.2f}]",
                    "ndcg@10": round(100 * r["metrics"]["ndcg@10"], 2),
                    "dedup cases": dd["n_cases"],
                    "dedup recall@10": round(100 * dd["metrics"]["recall@10"], 2),
                    **{k: (round(d[k], 4 if k.startswith("distinct") else 2) if k in d else None)
                       for k in ("ppl_full_vocab", "bleu", "distinct@2", "intent_f1",
                                 "looping_share")}})
    return rows


def relative_improvement(ours: float, best_other: float) -> float:
    """The paper's relative improvement, (ours - best baseline) / best baseline."""
    if best_other == 0:
        raise ValueError("relative improvement over a zero baseline is undefined")
    return (ours - best_other) / best_other


HEADLINE = ("recall@1", "recall@10", "ndcg@10")


HEADLINE_RANKERS = ("gcrs", "backbone_smollm2_135m", "tiger", "decoupled", "text-retrieval",
                    "popularity", "repeat")


BACKBONES = {"smollm2": "SmolLM2-135M + LoRA", "cpu": "compact 2x256, from scratch",
             "smoke": "toy", "paper": "Qwen2.5-7B + QLoRA"}


def headline_markdown(profiles: str | Sequence[str], datasets: Sequence[str] = ("redial", "inspired"),
                      rankers: dict | None = None) -> str:
    """The README's headline table: our rankers under the ``paper`` protocol (with the 95%
    interval of Recall@10, the number of cases and the backbone) beside the paper's GCRS and
    TIGER rows. ``profiles``: one profile or several, in order (the pretrained profile first,
    then the compact one); ``rankers``: per profile, which rankers to show (default:
    :data:`HEADLINE_RANKERS`)."""
    profiles = [profiles] if isinstance(profiles, str) else list(profiles)
    tables = {"redial": "table1_redial", "inspired": "table2_inspired"}
    lines = ["| dataset | model | source | backbone | cases | R@1 | R@10 [95% CI] | N@10 |",
             "|---|---|---|---|---|---|---|---|"]
    for ds in datasets:
        for profile in profiles:
            names = (rankers or {}).get(profile, HEADLINE_RANKERS)
            for r in ours_rows(profile, ds, names, "paper", ("recall@10", "recall@1", "ndcg@10")):
                weights = load_result(profile, ds, r["model"], "paper")["model_hash"]
                backbone = ("-" if weights is None else  # a baseline has no weights
                            "SmolLM2-135M + LoRA" if r["model"].startswith("backbone_smollm2")
                            else BACKBONES.get(run.base_profile(profile), profile))
                lines.append(f"| {ds} | {r['model']} | {r['source']} | {backbone} | "
                             f"{r['cases']} | {r['recall@1']:.2f} | {r['recall@10']:.2f} "
                             f"{r.get('recall@10 95% CI', '')} | {r['ndcg@10']:.2f} |")
        for r in reported_rows(tables[ds], HEADLINE):
            if r["model"] in ("GCRS", "TIGER"):
                lines.append(f"| {ds} | {r['model']} | reported in the paper | Qwen2.5-7B | - | "
                             f"{r['recall@1']:.2f} | {r['recall@10']:.2f} | {r['ndcg@10']:.2f} |")
    return "\n".join(lines) + "\n"


def replace_block(text: str, block: str, name: str) -> str:
    """Replace what lies between ``<!-- name:start -->`` and ``<!-- name:end -->`` in ``text``."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    if start not in text or end not in text:
        raise ValueError(f"markers {start} / {end} not found")
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    return f"{head}{start}\n{block}{end}{tail}"


def table6_markdown(profile: str) -> str:
    """The README's Table 6 in miniature, from ``results/<profile>/table6_miniature.json``
    (notebook 06)."""
    path = report.RESULTS / profile / "table6_miniature.json"
    if not path.is_file():
        return f"(not run yet: notebook 06 writes {report.shown(path)})\n"
    return report.markdown_table(json.loads(path.read_text())["rows"])
