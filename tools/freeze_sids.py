"""Commit the semantic IDs of a config as data: ``crslib/sid_maps/<dataset>-<key>.json``.

    python tools/freeze_sids.py crslib/configs/cpu-inspired-gcrs.json \
        --from runs/cpu/inspired/gcrs/sids.json
    python tools/freeze_sids.py crslib/configs/cpu-inspired-sid3x64.json   # built here

With ``--from`` the map is the SID file of a run (the SIDs it was trained on; checked to be
for the config's dataset, catalog and shape); without it the SIDs are built the canonical way
(:mod:`crslib.ids.encode`, the config's seeded quantizer) and committed. A different map already
committed under the same name is never replaced. Prints one JSON line per config.
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict

from crslib import config, data
from crslib.ids import semantic_ids
from crslib.training import runbase


def freeze(config_path: str, source: str | None, data_root: str | None) -> dict:
    rc = config.load(config_path)
    spec = asdict(rc.sids)
    catalog = data.load(rc.dataset, data_root).catalog
    if source:
        sids = semantic_ids.SemanticIDs.load(source)
        if (sids.levels, sids.codebook_size) != (rc.sids.levels, rc.sids.codebook_size):
            raise SystemExit(f"{source}: {sids.levels}x{sids.codebook_size} SIDs, but "
                             f"{config_path} asks for {rc.sids.levels}x{rc.sids.codebook_size}")
    else:
        existing = semantic_ids.committed_map(rc.dataset, spec, catalog)
        sids = existing if existing is not None else runbase.prepare_sids(rc, catalog)
    path = semantic_ids.freeze_map(sids, rc.dataset, spec, catalog)
    return {"config": config_path, "map": str(path), "items": len(sids),
            "shape": f"{sids.levels}x{sids.codebook_size}", "from": source or "built"}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("configs", nargs="+")
    p.add_argument("--from", dest="source", default=None,
                   help="a run's sids.json to commit (default: build the SIDs)")
    p.add_argument("--data-root", default=None)
    args = p.parse_args(argv)
    for c in args.configs:
        print(json.dumps(freeze(c, args.source, args.data_root)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
