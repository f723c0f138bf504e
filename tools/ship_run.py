"""Ship finished runs: compact them and stage exactly their files for a commit.

    python tools/ship_run.py runs/smollm2/redial/tiger [more run folders]

For each finished run (``train_summary.json`` written, config hash current): a LoRA adapter
saved in float32 (by code older than ``crslib.training.model.ADAPTER_DTYPE``) is rewritten in
bfloat16 and ``train_summary.json`` gets the new ``model_hash`` (score it after shipping: results
are tied to the stored weights); then ``git add`` of the run's own files (config, log, model,
output vocabulary, SIDs, summary), never its checkpoints (``work-*``) or snapshots. Prints
one JSON line per run with the bytes staged.
"""
import json
import subprocess
import sys
from pathlib import Path

from crslib.training import model, run

FILES = ("config.json", "log.jsonl", "output_vocab.json", "sids.json", "train_summary.json")


def ship(folder: Path) -> dict:
    cfg = run.saved_config(folder)
    if not run.is_finished(cfg, folder):
        raise SystemExit(f"{folder}: not a finished run of its config")
    converted = (folder / "model" / model.ADAPTER_FILE).is_file() and \
        model.compact_adapter(folder / "model")
    summary_path = folder / "train_summary.json"
    summary = json.loads(summary_path.read_text())
    new_hash = run.model_hash(folder)
    if summary.get("model_hash") != new_hash:
        summary["model_hash"] = new_hash
        summary_path.write_text(json.dumps(summary, indent=1))
    paths = [folder / f for f in FILES if (folder / f).is_file()]
    paths += sorted(p for p in (folder / "model").rglob("*") if p.is_file())
    subprocess.run(["git", "add", "--", *map(str, paths)], check=True)
    return {"run": str(folder), "model_hash": new_hash, "adapter_converted": bool(converted),
            "bytes": sum(p.stat().st_size for p in paths)}


if __name__ == "__main__":
    for arg in sys.argv[1:]:
        print(json.dumps(ship(Path(arg))), flush=True)
