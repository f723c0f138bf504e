"""Which runs exist under a profile, and which of them are shipped (committed to git): the
README's run inventory."""
from __future__ import annotations

import json
from pathlib import Path

from crslib import report
from crslib.studies import experiments


def runs_inventory(profile: str) -> list[dict]:
    """One row per finished run under ``runs/<profile>/``: its steps, tokens, training seconds
    (measured on the machine that trained it), weights hash, and whether the repository ships
    it (:func:`shipped_runs`): a shipped run is reused by a fresh clone, the others are trained
    by ``make reproduce``."""
    rows, shipped = [], shipped_runs()
    for summary in sorted((experiments.RUNS / profile).glob("*/*/train_summary.json")):
        s = json.loads(summary.read_text())
        folder = summary.parent
        cfg = json.loads((folder / "config.json").read_text())
        rows.append({"run": report.shown(folder), "dataset": cfg["dataset"], "variant": cfg["variant"],
                     "steps": s["steps"],
                     "copy_warmup_steps": (s.get("copy_warmup") or {}).get("steps", 0),
                     "tokens": s["tokens"], "train_s": s["seconds"],
                     "model_hash": s.get("model_hash"), "shipped": folder.resolve() in shipped})
    return rows


def shipped_runs(root: Path | None = None) -> set[Path]:
    """Run folders under ``root`` (default ``experiments.RUNS``) whose ``train_summary.json`` git
    tracks in this repository (empty outside a git checkout or outside the repository)."""
    import subprocess
    try:
        out = subprocess.run(["git", "ls-files", "--", str(root or experiments.RUNS)],
                             cwd=report.REPO, capture_output=True, text=True,
                             check=True).stdout.split()
    except (OSError, subprocess.CalledProcessError):
        return set()
    return {(report.REPO / f).parent.resolve() for f in out if f.endswith("/train_summary.json")}


def runs_markdown(profile: str) -> str:
    """The README's run inventory, from ``results/<profile>/runs.json`` (notebook 09)."""
    path = report.RESULTS / profile / "runs.json"
    if not path.is_file():
        return f"(no run inventory yet: `make reproduce PROFILE={profile}` writes {report.shown(path)})\n"
    lines = ["| run | steps (+ copy warm-up) | tokens | training min (here) | model_hash | "
             "fresh clone |", "|---|---|---|---|---|---|"]
    for r in json.loads(path.read_text())["rows"]:
        lines.append(f"| `{r['run']}` | {r['steps']:,} (+ {r['copy_warmup_steps']}) | "
                     f"{r['tokens']:,} | {r['train_s'] / 60:.1f} | `{r['model_hash']}` | "
                     f"{'reuses (shipped)' if r['shipped'] else 'trains'} |")
    return "\n".join(lines) + "\n"
