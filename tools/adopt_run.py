"""Adopt a finished run as the run of another config that trains the very same model.

    python tools/adopt_run.py runs/cpu/redial/backbone_smollm2_135m \
        crslib/configs/smollm2-redial-gcrs.json runs/smollm2/redial/gcrs

The two configs must be identical in everything that is trained (``RunConfig.identity``) but
their names (``profile``, ``variant``): then the run's weights ARE the other config's run. The
folder is copied (model, tokenizer, SIDs, log, vocabulary, summary) and its ``config.json``
replaced by the new config with its hash; the weights, hence ``model_hash``, are unchanged.
Refuses anything else, and never replaces an existing target.
"""
import argparse
import json
import shutil
import sys
from pathlib import Path

from crslib import config
from crslib.training import run

NAMES = ("profile", "variant")


def adopt(source: Path, config_file: Path, target: Path) -> dict:
    old = run.saved_config(source)
    new = config.load(config_file)
    a = {k: v for k, v in old.identity().items() if k not in NAMES}
    b = {k: v for k, v in new.identity().items() if k not in NAMES}
    diff = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
    if diff:
        raise SystemExit(f"{source} and {config_file} train different models: {diff} differ")
    if not run.is_finished(run.saved_config(source), source):
        raise SystemExit(f"{source}: not a finished run")
    if target.exists():
        raise SystemExit(f"{target} exists; adopt into a new folder")
    tmp = target.with_name(target.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(source, tmp, ignore=shutil.ignore_patterns("work-*", ".lock", "snapshots"))
    (tmp / "config.json").write_text(json.dumps(new.saved_form(), indent=1))
    tmp.rename(target)
    return {"source": str(source), "target": str(target), "config_hash": new.config_hash,
            "model_hash": run.model_hash(target), "source_model_hash": run.model_hash(source),
            "finished": run.is_finished(new, target)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("source", type=Path)
    p.add_argument("config", type=Path)
    p.add_argument("target", type=Path)
    args = p.parse_args(argv)
    print(json.dumps(adopt(args.source, args.config, args.target), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
