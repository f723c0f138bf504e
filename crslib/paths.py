"""Where things live: the repository, and the folders a user may move with an environment
variable. Every module reads its paths here.

================  ===================  =========================================
folder            variable             default
================  ===================  =========================================
results           ``CRSLIB_RESULTS``   ``results/`` (read once, at import)
runs              ``CRSLIB_RUNS``      ``runs/`` (read once, at import)
cache             ``CRSLIB_CACHE``     ``cache/`` (read at each call)
data              ``CRSLIB_DATA``      ``data/`` (read at each call)
figures           –                    ``figures/``
================  ===================  =========================================

Inside the package: ``CONFIGS`` (the run configs), ``SID_MAPS`` (the committed SID maps),
``PAPER_RESULTS`` (the paper's reported numbers).
"""
from __future__ import annotations

import os
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent
REPO = PACKAGE.parent
CONFIGS = PACKAGE / "configs"
SID_MAPS = PACKAGE / "sid_maps"
PAPER_RESULTS = PACKAGE / "paper_results.json"
RESULTS = Path(os.environ.get("CRSLIB_RESULTS", REPO / "results"))
RUNS = Path(os.environ.get("CRSLIB_RUNS", REPO / "runs")).resolve()
FIGURES = REPO / "figures"


def cache_dir() -> Path:
    """``$CRSLIB_CACHE`` if set, else ``cache/`` in the repository root."""
    env = os.environ.get("CRSLIB_CACHE")
    return Path(env) if env else REPO / "cache"


def data_dir() -> Path:
    """``$CRSLIB_DATA`` if set, else ``data/`` in the repository root."""
    env = os.environ.get("CRSLIB_DATA")
    return Path(env) if env else REPO / "data"
