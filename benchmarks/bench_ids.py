"""Time the semantic-ID pipeline on a real catalog; print one JSON object.

    python benchmarks/bench_ids.py [--dataset redial] [--data-root DIR] [--skip-cold] [--out F]

* ``encode_cold_s``: first-time encoding of every ``Item.text()`` with the default encoder
  (MiniLM), into a fresh temporary cache; ``encode_warm_s``: the same call again (cache hit);
* ``rqvae_s`` / ``rqkmeans_s``: ``build_semantic_ids`` from cached embeddings (cache read,
  fit, transform, collision re-assignment, statistics), defaults 4 x 64, seed 0.

With ``--skip-cold`` the existing cache (``$CRSLIB_CACHE`` or ``cache/``) is used and the
cold encoding is not timed; ``--quick`` times INSPIRED (1.5k items) from the cache, RQ-VAE
for 10 epochs, a check that it runs. ``ratios.rqvae_over_rqkmeans`` compares the two
quantizers within one run. Limits checked (issue "Semantic IDs", 2-core CPU, ReDial):
RQ-VAE < 60 s, RQ-KMeans < 15 s, cold MiniLM encoding < 300 s.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time

LIMITS = {"rqvae_s": 60.0, "rqkmeans_s": 15.0, "encode_cold_s": 300.0}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dataset", choices=["redial", "inspired"], default="redial")
    p.add_argument("--data-root", default=None, help="default: $CRSLIB_DATA or data/")
    p.add_argument("--skip-cold", action="store_true", help="do not time first-time encoding")
    p.add_argument("--quick", action="store_true", help="INSPIRED, cached, RQ-VAE 10 epochs")
    p.add_argument("--out", default=None, help="also write the JSON here")
    args = p.parse_args(argv)
    if args.quick:
        args.dataset, args.skip_cold = "inspired", True
    params = {"rqvae": {"epochs": 10} if args.quick else {}, "rqkmeans": {}}

    tmp = None
    if not args.skip_cold:
        tmp = tempfile.TemporaryDirectory(prefix="bench_ids_")
        os.environ["CRSLIB_CACHE"] = tmp.name  # fresh cache: the first encode is cold

    import torch

    from crslib import data
    from crslib.ids import encode, semantic_ids

    t = time.perf_counter()
    root = data.data_root(args.data_root) / args.dataset
    catalog = (data.load_redial_catalog if args.dataset == "redial"
               else data.load_inspired_catalog)(root)
    out: dict = {"dataset": args.dataset, "items": len(catalog),
                 "catalog_load_s": round(time.perf_counter() - t, 2),
                 "encoder": encode.DEFAULT_ENCODER, "quick": args.quick,
                 "torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
                 "torch": torch.__version__, "python": platform.python_version()}
    if not args.skip_cold:
        t = time.perf_counter()
        encode.encode_items(catalog, progress=False)
        out["encode_cold_s"] = round(time.perf_counter() - t, 2)
    t = time.perf_counter()
    encode.encode_items(catalog, progress=False)
    out["encode_warm_s"] = round(time.perf_counter() - t, 2)

    raw = {}
    for method in ("rqvae", "rqkmeans"):
        t = time.perf_counter()
        sids = semantic_ids.build_semantic_ids(catalog, method, **params[method])
        raw[method] = time.perf_counter() - t
        out[f"{method}_s"] = round(raw[method], 2)
        s = sids.stats
        out[method] = {"unique": s["collisions_after"] == 0, "seconds": s["seconds"],
                       "collisions_before": s["collisions_before"],
                       "moved_items": s["moved_items"],
                       "utilization": s["after"]["utilization"],
                       "reconstruction_error": round(s["reconstruction_error"]["unique"], 4)}
        out[method]["params"] = sids.config["params"]
    out["ratios"] = {"rqvae_over_rqkmeans": round(raw["rqvae"] / raw["rqkmeans"], 3)}
    out["within_limits"] = {k: out[k] < v for k, v in LIMITS.items() if k in out}
    json.dump(out, sys.stdout, indent=1)
    sys.stdout.write("\n")
    if args.out:
        from crslib.report import write_json
        write_json(out, args.out)
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
