"""Does a fresh clone train the shipped weights? Clone, set up, train, compare model hashes.

    python tools/fresh_clone_check.py crslib/configs/cpu-inspired-gcrs.json runs/cpu/inspired/gcrs
    python tools/fresh_clone_check.py crslib/configs/smollm2-inspired-gcrs.json \
        runs/smollm2/inspired/gcrs/snapshots/step-0025 --snapshot 25

A ``git clone`` of this repository's HEAD into a temporary folder, the README's set-up command
there (``make setup``: a new .venv), no ``cache/`` (no cached embeddings or SIDs), then
``python -m crslib train`` of the config at one thread, with the data of ``$CRSLIB_DATA``.
The trained folder's ``model_hash`` is compared with the reference folder's. ``--snapshot N``
stops the training once its step-N snapshot is saved and compares that snapshot (a long
pretrained run, checked on its first N steps: every step depends on all before it). The record
goes to ``results/<profile>/fresh_clone/<variant>.json`` (commit, seconds, both hashes, match).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from crslib import config, report
from crslib.training import run

REPO = Path(__file__).resolve().parent.parent


def sh(cmd: list[str], cwd: Path, env: dict, log) -> None:
    log.write(f"$ {' '.join(cmd)}\n")
    log.flush()
    subprocess.run(cmd, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT, check=True)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("config")
    p.add_argument("reference", type=Path, help="the shipped run (or snapshot) folder")
    p.add_argument("--snapshot", type=int, default=None)
    p.add_argument("--workdir", default=None, help="default: a new temporary folder")
    args = p.parse_args(argv)
    rc = config.load(args.config)
    ref_hash = run.model_hash(args.reference)
    work = Path(args.workdir or tempfile.mkdtemp(prefix="fresh-clone-"))
    work.mkdir(parents=True, exist_ok=True)
    clone = work / "crslib"
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True,
                            text=True, check=True).stdout.strip()
    env = {k: v for k, v in os.environ.items() if k not in ("CRSLIB_CACHE", "CRSLIB_RUNS",
                                                             "CRSLIB_RESULTS", "VIRTUAL_ENV")}
    env["OMP_NUM_THREADS"] = "1"
    t0 = time.perf_counter()
    with (work / "log.txt").open("w") as log:
        sh(["git", "clone", "--quiet", str(REPO), str(clone)], work, env, log)
        sh(["make", "setup"], clone, env, log)
        setup_s = time.perf_counter() - t0
        # a new folder: the clone holds the shipped run itself, which train would just reuse
        out = clone / "fresh-check" / rc.profile / rc.dataset / rc.variant
        cfg_path = clone / Path(args.config)
        if args.snapshot:  # snapshot_every is a runtime key: the same run, saved at step N too
            cfg = json.loads(cfg_path.read_text())
            cfg["train"] = {**cfg["train"], "snapshot_every": args.snapshot}
            cfg_path = work / f"snapshot-{cfg_path.name}"
            cfg_path.write_text(json.dumps(cfg, indent=1))
        cmd = [str(clone / ".venv/bin/python"), "-m", "crslib", "train", "--config",
               str(cfg_path), "--out", str(out), "--threads", "1", "--quiet"]
        log.write(f"$ {' '.join(cmd)}\n")
        log.flush()
        proc = subprocess.Popen(cmd, cwd=clone, env=env, stdout=log, stderr=subprocess.STDOUT)
        target = out / "snapshots" / f"step-{args.snapshot:04d}" if args.snapshot else out
        marker = target / ("snapshot.json" if args.snapshot else "train_summary.json")
        while proc.poll() is None and not marker.is_file():
            time.sleep(10)
        if args.snapshot and proc.poll() is None:
            proc.terminate()
            proc.wait()
        if not marker.is_file():
            raise SystemExit(f"training ended (rc {proc.returncode}) without {marker}; "
                             f"see {work / 'log.txt'}")
    got = run.model_hash(target)
    record = {"config": args.config, "commit": commit, "clone": str(clone),
              "reference": str(args.reference), "reference_model_hash": ref_hash,
              "fresh_model_hash": got, "match": got == ref_hash, "snapshot_step": args.snapshot,
              "setup_seconds": round(setup_s, 1),
              "train_seconds": round(time.perf_counter() - t0 - setup_s, 1),
              "threads": 1, "cache": "none (fresh clone)"}
    path = report.RESULTS / rc.profile / "fresh_clone" / f"{rc.dataset}-{rc.variant}.json"
    report.write_json(record, path)
    print(json.dumps(record, indent=1))
    return 0 if record["match"] else 1


if __name__ == "__main__":
    sys.exit(main())
