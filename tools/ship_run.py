"""Ship finished runs: compact them and stage exactly their files for a commit.

    python tools/ship_run.py runs/smollm2/redial/tiger [more run folders]
    python tools/ship_run.py --snapshots runs/smollm2/inspired/gcrs_curve222
    python tools/ship_run.py --park runs/smollm2/redial/gcrs_curve530   # an unfinished run

For each finished run (``train_summary.json`` written, config hash current): a LoRA adapter
saved in float32 (by code older than ``crslib.training.model.ADAPTER_DTYPE``) is rewritten in
bfloat16 and ``train_summary.json`` gets the new ``model_hash`` (score it after shipping: results
are tied to the stored weights); then ``git add`` of the run's own files (config, log, model,
output vocabulary, SIDs, summary), never its checkpoints (``work-*``). With ``--snapshots``
its snapshots too (``snapshots/step-*``, compacted the same way, ``snapshot.json`` given the new
``model_hash``): for a run whose snapshots were scored, such as the learning curve's. Prints one
JSON line per run with the bytes staged.

With ``--park``, an *unfinished* run is carried over to a later session: its work folder
(``work-<config hash>/``: the checkpoint with weights, optimizer, schedule, random states and loop
position; the config and log) and its snapshots so far are staged, so a fresh checkout resumes it
exactly where it stopped (``crslib train`` with the same config and ``--out``). A session's
machine keeps no untracked files, so a multi-hour run that is not parked restarts from step 0.
It refuses a run that is training right now (its lock is held: stop it first, the checkpoint is
only consistent between steps). Shipping the finished run later unstages its work folder.
"""
import json
import subprocess
import sys
from pathlib import Path

from crslib import report
from crslib.training import model, run, runbase

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


WORK_SKIP = ("checkpoint.tmp", "checkpoint.old")  # a save in progress, never a resume point


def _git(*args: str, cwd: Path | None = None) -> str:
    return subprocess.run(["git", *args], check=True, capture_output=True, text=True,
                          cwd=cwd).stdout


def park(folder: Path) -> dict:
    """Stage the unfinished run in ``folder``: its work folders' checkpoints, configs and logs,
    and its snapshots (see the module docstring)."""
    if runbase.is_locked(folder):
        raise SystemExit(f"{folder}: being trained right now (its .lock is held); stop it, then "
                         "park it")
    works = [w for w in sorted(folder.glob("work-*"))
             if (w / "checkpoint" / "state.pt").is_file()]
    if not works:
        raise SystemExit(f"{folder}: no work folder with a checkpoint (work-*/checkpoint/state.pt)")
    paths = [p for w in works for p in sorted(w.rglob("*"))
             if p.is_file() and not set(WORK_SKIP) & set(p.relative_to(w).parts)]
    steps = {}
    for snap in sorted((folder / "snapshots").glob("step-*")):
        if not (snap / "snapshot.json").is_file():
            raise SystemExit(f"{snap}: an unfinished snapshot (no snapshot.json)")
        steps[snap.name], _, more = _compact(snap, "snapshot.json")
        paths += more
    subprocess.run(["git", "add", "-f", "--", *map(str, paths)], check=True)
    return {"parked": str(folder), "work": [w.name for w in works], "snapshots": steps,
            "bytes": sum(p.stat().st_size for p in paths)}


def ship(folder: Path, snapshots: bool = False) -> dict:
    cfg = run.saved_config(folder)
    if not run.is_finished(cfg, folder):
        raise SystemExit(f"{folder}: not a finished run of its config")
    parked = [p for p in _git("ls-files", cwd=folder).splitlines()  # relative to folder
              if p.startswith("work-")]
    if parked:  # the checkpoint that carried it over is no longer needed (kept on disk)
        subprocess.run(["git", "rm", "-q", "--cached", "--", *parked], check=True, cwd=folder)
    new_hash, converted, paths = _compact(folder, "train_summary.json")
    snaps = {}
    for snap in sorted((folder / "snapshots").glob("step-*")) if snapshots else ():
        if not (snap / "snapshot.json").is_file():
            raise SystemExit(f"{snap}: an unfinished snapshot (no snapshot.json)")
        snaps[snap.name], _, more = _compact(snap, "snapshot.json")
        paths += more
    subprocess.run(["git", "add", "-f", "--", *map(str, paths)], check=True)  # named files only
    return {"run": str(folder), "model_hash": new_hash, "adapter_converted": converted,
            "snapshots": snaps, "bytes": sum(p.stat().st_size for p in paths),
            "unparked": len(parked)}


if __name__ == "__main__":
    args = sys.argv[1:]
    with_snapshots, parking = "--snapshots" in args, "--park" in args
    for arg in (a for a in args if a not in ("--snapshots", "--park")):
        out = park(Path(arg)) if parking else ship(Path(arg), with_snapshots)
        print(json.dumps(out), flush=True)
