"""How responses are decoded: one setting for the chat and for the dialog evaluation.

The item part of a turn is decoded by the trie (:mod:`crslib.trie`); the response text after
``<RESP>`` by ``model.generate`` with a :class:`ResponseDecoding`: greedy by default, or seeded
nucleus sampling, with two guards against loops — :class:`NoRepeatResponseNGram` (no n-gram
twice *within the response*; Hugging Face's ``no_repeat_ngram_size`` also counts the prompt,
which would forbid every phrase the dialog already used) and an optional repetition penalty.
A response ends at the end of its turn: the end-of-sequence token or any token that writes a
line break (the plain prompt puts one turn per line). Every sampling setting is pinned in the
``GenerationConfig`` (NOTES.md §9: a checkpoint's ``do_sample=True`` must never leak in).
"""
from __future__ import annotations

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
    ``temperature`` with ``seed`` (the same seed gives the same text)."""

    no_repeat_ngram_size: int = 0
    repetition_penalty: float = 1.0
    top_p: float | None = None
    temperature: float = 1.0
    seed: int = 0

    def __post_init__(self):
        if self.no_repeat_ngram_size < 0 or self.repetition_penalty <= 0:
            raise ValueError(f"invalid decoding setting {self}")
        if self.top_p is not None and not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], not {self.top_p}")

    @property
    def name(self) -> str:
        parts = ["greedy" if self.top_p is None else f"top_p={self.top_p},T={self.temperature}"]
        if self.no_repeat_ngram_size:
            parts.append(f"no_repeat={self.no_repeat_ngram_size}")
        if self.repetition_penalty != 1.0:
            parts.append(f"rep_penalty={self.repetition_penalty}")
        return ",".join(parts)

    def as_dict(self) -> dict:
        return asdict(self)

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
        RNG is restored); a chat passes its turn number, so turns do not share one stream."""
        if self.top_p is None:
            return model.generate(**kwargs)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed + offset)
            return model.generate(**kwargs)


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
