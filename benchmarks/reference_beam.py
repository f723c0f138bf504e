"""The evaluation beam as it was before issue 21 (crslib/decoding/trie.py at commit 8609543), frozen
here as the reference of ``bench_score.py``: one prompt per batch row, left-padded batches in the
order given, every case decoded even when its prompt repeats another's. Self-contained (it uses
only public crslib names), so the benchmark measures the old path, not a re-implementation.
"""
from __future__ import annotations

import torch

from crslib.decoding import trie
from crslib.decoding.batching import cache_of, left_pad


@torch.no_grad()
def old_sid_beam_search(model, vocab: trie.SIDVocab, ids_list, k=50, num_beams=50,
                        batch_size=16, pad=0):
    beams = num_beams
    head, decoder = model.get_output_embeddings(), model.get_decoder()
    L, K = vocab.level_tokens.shape
    out = []
    for s in range(0, len(ids_list), batch_size):
        input_ids, mask = left_pad(ids_list[s:s + batch_size], pad)
        B, T = input_ids.shape
        position = (mask.cumsum(-1) - 1).clamp(min=0)
        o = decoder(input_ids=input_ids, attention_mask=mask, position_ids=position,
                    use_cache=True)
        cache, h = cache_of(o), o.last_hidden_state[:, -1:]
        node = torch.zeros(B, 1, dtype=torch.long)
        score = torch.zeros(B, 1)
        ancestors = torch.zeros(B, 1, 0, dtype=torch.long)
        visible = mask.bool()
        for level in range(L):
            nb = node.shape[1]
            lp = trie.level_log_probs(head, h.reshape(B * nb, -1), vocab.level_tokens[level])
            child = vocab.trie.children[level][node]
            cand = (score.unsqueeze(-1) + lp.view(B, nb, K)).masked_fill(child < 0, float("-inf"))
            top = cand.view(B, -1).topk(min(beams, nb * K), dim=1)
            parent = torch.div(top.indices, K, rounding_mode="floor")
            node, score = child.view(B, -1).gather(1, top.indices), top.values
            if level == L - 1:
                break
            n = node.shape[1]
            ancestors = ancestors.gather(1, parent.unsqueeze(-1).expand(-1, -1, ancestors.shape[2]))
            start = visible.shape[1]
            here = torch.arange(start, start + n).expand(B, n)
            ancestors = torch.cat([ancestors, here.unsqueeze(-1)], dim=2)
            attend = visible.unsqueeze(1).expand(B, n, start).clone()
            attend = torch.cat([attend, torch.zeros(B, n, n, dtype=torch.bool)], dim=2)
            attend.scatter_(2, ancestors, True)
            tokens = vocab.level_tokens[level][top.indices % K]
            pos = (position[:, -1:] + level + 1).expand(B, n)
            o = decoder(input_ids=tokens, attention_mask=attend.unsqueeze(1), position_ids=pos,
                        cache=cache, use_cache=True)
            cache, h = cache_of(o), o.last_hidden_state
            visible = torch.cat([visible, torch.zeros(B, n, dtype=torch.bool)], dim=1)
        for b in range(B):
            keep = score[b] > float("-inf")
            items = [vocab.sids.item_ids[int(i)] for i in node[b][keep][:k]]
            out.append(trie.Ranked(items, score[b][keep][:k].tolist()))
    return out
