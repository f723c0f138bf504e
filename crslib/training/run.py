"""A GCRS run: config file -> semantic IDs -> backbone with the new tokens -> training -> a
saved run folder that reloads with one call (:func:`load_run`).

Run folder layout (standard Hugging Face files where they exist)::

    runs/NAME/config.json        resolved config (profile file + overrides), config_hash
    runs/NAME/sids.json          the semantic IDs used (with the config that built them)
    runs/NAME/model/             tokenizer + either the full model (small backbones) or the
                                 PEFT LoRA adapter and new_embeddings.safetensors (LoRA)
    runs/NAME/train_summary.json steps, epochs, tokens/s, seconds, final loss
    runs/NAME/log.jsonl          training curve

Config files live in ``crslib/configs/<profile>-<dataset>-<variant>.json`` and are typed by
:mod:`crslib.config` (the variant's ``format`` and ``ranker`` are keys there). A *derived*
profile has no files of its own: ``paper-dry`` is every ``paper`` config passed through one
transform, :class:`DryRun` (:data:`DERIVED_PROFILES`; :func:`config_path` and
:func:`load_config` resolve it). :func:`train_run` is the one driver of every kind of run; what
a kind trains is its trainer's (:data:`TRAINERS`, by the config's ``ranker``): a run with
``ranker: "item_head"`` (the decoupled baseline: an item-classification head on the backbone) is
trained, saved and loaded by :mod:`crslib.training.decoupled`. What both
kinds of run share (config hash, SIDs, backbone, training dialogs, lock, save, finish) is
:mod:`crslib.training.runbase`; its names are reached here too (``run.config_hash``,
``run.model_hash``…).
"""
from __future__ import annotations

import copy
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from crslib import config, data, paths, report
from crslib.ids import encode
from crslib.ids.semantic_ids import SemanticIDs
from crslib.training import decoupled, model as backbones, runtime, train
from crslib.training.runbase import (RunLocked, Trainee, build_model, config_hash,  # noqa: F401
                                     finish_run, is_finished, model_hash, peak_rss_mb, prepare_sids,
                                     run_lock, save_and_finish, save_run, saved_config,
                                     training_dialogs)

CONFIGS = paths.CONFIGS
@dataclass(frozen=True)
class DryRun:
    """A ``paper`` config cut down to run on a CPU in seconds: the ``paper-dry`` profile, which
    sends every ``paper`` config through the same notebooks (``make paper-dry``, part of
    ``make test``) so that the GPU pipeline is executed, end to end, without a GPU.

    What decides *which code runs* stays the paper's: variant, SID method and shape (levels,
    codebook size), target format, hold-out, LoRA adapters (r, alpha, dropout), which embedding
    rows train, the full-vocabulary softmax, bfloat16 autocast and micro-batches, learning
    rates, context lengths, beam width. What
    only decides *how big* it is becomes small: the backbone is ``tiny`` (a random 2-layer
    Llama with the SmolLM2 tokenizer, :mod:`crslib.pretrained`), the item-text encoder the
    offline MiniLM (:data:`crslib.ids.encode.DEFAULT_ENCODER`), training a handful of steps over a
    few dialogs with one thread, and every evaluation a seeded sample of a few cases
    (``eval.limit``, the ``eval.<protocol>_limit`` keys, ``eval.ppl_dialogs``). ``qlora`` is
    turned off: 4-bit loading needs CUDA and bitsandbytes. The replaced values are kept under
    ``dry_run.replaced``, so a saved run says what it stands in for. Its numbers mean nothing;
    that every step runs does.
    """
    name: str = "paper-dry"
    of: str = "paper"               # the profile whose config files are transformed
    backbone: str = "tiny"
    encoder: str = encode.DEFAULT_ENCODER
    max_steps: int = 3              # optimizer steps (the paper: 240 to 1,800)
    warmup_steps: int = 1
    batch_tokens: int = 1536        # padded tokens per step (the paper: 55,296)
    micro_batch_tokens: int = 512   # per forward/backward, when the paper splits (6,912)
    max_dialogs: int = 16           # training dialogs (enough for the steps above)
    limit: int = 12                 # cases per ranking protocol (paper, community, dedup)
    dialog_limit: int = 4           # generated turns, dialog protocol
    ppl_dialogs: int = 6            # test dialogs whose turns the perplexity and intent read
    coldstart_limit: int = 40       # cases of the cold-start study
    decoding_limit: int = 2         # validation turns of the chat's decoding sweep
    threads: int = 1
    time_limit_minutes: float = 10.0  # safety stop only

    def apply(self, cfg: dict) -> dict:
        """The dry config of ``cfg`` (a loaded ``paper`` config; not modified)."""
        if cfg["profile"] != self.of:
            raise ValueError(f"{self.name} transforms {self.of!r} configs, not "
                             f"{cfg['profile']!r} ones")
        dry = copy.deepcopy(cfg)
        lora = cfg["model"].get("lora")
        dry["profile"] = self.name
        dry["model"] = {**cfg["model"], "kind": "hf", "name": self.backbone,
                        "lora": {**lora, "qlora": False} if lora else None}
        dry["sids"]["encoder"] = self.encoder
        dry["max_dialogs"] = self.max_dialogs
        dry["train"].update(max_steps=self.max_steps, warmup_steps=self.warmup_steps,
                            batch_tokens=self.batch_tokens, threads=self.threads,
                            time_limit_minutes=self.time_limit_minutes, log_every=1)
        if cfg["train"].get("micro_batch_tokens"):  # still split: the micro-batch path runs
            dry["train"]["micro_batch_tokens"] = self.micro_batch_tokens
        dry["eval"] = {**cfg.get("eval", {}), "limit": self.limit,
                       "dialog_limit": self.dialog_limit, "ppl_dialogs": self.ppl_dialogs,
                       "coldstart_limit": self.coldstart_limit,
                       "decoding_limit": self.decoding_limit}
        dry["dry_run"] = {"of": f"{self.of}-{cfg['dataset']}-{cfg['variant']}.json",
                          "replaced": _replaced(cfg, dry)}
        return dry


def _replaced(before: dict, after: dict, prefix: str = "") -> dict:
    """``{dotted key: value in before}`` for every leaf that ``after`` changes or drops."""
    out = {}
    for k, v in before.items():
        if k in ("dry_run", "config_hash"):
            continue
        if isinstance(v, dict) and isinstance(after.get(k), dict):
            out.update(_replaced(v, after[k], f"{prefix}{k}."))
        elif k not in after or after[k] != v:
            out[f"{prefix}{k}"] = v
    return out


DERIVED_PROFILES: dict[str, DryRun] = {d.name: d for d in (DryRun(),)}


def base_profile(profile: str) -> str:
    """The profile whose config files ``profile`` reads (itself, unless it is derived)."""
    return DERIVED_PROFILES[profile].of if profile in DERIVED_PROFILES else profile


def config_path(profile: str, dataset: str, variant: str = "gcrs") -> Path:
    """The config file of ``variant`` on ``dataset``; a derived profile reads its base's file
    (load it with ``load_config(path, profile=...)`` to apply the transform)."""
    return CONFIGS / f"{base_profile(profile)}-{dataset}-{variant}.json"


def variants(profile: str, dataset: str) -> list[str]:
    """The variants ``profile`` has a config for on ``dataset``, sorted."""
    prefix = f"{base_profile(profile)}-{dataset}-"
    return sorted(p.stem[len(prefix):] for p in CONFIGS.glob(f"{prefix}*.json"))


def load_config(path: str | os.PathLike, profile: str | None = None, **overrides) -> dict:
    """The config in ``path``, checked and resolved (:class:`crslib.config.RunConfig`: an
    unknown key or a wrong type is an error naming the file and the key; every default filled
    in), as JSON-ready data, with ``overrides`` merged into its blocks. ``profile``: load it as
    that profile — its own (the default), or one derived from it (:data:`DERIVED_PROFILES`,
    e.g. ``paper-dry`` from a ``paper`` file), whose transform is applied before the
    overrides; a :class:`crslib.config.RunConfig`."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such config; configs are in {CONFIGS}")
    raw = config.load(path).to_dict()  # checked as written
    if profile in DERIVED_PROFILES:
        raw = DERIVED_PROFILES[profile].apply(raw)
    elif profile is not None and profile != raw["profile"]:
        raise ValueError(f"{path} is a {raw['profile']!r} config, not {profile!r} (derived "
                         f"profiles: {sorted(DERIVED_PROFILES)})")
    for k, v in overrides.items():
        raw[k] = {**raw[k], **v} if isinstance(v, dict) else v
    return config.RunConfig.from_dict(raw, f"{path} with overrides {overrides}"
                                      if overrides else str(path))


def train_run(rc: config.RunConfig, out: str | os.PathLike, data_root=None,
              progress: bool = True, ds: data.Dataset | None = None) -> dict:
    """Train the run ``cfg`` into ``out``; reuse it when ``out`` holds the same config, done.
    ``ds``: the loaded dataset of the config (default: loaded from ``data_root``).

    The one driver of every trained kind: it takes the run folder's lock, loads the data,
    builds the SIDs, the backbone and the training dialogs, and hands them to the trainer of
    the config's ``ranker`` (:data:`TRAINERS`: GCRS and its variants, or the decoupled
    baseline's item head), then saves and marks the run finished. Checkpoints go to a work
    folder per config hash, so an interrupted run resumes and a changed config starts afresh
    while the finished model of the old config stays until the new one replaces it."""
    out = Path(out)
    if is_finished(rc, out):
        return json.loads((out / "train_summary.json").read_text())
    if ds is not None and ds.name != rc.dataset:
        raise ValueError(f"the config trains on {rc.dataset!r}, the data given is {ds.name!r}")
    with run_lock(out):
        ds = ds if ds is not None else data.load(rc.dataset, data_root)
        sids = prepare_sids(rc, ds.catalog, progress)
        net, tok, new_ids = build_model(rc, sids, ds.catalog)
        trainee = Trainee(rc, net, tok, sids, new_ids, training_dialogs(rc, ds), ds.catalog,
                          out / f"work-{rc.config_hash}", out, progress)
        summary, save = TRAINERS[rc.ranker](trainee)
        return save_and_finish(out, summary, save)


def fitted(load, rc: config.RunConfig, ds: data.Dataset, out=None):
    """A trained recommender's ``fit``: train ``rc`` on ``ds`` with :func:`train_run` into the
    run folder ``out`` (resumable; a finished run of the same config is reused), or into a
    temporary folder when ``out`` is None, and return ``load(folder)``."""
    if out is not None:
        train_run(rc, out, progress=False, ds=ds)
        return load(out)
    with tempfile.TemporaryDirectory(prefix="crslib-fit-") as tmp:
        train_run(rc, tmp, progress=False, ds=ds)
        return load(tmp)


def train_generative(t: Trainee):
    """The trainer of GCRS, its variants and TIGER: the one loop (:func:`train.train`) on the
    packed dialogs; learning-curve snapshots when ``snapshot_every`` asks for them."""
    def snapshot(step: int, record: dict) -> None:
        folder = t.out / "snapshots" / f"step-{step:04d}"
        save_run(folder, t.net, t.tokenizer, t.sids, t.rc)
        if (t.work / "output_vocab.json").is_file():
            shutil.copyfile(t.work / "output_vocab.json", folder / "output_vocab.json")
        report.write_json({**record, "model_hash": model_hash(folder),
                           "environment": runtime.environment()}, folder / "snapshot.json")
    summary = train.train(t.net, t.tokenizer, t.sids, t.dialogs, t.rc.train, t.work, t.new_ids,
                          extra_config=t.rc.saved_form(), progress=t.progress,
                          on_snapshot=snapshot,
                          catalog=t.catalog)

    def save():
        save_run(t.out, t.net, t.tokenizer, t.sids, t.rc)
        for name in ("log.jsonl", "output_vocab.json"):
            if (t.work / name).is_file():
                shutil.copyfile(t.work / name, t.out / name)
    return summary, save


TRAINERS = {"generative": train_generative, "item_head": decoupled.train_head}


def load_run(path: str | os.PathLike, device=None):
    """``(model, tokenizer, sids, config)`` of a saved run, model in eval mode on ``device``
    (default: this process's, :func:`crslib.pretrained.default_device` — the GPU when there is
    one); ``config`` is the saved one (:func:`saved_config`)."""
    device = device or backbones.default_device()
    path = Path(path)
    if not (path / "config.json").is_file() or not (path / "model").is_dir():
        raise FileNotFoundError(f"{path}: not a finished run (no config.json or model/)")
    rc = saved_config(path)
    if rc.ranker == "item_head":  # model = a DecoupledRecommender
        return decoupled.load_decoupled(path, device)
    sids = SemanticIDs.load(path / "sids.json")
    net, tok = backbones.load_model(path / "model", rc, device)
    return net.eval(), tok, sids, rc


