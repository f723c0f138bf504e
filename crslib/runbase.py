"""What every kind of run builds on — a GCRS run (:mod:`crslib.run`) and the decoupled baseline
(:mod:`crslib.decoupled`) alike: the config's identity (:func:`config_hash`), the semantic IDs,
backbone and training dialogs the config asks for, and the life of a run folder: one trainer at a
time (:func:`run_lock`), the saved model, tokenizer, SIDs and config (:func:`save_run`), and the
finishing mark with the weights' hash (:func:`finish_run`, :func:`model_hash`). The folder layout
is described in :mod:`crslib.run`, whose public names these are too.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
from pathlib import Path

import torch

from crslib import data, model as backbones, semantic_ids, serialize, train
from crslib.semantic_ids import SemanticIDs

REPO = Path(__file__).resolve().parent.parent


def config_hash(cfg: dict) -> str:
    """Hash of what a run trains: the config without how it is executed (threads, the safety
    time limit), so the same budget on a busier machine is the same run."""
    keep = {k: v for k, v in cfg.items() if k not in ("config_hash", "threads")}
    if isinstance(keep.get("train"), dict):
        keep["train"] = {k: v for k, v in keep["train"].items() if k not in train.RUNTIME_KEYS}
    return hashlib.sha256(json.dumps(keep, sort_keys=True).encode()).hexdigest()[:12]


def model_hash(path: str | os.PathLike) -> str:
    """The identity of a finished run's weights: sha256 (16 hex digits) over the names and bytes
    of every file it saved for its model (``model/``, and ``head.safetensors`` of a decoupled
    run). Results record it, and a saved result is reused only by the run with this hash."""
    path = Path(path)
    files = sorted(p for p in (path / "model").rglob("*") if p.is_file())
    files += [p for p in (path / "head.safetensors",) if p.is_file()]
    if not files:
        raise FileNotFoundError(f"{path}: no saved model files (model/ is empty or missing)")
    h = hashlib.sha256()
    for f in files:
        h.update(f.relative_to(path).as_posix().encode() + b"\0")
        with f.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()[:16]


def prepare_sids(cfg: dict, catalog: data.Catalog, progress: bool = False) -> SemanticIDs:
    """Build (or reuse from ``cache/sids/``) the SIDs the config asks for."""
    s = cfg["sids"]
    key = hashlib.sha256(json.dumps({"dataset": cfg["dataset"], **s}, sort_keys=True).encode())
    cache_root = Path(os.environ.get("CRSLIB_CACHE", REPO / "cache"))
    path = cache_root / "sids" / f"{cfg['dataset']}-{key.hexdigest()[:12]}.json"
    if path.is_file():
        sids = SemanticIDs.load(path)
        if sids.item_ids == catalog.ids:
            return sids
    sids = semantic_ids.build_semantic_ids(catalog, s.get("method", "rqvae"), s.get("levels", 4),
                                           s.get("codebook_size", 64), s.get("encoder"),
                                           s.get("seed", 0), progress=progress)
    sids.config["dataset"] = cfg["dataset"]
    sids.save(path)
    return sids


def build_model(cfg: dict, sids: SemanticIDs, catalog: data.Catalog):
    """``(model, tokenizer, new_ids)`` with the GCRS tokens added and initialised."""
    m = cfg["model"]
    kind = m.get("kind", "compact")
    seed = cfg["train"].get("seed", 0)
    if kind == "compact":
        tok = backbones.load_tokenizer(m.get("source", "smollm2-135m"))
        net = backbones.compact_model(tok, m.get("layers", 2), m.get("hidden", 256),
                                      m.get("heads", 4), m.get("source", "smollm2-135m"), seed)
    elif kind == "hf":
        net, tok = backbones.load_backbone(m["name"], seed=seed)
    else:
        raise ValueError(f"model.kind must be 'compact' or 'hf', not {kind!r}")
    new = serialize.add_special_tokens(tok, net, sids)
    net.config.gcrs_first_new_token = min(new.values())
    if kind == "compact":
        net.config.gcrs_compact["embeddings_trained"] = cfg["train"].get("embeddings") == "all"
    backbones.init_new_rows(net, tok, sids, catalog, seed)
    if m.get("lora"):
        with torch.random.fork_rng(devices=[]):  # peft draws the adapters' initial weights
            torch.manual_seed(seed)              # from the global generator: seed them
            net = backbones.add_lora(net, **m["lora"])
    return net, tok, sorted(new.values())


def is_finished(cfg: dict, out: str | os.PathLike) -> bool:
    """Does ``out`` hold a finished run of ``cfg`` (same config hash, training summary written)?"""
    out = Path(out)
    return (out / "train_summary.json").is_file() and (out / "config.json").is_file() and \
        json.loads((out / "config.json").read_text()).get("config_hash") == config_hash(cfg)


def finish_run(out: Path, summary: dict) -> dict:
    """Mark a saved run finished: ``train_summary.json`` (with the weights' ``model_hash``)
    written last and atomically, so a run folder without it is never taken for done."""
    summary["model_hash"] = model_hash(out)
    tmp = out / "train_summary.json.tmp"
    tmp.write_text(json.dumps(summary, indent=1))
    os.replace(tmp, out / "train_summary.json")
    return summary


def training_dialogs(cfg: dict, ds: data.Dataset) -> list[data.Dialog]:
    """The dialogs a run trains on: its ``train_splits`` (default: INSPIRED train + dev, ReDial
    train), minus every dialog that mentions an item held out by the config's ``holdout``
    (``{"fraction", "seed"}``: :func:`crslib.data.holdout_items`, studied by
    :mod:`crslib.coldstart`), then the first ``max_dialogs``."""
    splits = cfg.get("train_splits", ["train", "dev"] if cfg["dataset"] == "inspired" else ["train"])
    dialogs = [d for s in splits for d in ds[s]]
    if cfg.get("holdout"):
        dialogs = data.remove_items(dialogs, data.holdout_items(ds, **cfg["holdout"]))
    return dialogs[: cfg.get("max_dialogs")]


class RunLocked(RuntimeError):
    pass


@contextlib.contextmanager
def run_lock(out: Path):
    """Hold ``out/.lock`` (our pid) while training, so two processes never train one folder;
    a lock left by a process that no longer exists is taken over."""
    out.mkdir(parents=True, exist_ok=True)
    lock = out / ".lock"
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            break
        except FileExistsError:
            try:
                pid = int(lock.read_text() or 0)
            except (OSError, ValueError):
                pid = 0
            if pid and _alive(pid):
                raise RunLocked(f"{out}: being trained by process {pid} (remove {lock} if not)")
            lock.unlink(missing_ok=True)
    else:
        raise RunLocked(f"{out}: could not take {lock}")
    try:
        os.write(fd, str(os.getpid()).encode())
        os.close(fd)
        yield
    finally:
        lock.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def save_run(out: Path, net, tok, sids: SemanticIDs, cfg: dict) -> None:
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
    (out / "config.json").write_text(json.dumps(cfg, indent=1))


def peak_rss_mb() -> float:
    """The peak resident memory of this process so far, in MB (a training summary records it)."""
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
