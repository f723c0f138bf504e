"""``python -m crslib <command>``: one sub-command per job; each prints one JSON object."""
from __future__ import annotations

import argparse
import json
import sys


def _print(obj) -> None:
    json.dump(obj, sys.stdout, indent=1)
    sys.stdout.write("\n")


def cmd_data_stats(args) -> int:
    from crslib import data, stats
    _print(stats.dataset_stats(data.load(args.dataset, args.data_root, strict=args.strict)))
    return 0


def cmd_data_download(args) -> int:
    from crslib import download
    _print(download.download(args.dataset, args.data_root, force=args.force))
    return 0


def cmd_notebooks(args) -> int:
    from pathlib import Path
    from crslib import notebooks
    try:
        notebooks.run_all(args.profile, Path(args.out), args.only)
    except notebooks.NotebookFailed as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m crslib", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    d = sub.add_parser("data", help="dataset statistics and downloads")
    dsub = d.add_subparsers(dest="data_command", required=True)
    s = dsub.add_parser("stats", help="per-split counts as JSON")
    s.add_argument("--dataset", choices=["redial", "inspired"], required=True)
    s.add_argument("--data-root", default=None, help="default: $CRSLIB_DATA or data/")
    s.add_argument("--strict", action="store_true", help="raise on the first bad record")
    s.set_defaults(func=cmd_data_stats)
    g = dsub.add_parser("download", help="fetch the official files (needs internet)")
    g.add_argument("--dataset", choices=["redial", "inspired", "all"], default="all")
    g.add_argument("--data-root", default=None)
    g.add_argument("--force", action="store_true", help="re-download files already present")
    g.set_defaults(func=cmd_data_download)

    n = sub.add_parser("notebooks", help="run the numbered notebooks in order (papermill)")
    n.add_argument("--profile", default="cpu", help="smoke | cpu | paper")
    n.add_argument("--out", required=True, help="folder for the executed copies")
    n.add_argument("--only", nargs="*", help="notebook name prefixes, e.g. 00 03")
    n.set_defaults(func=cmd_notebooks)

    # further sub-commands (ids, bench, train, evaluate) are added below, one block each
    return p


def main(argv: list[str] | None = None) -> int:
    from crslib.data import DataError
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
