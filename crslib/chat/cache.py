"""The conversation's KV cache: a turn adds messages at the end, so a reply runs only the tokens
the cache does not hold yet."""
from __future__ import annotations

from typing import Sequence

import torch
from transformers import DynamicCache

from crslib.decoding import batching


def hidden_states(model, ids: Sequence[int]) -> torch.Tensor:
    """The last layer's states after each of ``ids``, one plain forward pass (no cache)."""
    device = model.get_output_embeddings().weight.device
    out = model.get_decoder()(input_ids=torch.tensor([list(ids)], device=device))
    return out.last_hidden_state[0]


class ConversationCache:
    """The KV cache of one conversation (``kv``) and the token ids it holds (``ids``)."""

    def __init__(self, model):
        self.model = model
        self.clear()

    def clear(self) -> None:
        self.kv, self.ids = None, []

    def encode(self, ids: Sequence[int], reuse: bool = True) -> torch.Tensor:
        """The hidden state after ``ids``, with the cache holding exactly ``ids`` afterwards.
        Only what the cache does not hold yet is run: the cache is cut back to the longest
        common prefix (a turn adds messages at the end; where the context was truncated at the
        front, little or nothing is shared) and extended. ``reuse=False``: encode from nothing."""
        ids = list(ids)
        n = 0
        while n < min(len(ids), len(self.ids)) and ids[n] == self.ids[n]:
            n += 1
        n = min(n, len(ids) - 1)  # run at least the last token: its state is needed
        if self.kv is None or n == 0 or not reuse:
            self.kv, n = DynamicCache(), 0
        else:
            self.keep(n)
        device = self.model.get_output_embeddings().weight.device
        out = self.model.get_decoder()(
            input_ids=torch.tensor([ids[n:]], device=device),
            position_ids=torch.arange(n, len(ids), device=device)[None],
            cache=self.kv, use_cache=True)
        self.kv = batching.cache_of(out)
        self.ids = ids
        return out.last_hidden_state[0, -1]

    def keep(self, n: int) -> None:
        """Cut the cache back to its first ``n`` tokens."""
        extra = self.kv.get_seq_length() - n
        if extra > 0:
            self.kv.crop(-extra)
        self.ids = self.ids[:n]
