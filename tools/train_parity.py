"""Training parity after a restructuring: retrain configs into a scratch folder and compare the
weights' hash with a reference run folder trained before the change.

    python tools/train_parity.py [--profile smoke] [--runs inspired/gcrs inspired/decoupled]
                                 [--reference runs] [--scratch /tmp/train_parity]

For each ``dataset/variant`` the config ``<profile>-<dataset>-<variant>.json`` is trained into
``SCRATCH/<profile>/<dataset>/<variant>`` (one thread, as the reference runs were) and its
``model_hash`` is compared with ``REFERENCE/<profile>/<dataset>/<variant>/train_summary.json``
(same config hash required). Writes ``results/<profile>/train_parity.json`` and exits 1 when a
hash differs.
"""
import argparse
import json
import sys
from pathlib import Path

from crslib import paths, report
from crslib.training import run

DEFAULT_RUNS = ("inspired/gcrs", "inspired/decoupled", "inspired/all_embeddings",
                "inspired/tiger", "inspired/sid")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--profile", default="smoke")
    ap.add_argument("--runs", nargs="+", default=list(DEFAULT_RUNS))
    ap.add_argument("--reference", default=str(paths.REPO / "runs"))
    ap.add_argument("--scratch", default="/tmp/train_parity")
    ap.add_argument("--data-root", default=None)
    args = ap.parse_args(argv)
    rows = []
    for name in args.runs:
        dataset, variant = name.split("/")
        cfg = run.load_config(run.config_path(args.profile, dataset, variant))
        ref_folder = Path(args.reference) / args.profile / dataset / variant
        ref = json.loads((ref_folder / "train_summary.json").read_text())
        ref_cfg = json.loads((ref_folder / "config.json").read_text())
        if ref_cfg.get("config_hash") != run.config_hash(cfg):
            rows.append({"run": name, "identical": None,
                         "note": "the reference was trained from another config"})
            continue
        summary = run.train_run(cfg, Path(args.scratch) / args.profile / dataset / variant,
                                args.data_root, progress=False)
        rows.append({"run": name, "identical": summary["model_hash"] == ref["model_hash"],
                     "model_hash": summary["model_hash"], "reference": ref["model_hash"],
                     "final_loss": summary["final_loss"], "reference_loss": ref["final_loss"]})
        print(json.dumps(rows[-1]), flush=True)
    report.write_json({"profile": args.profile, "runs": rows},
                      paths.REPO / "results" / args.profile / "train_parity.json")
    return 0 if all(r["identical"] is not False for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
