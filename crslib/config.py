"""A run's configuration, typed: :class:`RunConfig` with its blocks :class:`SIDsConfig`,
:class:`ModelConfig` (with :class:`LoraConfig`), :class:`TrainConfig` (with :class:`AlignConfig`)
and :class:`EvalConfig`.

A config file (``crslib/configs/<profile>-<dataset>-<variant>.json``) is read by
:func:`RunConfig.from_dict`: an unknown key, a missing required key or a value of the wrong type
is an error that names the file and the key (``cpu-redial-gcrs.json: train.lr must be a number,
not '2e-4'``). Keys starting with ``_`` are comments. Every default lives here, once.

A variant is data, not a name the code branches on: the sequence ``format`` (``gcrs``, ``resp``,
``mode_resp``, ``sid``, ``tiger``: :mod:`crslib.format.serialize`), the ``ranker`` (``generative``:
the LM decodes SIDs; ``item_head``: the decoupled baseline's classifier,
:mod:`crslib.training.decoupled`), the semantic IDs, the backbone. Any ``backbone_*`` or
``encoder_*`` config therefore trains without a code change.

The identity of a run, :func:`config_hash`, is taken from the *resolved* object — every default
filled in — so spelling out a default does not make another run and changing a default in code
does. What only says how a run is executed (``train.threads``, ``train.time_limit_minutes``)
and the records a config carries (comments, ``dry_run``) are not part of it.

A config is typed once, where it enters: a file read (:func:`load`,
:func:`crslib.training.run.load_config`, :func:`crslib.training.runbase.saved_config`) or a dict
a user hands in (:func:`resolve`). Everything inside takes the :class:`RunConfig`; it becomes a
dict again only when it is written (:meth:`RunConfig.saved_form` is a run folder's
``config.json``).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import types
import typing
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar

FORMATS = ("gcrs", "resp", "mode_resp", "sid", "tiger")
RANKERS = ("generative", "item_head")


class ConfigError(ValueError):
    """A config that cannot be used; the message names the file and the key."""


def _check_choice(obj, key: str, allowed) -> None:
    if getattr(obj, key) not in allowed:
        raise ConfigError(f"{_dotted(type(obj).BLOCK, key)} must be one of {list(allowed)}, "
                          f"not {getattr(obj, key)!r}")


@dataclass(frozen=True)
class SIDsConfig:
    """How the semantic IDs are built (:func:`crslib.ids.semantic_ids.build_semantic_ids`)."""
    BLOCK: ClassVar[str] = "sids"
    method: str = "rqvae"             # "rqvae" | "rqkmeans" | "atomic" (one id per item)
    levels: int = 4
    codebook_size: int | None = 64    # None: atomic ids
    encoder: str | None = None        # item-text encoder (None: the dataset's paper default)
    seed: int = 0

    def __post_init__(self):
        _check_choice(self, "method", ("rqvae", "rqkmeans", "atomic"))


@dataclass(frozen=True)
class LoraConfig:
    """LoRA adapters through ``peft`` (paper: r 16, alpha 32, dropout 0.05, all linear layers);
    ``qlora``: the base loaded in 4 bit (needs a CUDA GPU and bitsandbytes)."""
    BLOCK: ClassVar[str] = "model.lora"
    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    qlora: bool = False


@dataclass(frozen=True)
class ModelConfig:
    """The backbone: ``compact`` (a small Llama trained from scratch on a pretrained vocabulary,
    ``source``'s) or ``hf`` (a pretrained model by ``name``: :mod:`crslib.pretrained`)."""
    BLOCK: ClassVar[str] = "model"
    kind: str = "compact"
    name: str | None = None           # hf: "tiny", "smollm2-135m" or a Hugging Face name
    source: str = "smollm2-135m"      # compact: whose tokenizer and embeddings it starts from
    layers: int = 2
    hidden: int = 256
    heads: int = 4
    lora: LoraConfig | None = None

    def __post_init__(self):
        _check_choice(self, "kind", ("compact", "hf"))
        if self.kind == "hf" and not self.name:
            raise ConfigError("model.name is required when model.kind is 'hf'")


ALIGN_TASKS = ("text_to_sid", "sid_to_text", "genre_to_sid")


@dataclass(frozen=True)
class AlignConfig:
    """Item–ID alignment instances mixed with the dialogs' (:mod:`crslib.format.align`, beyond
    the paper): which ``tasks``, how many per dialog instance (``ratio``), how much plot the item
    text keeps, the draw's ``seed``, which ``items`` give them (``catalog`` or ``dialogs``)."""
    BLOCK: ClassVar[str] = "train.align"
    tasks: tuple = ("text_to_sid", "sid_to_text")
    ratio: float = 0.5                # alignment instances per dialog instance, each epoch
    plot_chars: int = 160
    seed: int = 0
    items: str = "catalog"
    ADDED: ClassVar[tuple] = ("items",)  # added after runs were shipped (see TrainConfig.ADDED)

    def __post_init__(self):
        object.__setattr__(self, "tasks", tuple(self.tasks))
        if not self.tasks or len(set(self.tasks)) != len(self.tasks):
            raise ConfigError(f"train.align.tasks must list distinct tasks from "
                              f"{list(ALIGN_TASKS)}, not {list(self.tasks)}")
        for t in self.tasks:
            if t not in ALIGN_TASKS:
                raise ConfigError(f"train.align.tasks: unknown task {t!r}; choose from "
                                  f"{list(ALIGN_TASKS)}")
        if not self.ratio > 0:
            raise ConfigError(f"train.align.ratio must be above 0, not {self.ratio!r}")
        if self.plot_chars < 0:
            raise ConfigError(f"train.align.plot_chars must be 0 or more, not {self.plot_chars!r}")
        _check_choice(self, "items", ("catalog", "dialogs"))


@dataclass
class TrainConfig:
    """Training (:func:`crslib.training.train.fit`). ``fmt`` is the run's ``format``: set from it,
    never in a config file's ``train`` block."""
    BLOCK: ClassVar[str] = "train"
    fmt: str = "gcrs"
    max_context_tokens: int = 768
    batch_tokens: int = 4096          # padded tokens per optimizer step
    micro_batch_tokens: int | None = None  # per forward/backward (None: the step); same gradient
    lr: float = 2e-4
    new_rows_lr: float | None = None  # learning rate of the new embedding rows (default: lr)
    weight_decay: float = 0.0
    warmup_steps: int = 150
    epochs: float = 1.0
    max_steps: int | None = None      # the budget, in optimizer steps (default: ``epochs``)
    time_limit_minutes: float | None = None  # safety stop: checkpoint, raise TrainingTimeLimit
    new_token_loss_weight: float = 1.0  # weight of targets that are added tokens (mode, SID…)
    aux_formats: tuple = ()           # multi-task: more windows of these formats, same dialogs
    copy_warmup_steps: int = 0        # steps of the synthetic copying task first (copy_warmup)
    embeddings: str = "new"           # "new": only new tokens' rows train; "all": every row
    output_vocab: str = "full"        # "full" | "targets" (restricted softmax, training.train)
    grad_clip: float = 1.0
    mixed_precision: str = "no"       # "no" | "bf16" autocast of the forward (GPU; CPU: fp32)
    activation_checkpointing: bool = False  # recompute activations in the backward pass
    seed: int = 0
    log_every: int = 20
    checkpoint_every: int = 200
    snapshot_every: int | None = None  # also save the model every N steps (snapshots/step-NNNN)
    threads: int | None = None
    align: AlignConfig | None = None  # item–ID alignment (crslib.format.align; beyond the paper)

    RUNTIME: ClassVar[tuple] = ("threads", "time_limit_minutes", "snapshot_every")  # not hashed
    # fields added after runs were shipped: not hashed at their default (earlier hashes stay)
    ADDED: ClassVar[tuple] = ("align",)

    def __post_init__(self):
        self.aux_formats = tuple(self.aux_formats)
        _check_choice(self, "fmt", FORMATS)
        _check_choice(self, "embeddings", ("new", "all"))
        _check_choice(self, "output_vocab", ("full", "targets"))
        _check_choice(self, "mixed_precision", ("no", "bf16"))
        for f in self.aux_formats:
            if f not in FORMATS:
                raise ConfigError(f"train.aux_formats: unknown format {f!r}; choose from "
                                  f"{list(FORMATS)}")

    @classmethod
    def from_dict(cls, d: dict, source: str = "train config") -> "TrainConfig":
        return _build(cls, d, source, "train")


@dataclass(frozen=True)
class EvalConfig:
    """Scoring (:mod:`crslib.evaluation.evaluate`, the studies). The ``*_limit`` keys cut a protocol
    to a seeded sample of that many cases (None: all)."""
    BLOCK: ClassVar[str] = "eval"
    num_beams: int = 50
    max_context_tokens: int = 768
    batch_size: int = 16
    limit: int | None = None          # every ranking protocol, unless its own limit is set
    paper_limit: int | None = None
    community_limit: int | None = None  # also dedup's: the same cases, deduplicated
    dialog_limit: int | None = None   # generated turns of the dialog protocol
    generate_limit: int = 500
    ppl_dialogs: int | None = None    # test dialogs whose turns perplexity and intent read
    coldstart_limit: int | None = None
    decoding_limit: int = 60          # validation turns of the chat's decoding sweep

    def protocol_limit(self, protocol: str) -> int | None:
        """The case limit of a ranking protocol: its own key (``dedup`` reads
        ``community_limit``, ``new_items`` ``paper_limit``: each is derived from that one's
        result), else ``limit``."""
        source = {"dedup": "community", "new_items": "paper"}.get(protocol, protocol)
        own = getattr(self, f"{source}_limit", None)
        return own if own is not None else self.limit


@dataclass(frozen=True)
class HoldoutConfig:
    """Items held out of training (the cold-start study, :mod:`crslib.studies.coldstart`)."""
    BLOCK: ClassVar[str] = "holdout"
    fraction: float
    seed: int = 0


@dataclass(frozen=True)
class RunConfig:
    """One run: which data, which semantic IDs, which backbone, how it trains and is scored."""
    BLOCK: ClassVar[str] = ""
    profile: str
    dataset: str
    variant: str                      # the run's name (folders, results), never branched on
    format: str                       # the training sequences (crslib.format.serialize)
    ranker: str = "generative"
    sids: SIDsConfig = field(default_factory=SIDsConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    train_splits: tuple | None = None  # default: INSPIRED train + dev, ReDial train
    max_dialogs: int | None = None
    holdout: HoldoutConfig | None = None
    template: str = "plain"           # prompt template of the chat (crslib.format.serialize)
    dry_run: dict | None = None       # what a derived profile replaced (crslib.training.run.DryRun)
    notes: dict = field(default_factory=dict)  # the file's "_" keys, kept, never hashed

    def __post_init__(self):
        _check_choice(self, "format", FORMATS)
        _check_choice(self, "ranker", RANKERS)
        if self.train.fmt != self.format:
            object.__setattr__(self, "train", dataclasses.replace(self.train, fmt=self.format))
        if self.train_splits is not None:
            object.__setattr__(self, "train_splits", tuple(self.train_splits))

    @property
    def splits(self) -> tuple[str, ...]:
        """The splits a run trains on (``train_splits``, else the dataset's default)."""
        if self.train_splits is not None:
            return self.train_splits
        return ("train", "dev") if self.dataset == "inspired" else ("train",)

    @classmethod
    def from_dict(cls, d: dict, source: str = "config") -> "RunConfig":
        """Check and resolve a config dict (a file's content, or a saved run's ``config.json``:
        its ``config_hash`` is dropped); ``source`` names it in errors."""
        if isinstance(d, RunConfig):
            return d
        if not isinstance(d, dict):
            raise ConfigError(f"{source}: a config is a JSON object, not {type(d).__name__}")
        d = {k: v for k, v in d.items() if k != "config_hash"}
        notes = {k: v for k, v in d.items() if k.startswith("_")}
        body = {k: v for k, v in d.items() if not k.startswith("_")}
        if "train" in body and isinstance(body["train"], dict) and "fmt" in body["train"]:
            raise ConfigError(f"{source}: train.fmt is not a config key; set the run's "
                              "'format' instead")
        return _build(cls, {**body, "notes": {**d.get("notes", {}), **notes}}, source, "")

    def to_dict(self) -> dict:
        """The resolved config as JSON-ready data (every field, defaults included); reading it
        back gives an equal object."""
        out = _plain(asdict(self))
        out["train"].pop("fmt")
        notes = out.pop("notes")
        return {**out, **notes}

    @property
    def config_hash(self) -> str:
        """The run's identity (:func:`config_hash`)."""
        return config_hash(self)

    def saved_form(self) -> dict:
        """What a run folder's ``config.json`` holds: :meth:`to_dict` and the config hash."""
        return {**self.to_dict(), "config_hash": self.config_hash}

    def identity(self) -> dict:
        """What the run is (the hashed part of :meth:`to_dict`): no comments, no ``dry_run``
        record, no runtime keys."""
        out = {k: v for k, v in self.to_dict().items()
               if not k.startswith("_") and k != "dry_run"}
        out["train"] = {k: v for k, v in _without_added(out["train"], TrainConfig).items()
                        if k not in TrainConfig.RUNTIME}
        if out["train"].get("align") is not None:
            out["train"]["align"] = _without_added(out["train"]["align"], AlignConfig)
        return out


def _without_added(block: dict, cls) -> dict:
    """``block`` without the fields ``cls.ADDED`` while at their default (earlier hashes stay)."""
    defaults = _plain(asdict(cls()))
    return {k: v for k, v in block.items() if not (k in cls.ADDED and v == defaults[k])}


def config_hash(cfg) -> str:
    """The run's identity: 12 hex digits of sha256 over :meth:`RunConfig.identity` of the
    resolved config (a dict is resolved first)."""
    ident = resolve(cfg).identity()
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:12]


def resolve(cfg, source: str = "config") -> RunConfig:
    """``cfg`` as a :class:`RunConfig` (a dict is checked and resolved; a RunConfig is
    returned as is)."""
    return cfg if isinstance(cfg, RunConfig) else RunConfig.from_dict(cfg, source)


def load(path: str | os.PathLike) -> RunConfig:
    """The config file at ``path``, checked and resolved; errors name the file."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path}: not valid JSON ({e})") from None
    return RunConfig.from_dict(data, str(path))


# ----------------------------------------------------------------------------- checking
def _build(cls, d: dict, source: str, prefix: str):
    if not isinstance(d, dict):
        raise ConfigError(f"{source}: {prefix or 'the config'} must be an object, not {d!r}")
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(d) - set(known))
    if unknown:
        raise ConfigError(f"{source}: unknown key {_dotted(prefix, unknown[0])!r}; "
                          f"{prefix or 'a config'} takes {sorted(known)}")
    kwargs = {}
    for name, value in d.items():
        kwargs[name] = _value(hints[name], value, source, _dotted(prefix, name))
    missing = [f.name for f in fields(cls) if f.name not in kwargs
               and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    if missing:
        raise ConfigError(f"{source}: missing key {_dotted(prefix, missing[0])!r}")
    try:
        return cls(**kwargs)
    except ConfigError as e:
        raise ConfigError(f"{source}: {e}") from None


def _value(hint, value, source: str, key: str) -> Any:
    """``value`` checked against the annotation ``hint`` (nested configs built)."""
    options = typing.get_args(hint) if _is_union(hint) else (hint,)
    if value is None:
        if type(None) in options:
            return None
        raise ConfigError(f"{source}: {key} must not be null")
    for opt in options:
        if opt is type(None):
            continue
        if dataclasses.is_dataclass(opt):
            if isinstance(value, dict):
                return _build(opt, value, source, key)
            continue
        origin = typing.get_origin(opt) or opt
        if origin is bool and isinstance(value, bool):
            return value
        if origin is int and isinstance(value, int) and not isinstance(value, bool):
            return value
        if origin is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value) if isinstance(value, int) and not isinstance(value, bool) else value
        if origin is str and isinstance(value, str):
            return value
        if origin in (tuple, list) and isinstance(value, (list, tuple)):
            if not all(isinstance(v, str) for v in value):
                raise ConfigError(f"{source}: {key} must be a list of strings, not {value!r}")
            return tuple(value)
        if origin is dict and isinstance(value, dict):
            return value
    raise ConfigError(f"{source}: {key} must be {_describe(options)}, not {value!r}")


def _is_union(hint) -> bool:
    return typing.get_origin(hint) in (typing.Union, types.UnionType)


def _describe(options) -> str:
    names = {bool: "true or false", int: "an integer", float: "a number", str: "a string",
             tuple: "a list", list: "a list", dict: "an object"}
    out = [("an object" if dataclasses.is_dataclass(o) else
            names.get(typing.get_origin(o) or o, str(o))) for o in options if o is not type(None)]
    return " or ".join(out) + (" or null" if type(None) in options else "")


def _dotted(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _plain(obj):
    if isinstance(obj, tuple):
        return [_plain(v) for v in obj]
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    return obj
