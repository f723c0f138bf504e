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
:mod:`crslib.decoupled`; :func:`train_run` and :func:`load_run` hand it over.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
from pathlib import Path


from crslib import data, model as backbones, serialize, train
from crslib.semantic_ids import SemanticIDs

CONFIGS = Path(__file__).parent / "configs"
REPO = Path(__file__).resolve().parent.parent
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
    from crslib import semantic_ids
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
        net = backbones.add_lora(net, **m["lora"])
    return net, tok, sorted(new.values())


def train_run(cfg: dict, out: str | os.PathLike, data_root=None, progress: bool = True) -> dict:
    """Train the run ``cfg`` into ``out``; reuse it when ``out`` holds the same config, done."""
    if cfg["variant"] == "decoupled":
        from crslib import decoupled
        return decoupled.train_run(cfg, out, data_root, progress)
    out = Path(out)
    cfg = {**cfg, "config_hash": config_hash(cfg)}
    if is_finished(cfg, out):
        return json.loads((out / "train_summary.json").read_text())
    with run_lock(out):
        return _train_run(cfg, out, data_root, progress)


def is_finished(cfg: dict, out: str | os.PathLike) -> bool:
    """Does ``out`` hold a finished run of ``cfg`` (same config hash, training summary written)?"""
    out = Path(out)
    return (out / "train_summary.json").is_file() and (out / "config.json").is_file() and \
        json.loads((out / "config.json").read_text()).get("config_hash") == config_hash(cfg)


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
    summary["peak_rss_mb"] = _peak_rss_mb()
    save_run(out, net, tok, sids, cfg)
    for name in ("log.jsonl", "output_vocab.json"):
        if (work / name).is_file():
            shutil.copyfile(work / name, out / name)
    return finish_run(out, summary)


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
    (``{"fraction", "seed"}``, :mod:`crslib.coldstart`), then the first ``max_dialogs``."""
    splits = cfg.get("train_splits", ["train", "dev"] if cfg["dataset"] == "inspired" else ["train"])
    dialogs = [d for s in splits for d in ds[s]]
    if cfg.get("holdout"):
        from crslib import coldstart
        dialogs = coldstart.remove_items(dialogs, coldstart.holdout_items(ds, **cfg["holdout"]))
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


def load_run(path: str | os.PathLike):
    """``(model, tokenizer, sids, config)`` of a saved run, model in eval mode."""
    path = Path(path)
    if not (path / "config.json").is_file() or not (path / "model").is_dir():
        raise FileNotFoundError(f"{path}: not a finished run (no config.json or model/)")
    cfg = json.loads((path / "config.json").read_text())
    if cfg.get("variant") == "decoupled":  # model = a DecoupledRecommender
        from crslib.decoupled import load_decoupled
        return load_decoupled(path)
    sids = SemanticIDs.load(path / "sids.json")
    net, tok = backbones.load_model(path / "model", cfg)
    return net.eval(), tok, sids, cfg


def _peak_rss_mb() -> float:
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
