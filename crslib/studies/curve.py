"""The learning curve on validation data, and the step budget chosen from it once.

A run trained with ``train.snapshot_every`` keeps its model every N steps
(``runs/<profile>/<dataset>/<variant>/snapshots/step-NNNN/``, each a loadable run folder with a
``snapshot.json``: step, tokens, epochs, seconds, model_hash). :func:`learning_curve` scores each
snapshot, and the finished model as the curve's last point, under the paper protocol on the
validation split (INSPIRED ``dev``, ReDial ``valid``: :data:`crslib.data.VALIDATION`, which the
``smollm2`` runs never train on), with each point's new-item recall from the same lists, and
:func:`choose_budget` picks the step count every variant of the profile then trains: the best
validation ``metric``, ties to the fewer steps. :func:`paired` compares two curves (or a curve
and a baseline) step by step on the same validation cases. Never a test split.

A caveat the curve carries: the learning rate decays (cosine) over the curve run's own budget,
so the snapshot at step s has not had the low-rate end a run of budget s would have; a shorter
budget chosen from the curve is then retrained with its own schedule.
"""
from __future__ import annotations

import json
from pathlib import Path

from crslib import data, metrics, report
from crslib.evaluation import evaluate as ev_mod, recommenders, result_files
from crslib.studies import experiments
from crslib.training import run

METRIC = "ndcg@10"  # uses the whole top 10, and rewards rank 1 most; less noisy than R@1
NEW = "new_items recall@10"  # each point's recall of items its dialog has not named
# curves compared step by step (a, b, reference): ReDial's GCRS and alignment runs of two epochs
# (issue 24; tools/make_configs.py, SMOLLM2_CURVES)
COMPARED = {("smollm2", "redial"): ("gcrs_align_curve530", "gcrs_curve530", "popularity")}


def snapshots(folder: Path) -> list[Path]:
    """The run's snapshot folders that are complete (model saved, ``snapshot.json`` written),
    by step."""
    root = Path(folder) / "snapshots"
    return sorted(p for p in root.glob("step-*") if (p / "snapshot.json").is_file()
                  and (p / "model").is_dir()) if root.is_dir() else []


def _point(folder: Path, record: dict, split: str, limit, ds, out: Path) -> dict:
    cfg = run.saved_config(folder)
    meta = {"dataset": record["dataset"], "split": split, "profile": record["profile"],
            "variant": record["variant"], "protocol": "paper", "step": record["step"],
            **result_files.identity(cfg, folder)}

    def compute() -> dict:
        rec = recommenders.load_recommender(folder)
        sids = rec.sids
        cases = ev_mod.rec_cases(ds(), sids, split, cfg.format,
                                 limit=limit)
        return ev_mod.evaluate(rec, cases, "paper")
    return result_files.scored(meta, limit, compute, out)


def learning_curve(profile: str, dataset: str, variant: str = "gcrs", split: str | None = None,
                   limit: int | None = None, metric: str = METRIC, data_root=None,
                   say=print, run_path=None) -> dict:
    """Score every snapshot of the run (``runs/<profile>/<dataset>/<variant>``, or
    ``run_path``) and the finished run on ``split`` (None: the dataset's validation split; a
    seeded sample of ``limit`` cases; None: all); save each point under
    ``results/<profile>/<dataset>/<variant>.curve/`` and the curve, with the chosen budget, as
    ``results/<profile>/<dataset>/<variant>.curve.json``. Points already scored by the same
    weights are reused."""
    split = split or data.VALIDATION[dataset]
    if split == "test":
        raise ValueError("a budget is chosen on validation data, never on the test split")
    folder = Path(run_path) if run_path else experiments.run_dir(profile, dataset, variant)
    cache = {}

    def ds():
        if "ds" not in cache:
            cache["ds"] = data.load(dataset, data_root)
        return cache["ds"]
    points = []
    for snap in snapshots(folder):
        rec = json.loads((snap / "snapshot.json").read_text())
        points.append((snap, rec))
    finished = (folder / "config.json").is_file() and run.is_finished(run.saved_config(folder),
                                                                      folder)
    if finished:
        s = json.loads((folder / "train_summary.json").read_text())
        points = [(p, r) for p, r in points if r["step"] != s["steps"]]  # the finished run is it
        points.append((folder, {"step": s["steps"], "tokens": s["tokens"],
                                "epochs": s["epochs"], "seconds": s["seconds"]}))
    if not points:
        raise FileNotFoundError(f"{folder}: no snapshots yet (train with train.snapshot_every)")
    rows = []
    base = report.RESULTS / profile / dataset / f"{variant}.curve"
    for where, rec in points:
        r = _point(where, {**rec, "profile": profile, "dataset": dataset, "variant": variant},
                   split, limit, ds, base / f"step-{rec['step']:04d}.paper.json")
        lo, hi = r["ci95"][metric]
        rows.append({"step": rec["step"], "tokens": rec["tokens"],
                     "epochs": round(rec["epochs"], 3), "model_hash": r["model_hash"],
                     "cases": r["n_cases"],
                     **{k: r["metrics"][k] for k in ("recall@1", "recall@10", "ndcg@10")},
                     f"{metric} 95% CI": [lo, hi], **_new_fields(r), "final": where == folder})
        say(f"step {rec['step']}: {metric} {100 * r['metrics'][metric]:.2f} on {r['n_cases']} "
            f"{split} cases")
    rows.sort(key=lambda x: x["step"])
    best = choose_budget(rows, metric)
    out = {"profile": profile, "dataset": dataset, "variant": variant, "split": split,
           "limit": limit, "metric": metric, "rows": rows, "chosen_steps": best["step"],
           "rule": f"the step with the best {split} {metric}; ties to fewer steps",
           "config_hash": run.saved_config(points[0][0]).config_hash, "finished": finished,
           "run": report.shown(folder)}
    report.write_json(out, report.RESULTS / profile / dataset / f"{variant}.curve.json")
    return out


def choose_budget(rows: list[dict], metric: str = METRIC) -> dict:
    """The row with the highest ``metric``; among equals, the one with the fewest steps."""
    if not rows:
        raise ValueError("an empty learning curve")
    return min(rows, key=lambda r: (-r[metric], r["step"]))


def _new_fields(paper: dict) -> dict:
    """A curve row's new-item fields, from a point's saved paper-protocol result."""
    new = ev_mod.new_items_result(paper)
    return {"new_item_cases": new["n_cases"], NEW: new["metrics"]["recall@10"],
            f"{NEW} 95% CI": new["ci95"]["recall@10"]}


def _hits(result: dict, metric: str) -> dict[str, float]:
    """``{case id: value}`` of ``metric`` (``recall@k`` or ``new_items recall@k``) in a saved
    paper-protocol result."""
    if metric.startswith("new_items "):
        result, metric = ev_mod.new_items_result(result), metric.removeprefix("new_items ")
    return ev_mod.case_values(result["case_ranks"], result["case_ids"], metric)


def _points(profile: str, dataset: str, name: str, split: str) -> dict[int | None, dict]:
    """``{step: saved paper result}`` of a scored curve, or ``{None: result}`` of a ranker
    scored once on ``split`` (a baseline, or a run without a curve)."""
    c = load(profile, dataset, name)
    if c is not None:
        folder = report.RESULTS / profile / dataset / f"{name}.curve"
        return {r["step"]: json.loads((folder / f"step-{r['step']:04d}.paper.json").read_text())
                for r in c["rows"]}
    path = result_files.result_path(profile, dataset, name, "paper", split)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: {name} has neither a curve nor a {split} result")
    return {None: json.loads(path.read_text())}


def paired(profile: str, dataset: str, a: str, b: str, metric: str = NEW,
           split: str | None = None, n_boot: int = 10_000, seed: int = 0) -> list[dict]:
    """Curve ``a`` against ``b`` (another curve: step by step, at the steps both have; a ranker
    scored once on ``split``: at each of ``a``'s steps) on the same validation cases: the
    paired bootstrap over dialogs of :func:`crslib.metrics.paired_bootstrap`. Saved results
    only; nothing is scored."""
    split = split or data.VALIDATION[dataset]
    if split == "test":
        raise ValueError("curves are compared on validation data, never on the test split")
    pa, pb = _points(profile, dataset, a, split), _points(profile, dataset, b, split)
    rows = []
    for step in sorted(pa):
        rb = pb.get(step, pb.get(None))
        if rb is None:
            continue
        ra = pa[step]
        if ra["split"] != split or rb["split"] != split:
            raise ValueError(f"{a} vs {b}: results of splits {ra['split']!r} and "
                             f"{rb['split']!r}, not {split!r}")
        xa, xb = _hits(ra, metric), _hits(rb, metric)
        common = sorted(set(xa) & set(xb))
        t = metrics.paired_bootstrap([xa[k] for k in common], [xb[k] for k in common],
                                     [ev_mod.case_dialog(k) for k in common], n_boot, seed)
        rows.append({"step": step, "cases": len(common),
                     "value_a": sum(xa[k] for k in common) / len(common),
                     "value_b": sum(xb[k] for k in common) / len(common),
                     "delta": t["delta"], "delta_ci95": t["ci95"], "p_value": t["p_value"]})
    return rows


def load(profile: str, dataset: str, variant: str = "gcrs") -> dict | None:
    """The saved curve; a curve saved before points kept their new-item recall gets it from
    its saved point files (the same lists, nothing scored)."""
    path = report.RESULTS / profile / dataset / f"{variant}.curve.json"
    if not path.is_file():
        return None
    c = json.loads(path.read_text())
    folder = path.with_suffix("")  # <variant>.curve/
    for r in c["rows"]:
        if NEW not in r:
            point = json.loads((folder / f"step-{r['step']:04d}.paper.json").read_text())
            r.update(_new_fields(point))
    return c


def compare_markdown(profile: str, dataset: str, a: str, b: str, reference: str,
                     metric: str = NEW, n_boot: int = 10_000) -> str:
    """Curves ``a`` and ``b`` step by step on validation: each one's ``metric`` (percent, 95%
    interval) and the paired differences ``a - b``, ``a - reference`` and ``b - reference``
    (:func:`paired`); a note while a curve is not scored yet."""
    ca, cb = load(profile, dataset, a), load(profile, dataset, b)
    if ca is None or cb is None:
        missing = " and ".join(v for v, c in ((a, ca), (b, cb)) if c is None)
        return f"(not scored yet: {missing}; `crslib.studies.curve.learning_curve`)\n"
    by_b = {r["step"]: r for r in cb["rows"]}

    def delta(r):
        return "{:+.2f} [{:+.2f}, {:+.2f}]".format(100 * r["delta"],
                                                     *(100 * x for x in r["delta_ci95"]))
    ab = {r["step"]: r for r in paired(profile, dataset, a, b, metric, n_boot=n_boot)}
    ar = {r["step"]: r for r in paired(profile, dataset, a, reference, metric, n_boot=n_boot)}
    br = {r["step"]: r for r in paired(profile, dataset, b, reference, metric, n_boot=n_boot)}
    rows = [{"step": r["step"], "tokens": r["tokens"], "cases": r.get("new_item_cases"),
             a: report.percent_ci(r[metric], r[f"{metric} 95% CI"]),
             b: report.percent_ci(by_b[r["step"]][metric], by_b[r["step"]][f"{metric} 95% CI"]),
             f"{a} - {b}": delta(ab[r["step"]]), f"{a} - {reference}": delta(ar[r["step"]]),
             f"{b} - {reference}": delta(br[r["step"]])}
            for r in ca["rows"] if r["step"] in by_b]
    unfinished = [v for v, c in ((a, ca), (b, cb)) if not c.get("finished")]
    note = (f"\n({', '.join(unfinished)} still training: steps are added as snapshots are "
            "scored)\n") if unfinished else ""
    return (report.markdown_table(rows) + f"\n{ca['split']} split, {metric}; differences are "
            "paired over the same cases (bootstrap over dialogs), in points.\n" + note)


def plot(c: dict, path=None):
    """The learning curve as a figure: Recall@1, Recall@10 and NDCG@10 (%) by step, the chosen
    metric's 95% interval shaded, the chosen budget marked; saved to ``path`` when given."""
    import matplotlib.pyplot as plt
    import numpy as np
    rows = c["rows"]
    steps = [r["step"] for r in rows]
    fig, ax = plt.subplots(figsize=(6, 3.4))
    for metric in ("recall@1", "recall@10", "ndcg@10"):
        ax.plot(steps, [100 * r[metric] for r in rows], marker="o", label=metric)
    lo, hi = np.array([r[f"{c['metric']} 95% CI"] for r in rows]).T
    ax.fill_between(steps, 100 * lo, 100 * hi, alpha=0.15, color="tab:green",
                    label=f"{c['metric']} 95% CI")
    ax.axvline(c["chosen_steps"], color="gray", ls="--",
               label=f"chosen: {c['chosen_steps']} steps")
    ax.set_xlabel("optimizer steps (4,096 tokens each)")
    ax.set_ylabel(f"{c['split']} score (%)")
    ax.set_title(f"{c['dataset']} {c['variant']} ({c['profile']}): {rows[0]['cases']} "
                 f"{c['split']} cases" + ("" if c.get("finished") else ", run unfinished"))
    ax.legend(fontsize=8)
    fig.tight_layout()
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=100)
    return fig
