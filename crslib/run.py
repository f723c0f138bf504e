"""A GCRS run: config file -> semantic IDs -> backbone with the new tokens -> training -> a
saved run folder that reloads with one call (:func:`load_run`).

Run folder layout (standard Hugging Face files where they exist)::

    runs/NAME/config.json        resolved config (profile file + overrides), config_hash
    runs/NAME/sids.json          the semantic IDs used (with the config that built them)
    runs/NAME/model/             tokenizer + either the full model (small backbones) or the
                                 PEFT LoRA adapter and new_embeddings.safetensors (LoRA)
    runs/NAME/train_summary.json steps, epochs, tokens/s, seconds, final loss
    runs/NAME/log.jsonl          training curve

Config files live in ``crslib/configs/<profile>-<dataset>-<variant>.json``. Variant
``decoupled`` (an item-classification head on the backbone) is trained, saved and loaded by
:mod:`crslib.decoupled`; :func:`train_run` and :func:`load_run` hand it over. What both kinds
of run share (config hash, SIDs, backbone, training dialogs, lock, save, finish) is
:mod:`crslib.runbase`; its names are reached here too (``run.config_hash``, ``run.model_hash``…).
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from crslib import data, decoupled, model as backbones, train
from crslib.runbase import (REPO, RunLocked, build_model, config_hash, finish_run,  # noqa: F401
                            is_finished, model_hash, peak_rss_mb, prepare_sids, run_lock,
                            save_run, training_dialogs)
from crslib.semantic_ids import SemanticIDs

CONFIGS = Path(__file__).parent / "configs"
VARIANT_FORMATS = {"gcrs": "gcrs", "resp": "resp", "mode_resp": "mode_resp", "sid": "sid",
                   "all_embeddings": "gcrs", "sid3x64": "gcrs", "sid5x64": "gcrs",
                   "sid4x32": "gcrs", "sid4x128": "gcrs", "tiger": "tiger",
                   "encoder_smollm2bag": "gcrs", "backbone_4layers": "gcrs",
                   **{f"backbone_{b}": "gcrs" for b in ("llama31_8b", "qwen3_8b", "mistral_7b",
                                                         "ministral_8b", "smollm2_135m")},
                   **{f"encoder_{e}": "gcrs" for e in ("e5", "mxbai", "bge", "sentence_t5")},
                   "decoupled": "gcrs",  # decoupled: ranks from the gcrs prompt (crslib.decoupled)
                   "coldstart_gcrs": "gcrs", "coldstart_atomic": "gcrs"}  # crslib.coldstart


def config_path(profile: str, dataset: str, variant: str = "gcrs") -> Path:
    return CONFIGS / f"{profile}-{dataset}-{variant}.json"


def load_config(path: str | os.PathLike, **overrides) -> dict:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such config; configs are in {CONFIGS}")
    cfg = json.loads(path.read_text())
    for key in ("profile", "dataset", "variant", "sids", "model", "train"):
        if key not in cfg:
            raise ValueError(f"{path}: config lacks the key {key!r}")
    if cfg["variant"] not in VARIANT_FORMATS:
        raise ValueError(f"{path}: unknown variant {cfg['variant']!r}; choose from "
                         f"{sorted(VARIANT_FORMATS)}")
    for k, v in overrides.items():
        cfg[k] = {**cfg[k], **v} if isinstance(v, dict) else v
    return cfg


def train_run(cfg: dict, out: str | os.PathLike, data_root=None, progress: bool = True) -> dict:
    """Train the run ``cfg`` into ``out``; reuse it when ``out`` holds the same config, done."""
    if cfg["variant"] == "decoupled":
        return decoupled.train_run(cfg, out, data_root, progress)
    out = Path(out)
    cfg = {**cfg, "config_hash": config_hash(cfg)}
    if is_finished(cfg, out):
        return json.loads((out / "train_summary.json").read_text())
    with run_lock(out):
        return _train_run(cfg, out, data_root, progress)


def _train_run(cfg: dict, out: Path, data_root, progress: bool) -> dict:
    ds = data.load(cfg["dataset"], data_root)
    sids = prepare_sids(cfg, ds.catalog, progress)
    net, tok, new_ids = build_model(cfg, sids, ds.catalog)
    tcfg = train.TrainConfig.from_dict({**cfg["train"],
                                        "fmt": VARIANT_FORMATS[cfg["variant"]]})
    dialogs = training_dialogs(cfg, ds)
    # one work folder per config: an interrupted run resumes; a changed config starts afresh
    # while the finished model of the old config stays until the new one replaces it
    work = out / f"work-{cfg['config_hash']}"
    summary = train.train(net, tok, sids, dialogs, tcfg, work, new_ids, extra_config=cfg,
                          progress=progress)
    summary["peak_rss_mb"] = peak_rss_mb()
    save_run(out, net, tok, sids, cfg)
    for name in ("log.jsonl", "output_vocab.json"):
        if (work / name).is_file():
            shutil.copyfile(work / name, out / name)
    return finish_run(out, summary)


def load_run(path: str | os.PathLike):
    """``(model, tokenizer, sids, config)`` of a saved run, model in eval mode."""
    path = Path(path)
    if not (path / "config.json").is_file() or not (path / "model").is_dir():
        raise FileNotFoundError(f"{path}: not a finished run (no config.json or model/)")
    cfg = json.loads((path / "config.json").read_text())
    if cfg.get("variant") == "decoupled":  # model = a DecoupledRecommender
        return decoupled.load_decoupled(path)
    sids = SemanticIDs.load(path / "sids.json")
    net, tok = backbones.load_model(path / "model", cfg)
    return net.eval(), tok, sids, cfg
