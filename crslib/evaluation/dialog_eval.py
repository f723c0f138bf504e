"""The dialog side of the evaluation (NOTES.md §5, Table 3): response perplexity on the packed
dialogs, responses generated as the chat writes them, and the decoding sweep that chooses the
chat's decoding on validation dialogs."""
from __future__ import annotations

import random
from typing import Sequence

import torch

from crslib import metrics
from crslib.decoding import batching, trie
from crslib.decoding.generation import GREEDY, ResponseDecoding, turn_end_ids
from crslib.format import packing, serialize
from crslib.ids.semantic_ids import SemanticIDs
from crslib.training import batches, runtime


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
        counted = first_branch_response_mask(ws, resp if has_mode else None)
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
    greedy unless told, :mod:`crslib.decoding.generation`) and the dialog metrics of NOTES.md §5
    against the gold responses, items shown as ``<movie>``.

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


def first_branch_response_mask(ws: Sequence[packing.Packed], resp_id: int | None
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
