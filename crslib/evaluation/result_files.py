"""Result files: one JSON per run, protocol and split, tied to the config and the weights that
made it (``config_hash``, ``model_hash``), reused only by that model."""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Callable, Sequence

from crslib import config, metrics, report
from crslib.training import run


def result_path(profile: str, dataset: str, variant: str, protocol: str,
                split: str = "test") -> Path:
    """Where every result lives: ``results/<profile>/<dataset>/<variant>.<protocol>.json``
    (``protocol``: a ranking protocol, ``dialog``, or a study's name — ``coldstart``,
    ``freemode``, ``decoding``, ``request``). A ranking protocol scored on another split than
    the test split lives in that split's folder (``results/<profile>/<dataset>/dev/...``), so a
    validation score never takes the place of a test one; a study's file names its split inside."""
    folder = report.RESULTS / profile / dataset
    return (folder if split == "test" else folder / split) / f"{variant}.{protocol}.json"


def identity(cfg: config.RunConfig, run_path=None) -> dict:
    """What a result is tied to: the config hash and, for a trained ranker (``run_path``), the
    hash of the weights on disk (:func:`crslib.training.run.model_hash`); a baseline has no weights
    (``model_hash`` None: it is fitted from the data by its config, deterministically)."""
    return {"config_hash": run.config_hash(cfg),
            "model_hash": run.model_hash(run_path) if run_path is not None else None}


def run_meta(profile: str, dataset: str, variant: str, split: str, protocol: str,
             cfg: config.RunConfig, folder) -> dict:
    """What opens the result file of a study of one trained run (:func:`scored`'s ``meta``):
    where it lives, the split it read, and the run's :func:`identity`."""
    return {"dataset": dataset, "split": split, "profile": profile, "variant": variant,
            **identity(cfg, folder), "protocol": protocol}


def saved_result(path: Path, who: dict, limit, split: str, say=print) -> dict | None:
    """The result saved at ``path`` if the same model (``who``: :func:`identity`) scored it on
    the same sample and split; else None, and ``say`` tells why a file there is not reused
    (so a notebook shows that it recomputes)."""
    if not path.is_file():
        return None
    old = json.loads(path.read_text())
    want = {**who, "limit": limit, "split": split}
    diff = [k for k, v in want.items() if old.get(k, "(none)") != v]
    if not diff:
        return old
    say(f"recomputing {report.shown(path)}: it was scored with a different "
        + ", ".join(f"{k} ({old.get(k, '(none)')} there, {want[k]} now)" for k in diff))
    return None


def scored(meta: dict, limit, compute: Callable[[], dict], path: Path | None = None,
           reuse: bool = True, save: bool = True) -> dict:
    """The one place a result file is found, reused and written. ``meta``: ``profile``,
    ``dataset``, ``variant``, ``protocol``, ``split`` and the :func:`identity` keys (plus any
    other keys that open the file); the file is ``path`` (default :func:`result_path`). A file
    there with the same identity, sample (``limit``) and split is returned as saved (when
    ``reuse`` and ``save``); otherwise ``compute()`` gives the rest of the result, which gets
    ``limit`` and the wall ``seconds`` of the computation and is written (``save``)."""
    path = Path(path) if path else result_path(meta["profile"], meta["dataset"],
                                               meta["variant"], meta["protocol"])
    who = {k: meta[k] for k in ("config_hash", "model_hash")}
    old = saved_result(path, who, limit, meta["split"]) if reuse and save else None
    if old is not None:
        return old
    t0 = time.perf_counter()
    result = {**meta, **compute(), "limit": limit}
    result["seconds"] = round(time.perf_counter() - t0, 1)  # wall time of this scoring
    if save:
        report.write_json(result, path)
    return result


def save_result(result: dict, path: str | Path | None = None) -> Path:
    path = Path(path) if path else result_path(result["profile"], result["dataset"],
                                               result["variant"], result["protocol"])
    return report.write_json(result, path)


def seed_summary(results: Sequence[dict]) -> dict:
    """Mean and sd over seeds of several results of one protocol."""
    keys = results[0]["metrics"].keys()
    return {k: dict(zip(("mean", "sd"), metrics.mean_sd([r["metrics"][k] for r in results])))
            for k in keys}
