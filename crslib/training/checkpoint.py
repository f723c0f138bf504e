"""A run folder's config and checkpoint: written atomically, resumed only with the same config."""
from __future__ import annotations

import json
import os
import random
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from crslib import report
from crslib.config import TrainConfig

RUNTIME_KEYS = TrainConfig.RUNTIME  # how a run is executed, not what it trains


@dataclass
class TrainState:
    """Where a run's loop stands: saved in each checkpoint (as a dict), resumed from it."""
    step: int = 0
    epoch: int = 0
    tokens: int = 0
    seconds: float = 0.0
    losses: list = field(default_factory=list)


def write_config(out: Path, config: dict) -> None:
    report.write_text(json.dumps(config, indent=1, default=str), out / "config.json")


def check_resume_config(out: Path, config: dict) -> None:
    """Refuse to resume the checkpoint in ``out`` under another training config. A key the
    checkpoint's config lacks counts as equal when the new value is the default (a field added
    to :class:`TrainConfig` later, set to what the old code did)."""
    path = out / "config.json"
    if (out / "checkpoint").is_dir() and path.is_file():
        old = json.loads(path.read_text())
        old_train = {k: v for k, v in old.get("train", {}).items() if k not in RUNTIME_KEYS}
        defaults = json.loads(json.dumps(asdict(TrainConfig()), default=str))
        new_train = {k: v for k, v in json.loads(json.dumps(config["train"], default=str)).items()
                     if k not in RUNTIME_KEYS  # as written (tuples become lists)
                     and (k in old_train or v != defaults.get(k))}
        if old_train != new_train:
            raise ValueError(f"{out}: holds a checkpoint of a different config; use a new --out "
                             "or delete the folder")


def save_checkpoint(out: Path, model, emb, opt, sched, state: TrainState) -> None:
    tmp = out / "checkpoint.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    trainable = {n: p.detach().cpu() for n, p in model.named_parameters() if p.requires_grad}
    rng = {"torch": torch.get_rng_state(), "python": random.getstate(),
           "numpy": np.random.get_state()}
    if torch.cuda.is_available():  # dropout on a GPU draws from its own generator
        rng["cuda"] = torch.cuda.get_rng_state_all()
    torch.save({"trainable": trainable, "emb": {k: v.cpu() for k, v in emb.state_dict().items()},
                "opt": opt.state_dict(), "sched": sched.state_dict(), "state": asdict(state),
                "rng": rng}, tmp / "state.pt")
    final = out / "checkpoint"
    old = out / "checkpoint.old"
    if final.exists():
        os.replace(final, old)
    os.replace(tmp, final)
    if old.exists():
        shutil.rmtree(old)


def load_checkpoint(out: Path, model, emb, opt, sched, state: TrainState) -> None:
    path = out / "checkpoint" / "state.pt"
    if not path.is_file():
        return
    ck = torch.load(path, weights_only=False, map_location="cpu")
    params = dict(model.named_parameters())
    with torch.no_grad():
        for n, v in ck["trainable"].items():
            params[n].copy_(v)
    emb.load_state_dict(ck["emb"])
    opt.load_state_dict(ck["opt"])
    sched.load_state_dict(ck["sched"])
    for k, v in ck["state"].items():
        setattr(state, k, v)
    torch.set_rng_state(ck["rng"]["torch"])
    random.setstate(ck["rng"]["python"])
    np.random.set_state(ck["rng"]["numpy"])
    if "cuda" in ck["rng"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(ck["rng"]["cuda"])
