"""Calibrate the `cpu` step budgets (not product code): how many steps fit a number of minutes.

Trains each config briefly (``--warmup`` copy warm-up steps, then ``--steps`` dialog steps, one
thread, full training data) into a temporary folder, and from the measured seconds per step
prints the dialog ``max_steps`` that, after the config's own copy warm-up, fills ``MINUTES`` on
this machine. Run it alone (nothing else on the CPU) for the figures the configs are set from;
the output is saved in results/cpu/calibration.json with the machine's load. Usage:
    CRSLIB_DATA=../shared/data python tools/calibrate_steps.py cpu-redial-gcrs=18 cpu-inspired-gcrs=4.5
"""
import dataclasses
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

torch.set_num_threads(1)
from crslib import report  # noqa: E402
from crslib.training import run


def measure(name: str, minutes: float, warmup: int = 30, steps: int = 40) -> dict:
    cfg = run.load_config(run.CONFIGS / f"{name}.json")
    own_warmup = cfg.train.copy_warmup_steps
    short = dataclasses.replace(cfg, train=dataclasses.replace(
        cfg.train, max_steps=steps, checkpoint_every=10_000, time_limit_minutes=None,
        copy_warmup_steps=warmup if own_warmup else 0))
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        s = run.train_run(short, Path(tmp) / "run", os.environ.get("CRSLIB_DATA"), progress=False)
        wall = time.perf_counter() - t0
    warm_s = s["copy_warmup"]["seconds"] / warmup if s.get("copy_warmup") else 0.0
    step_s = (s["seconds"] - (s["copy_warmup"]["seconds"] if s.get("copy_warmup") else 0)) / steps
    fit = int((60 * minutes - own_warmup * warm_s) / step_s)
    return {"config": name, "minutes": minutes, "copy_warmup_steps": own_warmup,
            "seconds_per_warmup_step": round(warm_s, 4), "seconds_per_step": round(step_s, 4),
            "steps_per_epoch": round(s["steps"] / s["epochs"]), "tokens_per_step":
            round(s["tokens"] / s["steps"]), "max_steps_for_minutes": fit,
            "wall_s_incl_setup": round(wall, 1)}


if __name__ == "__main__":
    rows = []
    load = os.getloadavg()
    for arg in sys.argv[1:]:
        name, minutes = arg.split("=")
        rows.append(measure(name, float(minutes)))
        print(json.dumps(rows[-1]), flush=True)
    path = report.RESULTS / "cpu" / "calibration.json"
    old = json.loads(path.read_text())["rows"] if path.is_file() else []
    keep = [r for r in old if r["config"] not in {x["config"] for x in rows}]
    report.write_json({"load_average_at_start": load, "threads": 1, "rows": keep + rows}, path)
