"""How responses are decoded: one setting for the chat and for the dialog evaluation.

The item part of a turn is decoded by the trie (:mod:`crslib.decoding.trie`); the response text
after ``<RESP>`` by ``model.generate`` with a :class:`ResponseDecoding`: greedy by default, or
seeded nucleus sampling, with two guards against loops — :class:`NoRepeatResponseNGram` (no n-gram
twice *within the response*; Hugging Face's ``no_repeat_ngram_size`` also counts the prompt,
which would forbid every phrase the dialog already used) and an optional repetition penalty.
With ``candidates`` above 1, sampling draws that many responses per prompt and keeps the one
whose generated tokens have the highest mean log-probability under the model: sample-and-rank
(Adiwardana et al., 2020, "Towards a Human-like Open-Domain Chatbot"), which keeps sampling's
variety but drops the draws the model itself finds unlikely (the incoherent ones).
A response ends at the end of its turn: the end-of-sequence token or any token that writes a
line break (the plain prompt puts one turn per line). Every sampling setting is pinned in the
``GenerationConfig`` (NOTES.md §9: a checkpoint's ``do_sample=True`` must never leak in).
"""
from __future__ import annotations

import copy
import functools
import re
from dataclasses import asdict, dataclass
from typing import Callable

import torch
from transformers import GenerationConfig, LogitsProcessor


@dataclass(frozen=True)
class ResponseDecoding:
    """``no_repeat_ngram_size`` (0: off) within the response; ``repetition_penalty`` (1.0: off,
    Hugging Face's, over prompt and response); ``top_p`` None: greedy, else nucleus sampling at
    ``temperature`` with ``seed`` (the same seed gives the same text); ``candidates``: when
    sampling, draws per prompt of which the likeliest is kept (sample-and-rank; 1: off)."""

    no_repeat_ngram_size: int = 0
    repetition_penalty: float = 1.0
    top_p: float | None = None
    temperature: float = 1.0
    seed: int = 0
    candidates: int = 1

    def __post_init__(self):
        if self.no_repeat_ngram_size < 0 or self.repetition_penalty <= 0:
            raise ValueError(f"invalid decoding setting {self}")
        if self.candidates < 1 or (self.candidates > 1 and self.top_p is None):
            raise ValueError(f"candidates must be 1, or more only when sampling (top_p set), "
                             f"not {self.candidates} with top_p={self.top_p}")
        if self.top_p is not None and not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], not {self.top_p}")

    @property
    def name(self) -> str:
        parts = ["greedy" if self.top_p is None else f"top_p={self.top_p},T={self.temperature}"]
        if self.no_repeat_ngram_size:
            parts.append(f"no_repeat={self.no_repeat_ngram_size}")
        if self.repetition_penalty != 1.0:
            parts.append(f"rep_penalty={self.repetition_penalty}")
        if self.candidates > 1:
            parts.append(f"rank={self.candidates}")
        return ",".join(parts)

    def as_dict(self) -> dict:
        """The setting (``candidates`` only when it is on: older results were saved without)."""
        out = asdict(self)
        if self.candidates == 1:
            del out["candidates"]
        return out

    def generation_config(self, max_new_tokens: int, pad_token_id: int,
                          eos_token_id: int | list[int] | None) -> GenerationConfig:
        sample = self.top_p is not None
        return GenerationConfig(
            do_sample=sample, num_beams=1, max_new_tokens=max_new_tokens, min_new_tokens=0,
            temperature=self.temperature if sample else 1.0, top_k=None,
            top_p=self.top_p if sample else 1.0, repetition_penalty=self.repetition_penalty,
            no_repeat_ngram_size=0, return_dict_in_generate=True, pad_token_id=pad_token_id,
            eos_token_id=eos_token_id, bos_token_id=None, use_cache=True)

    def processors(self, prompt_len: int, skip_row: Callable | None = None) -> list:
        if not self.no_repeat_ngram_size:
            return []
        return [NoRepeatResponseNGram(self.no_repeat_ngram_size, prompt_len, skip_row)]

    def generate(self, model, offset: int = 0, **kwargs):
        """``model.generate(**kwargs)``, seeded with ``seed + offset`` when sampling (the global
        RNG is restored); a chat passes its turn number, so turns do not share one stream.
        With ``candidates`` > 1: each prompt row is drawn ``candidates`` times (a passed
        ``cache`` is copied, never extended) and the output's ``sequences`` hold, per row, the
        draw :func:`rank_draws` keeps."""
        if self.top_p is None:
            return model.generate(**kwargs)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed + offset)
            if self.candidates == 1:
                return model.generate(**kwargs)
            return self._sample_and_rank(model, **kwargs)

    def _sample_and_rank(self, model, input_ids, attention_mask=None, cache=None,
                         generation_config=None, **kwargs):
        n = self.candidates
        config = copy.deepcopy(generation_config)
        config.output_logits, config.return_dict_in_generate = True, True
        if cache is not None:
            cache = copy.deepcopy(cache)
            cache.batch_repeat_interleave(n)
        mask = attention_mask.repeat_interleave(n, 0) if attention_mask is not None else None
        out = model.generate(input_ids=input_ids.repeat_interleave(n, 0), attention_mask=mask,
                             cache=cache, generation_config=config, **kwargs)
        ends = config.eos_token_id
        ends = [ends] if isinstance(ends, int) else list(ends or [])
        keep = rank_draws(out.sequences[:, input_ids.shape[1]:], torch.stack(out.logits, 1), n,
                          ends)
        out.sequences, out.logits = out.sequences[keep], None
        return out


def rank_draws(generated: torch.Tensor, logits: torch.Tensor, n: int,
               end_ids=()) -> torch.Tensor:
    """Row indices of the kept draws, one per group of ``n`` consecutive rows: the draw whose
    tokens (up to and including its first token of ``end_ids``; all of them when it has none)
    have the highest mean log-probability under ``logits`` (the model's raw logits, before any
    processor; ``(rows, steps, vocab)``). Ties keep the first draw."""
    logp = torch.log_softmax(logits.float(), -1).gather(-1, generated[..., None])[..., 0]
    is_end = torch.isin(generated, torch.tensor(list(end_ids), dtype=generated.dtype,
                                                device=generated.device))
    after_end = (is_end.cumsum(1) - is_end.long()) > 0  # positions past the first end token
    valid = ~after_end
    mean = (logp * valid).sum(1) / valid.sum(1).clamp(min=1)
    best = mean.view(-1, n).argmax(1)
    return torch.arange(0, len(mean), n, device=best.device) + best


GREEDY = ResponseDecoding()


class NoRepeatResponseNGram(LogitsProcessor):
    """No n-gram of token ids twice within the generated part (positions ``prompt_len`` on).

    ``skip_row(input_ids) -> bool tensor``: rows left alone (e.g. inside an item mention, where
    the trie decides and banning could leave no valid token)."""

    def __init__(self, n: int, prompt_len: int, skip_row: Callable | None = None):
        if n < 1:
            raise ValueError("n must be at least 1")
        self.n, self.prompt_len, self.skip_row = n, prompt_len, skip_row

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        gen = input_ids[:, self.prompt_len:].tolist()
        skip = self.skip_row(input_ids).tolist() if self.skip_row is not None else None
        n = self.n
        for row, seq in enumerate(gen):
            if len(seq) < n - 1 or (skip is not None and skip[row]):
                continue
            prefix = tuple(seq[len(seq) - n + 1:]) if n > 1 else ()
            banned = {seq[i + n - 1] for i in range(len(seq) - n + 1)
                      if tuple(seq[i:i + n - 1]) == prefix}
            if banned:
                scores[row, list(banned)] = float("-inf")
        return scores


@functools.lru_cache(maxsize=8)
def _line_break_ids(tokenizer) -> tuple[int, ...]:
    vocab = tokenizer.get_vocab()
    ids = [i for i in vocab.values()
           if "\n" in tokenizer.decode([i], skip_special_tokens=False)]
    return tuple(sorted(ids))


def turn_end_ids(tokenizer) -> list[int]:
    """Token ids that end a response: end-of-sequence, and every token that writes a line break
    (the next line would be another speaker's turn)."""
    eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    return eos + [i for i in _line_break_ids(tokenizer) if i not in eos]


_SENTENCE_END = re.compile(r"[.!?…][\"')\]]*(?=\s)")
_FINISHED = tuple(".!?…\"')>")  # ``>``: a response may end with an item mention (``<EOI>``)


def trim_unfinished(text: str, mention_open: str = "<BOI>") -> str:
    """A chat response cut mid-sentence — at the token limit, or where its turn was ended
    because the only way on was a title it may not name — ends at its last finished sentence
    instead ("… is a good one. I like" -> "… is a good one."). Left as it is: a response that
    ends finished (punctuation, a closing bracket or quote, an item mention), one with no
    finished sentence before the tail, and one whose tail names an item (``mention_open``).
    Only what a person reads is trimmed; the evaluation decodes and scores untrimmed text."""
    s = text.rstrip()
    if not s or s.endswith(_FINISHED):
        return text
    ends = list(_SENTENCE_END.finditer(s))
    if not ends or mention_open in s[ends[-1].end():]:
        return text
    return s[:ends[-1].end()]


_SPACED_PUNCTUATION = re.compile(r"(?<=\S)[ \t]+([,.!?;:]+)(?=\s|$)")


def close_punctuation(text: str) -> str:
    """Text for people without the space before punctuation that ReDial's tokenized dialogs
    teach ("How about Get Out (2017) ?" -> "How about Get Out (2017)?"); a mark that is not
    followed by a space or the end (``:)``, ``.5``) is left as it is."""
    return _SPACED_PUNCTUATION.sub(r"\1", text)
