"""Prompts as model batches for the decoders: token-id lists checked and left-padded, batches
bounded by KV-cache memory, and generation configs pinned so that a model's own defaults never
change a ranking."""
from __future__ import annotations

import contextlib
from typing import Sequence

import torch
from torch.nn.utils.rnn import pad_sequence
from transformers import GenerationConfig

from crslib.decoding.trie import SIDVocab
from crslib.format.serialize import BOI
from crslib.ids.semantic_ids import SemanticIDs


def as_vocab(sids: SemanticIDs | SIDVocab, tokenizer) -> SIDVocab:
    return sids if isinstance(sids, SIDVocab) else SIDVocab.build(sids, tokenizer)


def as_id_lists(prompts, tokenizer) -> tuple[list[list[int]], bool]:
    """Prompts as token-id lists (strings tokenized with ``add_special_tokens=False``)."""
    single = isinstance(prompts, str) or (len(prompts) > 0 and isinstance(prompts[0], int))
    items = [prompts] if single else list(prompts)
    out = [list(tokenizer(p, add_special_tokens=False)["input_ids"]) if isinstance(p, str)
           else [int(t) for t in p] for p in items]
    return out, single


def check_boi(ids_list: list[list[int]], vocab: SIDVocab) -> None:
    for k, ids in enumerate(ids_list):
        if not ids or ids[-1] != vocab.boi:
            raise ValueError(f"prompt {k} must end with {BOI} (ends with token ids {ids[-5:]})")


def cache_of(output):
    """The KV cache a decoder call returned (``cache`` or ``past_key_values``)."""
    cache = getattr(output, "cache", None)
    return cache if cache is not None else output.past_key_values


@contextlib.contextmanager
def neutral_generation_config(model):
    """Hide the checkpoint's generation config, whose values fill every field a passed config
    leaves unset (``do_sample=True``, repetition penalties, suppressed tokens, ...)."""
    saved = model.generation_config
    model.generation_config = GenerationConfig()
    try:
        yield
    finally:
        model.generation_config = saved


def pinned_generation_config(num_beams: int, max_new_tokens: int, pad_token_id: int
                             ) -> GenerationConfig:
    """Deterministic beam search: no sampling, no penalties, summed log-probs as scores."""
    return GenerationConfig(
        do_sample=False, num_beams=num_beams, num_return_sequences=num_beams,
        max_new_tokens=max_new_tokens, min_new_tokens=0, length_penalty=0.0, early_stopping=True,
        temperature=1.0, top_k=None, top_p=1.0, repetition_penalty=1.0, no_repeat_ngram_size=0,
        output_scores=True, return_dict_in_generate=True, pad_token_id=pad_token_id,
        eos_token_id=None, bos_token_id=None, use_cache=True)


def kv_bytes_per_token(model) -> int:
    """Bytes of keys and values one token adds to the cache (0 when the config is unusual)."""
    cfg = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    try:
        heads = cfg.num_attention_heads
        kv_heads = getattr(cfg, "num_key_value_heads", None) or heads
        head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // heads
        return 2 * cfg.num_hidden_layers * kv_heads * head_dim * model.dtype.itemsize
    except (AttributeError, TypeError):
        return 0


def prompt_batches(ids_list: list[list[int]], batch_size: int, row_bytes: int, budget: int):
    """Consecutive slices of at most ``batch_size`` prompts whose beam-expanded cache
    (prompts x max length x ``row_bytes``) stays within ``budget`` bytes (at least one prompt)."""
    s = 0
    while s < len(ids_list):
        e, longest = s + 1, len(ids_list[s])
        while e < len(ids_list) and e - s < batch_size:
            longest = max(longest, len(ids_list[e]))
            if (e + 1 - s) * longest * row_bytes > budget:
                break
            e += 1
        yield ids_list[s:e]
        s = e


def pad_batch(batch: Sequence[Sequence[int]], pad: int, device=None, side: str = "left"
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """``(input_ids, attention_mask)`` of the token lists padded with ``pad`` on ``side``
    (``left``: every prompt ends at the last column, as generation needs; ``right``: positions
    start at 0), by ``torch.nn.utils.rnn.pad_sequence``, on ``device``."""
    seqs = [torch.tensor(ids, dtype=torch.long) for ids in batch]
    input_ids = pad_sequence(seqs, batch_first=True, padding_value=pad, padding_side=side)
    mask = pad_sequence([torch.ones(len(s), dtype=torch.long) for s in seqs], batch_first=True,
                        padding_value=0, padding_side=side)
    return (input_ids, mask) if device is None else (input_ids.to(device), mask.to(device))


def left_pad(batch: Sequence[Sequence[int]], pad: int, device=None
             ) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`pad_batch` on the left: the prompts of a generation batch."""
    return pad_batch(batch, pad, device, "left")
