"""Recommenders scored in one harness: the generative kind (a trained run, ranked by the paper's
beam), the baselines (:mod:`crslib.evaluation.baselines`) and the decoupled item head
(:mod:`crslib.training.decoupled`), each opened by :func:`load_recommender`."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, Sequence

import torch

from crslib import config, data, report
from crslib.data import Dataset
from crslib.decoding import beam_search, item_scores, trie
from crslib.evaluation import baselines
from crslib.format import serialize
from crslib.ids.semantic_ids import SemanticIDs
from crslib.metrics import PROTOCOLS
from crslib.training import decoupled, run, runtime


def rank_of(items: Sequence[str | None], gold: str) -> int | None:
    try:
        return list(items).index(gold) + 1
    except ValueError:
        return None


@runtime.flush_denormals()
def model_ranks(model, tokenizer, sids: SemanticIDs, cases: Sequence[serialize.Example],
                protocol: str, max_context_tokens: int = 768, num_beams: int = 50,
                batch_size: int = 16) -> list[int | None]:
    """1-based rank of each case's gold item (None: not in the beam's top 50)."""
    prompts = [serialize.rec_prompt_ids(ex, tokenizer, max_context_tokens) for ex in cases]
    if protocol == "paper":
        ranked = beam_search.sid_beam_search(model, tokenizer, prompts, sids, k=num_beams,
                                      num_beams=num_beams, batch_size=batch_size)
    elif protocol in ("community", "dedup"):
        ranked = item_scores.score_all_items(model, tokenizer, prompts, sids)
    else:
        raise ValueError(f"unknown protocol {protocol!r}; choose from {PROTOCOLS}")
    return [rank_of(r.items, ex.item) for r, ex in zip(ranked, cases)]


def baseline_ranks(ranker, cases: Sequence[serialize.Example]) -> list[int | None]:
    """1-based rank of each case's gold item in a baseline's full ranking: from
    ``ranker.rank_cases(cases)`` (whole cases, batched) if it has one, else from
    ``ranker.rank(ex.context_items)`` per case."""
    return [rank_of(r, ex.item) for r, ex in zip(_baseline_rankings(ranker, cases), cases)]


def _baseline_rankings(ranker, cases: Sequence[serialize.Example]):
    if hasattr(ranker, "rank_cases"):
        return ranker.rank_cases(cases)
    return (ranker.rank(ex.context_items) for ex in cases)


class Recommender(Protocol):
    """The lifecycle every ranker shares, whatever its kind:

    * ``fit(config, data, out=None)``: fit or train an unfitted instance (``Kind()``, a
      baseline ``BaselineRecommender(name)``) by its resolved config on the loaded dataset;
      returns the instance. A trained kind trains with the one run driver into the run folder
      ``out`` (resumable, a finished run of the same config reused), or a temporary one;
    * ``ranks(cases, protocol)``: the 1-based rank of each case's gold item among all items
      (None: not ranked — under ``paper``, outside the top 50);
    * ``top(cases, k)``: each case's top ``k`` items, best first (what a person is shown);
    * ``save(out)`` and the class method ``load(path, device=None)``: a folder and back;
    * ``sids`` and ``config``: the SIDs its cases are written with, and its resolved config.

    The kinds, registered in :data:`RANKERS` under the config's ``ranker`` (a baseline by its
    name, :data:`BASELINES`): GCRS, its ablations and TIGER (:class:`GenerativeRecommender`,
    trained by the one run driver :func:`crslib.training.run.train_run`), the decoupled item
    head (:class:`ItemHeadRecommender`, the same driver), and popularity, repeat and text
    retrieval (:class:`BaselineRecommender`, fitted from the training dialogs
    its config names). :func:`load_recommender` opens any of them; :func:`fit` fits a config's
    kind."""
    sids: SemanticIDs
    config: config.RunConfig | None

    def fit(self, config: config.RunConfig, data: Dataset, out=None) -> "Recommender":
        ...

    def ranks(self, cases: Sequence[serialize.Example], protocol: str) -> list[int | None]:
        ...

    def top(self, cases: Sequence[serialize.Example], k: int = 10) -> list[list[str]]:
        ...

    def save(self, out) -> None:
        ...


@dataclass
class GenerativeRecommender:
    """A language model that decodes SIDs (:func:`model_ranks`: constrained beam search under
    ``paper``, exact scoring of every item under ``community`` and ``dedup``)."""
    model: Any = None
    tokenizer: Any = None
    sids: SemanticIDs | None = None
    max_context_tokens: int = 768
    num_beams: int = 50
    batch_size: int = 16
    config: config.RunConfig | None = None  # the run's config (what save writes beside it)

    @classmethod
    def load(cls, path, device=None) -> "GenerativeRecommender":
        """The saved run folder ``path`` (:func:`crslib.training.run.load_run`) with its config's
        evaluation settings (context length, beam width, batch size)."""
        model, tok, sids, rc = run.load_run(path, device)
        ev = rc.eval
        return cls(model, tok, sids, ev.max_context_tokens, ev.num_beams, ev.batch_size, rc)

    def fit(self, rc: config.RunConfig, data: Dataset, out=None) -> "GenerativeRecommender":
        """Train ``rc`` on ``data`` (:func:`crslib.training.run.fitted`) and take the weights."""
        vars(self).update(vars(run.fitted(type(self).load, rc, data, out)))
        return self

    def save(self, out) -> None:
        """A run folder :meth:`load` reads (:func:`crslib.training.runbase.save_run`)."""
        if self.config is None:
            raise ValueError("save needs the run's config: load or train the run")
        run.save_run(Path(out), self.model, self.tokenizer, self.sids, self.config)

    def ranks(self, cases: Sequence[serialize.Example], protocol: str) -> list[int | None]:
        return model_ranks(self.model, self.tokenizer, self.sids, cases, protocol,
                           self.max_context_tokens, self.num_beams, self.batch_size)

    @torch.no_grad()
    @runtime.flush_denormals()
    def ranked(self, cases: Sequence[serialize.Example]) -> list[trie.Ranked]:
        """The ``paper`` protocol's constrained beam search (width ``num_beams``, mode forced
        to REC): each case's top ``num_beams`` items with their scores."""
        if not cases:
            return []
        prompts = [serialize.rec_prompt_ids(ex, self.tokenizer, self.max_context_tokens)
                   for ex in cases]
        return beam_search.sid_beam_search(self.model, self.tokenizer, prompts, self.sids,
                                    k=self.num_beams, num_beams=self.num_beams,
                                    batch_size=self.batch_size)

    def top(self, cases: Sequence[serialize.Example], k: int = 10) -> list[list[str]]:
        """The top ``k`` of :meth:`ranked`."""
        return [list(r.items[:k]) for r in self.ranked(cases)]


@dataclass
class BaselineRecommender:
    """A fitted baseline of :mod:`crslib.evaluation.baselines`: a full ranking per case, whatever the
    protocol (:func:`baseline_ranks`). Its state is its config and the training dialogs that
    config names, so :meth:`save` writes the config and :meth:`load` fits again (the same
    ranking: fitting is deterministic). ``BaselineRecommender("popularity").fit(rc, ds)``."""
    name: str
    ranker: Any = None
    config: config.RunConfig | None = None
    sids: SemanticIDs | None = None

    def __post_init__(self):
        if self.name not in BASELINES:
            raise ValueError(f"unknown baseline {self.name!r}; choose from {BASELINES}")

    def fit(self, rc: config.RunConfig, data: Dataset, out=None,
            sids: SemanticIDs | None = None) -> "BaselineRecommender":
        """Fit the baseline on the training splits of ``rc`` (``out``: also :meth:`save` it
        there); its cases use ``sids`` (default: those ``rc`` builds), and text retrieval
        embeds with the encoder the SIDs were built with."""
        sids = sids if sids is not None else run.prepare_sids(rc, data.catalog)
        if self.name == "text-retrieval":
            obj = baselines.TextRetrieval(data.catalog, sids, rc.sids.encoder)
        else:
            obj = {"popularity": baselines.Popularity, "repeat": baselines.Repeat}[self.name](
                data.catalog.ids)
        self.ranker = obj.fit(d for split in rc.splits for d in data[split])
        self.config, self.sids = rc, sids
        if out is not None:
            self.save(out)
        return self

    @classmethod
    def of_profile(cls, name: str, profile: str, dataset: str,
                   data_root=None) -> "BaselineRecommender":
        """Baseline ``name`` as the profile scores it: fitted by the profile's ``gcrs`` config
        of ``dataset`` (its training splits, its SIDs)."""
        rc = run.load_config(run.config_path(profile, dataset), profile=profile)
        return cls(name).fit(rc, data.load(dataset, data_root))

    @classmethod
    def load(cls, path, device=None, data_root=None, ds: Dataset | None = None,
             sids: SemanticIDs | None = None) -> "BaselineRecommender":
        """The baseline :meth:`save` wrote to the folder ``path``, fitted again on its config's
        dataset (``data_root``: default ``$CRSLIB_DATA``; or the given ``ds`` and ``sids``);
        ``device`` is unused (no weights)."""
        file = Path(path) / "baseline.json"
        if not file.is_file():
            raise FileNotFoundError(f"{path}: not a saved baseline (no baseline.json)")
        saved = json.loads(file.read_text())
        for key in ("baseline", "config"):
            if key not in saved:
                raise ValueError(f"{file}: missing key {key!r}")
        rc = config.RunConfig.from_dict(saved["config"], f"{file}: config")
        ds = ds if ds is not None else data.load(rc.dataset, data_root)
        return cls(saved["baseline"]).fit(rc, ds, sids=sids)

    def save(self, out) -> None:
        """``out/baseline.json``: the baseline's name and config."""
        if self.config is None:
            raise ValueError("save needs a fitted baseline: BaselineRecommender(name).fit(...)")
        report.write_json({"baseline": self.name, "config": self.config.to_dict()},
                          Path(out) / "baseline.json")

    def ranks(self, cases: Sequence[serialize.Example], protocol: str) -> list[int | None]:
        if protocol not in PROTOCOLS:
            raise ValueError(f"unknown protocol {protocol!r}; choose from {PROTOCOLS}")
        return baseline_ranks(self.ranker, cases)

    def top(self, cases: Sequence[serialize.Example], k: int = 10) -> list[list[str]]:
        return [list(r[:k]) for r in _baseline_rankings(self.ranker, cases)]


@dataclass
class ItemHeadRecommender:
    """The decoupled baseline in the lifecycle: its network
    (:class:`crslib.training.decoupled.DecoupledRecommender`, a backbone's last hidden state
    scored by an item head over all items) does the ranking; this adds :meth:`fit`."""
    net: decoupled.DecoupledRecommender | None = None

    @property
    def sids(self) -> SemanticIDs:
        return self.net.sids

    @property
    def config(self) -> config.RunConfig:
        return self.net.config

    @classmethod
    def load(cls, path, device=None) -> "ItemHeadRecommender":
        return cls(decoupled.DecoupledRecommender.load(path, device))

    def fit(self, rc: config.RunConfig, data: Dataset, out=None) -> "ItemHeadRecommender":
        """Train ``rc`` on ``data`` (:func:`crslib.training.run.fitted`) and take the network."""
        self.net = run.fitted(decoupled.DecoupledRecommender.load, rc, data, out)
        return self

    def save(self, out) -> None:
        self.net.save(out)

    def ranks(self, cases: Sequence[serialize.Example], protocol: str) -> list[int | None]:
        return self.net.ranks(cases, protocol)

    def top(self, cases: Sequence[serialize.Example], k: int = 10) -> list[list[str]]:
        return self.net.top(cases, k)


BASELINES = ("popularity", "repeat", "text-retrieval")  # BaselineRecommender(name)
RANKERS = {"generative": GenerativeRecommender, "item_head": ItemHeadRecommender}  # by ranker


def load_recommender(source, dataset: str | None = None, profile: str | None = None,
                     device=None, data_root=None) -> Recommender:
    """A fitted recommender of any kind: ``source`` is a run folder (the class its config's
    ``ranker`` names in :data:`RANKERS`, with the config's evaluation settings), a folder a
    baseline was saved to, or a baseline's name with the ``dataset`` and ``profile`` whose
    config fits it (:meth:`BaselineRecommender.of_profile`)::

        load_recommender("runs/cpu/inspired/gcrs")
        load_recommender("popularity", dataset="inspired", profile="cpu")
    """
    if isinstance(source, str) and source in BASELINES:
        if not (dataset and profile):
            raise ValueError(f"baseline {source!r} needs a dataset and a profile")
        return BaselineRecommender.of_profile(source, profile, dataset, data_root)
    path = Path(source)
    if (path / "baseline.json").is_file():
        return BaselineRecommender.load(path, device, data_root)
    return RANKERS[run.saved_config(path).ranker].load(path, device)


def fit(rc: config.RunConfig, out=None, data_root=None, ds: Dataset | None = None
        ) -> Recommender:
    """An unfitted recommender of ``rc``'s kind (:data:`RANKERS`) fitted on its dataset (``ds``,
    else loaded from ``data_root``), trained into the run folder ``out`` (None: a temporary
    one)."""
    ds = ds if ds is not None else data.load(rc.dataset, data_root)
    return RANKERS[rc.ranker]().fit(rc, ds, out)
