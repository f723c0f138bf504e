"""Parity after a restructuring: re-score committed runs and compare with the committed results.

    python tools/parity.py [--profile cpu] [--protocols paper community dialog] [--runs redial/gcrs]

Each run (default: every run the repository ships for the profile, `run_inventory.shipped_runs`)
is scored again from its saved weights with `experiments.evaluate(..., save=False, reuse=False)`
under each protocol, and compared with `results/<profile>/<dataset>/<variant>.<protocol>.json`:
metrics, intervals and per-case ranks must be identical (timings aside). Writes
`results/<profile>/parity.json` (per run and protocol: identical or the differing keys) and
exits 1 on any difference.
"""
import argparse
import json
import sys

from crslib import report
from crslib.training import run
from crslib.studies import experiments, result_tables, run_inventory

COMPARED = ("n_cases", "metrics", "ci95", "case_ranks", "model_hash", "config_hash", "limit")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--profile", default="cpu")
    ap.add_argument("--protocols", nargs="+", default=["paper", "community"])
    ap.add_argument("--runs", nargs="*", help="dataset/variant; default: the shipped runs")
    ap.add_argument("--data-root", default=None)
    args = ap.parse_args(argv)
    folders = ([experiments.RUNS / args.profile / r for r in args.runs] if args.runs else
               sorted(f for f in run_inventory.shipped_runs()
                      if f.parent.parent.name == args.profile))
    rows = []
    for folder in folders:
        cfg = json.loads((folder / "config.json").read_text())
        for protocol in args.protocols:
            saved = result_tables.load_result(args.profile, cfg["dataset"], cfg["variant"],
                                              protocol)
            if saved is None:
                rows.append({"run": f"{cfg['dataset']}/{cfg['variant']}", "protocol": protocol,
                             "identical": None, "note": "no committed result"})
                continue
            if saved.get("model_hash") != run.model_hash(folder):
                rows.append({"run": f"{cfg['dataset']}/{cfg['variant']}", "protocol": protocol,
                             "identical": None, "note": "the committed result is of other weights"})
                continue
            new = experiments.evaluate(args.profile, cfg["dataset"], cfg["variant"], protocol,
                                       args.data_root, limit=saved.get("limit"),
                                       split=saved["split"], save=False, reuse=False)
            differ = [k for k in COMPARED if saved.get(k) != new.get(k)]
            rows.append({"run": f"{cfg['dataset']}/{cfg['variant']}", "protocol": protocol,
                         "identical": not differ, "differ": differ, "n_cases": new["n_cases"],
                         "seconds": new.get("seconds")})
            print(json.dumps(rows[-1]), flush=True)
    report.write_json({"profile": args.profile, "compared": COMPARED, "rows": rows},
                      report.RESULTS / args.profile / "parity.json")
    return 0 if all(r["identical"] is not False for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
