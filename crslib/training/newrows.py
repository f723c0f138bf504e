"""The new tokens' embedding rows (NOTES.md §4): only they train among the embeddings, input
and output side, kept apart from the frozen base matrix (:class:`Embeddings`), and the packed
cross-entropy computed with them (:func:`packed_loss`)."""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F


class Embeddings(torch.nn.Module):
    """The model's input and output embeddings with only the new tokens' rows trainable.

    ``rows``: ids of the rows that train (the added tokens, contiguous at the end of the
    vocabulary), or None for all rows (the "all embeddings trained" ablation). The frozen matrix
    stays in the model and is never copied; the trainable rows live here (input side, and output
    side when the head is not tied) and are written back by :meth:`merge`.
    """

    def __init__(self, model, rows: Sequence[int] | None):
        super().__init__()
        self.model = [model]  # a plain reference, not a submodule
        inp = model.get_input_embeddings().weight
        head = model.get_output_embeddings()
        out = head.weight if head is not None else inp
        self.tied = out.data_ptr() == inp.data_ptr()
        self.inp_rows = self.out_rows = None
        if rows is None:
            self.first = None
            inp.requires_grad_(True)
            out.requires_grad_(True)
            return
        rows = sorted(rows)
        if rows != list(range(rows[0], rows[0] + len(rows))) or rows[-1] != inp.shape[0] - 1:
            raise ValueError("the trainable rows must be the last rows of the vocabulary")
        self.first = rows[0]
        inp.requires_grad_(False)
        out.requires_grad_(False)
        # float32 even under a bfloat16 backbone: AdamW updates of these rows need the precision
        self.inp_rows = torch.nn.Parameter(inp.data[self.first:].float().clone())
        if not self.tied:
            self.out_rows = torch.nn.Parameter(out.data[self.first:].float().clone())

    def _weights(self):
        m = self.model[0]
        inp = m.get_input_embeddings().weight
        head = m.get_output_embeddings()
        return inp, (head.weight if head is not None else inp)

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        inp, _ = self._weights()
        if self.first is None:
            return F.embedding(ids, inp)
        new = ids >= self.first
        x = F.embedding(ids.clamp(max=self.first - 1), inp)
        y = F.embedding((ids - self.first).clamp(min=0), self.inp_rows).to(x.dtype)
        return torch.where(new[..., None], y, x)

    def logits(self, h: torch.Tensor, head_ids: torch.Tensor | None = None) -> torch.Tensor:
        """Logits over ``head_ids`` (all tokens when None), in that order."""
        _, out = self._weights()
        if self.first is None:
            return h @ (out if head_ids is None else out[head_ids]).T
        new_w = (self.inp_rows if self.tied else self.out_rows).to(h.dtype)
        if head_ids is None:
            return torch.cat([h @ out[:self.first].T, h @ new_w.T], dim=-1)
        old = head_ids[head_ids < self.first]
        new = head_ids[head_ids >= self.first] - self.first
        return torch.cat([h @ out[old].T, h @ new_w[new].T], dim=-1)  # head_ids is sorted

    @torch.no_grad()
    def merge(self) -> None:
        """Write the trained rows back into the model's embedding matrices."""
        if self.first is None:
            return
        inp, out = self._weights()
        inp[self.first:] = self.inp_rows.data
        if not self.tied:
            out[self.first:] = self.out_rows.data


def packed_loss(model, emb: Embeddings, batch: dict, head_ids: torch.Tensor | None,
                new_token_weight: float = 1.0) -> tuple[torch.Tensor, int]:
    """Mean target-token cross-entropy of a collated batch, and the number of target tokens.

    ``head_ids`` (sorted) restricts the softmax to those tokens; None uses the whole vocabulary.
    ``new_token_weight``: targets that are added tokens (``emb.first`` and above: mode, SID and
    boundary tokens) count this many times in the weighted mean (1.0: the plain mean).
    """
    device = next(model.parameters()).device
    x = emb.embed(batch["input_ids"].to(device))
    h = model.get_decoder()(inputs_embeds=x, position_ids=batch["position_ids"].to(device),
                            attention_mask=batch["attention_mask"].to(device)).last_hidden_state
    hs = h[batch["loss_rows"].to(device), batch["loss_src"].to(device)]
    tgt = batch["loss_tgt"].to(device)
    if head_ids is not None:
        head_ids = head_ids.to(device)
        tgt = torch.searchsorted(head_ids, tgt)
        if (tgt >= len(head_ids)).any() or (head_ids[tgt.clamp(max=len(head_ids) - 1)]
                                             != batch["loss_tgt"].to(device)).any():
            raise ValueError("a target token is outside the restricted output vocabulary")
    raw_tgt = batch["loss_tgt"].to(device)
    ce = F.cross_entropy(emb.logits(hs, head_ids).float(), tgt, reduction="none")
    if new_token_weight == 1.0 or emb.first is None:
        return ce.mean(), int(len(tgt))
    w = torch.where(raw_tgt >= emb.first, new_token_weight, 1.0)
    return (ce * w).sum() / w.sum(), int(len(tgt))
