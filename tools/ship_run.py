"""Ship finished runs: compact them and stage exactly their files for a commit.

    python tools/ship_run.py runs/smollm2/redial/tiger [more run folders]
    python tools/ship_run.py --snapshots runs/smollm2/inspired/gcrs_curve222


For each finished run (``train_summary.json`` written, config hash current): a LoRA adapter
saved in float32 (by code older than ``crslib.training.model.ADAPTER_DTYPE``) is rewritten in
bfloat16 and ``train_summary.json`` gets the new ``model_hash`` (score it after shipping: results
are tied to the stored weights); then ``git add`` of the run's own files (config, log, model,
output vocabulary, SIDs, summary), never its checkpoints (``work-*``). With ``--snapshots``
its snapshots too (``snapshots/step-*``, compacted the same way, ``snapshot.json`` given the new
``model_hash``): for a run whose snapshots were scored, such as the learning curve's. Prints one
JSON line per run with the bytes staged.
"""
import json
import subprocess
import sys
from pathlib import Path

from crslib import report
from crslib.training import model, run

FILES = ("config.json", "log.jsonl", "output_vocab.json", "sids.json", "train_summary.json",
         "snapshot.json")


def _compact(folder: Path, record: str) -> tuple[str, bool, list[Path]]:
    """Compact ``folder``'s adapter, write the new hash into its ``record`` file; the hash,
    whether it converted, and the files to stage."""
    converted = (folder / "model" / model.ADAPTER_FILE).is_file() and \
        model.compact_adapter(folder / "model")
    path = folder / record
    summary = json.loads(path.read_text())
    new_hash = run.model_hash(folder)
    if summary.get("model_hash") != new_hash:
        summary["model_hash"] = new_hash
        report.write_json(summary, path)  # atomic, like every writer
    paths = [folder / f for f in FILES if (folder / f).is_file()]
    paths += sorted(p for p in (folder / "model").rglob("*") if p.is_file())
    return new_hash, bool(converted), paths


def ship(folder: Path, snapshots: bool = False) -> dict:
    cfg = run.saved_config(folder)
    if not run.is_finished(cfg, folder):
        raise SystemExit(f"{folder}: not a finished run of its config")
    new_hash, converted, paths = _compact(folder, "train_summary.json")
    snaps = {}
    for snap in sorted((folder / "snapshots").glob("step-*")) if snapshots else ():
        if not (snap / "snapshot.json").is_file():
            raise SystemExit(f"{snap}: an unfinished snapshot (no snapshot.json)")
        snaps[snap.name], _, more = _compact(snap, "snapshot.json")
        paths += more
    subprocess.run(["git", "add", "--", *map(str, paths)], check=True)
    return {"run": str(folder), "model_hash": new_hash, "adapter_converted": converted,
            "snapshots": snaps, "bytes": sum(p.stat().st_size for p in paths)}


if __name__ == "__main__":
    args = sys.argv[1:]
    with_snapshots = "--snapshots" in args
    for arg in (a for a in args if a != "--snapshots"):
        print(json.dumps(ship(Path(arg), with_snapshots)), flush=True)
