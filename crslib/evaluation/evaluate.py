"""Evaluation protocols (NOTES.md §5, §8, §9), each written into its result file.

Cases: every recommendation instance of the test split — an assistant turn that mentions an
item with a SID, one case per mentioned item, its preceding dialog as input (the paper's
expansion). Ranking protocols:

* ``paper``: the gold mode is forced (the prompt ends ``Assistant:<MODE=REC><BOI>``), the top
  50 come from constrained beam search (width 50); Recall@{1,5,10,20}, NDCG and MRR @{5,10,20}.
  Items already mentioned earlier in the dialog count as hits, as in the paper.
* ``community``: the same cases, but every catalog item is scored exactly
  (``item_scores.score_all_items``), so Recall@50 is exact; Recall@{1,10,50}, NDCG@10, MRR@10.
* ``dedup``: ``community`` without the cases whose item was mentioned earlier in the dialog
  (the repetition shortcut removed, NOTES.md §9).

Baselines (``popularity``, ``repeat``, ``text-retrieval``) produce full rankings and are scored
on the same cases by the same code. ``dialog``: token-weighted perplexity of the gold responses
(the tokens after ``<RESP>`` and the end-of-sequence token, with the gold mode and item given),
and the model's own choice of mode in free mode (intent accuracy/F1; the paper never measures
it).

Every result is one JSON file ``results/<profile>/<dataset>/<variant>.<protocol>.json`` with
``dataset, split, profile, variant, protocol, seeds, config_hash, n_cases, metrics, ci95``
(values as fractions except ``ppl``/``bleu``), written atomically.
"""
from __future__ import annotations

import json
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Protocol, Sequence

import torch

from crslib import config, metrics, report
from crslib.data import Dataset
from crslib.decoding import batching, beam_search, item_scores, trie
from crslib.decoding.generation import GREEDY, ResponseDecoding, turn_end_ids
from crslib.evaluation import baselines
from crslib.format import packing, serialize
from crslib.ids.semantic_ids import SemanticIDs
from crslib.metrics import PROTOCOLS
from crslib.training import batches, decoupled, run, runtime

PAPER_KS = dict(recall_ks=(1, 5, 10, 20), cut_ks=(5, 10, 20))
COMMUNITY_KS = dict(recall_ks=(1, 10, 50), cut_ks=(10,))


def rec_cases(ds: Dataset, sids: SemanticIDs, split: str = "test", fmt: str = "gcrs",
              limit: int | None = None, seed: int = 0) -> list[serialize.Example]:
    """Recommendation instances of ``split`` (a seeded random sample of ``limit`` if given)."""
    cases = [ex for ex in serialize.serialize_all(ds[split], sids, fmt) if ex.mode == "rec"]
    return [cases[j] for j in sample_indices(cases, limit, seed)]


def sample_indices(cases: Sequence[serialize.Example], limit: int | None = None,
                   seed: int = 0) -> list[int]:
    """Positions in ``cases`` of :func:`rec_cases`' seeded sample of ``limit`` (all when
    ``limit`` is None or not smaller), in its order: so a result over all cases can be cut to
    exactly the cases a sampled result scored (``case_ranks`` are in this order)."""
    if limit is None or limit >= len(cases):
        return list(range(len(cases)))
    picked = random.Random(seed).sample(range(len(cases)), limit)
    return sorted(picked, key=lambda j: (cases[j].dialog_id, cases[j].turn_index))


def _rank_of(items: Sequence[str | None], gold: str) -> int | None:
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
    return [_rank_of(r.items, ex.item) for r, ex in zip(ranked, cases)]


def baseline_ranks(ranker, cases: Sequence[serialize.Example]) -> list[int | None]:
    """1-based rank of each case's gold item in a baseline's full ranking: from
    ``ranker.rank_cases(cases)`` (whole cases, batched) if it has one, else from
    ``ranker.rank(ex.context_items)`` per case."""
    return [_rank_of(r, ex.item) for r, ex in zip(_baseline_rankings(ranker, cases), cases)]


def _baseline_rankings(ranker, cases: Sequence[serialize.Example]):
    if hasattr(ranker, "rank_cases"):
        return ranker.rank_cases(cases)
    return (ranker.rank(ex.context_items) for ex in cases)


# ----------------------------------------------------------------------------- recommenders
class Recommender(Protocol):
    """What every ranker offers the protocols: the 1-based rank of each case's gold item among
    all items (None: not ranked — under ``paper``, outside the top 50), and its top ``k``.
    Implemented by GCRS, its ablations and TIGER (:class:`GenerativeRecommender`), the
    decoupled baseline (:class:`crslib.training.decoupled.DecoupledRecommender`), and popularity, repeat
    and text retrieval (:class:`BaselineRecommender`).

    Fitting, saving and loading: :func:`fit` trains a run's config (one training loop,
    :func:`crslib.training.train.fit`, for every trained kind) and returns its recommender; each kind
    has ``save(out)`` and a ``load`` class method (:func:`load_recommender` picks the class from
    the run's ``ranker``); a baseline is fitted from the training dialogs its config names
    (:meth:`BaselineRecommender.fit`)."""

    def ranks(self, cases: Sequence[serialize.Example], protocol: str) -> list[int | None]:
        ...

    def top(self, cases: Sequence[serialize.Example], k: int = 10) -> list[list[str]]:
        """Each case's top-``k`` items, best first (what a person is shown)."""
        ...


@dataclass
class GenerativeRecommender:
    """A language model that decodes SIDs (:func:`model_ranks`: constrained beam search under
    ``paper``, exact scoring of every item under ``community`` and ``dedup``)."""
    model: Any
    tokenizer: Any
    sids: SemanticIDs
    max_context_tokens: int = 768
    num_beams: int = 50
    batch_size: int = 16
    config: dict | None = None  # the run's resolved config (what save writes beside it)

    @classmethod
    def load(cls, path, device=None) -> "GenerativeRecommender":
        """The saved run folder ``path`` (:func:`crslib.training.run.load_run`) with its config's
        evaluation settings (context length, beam width, batch size)."""
        model, tok, sids, cfg = run.load_run(path, device)
        ev = config.resolve(cfg).eval
        return cls(model, tok, sids, ev.max_context_tokens, ev.num_beams, ev.batch_size, cfg)

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
    ranking: fitting is deterministic)."""
    ranker: Any
    name: str | None = None
    config: dict | None = None

    @classmethod
    def fit(cls, name: str, cfg: dict, ds: Dataset, sids: SemanticIDs) -> "BaselineRecommender":
        """Baseline ``name`` (``popularity``, ``repeat``, ``text-retrieval``: :data:`BASELINES`)
        fitted on the training splits of ``cfg``; text retrieval embeds with the encoder the
        SIDs were built with."""
        rc = config.resolve(cfg)
        if name == "text-retrieval":
            obj = baselines.TextRetrieval(ds.catalog, sids, rc.sids.encoder)
        elif name in ("popularity", "repeat"):
            obj = {"popularity": baselines.Popularity, "repeat": baselines.Repeat}[name](
                ds.catalog.ids)
        else:
            raise ValueError(f"unknown baseline {name!r}; choose from {BASELINES}")
        return cls(obj.fit(d for split in rc.splits for d in ds[split]), name, cfg)

    @classmethod
    def load(cls, path, ds: Dataset, sids: SemanticIDs) -> "BaselineRecommender":
        """The baseline :meth:`save` wrote to the folder ``path``, fitted again on ``ds``."""
        file = Path(path) / "baseline.json"
        saved = json.loads(file.read_text())
        for key in ("baseline", "config"):
            if key not in saved:
                raise ValueError(f"{file}: missing key {key!r}")
        return cls.fit(saved["baseline"], saved["config"], ds, sids)

    def save(self, out) -> None:
        """``out/baseline.json``: the baseline's name and config."""
        if self.name is None or self.config is None:
            raise ValueError("save needs the baseline's name and config: fit it with "
                             "BaselineRecommender.fit")
        report.write_json({"baseline": self.name, "config": self.config},
                          Path(out) / "baseline.json")

    def ranks(self, cases: Sequence[serialize.Example], protocol: str) -> list[int | None]:
        if protocol not in PROTOCOLS:
            raise ValueError(f"unknown protocol {protocol!r}; choose from {PROTOCOLS}")
        return baseline_ranks(self.ranker, cases)

    def top(self, cases: Sequence[serialize.Example], k: int = 10) -> list[list[str]]:
        return [list(r[:k]) for r in _baseline_rankings(self.ranker, cases)]


RANKERS = {"generative": GenerativeRecommender, "item_head": decoupled.DecoupledRecommender}
BASELINES = ("popularity", "repeat", "text-retrieval")


def load_recommender(path, device=None) -> tuple[Recommender, SemanticIDs, dict]:
    """``(recommender, sids, config)`` of the saved run folder ``path``: the class its config's
    ``ranker`` names (:data:`RANKERS`), with the config's evaluation settings."""
    rec = RANKERS[config.resolve(run.saved_config(path)).ranker].load(path, device)
    return rec, rec.sids, rec.config


def fit(cfg: dict, out, data_root=None, progress: bool = False) -> Recommender:
    """Train the run ``cfg`` describes into the folder ``out`` (:func:`crslib.training.run.train_run`:
    resumable, a finished run of the same config reused) and return its recommender."""
    run.train_run(cfg, out, data_root, progress)
    return load_recommender(out)[0]


def select(cases: Sequence[serialize.Example], ranks: Sequence[int | None], protocol: str):
    """Cases and ranks that count under ``protocol`` (``dedup`` drops repeated items)."""
    if protocol != "dedup":
        return list(cases), list(ranks)
    keep = [k for k, ex in enumerate(cases) if ex.item not in ex.context_items]
    return [cases[k] for k in keep], [ranks[k] for k in keep]


PAPER_DEPTH = 50  # the paper's beam width: a ranker's list under the paper protocol


def case_ids(cases: Sequence[serialize.Example]) -> list[str]:
    """``dialog:turn:item`` of each case: what pairs two rankers' cases (claims)."""
    return [f"{ex.dialog_id}:{ex.turn_index}:{ex.item}" for ex in cases]


def new_item_ranks(cases: Sequence[serialize.Example], lists: Sequence[Sequence[str]]
                   ) -> tuple[list[int], list[int | None]]:
    """New-item recommendation from the same lists: the positions of the cases whose gold item
    the dialog has not mentioned yet, and for each the gold's 1-based rank in its list with
    every mentioned item removed (None: not in the list)."""
    keep, ranks = [], []
    for k, (ex, items) in enumerate(zip(cases, lists)):
        seen = set(ex.context_items)
        if ex.item in seen:
            continue
        keep.append(k)
        ranks.append(_rank_of([i for i in items if i not in seen], ex.item))
    return keep, ranks


def evaluate(recommender: Recommender, cases: Sequence[serialize.Example], protocol: str
             ) -> dict:
    """Score ``recommender`` on ``cases`` under a ranking ``protocol``: ``{"protocol",
    "n_cases", "metrics", "ci95", "case_ranks", "case_ids"}`` (ranks 1-based, None = not
    ranked, in the order of ``cases``).

    * ``paper``: each case's top :data:`PAPER_DEPTH` (the recommender's ``num_beams`` if it has
      one: a generative model's constrained beam); the result also holds the new-item ranks
      from the same lists (``new_item_cases``, ``case_new_ranks``: :func:`new_item_ranks`),
      from which the ``new_items`` protocol is derived without scoring again;
    * ``community``: the exact rank among all items;
    * ``dedup``: ``community`` ranks, then only the cases whose item the dialog had not
      mentioned (:func:`select`).

    Where the result is saved and when it is reused is :func:`scored`'s job
    (``crslib.studies.experiments.evaluate`` joins the two)."""
    if protocol == "paper":
        lists = recommender.top(cases, getattr(recommender, "num_beams", PAPER_DEPTH))
        ranks = [_rank_of(items, ex.item) for items, ex in zip(lists, cases)]
        keep, new = new_item_ranks(cases, lists)
        return {**ranking_result(ranks, protocol), "case_ranks": ranks,
                "case_ids": case_ids(cases), "new_item_cases": keep, "case_new_ranks": new}
    ranks = recommender.ranks(cases, "community" if protocol == "dedup" else protocol)
    chosen, ranks = select(cases, ranks, protocol)
    return {**ranking_result(ranks, protocol), "case_ranks": ranks, "case_ids": case_ids(chosen)}


def new_items_result(paper: dict) -> dict:
    """The ``new_items`` protocol (new-item recall from the paper protocol's lists) of a saved
    ``paper`` result; raises ``ValueError`` when it predates new-item ranks."""
    if "case_new_ranks" not in paper:
        raise ValueError("this paper result has no new-item ranks (scored before they were "
                         "kept): score the paper protocol again")
    ids = paper.get("case_ids")
    return {**ranking_result(paper["case_new_ranks"], "new_items"),
            "case_ranks": paper["case_new_ranks"],
            "case_ids": [ids[k] for k in paper["new_item_cases"]] if ids else None}


def ranking_result(ranks: Sequence[int | None], protocol: str, **meta) -> dict:
    ks = PAPER_KS if protocol in ("paper", "new_items") else COMMUNITY_KS
    m, ci = metrics.ranking_with_ci(ranks, **ks)
    return {**meta, "protocol": protocol, "n_cases": len(ranks), "metrics": m, "ci95": ci}


# ----------------------------------------------------------------------------- dialog
@torch.no_grad()
@runtime.flush_denormals()
def dialog_scores(model, tokenizer, sids: SemanticIDs, dialogs, max_context_tokens: int = 768,
                  head_ids: Sequence[int] | None = None, batch_tokens: int = 8192,
                  fmt: str = "gcrs") -> dict:
    """Gold-response perplexity and free-mode intent, from one packed pass per dialog window.

    PPL counts the response tokens (after ``<RESP>``) and EOS of the first instance of each
    assistant turn, gold mode and item given. With ``head_ids`` (a model trained with a
    restricted output vocabulary) the softmax of ``ppl`` runs over those tokens, as in training,
    and counts only gold tokens among them (``ppl_tokens_outside_head`` says how many are not);
    ``ppl_full_vocab`` runs over the whole vocabulary and counts every token (the paper's
    definition).
    Intent: the model's choice between ``<MODE=REC>`` and ``<MODE=CHAT>`` right after
    ``Assistant:``; gold is REC when the turn mentions an item.

    ``fmt``: the run's format. ``resp`` has no ``<RESP>`` and no mode token: all its target
    tokens are the response and there is no intent; ``sid``/``tiger`` write no response.
    """
    if fmt in ("sid", "tiger"):
        raise ValueError(f"format {fmt!r} writes no response: no dialog metrics")
    resp = tokenizer.convert_tokens_to_ids(serialize.RESP)
    rec, chat = (tokenizer.convert_tokens_to_ids(t) for t in (serialize.MODE_REC, serialize.MODE_CHAT))
    windows = [w for d in dialogs for w in packing.pack_dialog(d, sids, tokenizer, fmt,
                                                               max_context_tokens)]
    has_mode = fmt != "resp"
    decoder, out_w = model.get_decoder(), model.get_output_embeddings().weight
    head = None if head_ids is None else torch.tensor(sorted(head_ids), device=out_w.device)
    nll, nll_full, n_tok, n_head, gold, pred = 0.0, 0.0, 0, 0, [], []
    for b in batches.make_batches(windows, batch_tokens, 0):
        ws = [windows[i] for i in b]
        batch = {k: v.to(out_w.device)
                 for k, v in packing.collate(ws, tokenizer.pad_token_id or 0).items()}
        h = decoder(input_ids=batch["input_ids"], position_ids=batch["position_ids"],
                    attention_mask=batch["attention_mask"]).last_hidden_state
        rows, src, tgt = batch["loss_rows"], batch["loss_src"], batch["loss_tgt"]
        hs = h[rows, src]
        w = out_w if head is None else out_w[head]
        logp = (hs @ w.T).float().log_softmax(-1)
        idx = tgt if head is None else torch.searchsorted(head, tgt).clamp(max=len(head) - 1)
        tok_lp = logp.gather(1, idx[:, None])[:, 0]
        counted = _first_branch_response_mask(ws, resp if has_mode else None)
        in_head = counted if head is None else counted & (head[idx] == tgt)
        nll -= float(tok_lp[in_head].sum())  # a token outside the head has no restricted prob
        n_tok += int(counted.sum())
        n_head += int(in_head.sum())
        if head is not None:  # every counted token over the whole vocabulary, as the paper counts
            full = (hs[counted] @ out_w.T).float().log_softmax(-1)
            nll_full -= float(full.gather(1, tgt[counted][:, None]).sum())
        if not has_mode:
            continue
        # intent: first target token of each turn's first branch is the gold mode
        first = _first_token_of_turn_mask(ws)
        mode_scores = (hs[first] @ out_w[[rec, chat]].T)
        pred += ["rec" if s[0] > s[1] else "chat" for s in mode_scores.tolist()]
        gold += ["rec" if t == rec else "chat" for t in tgt[first].tolist()]
    out = {"ppl": metrics.perplexity(nll, n_head), "ppl_tokens": n_tok,
           "ppl_tokens_outside_head": n_tok - n_head,
           "ppl_full_vocab": metrics.perplexity(nll if head is None else nll_full, n_tok)}
    if has_mode:
        out.update(metrics.intent_metrics(gold, pred))
    return out


class OnlyTokens:
    """``LogitsProcessor`` keeping only ``ids`` (a model trained with a restricted softmax)."""

    def __init__(self, ids: Sequence[int], vocab_size: int):
        self.mask = torch.ones(vocab_size, dtype=torch.bool)
        self.mask[torch.as_tensor(list(ids))] = False

    def __call__(self, input_ids, scores):
        return scores.masked_fill(self.mask[: scores.shape[-1]].to(scores.device), float("-inf"))


@torch.no_grad()
@runtime.flush_denormals()
def generate_responses(model, tokenizer, sids: SemanticIDs, dialogs, catalog=None,
                       max_context_tokens: int = 768, max_new_tokens: int = 40,
                       head_ids: Sequence[int] | None = None, limit: int | None = None,
                       seed: int = 0, batch_size: int = 16, fmt: str = "gcrs",
                       decoding: ResponseDecoding = GREEDY, end_at_line_break: bool = False
                       ) -> dict:
    """Free-mode generation for assistant turns (SIDs constrained to items; ``decoding``:
    greedy unless told, :mod:`crslib.decoding.generation`) and the dialog metrics of NOTES.md §5 against
    the gold responses, items shown as ``<movie>``.

    A generation that does not follow the format is kept as plain text (special tokens
    dropped) and counted in ``malformed_share``. ``limit``: seeded sample of turns.
    ``end_at_line_break``: a line break also ends the turn, as in the chat.
    """
    from transformers import LogitsProcessorList
    if fmt in ("sid", "tiger"):
        raise ValueError(f"format {fmt!r} writes no response: no dialog metrics")
    turns = [ex for ex in serialize.serialize_all(dialogs, sids, fmt)
             if ex.item is None or ex.item == ex.turn_items[0]]  # one case per turn
    if limit is not None and limit < len(turns):
        turns = random.Random(seed).sample(turns, limit)
    procs = [trie.SIDConstraint(trie.SIDVocab.build(sids, tokenizer))]
    if head_ids is not None:
        procs.append(OnlyTokens(head_ids, model.get_output_embeddings().weight.shape[0]))
    ends = set(turn_end_ids(tokenizer) if end_at_line_break else [tokenizer.eos_token_id])
    config = decoding.generation_config(max_new_tokens, tokenizer.pad_token_id or 0, sorted(ends))
    hyps, refs, gold_modes, pred_modes, malformed = [], [], [], [], 0
    for k in range(0, len(turns), batch_size):
        chunk = turns[k:k + batch_size]
        ids = [serialize.prompt_ids(ex, tokenizer, max_context_tokens) for ex in chunk]
        input_ids, mask = batching.left_pad(ids, config.pad_token_id, model.device)
        extra = decoding.processors(input_ids.shape[1])
        with batching.neutral_generation_config(model):
            out = decoding.generate(model, input_ids=input_ids, attention_mask=mask,
                                    generation_config=config,
                                    logits_processor=LogitsProcessorList(procs + extra))
        out = out.sequences if hasattr(out, "sequences") else out
        for ex, seq in zip(chunk, out[:, input_ids.shape[1]:].tolist()):
            cut = next((j for j, t in enumerate(seq) if t in ends), len(seq))
            seq = seq[:cut] + ([tokenizer.eos_token_id] if cut < len(seq) else [])
            text = tokenizer.decode(seq, skip_special_tokens=False)
            gold = serialize.parse(ex.target, sids, fmt)
            try:
                got = serialize.parse(text, sids, fmt, eos=tokenizer.eos_token)
                hyp, mode = got.metric_text, got.mode
            except ValueError:
                malformed += 1
                hyp = tokenizer.decode(seq, skip_special_tokens=True)
                mode = "rec" if serialize.BOI in text else "chat"
            hyps.append(hyp.strip())
            refs.append(gold.metric_text.strip())
            gold_modes.append(ex.mode)
            pred_modes.append(mode)
    out = metrics.dialog_metrics(hyps, refs)
    out.update({f"generated_{k}": v for k, v in metrics.intent_metrics(gold_modes, pred_modes).items()})
    out["malformed_share"] = malformed / len(turns) if turns else 0.0
    out["examples"] = [{"reference": r, "generated": h} for r, h in list(zip(refs, hyps))[:5]]
    return {"n_turns": len(turns), **out}


DECODING_CANDIDATES = (  # what the chat's response decoding is chosen from (decoding_sweep)
    ResponseDecoding(),
    ResponseDecoding(no_repeat_ngram_size=3),
    ResponseDecoding(no_repeat_ngram_size=3, repetition_penalty=1.2),
    ResponseDecoding(top_p=0.9, temperature=0.8),
    ResponseDecoding(no_repeat_ngram_size=3, top_p=0.9, temperature=0.8),
)


def decoding_sweep(model, tokenizer, sids: SemanticIDs, dialogs, candidates=DECODING_CANDIDATES,
                   bleu_margin: float = 0.9, **kwargs) -> dict:
    """Generate responses for the same seeded turns with each candidate decoding (lines end the
    turn, as in the chat) and choose one by a stated rule: keep the candidates with the fewest
    loops (``looping_share``: responses with a repeated word 3-gram), of those the ones with a
    BLEU of at least ``bleu_margin`` times the best BLEU among them, and of those the highest
    distinct@2. Meant for validation dialogs (INSPIRED dev), never the test split."""
    rows = []
    for dec in candidates:
        r = generate_responses(model, tokenizer, sids, dialogs, decoding=dec,
                               end_at_line_break=True, **kwargs)
        rows.append({"decoding": dec.name, "setting": dec.as_dict(), "n_turns": r["n_turns"],
                     **{k: r[k] for k in ("bleu", "distinct@1", "distinct@2", "distinct@3",
                                          "looping_share", "item_mention_share")},
                     "examples": r["examples"][:3]})
    fewest = min(r["looping_share"] for r in rows)
    pool = [r for r in rows if r["looping_share"] <= fewest]
    best_bleu = max(r["bleu"] for r in pool)
    chosen = max((r for r in pool if r["bleu"] >= bleu_margin * best_bleu),
                 key=lambda r: r["distinct@2"])
    return {"rows": rows, "chosen": chosen["decoding"], "chosen_setting": chosen["setting"],
            "rule": f"fewest loops; of those, BLEU >= {bleu_margin} x their best; then the "
                    "highest distinct@2"}


def _pair_starts(w: packing.Packed) -> list[bool]:
    """For each loss pair of a window: does it start a branch (its source is a plain token)?"""
    return [w.branch[s] == -1 if s >= 0 else True for s in w.src]


def _first_token_of_turn_mask(ws: Sequence[packing.Packed]) -> torch.Tensor:
    keep = []
    for w in ws:
        starts = _pair_starts(w)
        prev_src = None
        for st, s in zip(starts, w.src):
            keep.append(st and s != prev_src)  # later branches of a turn share the source
            if st:
                prev_src = s
    return torch.tensor(keep, dtype=torch.bool)


def _first_branch_response_mask(ws: Sequence[packing.Packed], resp_id: int | None
                                ) -> torch.Tensor:
    """Loss pairs that are response tokens (after ``<RESP>``; every target token when
    ``resp_id`` is None) of the first branch of each turn."""
    keep = []
    for w in ws:
        prev_src, first_branch, after_resp = None, False, False
        for st, s, t in zip(_pair_starts(w), w.src, w.tgt):
            if st:
                first_branch = s != prev_src
                prev_src = s
                after_resp = resp_id is None
            keep.append(first_branch and after_resp)
            if t == resp_id:
                after_resp = True
    return torch.tensor(keep, dtype=torch.bool)


# ----------------------------------------------------------------------------- files
def result_path(profile: str, dataset: str, variant: str, protocol: str) -> Path:
    """Where every result lives: ``results/<profile>/<dataset>/<variant>.<protocol>.json``
    (``protocol``: a ranking protocol, ``dialog``, or a study's name — ``coldstart``,
    ``freemode``, ``decoding``, ``request``)."""
    return report.RESULTS / profile / dataset / f"{variant}.{protocol}.json"


def identity(cfg: dict, run_path=None) -> dict:
    """What a result is tied to: the config hash and, for a trained ranker (``run_path``), the
    hash of the weights on disk (:func:`crslib.training.run.model_hash`); a baseline has no weights
    (``model_hash`` None: it is fitted from the data by its config, deterministically)."""
    return {"config_hash": run.config_hash(cfg),
            "model_hash": run.model_hash(run_path) if run_path is not None else None}


def run_meta(profile: str, dataset: str, variant: str, split: str, protocol: str, cfg: dict,
             folder) -> dict:
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
