"""What every kind of run builds on — a GCRS run (:mod:`crslib.training.run`) and the decoupled
baseline (:mod:`crslib.training.decoupled`) alike: the config's identity (:func:`config_hash`), the
semantic IDs, backbone and training dialogs the config asks for, and the life of a run folder: one
trainer at a time (:func:`run_lock`), the saved model, tokenizer, SIDs and config
(:func:`save_run`), and the finishing mark with the weights' hash (:func:`finish_run`,
:func:`model_hash`). The folder layout is described in :mod:`crslib.training.run`, whose public
names these are too.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from filelock import FileLock, Timeout

from crslib import config, data, paths, report
from crslib.format import serialize
from crslib.ids import semantic_ids
from crslib.ids.semantic_ids import SemanticIDs
from crslib.training import model as backbones
from crslib.training import runtime


def config_hash(cfg) -> str:
    """The run's identity (:func:`crslib.config.config_hash`: the resolved config, without how
    it is executed), so the same budget on a busier machine is the same run."""
    return config.config_hash(cfg)


# What a saved model folder records about the machine that wrote it rather than the model: the
# library versions and the base model's local path (peft writes the venv's path into
# adapter_config.json and its model card). model_hash leaves them out, so the same weights
# trained in another clone, or saved by a newer transformers, have the same hash.
VOLATILE_KEYS = frozenset({"transformers_version", "peft_version", "base_model_name_or_path",
                           "_name_or_path"})
SKIPPED_FILES = frozenset({"README.md"})  # peft's model card: paths and versions, no weights


def _without_volatile(obj):
    if isinstance(obj, dict):
        return {k: _without_volatile(v) for k, v in obj.items() if k not in VOLATILE_KEYS}
    if isinstance(obj, list):
        return [_without_volatile(v) for v in obj]
    return obj


def _hashed_bytes(file: Path):
    """The bytes of ``file`` that make the model: a JSON file without :data:`VOLATILE_KEYS`
    (re-serialised with sorted keys), any other file as it is (in 1 MB chunks)."""
    if file.suffix == ".json":
        obj = _without_volatile(json.loads(file.read_text()))
        yield json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()
        return
    with file.open("rb") as fh:
        yield from iter(lambda: fh.read(1 << 20), b"")


def model_hash(path: str | os.PathLike) -> str:
    """The identity of a finished run's weights: sha256 (16 hex digits) over the names and
    contents of every file it saved for its model (``model/``, and ``head.safetensors`` of a
    decoupled run), without what only records the machine (:data:`VOLATILE_KEYS`,
    :data:`SKIPPED_FILES`). Results record it, and a saved result is reused only by the run
    with this hash."""
    path = Path(path)
    files = sorted(p for p in (path / "model").rglob("*")
                   if p.is_file() and p.name not in SKIPPED_FILES)
    files += [p for p in (path / "head.safetensors",) if p.is_file()]
    if not files:
        raise FileNotFoundError(f"{path}: no saved model files (model/ is empty or missing)")
    h = hashlib.sha256()
    for f in files:
        h.update(f.relative_to(path).as_posix().encode() + b"\0")
        for chunk in _hashed_bytes(f):
            h.update(chunk)
    return h.hexdigest()[:16]


def prepare_sids(rc: config.RunConfig, catalog: data.Catalog, progress: bool = False
                 ) -> SemanticIDs:
    """The SIDs the config asks for: the committed map of its dataset and spec when there is
    one (:func:`crslib.ids.semantic_ids.committed_map`), else reused from ``cache/sids/``, else
    built (and cached)."""
    s = rc.sids
    spec = asdict(s)
    committed = semantic_ids.committed_map(rc.dataset, spec, catalog)
    if committed is not None:
        return committed
    cache_root = paths.cache_dir()
    path = cache_root / "sids" / f"{rc.dataset}-{semantic_ids.sid_key(rc.dataset, spec)}.json"
    if path.is_file():
        sids = SemanticIDs.load(path)
        if sids.item_ids == catalog.ids:
            return sids
    sids = semantic_ids.build_semantic_ids(catalog, s.method, s.levels, s.codebook_size,
                                           s.encoder, s.seed, progress=progress)
    sids.config["dataset"] = rc.dataset
    sids.save(path)
    return sids


def build_model(rc: config.RunConfig, sids: SemanticIDs, catalog: data.Catalog, device=None):
    """``(model, tokenizer, new_ids)`` with the GCRS tokens added and initialised, on
    ``device`` (default: this process's, :func:`crslib.pretrained.default_device`)."""
    device = device or backbones.default_device()
    m, seed = rc.model, rc.train.seed
    if m.kind == "compact":
        tok = backbones.load_tokenizer(m.source)
        net = backbones.compact_model(tok, m.layers, m.hidden, m.heads, m.source,
                                      seed).to(device)
    else:
        net, tok = backbones.load_backbone(m.name, seed=seed, device=device,
                                           load_in_4bit=bool(m.lora and m.lora.qlora))
    new = serialize.add_special_tokens(tok, net, sids)
    net.config.gcrs_first_new_token = min(new.values())
    if m.kind == "compact":
        net.config.gcrs_compact["embeddings_trained"] = rc.train.embeddings == "all"
    backbones.init_new_rows(net, tok, sids, catalog, seed)
    if m.lora:
        with torch.random.fork_rng(devices=[]):  # peft draws the adapters' initial weights
            torch.manual_seed(seed)              # from the global generator: seed them
            net = backbones.add_lora(net, r=m.lora.r, alpha=m.lora.alpha,
                                     dropout=m.lora.dropout, qlora=m.lora.qlora)
    return net, tok, sorted(new.values())


def saved_config(path: str | os.PathLike) -> config.RunConfig:
    """The config a run folder was trained from (``config.json``), checked and typed."""
    file = Path(path) / "config.json"
    if not file.is_file():
        raise FileNotFoundError(f"{path}: not a finished run (no config.json)")
    return config.RunConfig.from_dict(json.loads(file.read_text()), str(file))


def is_finished(cfg: config.RunConfig, out: str | os.PathLike) -> bool:
    """Does ``out`` hold a finished run of ``cfg`` (same config hash, training summary written)?"""
    out = Path(out)
    return (out / "train_summary.json").is_file() and (out / "config.json").is_file() and \
        json.loads((out / "config.json").read_text()).get("config_hash") == config_hash(cfg)


def save_and_finish(out: Path, summary: dict, save) -> dict:
    """The end of a training: on the main process, record the peak memory, ``save()`` the run
    and mark it finished (:func:`finish_run`); every process then waits for that and returns
    the finished summary."""
    state = backbones.process_state()
    if state.is_main_process:
        summary["peak_rss_mb"] = peak_rss_mb()
        summary["environment"] = runtime.environment()
        save()
        finish_run(out, summary)
    state.wait_for_everyone()
    return json.loads((out / "train_summary.json").read_text())


def finish_run(out: Path, summary: dict) -> dict:
    """Mark a saved run finished: ``train_summary.json`` (with the weights' ``model_hash``)
    written last and atomically, so a run folder without it is never taken for done."""
    summary["model_hash"] = model_hash(out)
    report.write_text(json.dumps(summary, indent=1), out / "train_summary.json")
    return summary


def training_dialogs(rc: config.RunConfig, ds: data.Dataset) -> list[data.Dialog]:
    """The dialogs a run trains on: its splits (:attr:`crslib.config.RunConfig.splits`), minus
    every dialog that mentions an item held out by the config's ``holdout`` (``{"fraction",
    "seed"}``: :func:`crslib.data.holdout_items`, studied by :mod:`crslib.studies.coldstart`), then
    the first ``max_dialogs``."""
    dialogs = [d for s in rc.splits for d in ds[s]]
    if rc.holdout:
        dialogs = data.remove_items(dialogs, data.holdout_items(ds, rc.holdout.fraction,
                                                                rc.holdout.seed))
    return dialogs[: rc.max_dialogs]


@dataclass
class Trainee:
    """What the one run driver (:func:`crslib.training.run.train_run`) hands a kind of run's
    trainer: the config, the backbone with the new tokens, the SIDs, the training dialogs, the
    catalog, the work folder (checkpoints, per config) and the run folder. A trainer returns
    ``(summary, save)``: the loop's summary and what writes the finished run into ``out``."""
    rc: config.RunConfig
    net: object
    tokenizer: object
    sids: SemanticIDs
    new_ids: list[int]
    dialogs: list[data.Dialog]
    catalog: data.Catalog
    work: Path
    out: Path
    progress: bool = True


class RunLocked(RuntimeError):
    pass


def _lock(out: Path) -> FileLock:
    return FileLock(out / ".lock", timeout=0)


@contextlib.contextmanager
def run_lock(out: Path):
    """Hold ``out/.lock`` (an operating-system file lock, ``filelock``) while training, so two
    trainings never share one folder; the system releases the lock of a process that died, so
    a crashed training never blocks the next. Under ``accelerate launch`` the main process
    holds it for all the processes of its training."""
    out.mkdir(parents=True, exist_ok=True)
    if not backbones.process_state().is_main_process:
        yield
        return
    lock = _lock(out)
    try:
        lock.acquire()
    except Timeout:
        raise RunLocked(f"{out}: being trained by another process (it holds {out / '.lock'})"
                        ) from None
    try:
        yield
    finally:
        lock.release()


def is_locked(out: Path) -> bool:
    """Is a training holding ``out``'s lock right now (:func:`run_lock`)?"""
    if not (Path(out) / ".lock").is_file():
        return False
    lock = _lock(Path(out))
    try:
        lock.acquire()
    except Timeout:
        return True
    lock.release()
    return False


def save_run(out: Path, net, tok, sids: SemanticIDs, rc: config.RunConfig) -> None:
    """Write model + tokenizer + SIDs + config; the model folder is replaced atomically. The
    run is unfinished (no ``train_summary.json``) until :func:`finish_run`."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "train_summary.json").unlink(missing_ok=True)
    tmp = out / "model.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    backbones.save_model(net, tmp)
    tok.save_pretrained(tmp)
    if (out / "model").exists():
        shutil.rmtree(out / "model")
    os.replace(tmp, out / "model")
    sids.save(out / "sids.json")
    (out / "config.json").write_text(json.dumps(rc.saved_form(), indent=1))


def peak_rss_mb() -> float:
    """The peak resident memory of this process so far, in MB (a training summary records it)."""
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
