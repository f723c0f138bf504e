"""Train a config into a fresh folder and score it on its test split (paper protocol), to check
that a run reproduces: same seed + same config -> same steps, tokens, loss, weights, metrics,
whatever else the machine is doing. Writes results/<profile>/repeat_runs/<label>.json.

    CRSLIB_DATA=../shared/data python tools/repeat_run.py cpu inspired gcrs alone
    (a CPU-bound process beside it:) python tools/repeat_run.py cpu inspired gcrs busy --busy
    python tools/repeat_run.py --compare cpu alone busy [runs/cpu/inspired/gcrs]
"""
import json
import multiprocessing as mp
import os
import sys
import time
from pathlib import Path

from crslib import report
from crslib.training import run
from crslib.studies import experiments

KEYS = ("steps", "tokens", "final_loss", "model_hash")


def _spin() -> None:
    while True:
        pass


def repeat(profile: str, dataset: str, variant: str, label: str, busy: bool) -> dict:
    folder = report.REPO / "runs" / "repeat_runs" / profile / label
    if folder.exists():
        raise SystemExit(f"{folder} exists: pick another label or remove it")
    spinner = mp.get_context("spawn").Process(target=_spin, daemon=True) if busy else None
    if spinner:
        spinner.start()
    load0 = os.getloadavg()
    try:
        summary = run.train_run(experiments.config(profile, dataset, variant), folder,
                                os.environ.get("CRSLIB_DATA"), progress=False)
    finally:
        if spinner:
            spinner.terminate()
    res = experiments.evaluate(run_path=folder, protocol="paper", data_root=os.environ.get("CRSLIB_DATA"),
                               out=folder / "test.paper.json")
    out = {"label": label, "config": f"{profile}-{dataset}-{variant}", "busy_process_beside": busy,
           "load_average_at_start": load0, "load_average_at_end": os.getloadavg(),
           "train": {k: summary[k] for k in (*KEYS, "seconds", "tokens_per_s")},
           "test_paper": {"n_cases": res["n_cases"], "metrics": res["metrics"]},
           "when": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    report.write_json(out, report.RESULTS / profile / "repeat_runs" / f"{label}.json")
    return out


def compare(profile: str, labels: list[str], run_dir: str | None) -> dict:
    rows = [json.loads((report.RESULTS / profile / "repeat_runs" / f"{x}.json").read_text())
            for x in labels]
    if run_dir:  # a run trained elsewhere (e.g. by make reproduce), with its saved test result
        s = json.loads((Path(run_dir) / "train_summary.json").read_text())
        cfg = json.loads((Path(run_dir) / "config.json").read_text())
        r = json.loads((report.RESULTS / cfg["profile"] / cfg["dataset"] /
                        f"{cfg['variant']}.paper.json").read_text())
        rows.append({"label": run_dir, "train": s, "test_paper": r})
    same_train = all({k: r["train"][k] for k in KEYS} == {k: rows[0]["train"][k] for k in KEYS}
                     for r in rows)
    same_test = all(r["test_paper"]["metrics"] == rows[0]["test_paper"]["metrics"] for r in rows)
    out = {"runs": [{"label": r["label"], **{k: r["train"][k] for k in (*KEYS, "seconds")},
                     "recall@10": r["test_paper"]["metrics"]["recall@10"],
                     "recall@1": r["test_paper"]["metrics"]["recall@1"]} for r in rows],
           "identical_train_summaries": same_train, "identical_test_metrics": same_test}
    report.write_json(out, report.RESULTS / profile / "repeat_runs" / "compare.json")
    return out


if __name__ == "__main__":
    if sys.argv[1] == "--compare":
        prof, *rest = sys.argv[2:]
        runs = [x for x in rest if "/" in x]
        print(json.dumps(compare(prof, [x for x in rest if "/" not in x], runs[0] if runs else None),
                         indent=1))
    else:
        print(json.dumps(repeat(*sys.argv[1:5], busy="--busy" in sys.argv), indent=1))
