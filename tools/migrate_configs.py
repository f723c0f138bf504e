"""Bring run folders and result files written before typed configs (``crslib.config``) up to date.

    python tools/migrate_configs.py [--runs runs] [--results results] [--dry-run]

Before, a config had no ``format``/``ranker`` keys (the variant's name decided them, through a
table in ``crslib.training.run``) and its hash was taken over the raw dict. Now both are keys and
the hash is taken from the resolved config, so the same run has another ``config_hash``. This tool:

* run folders (``runs/**/config.json``, with a ``model/`` or ``work-*`` beside it): when the
  stored hash is the old hash of the stored config, adds ``format`` and ``ranker`` from the old
  table, writes the resolved config with its new hash, and renames ``work-<old>`` to
  ``work-<new>`` (so an unfinished run resumes); a folder whose ``.lock`` names a live process
  is left alone (run the tool again once it is done);
* result files (``results/**/*.json`` with a ``config_hash``): a hash that is the old hash of a
  current config file (that file without ``format``/``ranker``, as it was) becomes the new one.

The weights are untouched, and so is ``model_hash``, by which results are tied to the weights.
It changes nothing twice; it prints every change and the hashes it could not place.
"""
import argparse
import hashlib
import json
import os
import sys
from pathlib import Path

from crslib import config, paths, report
from crslib.training import run
from crslib.training.runbase import is_locked

LEGACY_FORMATS = {"resp": "resp", "mode_resp": "mode_resp", "sid": "sid", "tiger": "tiger"}
LEGACY_RANKERS = {"decoupled": "item_head"}


def legacy_hash(cfg: dict) -> str:
    """The config hash as ``crslib.training.runbase.config_hash`` computed it before typed
    configs."""
    keep = {k: v for k, v in cfg.items() if k not in ("config_hash", "threads")}
    if isinstance(keep.get("train"), dict):
        keep["train"] = {k: v for k, v in keep["train"].items()
                         if k not in ("threads", "time_limit_minutes")}
    return hashlib.sha256(json.dumps(keep, sort_keys=True).encode()).hexdigest()[:12]


def with_variant_keys(cfg: dict) -> dict:
    """A pre-typed config with the ``format`` and ``ranker`` its variant name implied."""
    head = {k: cfg[k] for k in ("profile", "dataset", "variant") if k in cfg}
    return {**head, "format": LEGACY_FORMATS.get(cfg["variant"], "gcrs"),
            "ranker": LEGACY_RANKERS.get(cfg["variant"], "generative"),
            **{k: v for k, v in cfg.items() if k not in head}}


def hash_map() -> dict[str, str]:
    """Old hash -> new hash of every config file (and of its ``paper-dry`` form)."""
    out = {}
    for path in sorted(run.CONFIGS.glob("*.json")):
        raw = json.loads(path.read_text())
        old = {k: v for k, v in raw.items() if k not in ("format", "ranker")}
        out[legacy_hash(old)] = config.config_hash(config.load(path))
    return out


def being_trained(folder: Path) -> str | None:
    """Why ``folder`` is left alone when a training holds its lock; else None."""
    if is_locked(folder):
        return f"SKIPPED {folder}: being trained (its .lock is held)"
    return None


def migrate_run(cfg_file: Path, dry: bool) -> str | None:
    folder = cfg_file.parent
    stored = json.loads(cfg_file.read_text())
    if "format" in stored:
        return None
    busy = being_trained(folder)
    if busy:
        return busy
    old = stored.get("config_hash")
    if old != legacy_hash(stored):
        return f"SKIPPED {folder}: its config_hash {old} is not the hash of its config"
    resolved = config.RunConfig.from_dict(with_variant_keys(stored), str(cfg_file))
    new = config.config_hash(resolved)
    if not dry:
        report.write_json({**resolved.to_dict(), "config_hash": new}, cfg_file)
        if (folder / f"work-{old}").is_dir() and not (folder / f"work-{new}").exists():
            os.replace(folder / f"work-{old}", folder / f"work-{new}")
    return f"{folder}: config_hash {old} -> {new}"


def migrate_work(folder: Path, dry: bool, table: dict) -> str | None:
    """An unfinished run (a ``work-<old>`` folder, no finished config.json of the new kind)."""
    busy = being_trained(folder)
    if busy:
        return busy
    out = []
    for work in sorted(folder.glob("work-*")):
        old = work.name[len("work-"):]
        new = table.get(old)
        if new and new != old and not (folder / f"work-{new}").exists():
            if not dry:
                os.replace(work, folder / f"work-{new}")
            out.append(f"{work} -> work-{new}")
    return "; ".join(out) or None


def migrate_result(path: Path, table: dict, dry: bool) -> str | None:
    try:
        res = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    if not isinstance(res, dict) or "config_hash" not in res:
        return None
    old = res["config_hash"]
    new = table.get(old)
    if new is None:
        return None if old in table.values() else f"UNPLACED {path}: config_hash {old}"
    if not dry:
        report.write_json({**res, "config_hash": new}, path)
    return f"{path}: {old} -> {new}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", default=str(paths.REPO / "runs"))
    ap.add_argument("--results", default=str(paths.REPO / "results"))
    ap.add_argument("--dry-run", action="store_true")
    args = ap.parse_args(argv)
    table = hash_map()
    lines = []
    for cfg_file in sorted(Path(args.runs).rglob("config.json")):
        if cfg_file.parent.name.startswith("work-") or cfg_file.parent.name in ("model", "model.tmp"):
            continue
        lines.append(migrate_run(cfg_file, args.dry_run))
    for folder in sorted({p.parent for p in Path(args.runs).rglob("work-*")}):
        lines.append(migrate_work(folder, args.dry_run, table))
    for path in sorted(Path(args.results).rglob("*.json")):
        lines.append(migrate_result(path, table, args.dry_run))
    lines = [x for x in lines if x]
    print("\n".join(lines) or "nothing to migrate")
    return 1 if any(x.startswith("SKIPPED") for x in lines) else 0


if __name__ == "__main__":
    sys.exit(main())
