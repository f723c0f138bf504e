"""Bring recorded model hashes up to the current ``crslib.training.runbase.model_hash``.

    python tools/rehash_runs.py [--dry-run]

``model_hash`` once hashed every byte of a run's ``model/`` folder, including what only records
the machine that saved it (the transformers and peft versions, the venv's path of the base
model, peft's model card): the very same weights retrained in a fresh clone got another hash.
It now leaves those out (``runbase.VOLATILE_KEYS``). For every run folder under ``runs/``
(finished runs and learning-curve snapshots) this tool computes the hash both ways and replaces
the old one by the new one wherever it is recorded: ``runs/**/{train_summary,snapshot}.json``,
``results/**``, ``notebooks/executed/**`` and ``README.md``. The weights are untouched. Run it
again after a training started under the old code finishes; it changes nothing twice.
"""
import argparse
import hashlib
import json
import sys
from pathlib import Path

from crslib.training import run

REPO = Path(__file__).resolve().parent.parent
TEXT = (".json", ".md", ".ipynb")


def legacy_model_hash(path: Path) -> str:
    """``model_hash`` as it was: sha256 over the names and raw bytes of every model file."""
    files = sorted(p for p in (path / "model").rglob("*") if p.is_file())
    files += [p for p in (path / "head.safetensors",) if p.is_file()]
    h = hashlib.sha256()
    for f in files:
        h.update(f.relative_to(path).as_posix().encode() + b"\0")
        h.update(f.read_bytes())
    return h.hexdigest()[:16]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dry-run", action="store_true")
    args = p.parse_args(argv)
    folders = sorted({m.parent for m in (REPO / "runs").rglob("model") if m.is_dir()})
    mapping = {}
    for f in folders:
        old, new = legacy_model_hash(f), run.model_hash(f)
        if old != new:
            mapping[old] = new
            print(json.dumps({"run": str(f.relative_to(REPO)), "old": old, "new": new}))
    files = [REPO / "README.md"]
    for root in ("results", "notebooks/executed", "runs"):
        files += [q for q in (REPO / root).rglob("*") if q.is_file() and q.suffix in TEXT
                  and (root != "runs" or q.name in ("train_summary.json", "snapshot.json"))]
    changed = 0
    for q in files:
        text = q.read_text()
        new_text = text
        for old, new in mapping.items():
            new_text = new_text.replace(old, new)
        if new_text != text:
            changed += 1
            if not args.dry_run:
                q.write_text(new_text)
    print(json.dumps({"runs": len(folders), "rehashed": len(mapping), "files_changed": changed,
                      "dry_run": args.dry_run}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
