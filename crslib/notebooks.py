"""Run the numbered notebooks in order through papermill (``make reproduce`` / ``make smoke``).

Each notebook ``notebooks/NN_name.ipynb`` is executed with ``profile`` injected into its
``parameters`` cell and written to ``--out``. The first failure stops the run and names the
notebook. Seconds per notebook go to ``results/<profile>/reproduce_times.json``.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

from crslib import paths, report

# A profile that reproduces only some tables runs only their notebooks (``make reproduce
# PROFILE=smollm2``: Tables 1/2 and 4, the claims, the case studies on the pretrained backbone).
PROFILE_NOTEBOOKS = {"smollm2": ("03", "05", "08")}


class NotebookFailed(RuntimeError):
    pass


def numbered_notebooks(folder: Path = paths.REPO / "notebooks") -> list[Path]:
    return sorted(p for p in folder.glob("[0-9][0-9]_*.ipynb"))


def run_all(profile: str, out: Path, only: list[str] | None = None,
            results: Path | None = None) -> dict[str, float]:
    """Execute the profile's notebooks into ``out``; their seconds go to
    ``<results>/<profile>/reproduce_times.json`` (default: ``$CRSLIB_RESULTS``, else
    ``results/``)."""
    import papermill as pm
    results = Path(results) if results is not None else report.RESULTS
    out.mkdir(parents=True, exist_ok=True)
    for var in ("CRSLIB_DATA", "CRSLIB_CACHE", "CRSLIB_RESULTS", "CRSLIB_RUNS"):  # kernels run in notebooks/
        if os.environ.get(var):
            os.environ[var] = str(Path(os.environ[var]).resolve())
    times: dict[str, float] = {}
    only = only or PROFILE_NOTEBOOKS.get(profile)
    for nb in numbered_notebooks():
        if only and not any(nb.name.startswith(o) for o in only):
            continue
        t0 = time.perf_counter()
        try:
            pm.execute_notebook(str(nb), str(out / nb.name), parameters={"profile": profile},
                                cwd=str(paths.REPO / "notebooks"), progress_bar=False)
        except Exception as e:  # papermill raises PapermillExecutionError with the cell
            raise NotebookFailed(f"notebook {nb.name} failed (profile={profile}); executed "
                                 f"copy with the error: {out / nb.name}\n{e}") from e
        times[nb.name] = round(time.perf_counter() - t0, 1)
        print(f"{nb.name}: {times[nb.name]} s", flush=True)
    path = results / profile / "reproduce_times.json"
    seconds = json.loads(path.read_text())["seconds"] if path.is_file() else {}
    report.write_json({"profile": profile, "seconds": {**seconds, **times}}, path)
    return times
