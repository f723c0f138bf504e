"""The learning curve on validation data, and the step budget chosen from it once.

A run trained with ``train.snapshot_every`` keeps its model every N steps
(``runs/<profile>/<dataset>/<variant>/snapshots/step-NNNN/``, each a loadable run folder with a
``snapshot.json``: step, tokens, epochs, seconds, model_hash). :func:`learning_curve` scores each
snapshot, and the finished model as the curve's last point, under the paper protocol on the
validation split (INSPIRED ``dev``, which the ``smollm2`` runs never train on), and
:func:`choose_budget` picks the step count every variant of the profile then trains: the best
validation ``metric``, ties to the fewer steps. Never a test split.

A caveat the curve carries: the learning rate decays (cosine) over the curve run's own budget,
so the snapshot at step s has not had the low-rate end a run of budget s would have; a shorter
budget chosen from the curve is then retrained with its own schedule.
"""
from __future__ import annotations

import json
from pathlib import Path

from crslib import data, report
from crslib.evaluation import evaluate as ev_mod, recommenders, result_files
from crslib.studies import experiments
from crslib.training import run

METRIC = "ndcg@10"  # uses the whole top 10, and rewards rank 1 most; less noisy than R@1


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


def learning_curve(profile: str, dataset: str, variant: str = "gcrs", split: str = "dev",
                   limit: int | None = None, metric: str = METRIC, data_root=None,
                   say=print, run_path=None) -> dict:
    """Score every snapshot of the run (``runs/<profile>/<dataset>/<variant>``, or
    ``run_path``) and the finished run on ``split`` (a seeded sample of ``limit`` cases; None:
    all); save each point under ``results/<profile>/<dataset>/<variant>.curve/`` and the curve,
    with the chosen budget, as ``results/<profile>/<dataset>/<variant>.curve.json``. Points
    already scored by the same weights are reused."""
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
                     f"{metric} 95% CI": [lo, hi], "final": where == folder})
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


def load(profile: str, dataset: str, variant: str = "gcrs") -> dict | None:
    path = report.RESULTS / profile / dataset / f"{variant}.curve.json"
    return json.loads(path.read_text()) if path.is_file() else None


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
